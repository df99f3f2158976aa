//! `pika-remedy man`: the manual page, generated from the clap definitions (the one `make deb`
//! ships): clap_mangen's title, synopsis, global options and command list, then every command
//! with its options, then exit status, environment and files.

use std::fmt::Write as _;

use clap::CommandFactory;

use super::Cli;

/// Escape text for roff: backslashes, hyphens, and a leading dot or quote.
fn esc(s: &str) -> String {
    let t = s.replace('\\', "\\\\").replace('-', "\\-");
    if t.starts_with('.') || t.starts_with('\'') {
        format!("\\&{t}")
    } else {
        t
    }
}

/// One command (and its subcommands) with its options, under `.SS`.
fn command(out: &mut String, path: &str, cmd: &clap::Command) {
    let name = format!("{path} {}", cmd.get_name());
    if cmd.get_subcommands().next().is_none() {
        let _ = writeln!(out, ".SS \"{}\"", esc(&name));
        if let Some(about) = cmd.get_long_about().or(cmd.get_about()) {
            let _ = writeln!(out, "{}", esc(&about.to_string()));
        }
        for a in cmd.get_arguments() {
            let id = a.get_id().as_str();
            if id == "help" || id == "version" || a.is_global_set() {
                continue;
            }
            let mut flag = match (a.get_short(), a.get_long()) {
                (Some(s), Some(l)) => format!("\\fB\\-{s}\\fR, \\fB\\-\\-{}\\fR", esc(l)),
                (None, Some(l)) => format!("\\fB\\-\\-{}\\fR", esc(l)),
                (Some(s), None) => format!("\\fB\\-{s}\\fR"),
                (None, None) => format!("\\fI{}\\fR", esc(&id.to_uppercase())),
            };
            if a.get_long().is_some() && a.get_action().takes_values() {
                let v = a
                    .get_value_names()
                    .and_then(|v| v.first())
                    .map_or_else(|| id.to_uppercase(), ToString::to_string);
                let _ = write!(flag, " \\fI{}\\fR", esc(&v));
            }
            let _ = writeln!(out, ".TP\n{flag}");
            let mut help = a.get_help().map(ToString::to_string).unwrap_or_default();
            let defaults: Vec<String> = a
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .filter(|v| !v.is_empty() && v != "false")
                .collect();
            if !defaults.is_empty() {
                let _ = write!(help, " [default: {}]", defaults.join(", "));
            }
            if let Some(env) = a.get_env() {
                let _ = write!(help, " [env: {}]", env.to_string_lossy());
            }
            let _ = writeln!(out, "{}", esc(&help));
        }
    }
    for sub in cmd.get_subcommands() {
        if sub.get_name() != "help" {
            command(out, &name, sub);
        }
    }
}

const TAIL: &str = r#".SH "EXIT STATUS"
.TP
0
Done, or nothing to do (status: every node reachable, one master, the recorded one).
.TP
1
The command ran and found something that needs attention, or was refused or failed.
.TP
2
Config or usage error.
.TP
3
Coordinator unreachable or too few observations: retrying may help.
.SH ENVIRONMENT
.TP
.B PIKA_REMEDY_CONFIG
The config file (default /etc/pika\-remedy/pika\-remedy.toml).
.TP
.B PIKA_REMEDY_OPERATOR
Who is acting, in the audit trail and the shared controls (default $USER@host).
.TP
.B RUST_LOG
Log filter (default info). Logs go to stderr, without colour unless stderr is a terminal and
.B NO_COLOR
is unset.
.SH FILES
.TP
.I /etc/pika\-remedy/pika\-remedy.toml
The configuration.
.TP
.I /etc/pika\-remedy/env
Optional environment file of the systemd unit (secrets as variables).
.TP
.I /var/lib/pika\-remedy
State directory: local coordinator records, events file.
.TP
.I /usr/share/pika\-remedy
Prometheus rules, Alertmanager route, Grafana dashboard.
.TP
.I /usr/share/doc/pika\-remedy/runbooks
One runbook per alert.
.SH "SEE ALSO"
.BR redis\-cli (1),
.BR systemctl (1)
"#;

/// The whole page (roff).
pub fn render() -> Result<String, std::io::Error> {
    let cmd = Cli::command();
    let man = clap_mangen::Man::new(cmd.clone());
    let mut head = Vec::new();
    man.render_title(&mut head)?;
    man.render_name_section(&mut head)?;
    man.render_synopsis_section(&mut head)?;
    man.render_description_section(&mut head)?;
    man.render_options_section(&mut head)?;
    man.render_subcommands_section(&mut head)?;
    let mut out = String::from_utf8_lossy(&head).into_owned();
    out.push_str(".SH \"COMMANDS IN DETAIL\"\n");
    for sub in cmd.get_subcommands() {
        if sub.get_name() != "help" {
            command(&mut out, "pika-remedy", sub);
        }
    }
    out.push_str(TAIL);
    let mut tail = Vec::new();
    man.render_version_section(&mut tail)?;
    out.push_str(&String::from_utf8_lossy(&tail));
    Ok(out)
}
