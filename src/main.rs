//! The `orderflow` command line: `serve` (the default) runs the service; `token` prints a JWT; `rebuild` and
//! `parked` operate a running service through its admin API; `backup` copies its data folder; `migrate`,
//! `export` and `import` move the event log (`orderflow::lifecycle`). (The load generator behind BENCHMARKS.md is a
//! program of its own, `orderflow-bench`, in `bench/`.) Exit codes: 0 done, 1 failed (the reason on stderr),
//! 2 bad usage or configuration.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use orderflow::admin_client::{AdminClient, UsageError, service_secret};
use orderflow::app::Application;
use orderflow::auth::{Authenticator, Role};
use orderflow::config::Settings;

/// mimalloc instead of the system allocator: a request allocates and frees many small objects across threads,
/// where glibc's malloc spent ~10 % of the service's CPU (BENCHMARKS.md, ablations).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "orderflow", version, about = "CQRS + event sourcing for orders, on actors")]
struct Cli {
    /// A TOML config file layered over the built-in defaults (env ORDERFLOW__SECTION__KEY wins over both).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Commands>,
}

/// The longest lifetime `orderflow token --ttl` mints: 30 days.
const MAX_TOKEN_TTL_SECS: u64 = 30 * 24 * 3600;

#[derive(Subcommand)]
enum Commands {
    /// Run the service (the default).
    Serve,
    /// Print a JWT signed with the service's secret: the configured one, or the one `serve` generated in the
    /// data folder (never created here).
    Token {
        #[arg(long, value_enum)]
        role: RoleArg,
        /// The subject: for a customer, its customerId.
        #[arg(long)]
        sub: String,
        /// Lifetime in seconds, at most 30 days (a token cannot be revoked, only outlived).
        #[arg(long, default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..=MAX_TOKEN_TTL_SECS))]
        ttl: u64,
    },
    /// Rebuild a view (`search` or `revenue`) of the running service from the write model, with progress.
    Rebuild {
        /// The projection to rebuild.
        #[arg(value_parser = clap::builder::PossibleValuesParser::new(orderflow::views::NAMES))]
        name: String,
        /// The service's base URL, e.g. http://127.0.0.1:8080 (`host:port` means http; default: from
        /// `server.host` / `server.port`).
        #[arg(long)]
        url: Option<String>,
    },
    /// Copy the embedded profile's data folder into DIR (empty or new) while the service runs: every database at
    /// one consistent point, checked; start a service with `data_dir` = DIR to restore it.
    Backup {
        /// Where the copy goes (created; must be empty if it exists).
        dir: PathBuf,
    },
    /// List, replay or discard the running service's parked (poison) events.
    Parked {
        #[command(subcommand)]
        action: ParkedAction,
        /// The service's base URL, e.g. http://127.0.0.1:8080 (`host:port` means http; default: from
        /// `server.host` / `server.port`).
        #[arg(long, global = true)]
        url: Option<String>,
    },
    #[command(flatten)]
    Lifecycle(Lifecycle),
}

#[derive(Subcommand)]
enum Lifecycle {
    /// Copy an embedded data folder's events (and live idempotency records) into the distributed profile given
    /// by --config, then verify both sides (counts and a digest per order). Safe to run again: what is there is
    /// skipped. Exit 1 on any difference.
    Migrate {
        /// The embedded data folder to copy from.
        #[arg(long, value_name = "DIR", default_value = "./data")]
        from: PathBuf,
        /// Publish the history to the event feed (Kafka / Kinesis) like new events; by default it is not
        /// published, and the views are built with `orderflow rebuild`.
        #[arg(long)]
        publish: bool,
    },
    /// Write the event log of the configured profile as NDJSON CloudEvents (the feed's envelope), one event a
    /// line, to FILE or stdout, each event as it was written (its schema version and data). Idempotency records
    /// are not events and not exported.
    Export {
        /// Where to write (`-` or nothing: stdout).
        file: Option<PathBuf>,
        /// Every event in today's shape (the upcasters applied), as the feed publishes it, instead of as written.
        #[arg(long)]
        current_shape: bool,
    },
    /// Read NDJSON CloudEvents (as `export` writes them) from FILE or stdin into the configured profile's event
    /// store, which must be empty unless --append.
    Import {
        /// What to read (`-` or nothing: stdin).
        file: Option<PathBuf>,
        /// Add to a store that already holds events (events already there are skipped).
        #[arg(long)]
        append: bool,
        /// Distributed profile: publish the imported events to the event feed; by default they are not, and the
        /// views are built with `orderflow rebuild`.
        #[arg(long)]
        publish: bool,
    },
}

#[derive(Subcommand)]
enum ParkedAction {
    /// Every parked event, oldest first.
    List,
    /// Apply a parked event now and, if it succeeds, those parked behind it.
    Replay { id: String },
    /// Drop a parked event (logged) and let those behind it proceed.
    Discard { id: String },
}

