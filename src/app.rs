//! `Application`: wires the ports to their adapters by config, starts the projectors and the HTTP server.
//! `build` binds the listener (port 0 picks a free port, which tests use), `run_until_stopped` serves until
//! SIGTERM / SIGINT, then lets in-flight requests finish.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix::Actor;
use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};
use anyhow::Context as _;

use crate::actors::projector::{ProjectionHandle, Projections};
use crate::actors::{OrderRegistry, ProjectionStatus, Projector};
use crate::auth::{Authenticator, Role, resolve_secret};
use crate::config::Settings;
use crate::feed::tail::LogTail;
use crate::http::{self, AppState};
use crate::store::EventStore;
use crate::store::sqlite::SqliteEventStore;
use crate::views::Projection;
use crate::views::revenue_sqlite::SqliteRevenueView;
use crate::views::search_sqlite::SqliteSearchView;

/// Read connections per SQLite database.
const READ_CONNECTIONS: usize = 4;

pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
    /// The JWT secret lives in the data folder (generated on first run), not in the config.
    secret_in_data_dir: bool,
}

impl Application {
    /// Opens the stores, starts the projectors and binds the server. Must run inside an actix system.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&settings.data_dir)
            .with_context(|| format!("cannot create data_dir {}", settings.data_dir.display()))?;
        let (secret, _generated) = resolve_secret(&settings.auth, &settings.data_dir)
            .with_context(|| format!("cannot read or create {}/jwt_secret", settings.data_dir.display()))?;
        let dir = &settings.data_dir;

        let sqlite_store = SqliteEventStore::open(dir, &settings.store, READ_CONNECTIONS).context("event store")?;
        let store: Arc<dyn EventStore> = sqlite_store.clone();
        let search = SqliteSearchView::open(dir, READ_CONNECTIONS).context("search view")?;
        let revenue = SqliteRevenueView::open(dir, READ_CONNECTIONS).context("revenue view")?;

        let mut handles = Vec::new();
        for projection in [search.clone() as Arc<dyn Projection>, revenue.clone() as Arc<dyn Projection>] {
            let checkpoint = projection.checkpoint().await.context("reading a projection checkpoint")?;
            let status = ProjectionStatus::new(projection.name());
            status.set_position(checkpoint);
            let feed = LogTail::new(Arc::clone(&store), sqlite_store.head(), checkpoint);
            let addr =
                Projector::new(projection, Box::new(feed), Arc::clone(&status), settings.projections.batch_size).start();
            handles.push(ProjectionHandle { status, addr });
        }

        let registry = OrderRegistry::new(
            Arc::clone(&store),
            settings.actors.mailbox_capacity,
            settings.store.snapshot_every,
            Duration::from_millis(settings.actors.idle_timeout_ms),
        );
        let state = web::Data::new(AppState {
            registry,
            store,
            search,
            revenue,
            projections: Projections::new(handles),
            auth: Authenticator::new(&settings.auth, &secret),
            prometheus: crate::telemetry::prometheus(),
            min_version_wait: Duration::from_millis(settings.projections.min_version_wait_ms),
        });

        let listener = TcpListener::bind((settings.server.host.as_str(), settings.server.port))
            .with_context(|| format!("cannot listen on {}:{}", settings.server.host, settings.server.port))?;
        let port = listener.local_addr()?.port();
        let app_state = state.clone();
        let mut server = HttpServer::new(move || App::new().app_data(app_state.clone()).configure(http::routes))
            .shutdown_timeout(settings.server.shutdown_timeout_secs)
            .listen(listener)?;
        if settings.server.workers > 0 {
            server = server.workers(settings.server.workers);
        }
        Ok(Self { port, server: server.run(), state, secret_in_data_dir: settings.auth.jwt_secret.is_empty() })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    /// A ready admin token, printed at startup when the secret is the generated one of the data folder
    /// (the embedded default); `None` when auth is off or the secret comes from the config.
    pub fn startup_admin_token(&self) -> Option<String> {
        let auth = &self.state.auth;
        (auth.enabled() && self.secret_in_data_dir).then(|| auth.mint("admin", Role::Admin, 24 * 3600).ok()).flatten()
    }

    /// Serves until the server is stopped (SIGTERM / SIGINT: stop accepting, finish in-flight requests).
    /// Projection checkpoints are written with each batch, so nothing is left to flush afterwards.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}
