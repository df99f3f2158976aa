//! `pika-remedy check-config` on every case in tests/data/config/{good,bad} and on the
//! shipped example. Each bad case declares what its error must say in `# expect: …` lines.
//! A file with several errors gets all of them reported, one `error:` line each.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_pika-remedy");

fn data(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/config")
        .join(dir)
}

fn cases(dir: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(data(dir))
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    v.sort();
    v
}

fn check_config(file: &Path) -> Output {
    Command::new(BIN)
        .arg("check-config")
        .arg(file)
        // Used by good/env-secret.toml; bad/secret-env-unset.toml uses a name never set.
        .env("PIKA_REMEDY_TEST_PASSWORD", "test-password")
        .env("PIKA_REMEDY_TEST_TOKEN", "test-token")
        .env_remove("PIKA_REMEDY_TEST_NEVER_SET_VAR")
        .env_remove("RUST_LOG")
        .output()
        .expect("run pika-remedy")
}

#[test]
fn good_configs_pass() {
    let files = cases("good");
    assert!(files.len() >= 4, "expected good cases, found {files:?}");
    for f in files {
        let out = check_config(&f);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {stdout}{stderr}",
            f.display()
        );
        assert!(stdout.contains(": ok:"), "{}: {stdout}", f.display());
    }
}

#[test]
fn bad_configs_fail_naming_file_and_field() {
    let files = cases("bad");
    assert!(
        files.len() >= 20,
        "expected bad cases, found {}",
        files.len()
    );
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let expects: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .collect();
        assert!(!expects.is_empty(), "{}: no `# expect:` line", f.display());
        let out = check_config(&f);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {stderr}", f.display());
        assert!(out.stdout.is_empty(), "{}: nothing on stdout", f.display());
        assert!(
            stderr.contains(&f.display().to_string()),
            "{}: error must name the file: {stderr}",
            f.display()
        );
        assert!(
            !stderr.contains("hunter2"),
            "{}: a secret value must never be echoed: {stderr}",
            f.display()
        );
        for e in expects {
            assert!(
                stderr.contains(e),
                "{}: error must contain {e:?}: {stderr}",
                f.display()
            );
        }
    }
}

#[test]
fn shipped_example_is_valid() {
    let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/pika-remedy.example.toml");
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&f)
        .env("PIKA_REMEDY_WEBHOOK_TOKEN", "example-token")
        .env("PIKA_REMEDY_MAIN_PASSWORD", "example-password")
        .output()
        .expect("run pika-remedy");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn missing_file_and_usage_errors_exit_2() {
    let out = check_config(Path::new("/nonexistent/pika-remedy.toml"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/pika-remedy.toml"));

    let out = Command::new(BIN).arg("no-such-command").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(BIN)
        .args(["status", "--bogus"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn secret_values_never_appear_in_output() {
    // good/: the secret files' contents must not be echoed.
    for f in cases("good") {
        let out = check_config(&f);
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for secret in [
            "node-password",
            "webhook-token",
            "consul-token",
            "etcd-password",
            "test-password",
            "test-token",
        ] {
            assert!(
                !all.contains(secret),
                "{}: leaked {secret}: {all}",
                f.display()
            );
        }
    }
}

#[test]
fn check_config_reports_every_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = dir.path().join("bad.toml");
    // Three distinct errors in three sections: a one-node cluster, a zero connect timeout,
    // an etcd coordinator without endpoints.
    std::fs::write(
        &cfg,
        "[timeouts]\nconnect = \"0s\"\n\
         [coordinator]\nkind = \"etcd\"\n[coordinator.etcd]\nendpoints = []\n\
         [webhook]\nallow_unauthenticated = true\n\
         [[cluster]]\nname = \"c\"\nnodes = [{ addr = \"127.0.0.1:1\" }]\n",
    )
    .expect("write");
    let out = check_config(&cfg);
    let code = out.status.code().unwrap_or(-1);
    let (out, err) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert_eq!(code, 2, "{out}{err}");
    for field in ["cluster.c.nodes", "timeouts", "coordinator.etcd.endpoints"] {
        assert!(
            err.contains(&format!(": {field}: ")),
            "{field} missing from:\n{err}"
        );
    }
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error: ")).count(),
        3,
        "one line per error:\n{err}"
    );
}