#[derive(Clone, Copy, ValueEnum)]
enum RoleArg {
    Admin,
    Customer,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("orderflow: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command.unwrap_or(Commands::Serve) {
        Commands::Serve => serve(settings),
        Commands::Token { role, sub, ttl } => token(&settings, role, &sub, ttl),
        Commands::Rebuild { name, url } => {
            admin(&settings, url.as_deref(), |c| Box::pin(async move { c.rebuild(&name).await }))
        }
        Commands::Backup { dir } => backup(&settings, &dir),
        Commands::Lifecycle(command) => lifecycle(&settings, command),
        Commands::Parked { action, url } => admin(&settings, url.as_deref(), |c| {
            Box::pin(async move {
                match action {
                    ParkedAction::List => c.parked_list().await,
                    ParkedAction::Replay { id } => c.parked_action(&id, false).await,
                    ParkedAction::Discard { id } => c.parked_action(&id, true).await,
                }
            })
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("orderflow: {e:#}");
            if e.downcast_ref::<UsageError>().is_some() { ExitCode::from(2) } else { ExitCode::FAILURE }
        }
    }
}

fn token(settings: &Settings, role: RoleArg, sub: &str, ttl: u64) -> anyhow::Result<()> {
    let (secret, source) = service_secret(settings)?;
    let role = match role {
        RoleArg::Admin => Role::Admin,
        RoleArg::Customer => Role::Customer,
    };
    println!("{}", Authenticator::new(&settings.auth, &secret).mint(sub, role, ttl)?);
    // On stderr, so that `$(orderflow token …)` is the token alone: a service that refuses it uses another.
    eprintln!("orderflow: signed with the secret of {source}");
    Ok(())
}

fn backup(settings: &Settings, dir: &std::path::Path) -> anyhow::Result<()> {
    let report = orderflow::lifecycle::backup::backup(settings, dir)?;
    println!("backup of {} in {}:\n{report}", settings.data_dir.display(), dir.display());
    Ok(())
}

/// Runs one admin-API command on a small runtime of its own.
fn admin(
    settings: &Settings,
    url: Option<&str>,
    command: impl for<'a> FnOnce(&'a AdminClient) -> futures_util::future::BoxFuture<'a, anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let client = AdminClient::new(settings, url)?;
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(command(&client))
}

/// Runs `migrate`, `export` or `import` on a small runtime of its own.
fn lifecycle(settings: &Settings, command: Lifecycle) -> anyhow::Result<()> {
    use orderflow::lifecycle::{export, migrate};
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        match command {
            Lifecycle::Migrate { from, publish } => migrate::run(settings, &migrate::Options { from, publish }).await,
            Lifecycle::Export { file, current_shape } => {
                let written = match file.filter(|f| f.as_os_str() != "-") {
                    Some(path) => {
                        let file = std::fs::File::create(&path)
                            .map_err(|e| UsageError(format!("cannot create {}: {e}", path.display())))?;
                        export::export(settings, &mut std::io::BufWriter::new(file), current_shape).await?
                    }
                    None => {
                        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                        export::export(settings, &mut out, current_shape).await?
                    }
                };
                eprintln!("orderflow: exported {written} events");
                Ok(())
            }
            Lifecycle::Import { file, append, publish } => {
                let options = export::ImportOptions { append, publish };
                let done = match file.filter(|f| f.as_os_str() != "-") {
                    Some(path) => {
                        let file = std::fs::File::open(&path)
                            .map_err(|e| UsageError(format!("cannot open {}: {e}", path.display())))?;
                        export::import(settings, &mut std::io::BufReader::new(file), &options).await?
                    }
                    None => export::import(settings, &mut std::io::stdin().lock(), &options).await?,
                };
                eprintln!("orderflow: imported {} events ({} already there)", done.written, done.skipped);
                Ok(())
            }
        }
    })
}

fn serve(settings: Settings) -> anyhow::Result<()> {
    orderflow::telemetry::init_logging(&settings.log);
    actix_web::rt::System::new().block_on(async move {
        let host = settings.server.host.clone();
        let app = match Application::build(settings).await {
            Ok(app) => app,
            // Projectors may be running already, and tearing the runtime down under them panics over the real
            // reason: say it in one line and leave from here.
            Err(e) => {
                eprintln!("orderflow: {e:#}");
                std::process::exit(1);
            }
        };
        let scheme = app.scheme();
        println!("orderflow listening on {scheme}://{host}:{}", app.port());
        println!("console: {scheme}://{host}:{}/console", app.port());
        // A bearer token is a credential: it goes to a person at a terminal, never to a log or a container's
        // captured output (`docker compose logs`), where anyone who reads the logs could use it.
        if let Some(token) = app.startup_admin_token() {
            use std::io::IsTerminal as _;
            if std::io::stdout().is_terminal() {
                println!("admin token (24 h): {token}");
            } else {
                println!(
                    "admin token: not printed off a terminal; `orderflow token --role admin --sub admin` mints one"
                );
            }
        }
        tracing::info!(port = app.port(), "serving");
        app.run_until_stopped().await?;
        tracing::info!("stopped");
        Ok(())
    })
}
