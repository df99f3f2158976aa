//! CLI polish: every flag has help text; completions and a man page come from the clap
//! definitions; a node that is not configured is a usage error (exit 2); no ANSI colour in
//! the logs of a command that logs when stderr is not a terminal (checked to fail with colour
//! forced on).

mod support;

use std::process::Command;

use clap::CommandFactory;
use pika_remedy::cli::Cli;

const BIN: &str = env!("CARGO_BIN_EXE_pika-remedy");

fn missing_help(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
    for a in cmd.get_arguments() {
        let id = a.get_id().as_str();
        if id == "help" || id == "version" {
            continue;
        }
        if a.get_help().is_none() && a.get_long_help().is_none() {
            out.push(format!("{path} --{id}"));
        }
    }
    for sub in cmd.get_subcommands() {
        if sub.get_about().is_none() {
            out.push(format!("{path} {} (no about)", sub.get_name()));
        }
        missing_help(sub, &format!("{path} {}", sub.get_name()), out);
    }
}

#[test]
fn every_flag_has_help_text() {
    let mut missing = Vec::new();
    missing_help(&Cli::command(), "pika-remedy", &mut missing);
    assert!(missing.is_empty(), "without help text: {missing:#?}");
}

#[test]
fn completions_and_man_page() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(BIN)
            .args(["completions", shell])
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("maintenance"),
            "{shell} completion lists subcommands"
        );
    }
    let out = Command::new(BIN).arg("man").output().expect("run");
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(".TH pika-remedy 1"), "{text}");
    assert!(text.contains("pause"), "{text}");
    // Every command with its options (the page `make deb` ships), and the closing sections.
    for want in [
        r#".SS "pika\-remedy switchover""#,
        r"\fB\-\-at\fR",
        r#".SS "pika\-remedy maintenance set""#,
        r#".SH "EXIT STATUS""#,
        ".SH FILES",
    ] {
        assert!(text.contains(want), "{want} missing from the man page");
    }
}

#[test]
fn unconfigured_node_is_a_usage_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[coordinator.local]\ndir = \"{}\"\n[webhook]\nallow_unauthenticated = true\n\
             [[cluster]]\nname = \"c\"\nnodes = [{{ addr = \"127.0.0.1:1\" }}, {{ addr = \"127.0.0.1:2\" }}]\n",
            dir.path().join("coord").display()
        ),
    )
    .expect("write");
    for args in [
        vec!["failover", "--cluster", "c", "--to", "127.0.0.1:9", "--yes"],
        vec![
            "switchover",
            "--cluster",
            "c",
            "--to",
            "127.0.0.1:9",
            "--yes",
        ],
        vec!["demote", "--cluster", "c", "--node", "127.0.0.1:9"],
        vec!["plan", "--cluster", "c", "--to", "127.0.0.1:9"],
        vec![
            "maintenance",
            "set",
            "--cluster",
            "c",
            "--node",
            "127.0.0.1:9",
            "--mode",
            "hands-off",
            "--reason",
            "x",
        ],
        vec!["pause", "--cluster", "nope", "--reason", "x"],
    ] {
        let out = Command::new(BIN)
            .args(&args)
            .arg("--config")
            .arg(&cfg)
            .env("RUST_LOG", "info")
            .env_remove("NO_COLOR")
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("not configured") || err.contains("unknown cluster"),
            "{args:?}: {err}"
        );
    }
}

/// A command that really logs (a refused `failover`: every node unreachable, the reconcile
/// logs its outcome at info) writes no ANSI escape when stderr is not a terminal, with and
/// without `NO_COLOR`.
#[test]
fn a_command_that_logs_writes_no_colour_to_a_non_terminal() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[coordinator.local]\ndir = \"{}\"\n[timeouts]\nconnect = \"200ms\"\ncommand = \"300ms\"\n\
             [[cluster]]\nname = \"c\"\nnodes = [{{ addr = \"127.0.0.1:1\" }}, {{ addr = \"127.0.0.1:2\" }}]\n",
            dir.path().join("coord").display()
        ),
    )
    .expect("write");
    for no_color in [None, Some("1")] {
        let mut cmd = Command::new(BIN);
        cmd.args(["failover", "--cluster", "c", "--yes", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", "info")
            .env_remove("NO_COLOR");
        if let Some(v) = no_color {
            cmd.env("NO_COLOR", v);
        }
        let out = cmd.output().expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("INFO") && err.contains("reconcile"),
            "the command must log something for this test to mean anything: {err}"
        );
        assert!(
            !err.contains('\u{1b}'),
            "ANSI escape in a non-terminal stderr (NO_COLOR={no_color:?}): {err:?}"
        );
    }
}
