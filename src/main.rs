//! The `orderflow` command line: `serve` (the default) runs the service; `token` prints a JWT; `rebuild` and
//! `parked` operate a running service through its admin API. (The load generator behind BENCHMARKS.md is a
//! program of its own, `orderflow-bench`, in `bench/`.) Exit codes: 0 done, 1 failed (the reason on stderr),
//! 2 bad usage or configuration.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use orderflow::admin_client::AdminClient;
use orderflow::app::Application;
use orderflow::auth::{Authenticator, Role, resolve_secret};
use orderflow::config::Settings;

#[derive(Parser)]
#[command(name = "orderflow", version, about = "CQRS + event sourcing for orders, on actors")]
struct Cli {
    /// A TOML config file layered over the built-in defaults (env ORDERFLOW__SECTION__KEY wins over both).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Commands>,
}

#[derive(Subcommand)]
enum Commands {
    /// Run the service (the default).
    Serve,
    /// Print a JWT signed with the configured secret (or the data folder's generated one).
    Token {
        #[arg(long, value_enum)]
        role: RoleArg,
        /// The subject: for a customer, its customerId.
        #[arg(long)]
        sub: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 86_400)]
        ttl: u64,
    },
    /// Rebuild a view (`search` or `revenue`) of the running service from the write model, with progress.
    Rebuild {
        /// The projection to rebuild.
        name: String,
        /// The service's base URL (default: from `server.host` / `server.port`).
        #[arg(long)]
        url: Option<String>,
    },
    /// List, replay or discard the running service's parked (poison) events.
    Parked {
        #[command(subcommand)]
        action: ParkedAction,
        /// The service's base URL (default: from `server.host` / `server.port`).
        #[arg(long, global = true)]
        url: Option<String>,
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
            ExitCode::FAILURE
        }
    }
}

fn token(settings: &Settings, role: RoleArg, sub: &str, ttl: u64) -> anyhow::Result<()> {
    let (secret, _) = resolve_secret(&settings.auth, &settings.data_dir)?;
    let role = match role {
        RoleArg::Admin => Role::Admin,
        RoleArg::Customer => Role::Customer,
    };
    println!("{}", Authenticator::new(&settings.auth, &secret).mint(sub, role, ttl)?);
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

fn serve(settings: Settings) -> anyhow::Result<()> {
    orderflow::telemetry::init_logging(&settings.log);
    actix_web::rt::System::new().block_on(async move {
        let host = settings.server.host.clone();
        let app = Application::build(settings).await?;
        let scheme = app.scheme();
        println!("orderflow listening on {scheme}://{host}:{}", app.port());
        println!("console: {scheme}://{host}:{}/console", app.port());
        if let Some(token) = app.startup_admin_token() {
            println!("admin token (24 h): {token}");
        }
        tracing::info!(port = app.port(), "serving");
        app.run_until_stopped().await?;
        tracing::info!("stopped");
        Ok(())
    })
}
