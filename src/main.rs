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
    /// Create the first admin of an organisation (for when registration is closed). Reads the
    /// password from standard input, or prompts for it on a terminal.
    CreateAdmin {
        /// The organisation's slug (created when new).
        #[arg(long)]
        tenant: String,
        /// The admin's e-mail address.
        #[arg(long)]
        email: String,
    },
    /// Re-encrypt every data-source secret with the current ENCRYPTION_KEY (after adding a new key
    /// and moving the old one to ENCRYPTION_KEYS), then exit.
    RotateSecrets,
    /// Print the OpenAPI document (JSON) and exit.
    Openapi,
}

/// mimalloc instead of glibc's malloc: under load glibc's per-thread arenas contend on their locks
/// and keep freed memory (bench/README.md, findings 11 and 15).
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
    let cleared = clear_libpq_environment();
    if let Some(Command::CreateAdmin { .. }) = cli.command
        && let Err(err) = read_password_now()
    {
        eprintln!("panels: {err}");
        return std::process::ExitCode::from(2);
    }
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
        Ok(runtime) => runtime.block_on(async {
            if !cleared.is_empty() {
                // Logged once telemetry is up (run() sets it up); printed here for the terminal.
                eprintln!(
                    "panels: ignoring {} (put these settings into DATABASE_URL): they would apply to tenants' database sources too",
                    cleared.join(", ")
                );
            }
            run(cli.command, config).await
        }),
        Err(err) => {
            eprintln!("panels: cannot start the async runtime: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The libpq variables the PostgreSQL driver would read for *every* connection it makes, a
/// tenant's `database` source included (the client certificate, options, root certificate of
/// the operator's own database). They are removed before anything connects; the same settings go
/// into `DATABASE_URL` (`sslcert=`, `sslkey=`, `sslrootcert=`, `options=`). Answers the names
/// removed.
fn clear_libpq_environment() -> Vec<&'static str> {
    const NAMES: &[&str] = &[
        "PGHOST",
        "PGHOSTADDR",
        "PGPORT",
        "PGUSER",
        "PGPASSWORD",
        "PGPASSFILE",
        "PGDATABASE",
        "PGOPTIONS",
        "PGSSLMODE",
        "PGSSLCERT",
        "PGSSLKEY",
        "PGSSLROOTCERT",
        "PGAPPNAME",
    ];
    let present: Vec<&'static str> = NAMES
        .iter()
        .copied()
        .filter(|name| std::env::var_os(name).is_some())
        .collect();
    for name in &present {
        // SAFETY: called from `main` before the runtime (or any other thread) starts, so nothing
        // reads the environment concurrently.
        unsafe { std::env::remove_var(name) };
    }
    present
}

/// The password `panels create-admin` reads: prompted on a terminal, else the first line of
/// standard input. Read before the runtime starts, kept for the command.
static ADMIN_PASSWORD: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn read_password_now() -> Result<(), String> {
    use std::io::IsTerminal;
    let password = if std::io::stdin().is_terminal() {
        rpassword::prompt_password("Password for the new admin: ")
            .map_err(|e| format!("cannot read the password: {e}"))?
    } else {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    ADMIN_PASSWORD
        .set(password)
        .map_err(|_| "the password was read twice".to_owned())
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
        Command::CreateAdmin { tenant, email } => {
            let password = ADMIN_PASSWORD.get().cloned().unwrap_or_default();
            match panels::create_admin(config, &tenant, &email, password).await {
                Ok(id) => {
                    println!("created admin {email} (user {id}) of {tenant}");
                    Ok(())
                }
                Err(err) => Err(err),
            }
        }
        Command::RotateSecrets => match panels::rotate_secrets(config).await {
            Ok((checked, rewritten)) => {
                println!(
                    "{checked} data sources checked, {rewritten} re-encrypted with the current key"
                );
                Ok(())
            }
            Err(err) => Err(err),
        },
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
