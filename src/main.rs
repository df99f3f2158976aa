//! The `pika-remedy` binary: a thin clap front end over the library.
//!
//! Exit codes (all subcommands): 0 = fine, 1 = the command ran and found something that needs
//! attention (see `status`), 2 = config or usage error (clap also exits 2 on bad arguments).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use pika_remedy::config;
use pika_remedy::decide::Trigger;
use pika_remedy::model::Addr;

const DEFAULT_CONFIG: &str = "/etc/pika-remedy/pika-remedy.toml";

/// Exit code for config and usage errors.
const EXIT_USAGE: u8 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "pika-remedy",
    version = env!("PIKA_REMEDY_VERSION"),
    about = "Failover and old-master demotion for Pika (and Redis) clusters"
)]
struct Cli {
    /// Log format on stderr (`RUST_LOG` sets the filter; default `info`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "PIKA_REMEDY_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// The config file every command but `check-config` reads.
#[derive(clap::Args, Debug)]
struct ConfigArg {
    /// Config file.
    #[arg(long, short = 'c', env = "PIKA_REMEDY_CONFIG", default_value = DEFAULT_CONFIG)]
    config: PathBuf,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Parse and validate a config file (secrets are resolved too); print a summary.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Observe every configured node once and show roles, links and offsets.
    /// Exit 0 = all reachable and one master per cluster, 1 = needs attention, 2 = config error.
    Status {
        #[command(flatten)]
        config: ConfigArg,
        /// Only this cluster.
        #[arg(long)]
        cluster: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
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
        #[arg(long)]
        cluster: String,
        /// Plan a failover (optionally to this node) instead of the periodic check.
        #[arg(long)]
        failover: bool,
        #[arg(long)]
        to: Option<Addr>,
    },
    /// Fail over now (the recorded master must be unreachable), optionally to a given node.
    /// Ignores the cooldown. Exit: 0 done or nothing to do, 1 refused/failed/lock held, 3 retry.
    Failover {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        cluster: String,
        #[arg(long)]
        to: Option<Addr>,
        /// Decide and print, send nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Planned switchover of a healthy master (Redis: writes paused while the target catches up).
    Switchover {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        cluster: String,
        #[arg(long)]
        to: Option<Addr>,
        #[arg(long)]
        dry_run: bool,
    },
    /// Make a node follow the recorded master (`SLAVEOF … force` on Pika) and persist it.
    Demote {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        cluster: String,
        #[arg(long)]
        node: Addr,
        #[arg(long)]
        dry_run: bool,
    },
    /// Record the master by hand (bootstrap, or after an operator's repair).
    Record {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        cluster: String,
        #[arg(long)]
        master: Addr,
        /// Record it even if it does not answer as master.
        #[arg(long)]
        force: bool,
    },
    /// Show the recorded topology and the audit trail (from `service.events_file`).
    History {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        cluster: Option<String>,
        /// How many events.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Self-contained demo: 3 local redis-servers, kill -9 the master, restart it (`make demo`).
    Demo,
}

fn init_tracing(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests) is harmless; ignore it.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo prints its own timeline; its log lines would only clutter it.
    let level = if matches!(cli.command, Command::Demo) {
        "warn"
    } else {
        "info"
    };
    init_tracing(cli.log_format, level);
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")
}

/// `Err` = config/usage error (exit 2); `Ok(code)` otherwise.
fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::CheckConfig { file } => {
            let loaded = config::load(&file)?;
            let c = &loaded.config;
            let clusters: Vec<String> = c
                .clusters
                .iter()
                .map(|cl| format!("{} ({} nodes)", cl.name, cl.nodes.len()))
                .collect();
            println!(
                "{}: ok: {} cluster(s): {}; coordinator {}",
                file.display(),
                c.clusters.len(),
                clusters.join(", "),
                format!("{:?}", c.coordinator.kind).to_lowercase()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Status {
            config,
            cluster,
            json,
        } => {
            let loaded = config::load(&config.config)?;
            let (text, code) =
                runtime()?.block_on(pika_remedy::status::run(&loaded, cluster.as_deref(), json))?;
            print!("{text}");
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
        }
        Command::Serve { config, listen } => {
            let loaded = config::load(&config.config)?;
            let rt = runtime()?;
            rt.block_on(async move {
                let addr = listen.unwrap_or(loaded.config.service.listen);
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr}"))?;
                pika_remedy::app::run(loaded, listener, shutdown_signal())
                    .await
                    .map_err(anyhow::Error::msg)
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan {
            config,
            cluster,
            failover,
            to,
        } => {
            let trigger = if failover || to.is_some() {
                Trigger::Failover { to }
            } else {
                Trigger::Periodic
            };
            operator(&config.config, &cluster, false, Op::Plan(trigger))
        }
        Command::Failover {
            config,
            cluster,
            to,
            dry_run,
        } => act(&config.config, &cluster, dry_run, Trigger::Failover { to }),
        Command::Switchover {
            config,
            cluster,
            to,
            dry_run,
        } => act(
            &config.config,
            &cluster,
            dry_run,
            Trigger::Switchover { to },
        ),
        Command::Demote {
            config,
            cluster,
            node,
            dry_run,
        } => act(&config.config, &cluster, dry_run, Trigger::Demote { node }),
        Command::Record {
            config,
            cluster,
            master,
            force,
        } => operator(
            &config.config,
            &cluster,
            false,
            Op::Record { master, force },
        ),
        Command::History {
            config,
            cluster,
            limit,
        } => {
            let loaded = config::load(&config.config)?;
            let (text, code) = runtime()?.block_on(pika_remedy::ops::history(
                &loaded,
                cluster.as_deref(),
                limit,
            ))?;
            print!("{text}");
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
        }
        Command::Demo => {
            let code = runtime()?
                .block_on(pika_remedy::demo::run())
                .map_err(anyhow::Error::msg)?;
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
        }
    }
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

/// What an operator command does once it has a context.
enum Op {
    Plan(Trigger),
    Act(Trigger),
    Record { master: Addr, force: bool },
}

/// Build the per-cluster context (node client, coordinator, holder) and run `op` with it.
fn operator(
    path: &std::path::Path,
    cluster: &str,
    dry_run: bool,
    op: Op,
) -> anyhow::Result<ExitCode> {
    let loaded = config::load(path)?;
    let cfg = loaded
        .cluster(cluster)
        .with_context(|| format!("unknown cluster {cluster:?} in {}", path.display()))?
        .clone();
    let rt = runtime()?;
    let code = rt.block_on(async {
        let coord = match pika_remedy::app::coordinator(&loaded).await {
            Ok(c) => c,
            // Same contract as a failed read under way: unreachable is retryable (exit 3).
            Err(e) if e.is_retryable() => {
                println!("{e}");
                return anyhow::Ok(pika_remedy::ops::exit::RETRY);
            }
            Err(e) => return Err(anyhow::Error::new(e)),
        };
        let nodes = pika_remedy::node::redis::RedisNodes::new(
            &loaded.config.timeouts,
            loaded.password(cluster).cloned(),
        )
        .with_renames(cfg.renames());
        let holder = pika_remedy::app::holder(&loaded);
        let ctx = pika_remedy::reconcile::Ctx {
            cluster: &cfg,
            nodes: &nodes,
            coord: &coord,
            policy: &loaded.config.policy,
            holder: &holder,
            has_password: loaded
                .password(cluster)
                .is_some_and(|p| !p.expose().is_empty()),
            dry_run,
            paused: false,
            last_seen_master: None,
        };
        let (text, code) = match op {
            Op::Plan(t) => pika_remedy::ops::plan(&ctx, &t).await,
            Op::Act(t) => {
                let (text, out, code) = pika_remedy::ops::act(&ctx, t).await;
                if !dry_run {
                    pika_remedy::ops::audit_cli(&loaded, &coord, &out).await;
                }
                (text, code)
            }
            Op::Record { master, force } => pika_remedy::ops::record(&ctx, &master, force).await,
        };
        print!("{text}");
        anyhow::Ok(code)
    })?;
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

fn act(
    path: &std::path::Path,
    cluster: &str,
    dry_run: bool,
    trigger: Trigger,
) -> anyhow::Result<ExitCode> {
    operator(path, cluster, dry_run, Op::Act(trigger))
}
