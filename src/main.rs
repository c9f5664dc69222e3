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

#[tokio::main]
async fn main() -> std::process::ExitCode {
    return_large_allocations_to_the_system();
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
    panels::telemetry::init(config.log_format, &config.rust_log);
    let result = match cli.command.unwrap_or(Command::Serve { no_workers: false }) {
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

/// glibc keeps freed memory in per-thread arenas; each password hash allocates 19 MiB, so a
/// burst of logins left the process at about 1 GB for good (measured by the load benchmark).
/// Served from mmap instead, blocks of 1 MiB or more go back to the system when freed.
fn return_large_allocations_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator tuning; it takes the allocator's own lock and is
    // called once, before any allocation of that size.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}
