//! The `pika-remedy` binary: a thin clap front end over the library.
//!
//! Exit codes (all subcommands): 0 = fine, 1 = the command ran and found something that needs
//! attention (see `status`), 2 = config or usage error (clap also exits 2 on bad arguments).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use pika_remedy::config;

const DEFAULT_CONFIG: &str = "/etc/pika-remedy/pika-remedy.toml";

/// Exit code for config and usage errors.
const EXIT_USAGE: u8 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "pika-remedy",
    version,
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
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
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
    init_tracing(cli.log_format);
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
    }
}
