//! `panels`: the Panels API server. Thin: parse the command line, read the configuration, set up
//! logging, run.

use clap::{Parser, Subcommand};
use panels::config::Config;

#[derive(Parser)]
#[command(name = "panels", version, about = "Panels REST API")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Create and migrate the database, then serve the API (the default).
    Serve {
        /// Serve the API only; run the sync workers elsewhere with `panels worker`.
        #[arg(long)]
        no_workers: bool,
    },
    /// Run sync workers and the scheduler only (no HTTP).
    Worker,
    /// Create the database if needed and apply the migrations, then exit.
    Migrate,
    /// Print the OpenAPI document (JSON) and exit.
    Openapi,
}

/// mimalloc instead of glibc's malloc: under load glibc's per-thread arenas contend on their locks
/// (futex waits and wake-ups were a fifth of the server's CPU on cache hits) and keep freed memory
/// (a burst of logins, 19 MiB each, left glibc at about 1 GB). Measured in bench/README.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Openapi) = cli.command {
        match serde_json::to_string_pretty(&panels::router::openapi()) {
            Ok(json) => {
                println!("{json}");
                return std::process::ExitCode::SUCCESS;
            }
            Err(err) => {
                eprintln!("panels: {err}");
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("{err}");
            return std::process::ExitCode::from(2);
        }
    };
    // One thread: the current-thread scheduler, which polls the sockets and runs every task on
    // that thread without the work-stealing machinery (queues, wake-ups across threads) of the
    // multi-thread one. Blocking work (password hashing) still goes to the blocking pool.
    let mut runtime = match config.runtime_threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        threads => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            if threads > 0 {
                builder.worker_threads(threads);
            }
            builder
        }
    };
    runtime.enable_all();
    match runtime.build() {
        Ok(runtime) => runtime.block_on(run(cli.command, config)),
        Err(err) => {
            eprintln!("panels: cannot start the async runtime: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(command: Option<Command>, config: Config) -> std::process::ExitCode {
    panels::telemetry::init(config.log_format, &config.rust_log);
    let result = match command.unwrap_or(Command::Serve { no_workers: false }) {
        Command::Serve { no_workers } => panels::serve(config, !no_workers).await,
        Command::Worker => panels::work(config).await,
        Command::Migrate => {
            async {
                panels::db::ensure_database(config.database_url()).await?;
                panels::db::migrate(config.database_url()).await
            }
            .await
        }
        Command::Openapi => Ok(()),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "panels stopped");
            eprintln!("panels: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
