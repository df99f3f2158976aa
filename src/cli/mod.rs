//! The binary's front end: clap commands, dispatch, and the exit codes of [`Exit`].
//!
//! Exit codes (all subcommands): 0 = fine, 1 = the command ran and found something that needs
//! attention (see `status`), 2 = config or usage error (clap also exits 2 on bad arguments),
//! 3 = coordinator unreachable or too few observations: retrying may help.

pub mod controls;
pub mod demo;
pub mod history;
pub mod man;
pub mod ops;
pub mod progress;
pub mod render;
pub mod status;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{self, Loaded};
use crate::controls::Change;
use crate::decide::Trigger;
use crate::error::{Error, Exit};
use crate::model::Addr;
use crate::reconcile::handle::{Handles, Mode};

use self::ops::Reply;

const DEFAULT_CONFIG: &str = "/etc/pika-remedy/pika-remedy.toml";

#[derive(Parser, Debug)]
#[command(
    name = "pika-remedy",
    version = env!("PIKA_REMEDY_VERSION"),
    about = "Failover and old-master demotion for Pika (and Redis) clusters"
)]
pub struct Cli {
    /// Log format on stderr (`RUST_LOG` sets the filter; default `info`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "PIKA_REMEDY_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The config file every command but `check-config` reads.
#[derive(clap::Args, Debug)]
pub struct ConfigArg {
    /// Config file.
    #[arg(long, short = 'c', env = "PIKA_REMEDY_CONFIG", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Parse and validate a config file (secrets are resolved too); print a summary.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Observe every configured node once and show roles, links and offsets, the record, the
    /// shared pause and maintenance, the lock holder, and whether reality agrees with the record.
    /// Exit 0 = all reachable, one master, the recorded one, serve would do nothing;
    /// 1 = needs attention (the reasons are listed); 2 = config or usage error.
    Status {
        #[command(flatten)]
        config: ConfigArg,
        /// Only this cluster.
        #[arg(long)]
        cluster: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Refresh until interrupted (Ctrl-C); the exit code is the last report's.
        #[arg(long)]
        watch: bool,
        /// How often `--watch` refreshes.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        interval: std::time::Duration,
    },
    /// Run the service: webhook, operator API, /metrics, poller (and the periodic check if set).
    Serve {
        #[command(flatten)]
        config: ConfigArg,
        /// Override `service.listen`.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Dry run: show the observation, the record, the plan with ranked candidates and the exact
    /// commands that would be sent for a trigger (default: the periodic check).
    Plan {
        #[command(flatten)]
        config: ConfigArg,
        /// The cluster, as named in the config.
        #[arg(long)]
        cluster: String,
        /// Plan a failover (optionally to this node) instead of the periodic check.
        #[arg(long)]
        failover: bool,
        /// Plan a failover to this node.
        #[arg(long)]
        to: Option<Addr>,
        /// Plan a failover that accepts data loss (see `failover --accept-data-loss`).
        #[arg(long)]
        accept_data_loss: bool,
        /// Print JSON (see docs/json.md) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Fail over now (the recorded master must be unreachable), optionally to a given node.
    /// Ignores the cooldown. Exit: 0 done or nothing to do, 1 refused/failed/lock held, 3 retry.
    Failover {
        #[command(flatten)]
        config: ConfigArg,
        /// The cluster, as named in the config.
        #[arg(long)]
        cluster: String,
        /// The replica to promote (default: the best one).
        #[arg(long)]
        to: Option<Addr>,
        /// When every replica is more than `policy.max_lag_bytes` behind the master's last
        /// seen offset, promote the best one anyway; the plan and the audit event state the
        /// estimated loss accepted.
        #[arg(long)]
        accept_data_loss: bool,
        /// Decide and print, send nothing.
        #[arg(long)]
        dry_run: bool,
        /// Do not ask for confirmation on a terminal.
        #[arg(long, short = 'y')]
        yes: bool,
        /// Print JSON (see docs/json.md) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Planned switchover of a healthy master (Redis: writes paused while the target catches up).
    /// With `--at`: scheduled in the coordinator (one per cluster), run by a `serve` instance
    /// when the time comes (not while the cluster is paused; expires after `--max-delay`),
    /// shown by `status`; `--cancel` removes it.
    Switchover {
        #[command(flatten)]
        config: ConfigArg,
        /// The cluster, as named in the config.
        #[arg(long)]
        cluster: String,
        /// The replica to promote (default: the best one).
        #[arg(long)]
        to: Option<Addr>,
        /// Schedule it: RFC 3339 (2026-12-01T18:00:00Z) or a delay from now (+10m).
        #[arg(long, conflicts_with_all = ["dry_run", "cancel"])]
        at: Option<String>,
        /// With --at: replace the cluster's scheduled switchover instead of refusing.
        #[arg(long, requires = "at")]
        replace: bool,
        /// With --at: run at most this late (held by a pause, no instance up), then expire.
        #[arg(long, requires = "at", default_value = "5m", value_parser = humantime::parse_duration)]
        max_delay: std::time::Duration,
        /// With --at: why (kept in the schedule and the audit trail).
        #[arg(long, requires = "at", default_value = "")]
        reason: String,
        /// Cancel the cluster's scheduled switchover.
        #[arg(long, conflicts_with_all = ["to", "dry_run"])]
        cancel: bool,
        /// Decide and print, send nothing.
        #[arg(long)]
        dry_run: bool,
        /// Do not ask for confirmation on a terminal.
        #[arg(long, short = 'y')]
        yes: bool,
        /// Print JSON (see docs/json.md) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Make a node follow the recorded master (`SLAVEOF … force` on Pika) and persist it.
    Demote {
        #[command(flatten)]
        config: ConfigArg,
        /// The cluster, as named in the config.
        #[arg(long)]
        cluster: String,
        /// The node (host:port, as configured).
        #[arg(long)]
        node: Addr,
        /// Demote it even if it diverged and `policy.diverged = "refuse"`: its own writes are
        /// discarded (the plan still takes a snapshot first under policy `snapshot`).
        #[arg(long)]
        accept_data_loss: bool,
        /// Decide and print, send nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON (see docs/json.md) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Record the master by hand (bootstrap, or after an operator's repair).
    Record {
        #[command(flatten)]
        config: ConfigArg,
        /// The cluster, as named in the config.
        #[arg(long)]
        cluster: String,
        /// The master to record (host:port, as configured).
        #[arg(long)]
        master: Addr,
        /// Record it even if it does not answer as master.
        #[arg(long)]
        force: bool,
        /// Print JSON (see docs/json.md) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show the recorded topology and the audit trail (from `service.events_file`).
    History {
        #[command(flatten)]
        config: ConfigArg,
        /// Only this cluster.
        #[arg(long)]
        cluster: Option<String>,
        /// How many events (the latest).
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Only events since this time: RFC 3339 (2026-01-02T03:04:05Z) or a duration ago (1h).
        #[arg(long)]
        since: Option<String>,
        /// Print JSON (see docs/json.md) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Pause automatic actions (manual commands still run), shared by every instance through
    /// the coordinator. Without --cluster: every cluster.
    Pause {
        #[command(flatten)]
        config: ConfigArg,
        /// Only this cluster.
        #[arg(long)]
        cluster: Option<String>,
        /// Why (shown in status, the API and the audit trail).
        #[arg(long)]
        reason: String,
        /// Lift the pause by itself after this long (e.g. 30m, 2h).
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        expires_in: Option<std::time::Duration>,
        /// Print the controls as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Lift a pause set by `pause` (the global one without --cluster).
    Resume {
        #[command(flatten)]
        config: ConfigArg,
        /// Only this cluster's pause.
        #[arg(long)]
        cluster: Option<String>,
        /// Print the controls as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Per-node maintenance: `no-promote` (never a candidate) or `hands-off` (no command sent).
    Maintenance {
        #[command(subcommand)]
        action: MaintenanceCmd,
    },
    /// Acknowledge the last automatic failover: lifts its cooldown (audited).
    Ack {
        #[command(flatten)]
        config: ConfigArg,
        /// The cluster, as named in the config.
        #[arg(long)]
        cluster: String,
        /// Why (kept in the audit trail).
        #[arg(long)]
        reason: String,
        /// Print the controls as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script (e.g. `pika-remedy completions bash > /etc/bash_completion.d/pika-remedy`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), generated from these definitions (`pika-remedy man | man -l -`).
    Man,
    /// Self-contained demo: 3 local redis-servers (or real Pika with `--pika-bin`), kill -9 the
    /// master, restart it (`make demo`, `make demo PIKA_BIN=/path/to/pika`).
    Demo {
        /// Run the demo on this Pika server binary instead of redis-server.
        #[arg(long)]
        pika_bin: Option<PathBuf>,
        /// Pika's stock config file to start from (default: `pika.conf` beside the binary's
        /// folder, or in it).
        #[arg(long, requires = "pika_bin")]
        pika_conf: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum MaintenanceCmd {
    /// Put a node under maintenance (replaces an earlier entry for it).
    Set {
        #[command(flatten)]
        config: ConfigArg,
        /// The cluster, as named in the config.
        #[arg(long)]
        cluster: String,
        /// The node (host:port, as configured).
        #[arg(long)]
        node: Addr,
        /// no-promote: never a promotion candidate; hands-off: no command is sent to it.
        #[arg(long, value_parser = ["no-promote", "hands-off"])]
        mode: String,
        /// Why (shown in status, the API and the audit trail).
        #[arg(long)]
        reason: String,
        /// Expires after this long (e.g. 4h); an expired entry no longer applies.
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        expires_in: Option<std::time::Duration>,
        /// Print the controls as JSON.
        #[arg(long)]
        json: bool,
    },
    /// End a node's maintenance.
    Clear {
        #[command(flatten)]
        config: ConfigArg,
        /// The cluster, as named in the config.
        #[arg(long)]
        cluster: String,
        /// The node (host:port, as configured).
        #[arg(long)]
        node: Addr,
        /// Print the controls as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show pauses, maintenance and acknowledgements.
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn init_tracing(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    // No ANSI colour unless stderr is a terminal and NO_COLOR is unset (https://no-color.org).
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    // A second init (tests) is harmless; ignore it.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Parse the arguments, run the command, print its reply; the process's exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo prints its own timeline; its log lines would only clutter it.
    let level = if matches!(cli.command, Command::Demo { .. }) {
        "warn"
    } else {
        "info"
    };
    init_tracing(cli.log_format, level);
    let exit = match run(cli.command) {
        Ok(reply) => {
            print!("{}", reply.text);
            reply.exit
        }
        // The command could not run at all: a config or usage error (exit 2), on stderr.
        Err(e) => {
            eprintln!("error: {e}");
            Exit::Usage
        }
    };
    ExitCode::from(u8::try_from(exit.code()).unwrap_or(1))
}

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("cannot start the tokio runtime", e))
}

/// `Err` = the command could not run (config/usage error, exit 2); `Ok` = print and exit with its code.
pub fn run(command: Command) -> Result<Reply, Error> {
    match command {
        Command::CheckConfig { file } => check_config(&file),
        Command::Status {
            config,
            cluster,
            json,
            watch,
            interval,
        } => {
            let loaded = config::load(&config.config)?;
            if watch {
                runtime()?.block_on(status::watch(&loaded, cluster.as_deref(), json, interval))
            } else {
                runtime()?.block_on(status::run(&loaded, cluster.as_deref(), json))
            }
        }
        Command::Serve { config, listen } => serve(&config.config, listen),
        Command::Plan {
            config,
            cluster,
            failover,
            to,
            accept_data_loss,
            json,
        } => {
            let trigger = if failover || to.is_some() || accept_data_loss {
                Trigger::Failover {
                    to,
                    accept_data_loss,
                }
            } else {
                Trigger::Periodic
            };
            operator(&config.config, &cluster, Op::Plan(trigger), json)
        }
        Command::Failover {
            config,
            cluster,
            to,
            accept_data_loss,
            dry_run,
            yes,
            json,
        } => {
            let trigger = Trigger::Failover {
                to,
                accept_data_loss,
            };
            if !dry_run && !yes && !json && !confirm(&config, &cluster, &trigger)? {
                return Ok(Reply::new("aborted: nothing sent\n".into(), Exit::NotDone));
            }
            act(&config, &cluster, dry_run, trigger, json)
        }
        Command::Switchover {
            config,
            cluster,
            to,
            at: Some(at),
            replace,
            max_delay,
            reason,
            json,
            ..
        } => {
            let at = parse_at(&at)?;
            let change = Change::ScheduleSwitchover {
                cluster,
                to,
                at,
                max_delay,
                reason,
                replace,
            };
            control(&config, change, json)
        }
        Command::Switchover {
            config,
            cluster,
            cancel: true,
            json,
            ..
        } => control(&config, Change::CancelSwitchover { cluster }, json),
        Command::Switchover {
            config,
            cluster,
            to,
            dry_run,
            yes,
            json,
            ..
        } => {
            let trigger = Trigger::Switchover { to };
            if !dry_run && !yes && !json && !confirm(&config, &cluster, &trigger)? {
                return Ok(Reply::new("aborted: nothing sent\n".into(), Exit::NotDone));
            }
            act(&config, &cluster, dry_run, trigger, json)
        }
        Command::Demote {
            config,
            cluster,
            node,
            accept_data_loss,
            dry_run,
            json,
        } => act(
            &config,
            &cluster,
            dry_run,
            Trigger::Demote {
                node,
                accept_data_loss,
            },
            json,
        ),
        Command::Record {
            config,
            cluster,
            master,
            force,
            json,
        } => operator(&config.config, &cluster, Op::Record { master, force }, json),
        Command::History {
            config,
            cluster,
            limit,
            since,
            json,
        } => {
            let loaded = config::load(&config.config)?;
            if let Some(c) = &cluster {
                if loaded.cluster(c).is_none() {
                    return Err(Error::Usage(format!("unknown cluster {c:?}")));
                }
            }
            let since = since.as_deref().map(parse_since).transpose()?;
            operator_all(loaded, |loaded, handles| async move {
                let q = history::Query {
                    cluster: cluster.as_deref(),
                    since,
                    limit,
                };
                history::history(&loaded, handles.coord.as_ref(), &q, json).await
            })
        }
        Command::Pause {
            config,
            cluster,
            reason,
            expires_in,
            json,
        } => control(
            &config,
            Change::Pause {
                cluster,
                reason,
                expires_in,
            },
            json,
        ),
        Command::Resume {
            config,
            cluster,
            json,
        } => control(&config, Change::Resume { cluster }, json),
        Command::Ack {
            config,
            cluster,
            reason,
            json,
        } => control(&config, Change::Ack { cluster, reason }, json),
        Command::Maintenance { action } => match action {
            MaintenanceCmd::Set {
                config,
                cluster,
                node,
                mode,
                reason,
                expires_in,
                json,
            } => {
                let mode = mode.parse().map_err(Error::Usage)?;
                control(
                    &config,
                    Change::SetMaintenance {
                        cluster,
                        node,
                        mode,
                        reason,
                        expires_in,
                    },
                    json,
                )
            }
            MaintenanceCmd::Clear {
                config,
                cluster,
                node,
                json,
            } => control(&config, Change::ClearMaintenance { cluster, node }, json),
            MaintenanceCmd::List { config, json } => operator_all(
                config::load(&config.config)?,
                |_loaded, handles| async move { controls::list(handles.coord.as_ref(), json).await },
            ),
        },
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut cmd, "pika-remedy", &mut out);
            Ok(Reply::new(
                String::from_utf8_lossy(&out).into_owned(),
                Exit::Ok,
            ))
        }
        Command::Man => Ok(Reply::new(
            man::render().map_err(|e| Error::io("cannot render the manual page", e))?,
            Exit::Ok,
        )),
        Command::Demo {
            pika_bin,
            pika_conf,
        } => {
            let server = match pika_bin {
                Some(bin) => demo::Server::pika(bin, pika_conf)?,
                None => demo::Server::Redis,
            };
            let exit = runtime()?.block_on(demo::run(server))?;
            Ok(Reply::new(String::new(), exit))
        }
    }
}

/// `switchover --at`: RFC 3339, or `+DURATION` from now.
fn parse_at(s: &str) -> Result<u64, Error> {
    if let Some(rel) = s.strip_prefix('+') {
        return humantime::parse_duration(rel)
            .map(|d| crate::reconcile::now_unix().saturating_add(d.as_secs().max(1)))
            .map_err(|e| Error::Usage(format!("--at {s:?}: {e}")));
    }
    let at = crate::controls::parse_rfc3339(s)
        .map_err(|e| Error::Usage(format!("--at: {e} (or a delay such as +10m)")))?;
    if at <= crate::reconcile::now_unix() {
        return Err(Error::Usage(format!("--at {s}: not in the future")));
    }
    Ok(at)
}

/// `--since`: RFC 3339, or a duration before now.
fn parse_since(s: &str) -> Result<u64, Error> {
    if let Ok(t) = crate::controls::parse_rfc3339(s) {
        return Ok(t);
    }
    humantime::parse_duration(s)
        .map(|d| crate::reconcile::now_unix().saturating_sub(d.as_secs()))
        .map_err(|_| {
            Error::Usage(format!(
                "--since {s:?}: neither an RFC 3339 time nor a duration such as 1h"
            ))
        })
}

fn check_config(file: &Path) -> Result<Reply, Error> {
    let loaded = config::load(file)?;
    let c = &loaded.config;
    let clusters: Vec<String> = c
        .clusters
        .iter()
        .map(|cl| format!("{} ({} nodes)", cl.name, cl.nodes.len()))
        .collect();
    let mut text = format!(
        "{}: ok: {} cluster(s): {}; coordinator {}\n",
        file.display(),
        c.clusters.len(),
        clusters.join(", "),
        format!("{:?}", c.coordinator.kind).to_lowercase()
    );
    // Only `serve` needs the webhook's authentication; the other commands run without it.
    if let Err(e) = c.check_serve(&file.display().to_string()) {
        text.push_str(&format!("note: {}: {}\n", e.field, e.message));
    }
    Ok(Reply::new(text, Exit::Ok))
}

fn serve(path: &Path, listen: Option<std::net::SocketAddr>) -> Result<Reply, Error> {
    let loaded = config::load(path)?;
    loaded.config.check_serve(&path.display().to_string())?;
    runtime()?.block_on(async move {
        let addr = listen.unwrap_or(loaded.config.service.listen);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Error::io(format!("cannot listen on {addr}"), e))?;
        crate::service::app::run(loaded, listener, shutdown_signal()).await
    })?;
    Ok(Reply::new(String::new(), Exit::Ok))
}

/// SIGTERM or SIGINT.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// A change of the shared controls: names checked against the config (usage error), applied
/// in the coordinator, audited.
fn control(config: &ConfigArg, change: Change, json: bool) -> Result<Reply, Error> {
    let loaded = config::load(&config.config)?;
    controls::validate(&loaded, &change)?;
    operator_all(loaded, |loaded, handles| async move {
        controls::change(&loaded, handles.coord.as_ref(), change, json).await
    })
}

/// patronictl-like: on a terminal, show the plan and ask before acting (`--yes` skips it; no
/// question without a terminal, so scripts are not blocked).
fn confirm(config: &ConfigArg, cluster: &str, trigger: &Trigger) -> Result<bool, Error> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() || !std::io::stdout().is_terminal() {
        return Ok(true);
    }
    let plan = operator(&config.config, cluster, Op::Plan(trigger.clone()), false)?;
    print!("{}", plan.text);
    if plan.exit != Exit::Ok {
        // A refusal: acting would be refused the same way; let the command say so.
        return Ok(true);
    }
    print!("Apply this plan to cluster {cluster}? [y/N] ");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    Ok(matches!(line.trim(), "y" | "Y" | "yes" | "YES"))
}

/// What an operator command does with its cluster's handle.
enum Op {
    Plan(Trigger),
    Act { trigger: Trigger, dry_run: bool },
    Record { master: Addr, force: bool },
}

fn act(
    config: &ConfigArg,
    cluster: &str,
    dry_run: bool,
    trigger: Trigger,
    json: bool,
) -> Result<Reply, Error> {
    operator(&config.config, cluster, Op::Act { trigger, dry_run }, json)
}

/// Load the config, connect the coordinator and build the handles once, then run `f`. A
/// coordinator that cannot be reached yet is a reply (exit 3, same contract as a failed read
/// under way); a bad coordinator setting is a config error.
fn operator_all<F, Fut>(loaded: Loaded, f: F) -> Result<Reply, Error>
where
    F: FnOnce(Loaded, Handles) -> Fut,
    Fut: std::future::Future<Output = Reply>,
{
    runtime()?.block_on(async {
        match Handles::connect(&loaded).await {
            Ok(handles) => Ok(f(loaded, handles).await),
            Err(e) if e.is_retryable() => Ok(Reply::error(&e.into())),
            Err(e) => Err(e.into()),
        }
    })
}

/// Run `op` with the handle of `cluster` (unknown cluster = usage error).
fn operator(path: &Path, cluster: &str, op: Op, json: bool) -> Result<Reply, Error> {
    let loaded = config::load(path)?;
    let Some(cl) = loaded.cluster(cluster) else {
        return Err(Error::Usage(format!(
            "unknown cluster {cluster:?} in {}",
            path.display()
        )));
    };
    // A node that is not configured is a usage error (exit 2), not a refusal.
    let named = match &op {
        Op::Plan(t) | Op::Act { trigger: t, .. } => match t {
            Trigger::Failover { to, .. } | Trigger::Switchover { to } => to.clone(),
            Trigger::Demote { node, .. } => Some(node.clone()),
            _ => None,
        },
        Op::Record { .. } => None,
    };
    if let Some(n) = named {
        if !cl.nodes.iter().any(|x| x.addr == n) {
            return Err(Error::Usage(format!(
                "node {n} is not configured in cluster {cluster}"
            )));
        }
    }
    operator_all(loaded, |loaded, handles| async move {
        let Some(h) = handles.get(cluster) else {
            return Reply::error(&Error::Usage(format!("unknown cluster {cluster:?}")));
        };
        match op {
            Op::Plan(t) => ops::plan(&h.ctx(&Mode::default()), &t, json).await,
            Op::Act { trigger, dry_run } => {
                let mode = Mode {
                    dry_run,
                    ..Mode::default()
                };
                let (reply, out) = if json || dry_run {
                    ops::act(h, &mode, trigger, json).await
                } else {
                    // Live step lines on stderr, before the outcome on stdout.
                    let printer: std::sync::Arc<dyn crate::reconcile::Progress> =
                        std::sync::Arc::new(progress::stderr());
                    crate::reconcile::PROGRESS
                        .scope(printer, ops::act(h, &mode, trigger, json))
                        .await
                };
                if !dry_run {
                    ops::audit_cli(&loaded, handles.coord.as_ref(), &out).await;
                }
                reply
            }
            Op::Record { master, force } => {
                let reply = ops::record(h, &master, force, json).await;
                if reply.exit == Exit::Ok {
                    // Audited like every other action (`--force` included).
                    let text = format!(
                        "record master {master} by {}{}",
                        crate::controls::operator(),
                        if force { " (--force)" } else { "" }
                    );
                    controls::audit(&loaded, handles.coord.as_ref(), Some(cluster), &text).await;
                }
                reply
            }
        }
    })
}
