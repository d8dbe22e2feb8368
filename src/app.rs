//! `Application`: wires the ports to their adapters by config, starts the projectors and the HTTP server.
//! `build` binds the listener (port 0 picks a free port, which tests use), `run_until_stopped` serves until
//! SIGTERM / SIGINT, then lets in-flight requests finish.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};
use anyhow::Context as _;

use crate::actors::bridge::Bridge;
use crate::actors::parking::{ParkingLot, PoisonSwitch, Poisonable, RetryPolicy};
use crate::actors::projector::{FeedFactory, ProjectionHandle, Projections};
use crate::actors::{OrderRegistry, ProjectionStatus, Projector};
use crate::auth::{Authenticator, Role, resolve_secret};
use crate::aws::Tables;
use crate::config::{Profile, Settings};
use crate::feed::{FeedError, FeedHealth, FeedSubscription, InProcessFeed};
use crate::feed::kafka::{self, KafkaHealth, KafkaSubscription};
use crate::feed::tail::LogTail;
use crate::http::{self, AppState};
use crate::store::{EventStore, RebuildSource};
use crate::store::dynamo::DynamoEventStore;
use crate::store::sqlite::SqliteEventStore;
use crate::views::parked::{DynamoParkedStore, ParkedStore, SqliteParkedStore};
use crate::views::revenue_dynamo::DynamoRevenueView;
use crate::views::revenue_sqlite::SqliteRevenueView;
use crate::views::search_meili::MeiliSearchView;
use crate::views::search_sqlite::SqliteSearchView;
use crate::views::{Projection, RevenueView, SearchView};

/// Read connections per SQLite database.
const READ_CONNECTIONS: usize = 4;

/// The adapters of one profile, and its running projectors.
struct Wiring {
    store: Arc<dyn EventStore>,
    feed: Arc<dyn FeedHealth>,
    search: Arc<dyn SearchView>,
    revenue: Arc<dyn RevenueView>,
    projections: Projections,
}

/// What every projector of the application shares.
struct ProjectorKit<'a> {
    settings: &'a Settings,
    parked: Arc<dyn ParkedStore>,
    poison: PoisonSwitch,
}

impl ProjectorKit<'_> {
    async fn start(&self, view: Arc<dyn Projection>, feed: FeedFactory, position: u64) -> anyhow::Result<ProjectionHandle> {
        let status = ProjectionStatus::new(view.name());
        status.set_position(position);
        let projection: Arc<dyn Projection> = Arc::new(Poisonable { inner: view, switch: self.poison.clone() });
        let retry = RetryPolicy {
            max_attempts: self.settings.projections.max_attempts,
            backoff: Duration::from_millis(self.settings.projections.retry_backoff_ms),
        };
        let lot = ParkingLot::open(projection, Arc::clone(&self.parked), Arc::clone(&status), retry)
            .await
            .context("loading parked events")?;
        let addr = Projector::new(lot.clone(), feed, Arc::clone(&status), self.settings.projections.batch_size)
            .start_supervised();
        Ok(ProjectionHandle { status, lot, addr })
    }
}

/// SQLite files in `data_dir`; projectors tail the event log.
async fn embedded(settings: &Settings) -> anyhow::Result<Wiring> {
    let dir = &settings.data_dir;
    let store = SqliteEventStore::open(dir, &settings.store, READ_CONNECTIONS).context("event store")?;
    let search = SqliteSearchView::open(dir, READ_CONNECTIONS).context("search view")?;
    let revenue = SqliteRevenueView::open(dir, READ_CONNECTIONS).context("revenue view")?;
    let kit = ProjectorKit {
        settings,
        parked: SqliteParkedStore::open(dir).context("parked events")?,
        poison: PoisonSwitch::new(&settings.projections.poison_order_prefix),
    };
    let source: Arc<dyn RebuildSource> = store.clone();
    let mut handles = Vec::new();
    for projection in [search.clone() as Arc<dyn Projection>, revenue.clone() as Arc<dyn Projection>] {
        let checkpoint = projection.checkpoint().await.context("reading a projection checkpoint")?;
        let (store, view) = (Arc::clone(&store), Arc::clone(&projection));
        // Each (re)start tails the log from the view's own checkpoint.
        let feed: FeedFactory = Arc::new(move || {
            let (store, view) = (Arc::clone(&store), Arc::clone(&view));
            Box::pin(async move {
                let checkpoint = view.checkpoint().await.map_err(|e| FeedError(e.to_string()))?;
                Ok(Box::new(LogTail::new(store, checkpoint)) as Box<dyn FeedSubscription>)
            })
        });
        handles.push(kit.start(projection, feed, checkpoint).await?);
    }
    let projections = Projections::new(handles, kit.parked, kit.poison, source);
    Ok(Wiring { store, feed: Arc::new(InProcessFeed), search, revenue, projections })
}

/// DynamoDB (write model, revenue view) → Streams bridge → Kafka → projectors → Meilisearch / DynamoDB.
async fn distributed(settings: &Settings) -> anyhow::Result<Wiring> {
    let sdk = crate::aws::sdk_config(&settings.aws).await;
    // Every DynamoDB user (store, revenue view, parked events, the bridge's checkpoints) gets `[dynamodb]`'s timeouts.
    let dynamo = crate::aws::dynamo_client(&sdk, &settings.dynamodb);
    let streams = aws_sdk_dynamodbstreams::Client::new(&sdk);
    let tables = Tables::new(&settings.dynamodb.table_prefix);
    let create = settings.dynamodb.create_tables;
    let store = DynamoEventStore::open(dynamo.clone(), tables.clone(), &settings.store, create)
        .await
        .context("DynamoDB event store")?;
    let revenue = DynamoRevenueView::open(dynamo.clone(), tables.clone(), create).await.context("DynamoDB revenue view")?;
    let search = MeiliSearchView::open(&settings.meilisearch).await.context("Meilisearch search view")?;
    if settings.kafka.create_topic {
        kafka::ensure_topic(&settings.kafka).await.context("creating the Kafka topic")?;
    }
    let producer = kafka::producer(&settings.kafka).context("Kafka producer")?;
    let feed = Arc::new(KafkaHealth::new(producer.clone(), &settings.kafka.topic));
    let kit = ProjectorKit {
        settings,
        parked: DynamoParkedStore::new(dynamo.clone(), tables.parked.clone()),
        poison: PoisonSwitch::new(&settings.projections.poison_order_prefix),
    };
    let bridge = Bridge::new(streams, dynamo, tables, producer, settings.kafka.topic.clone(), settings.bridge.clone())
        .with_poison(kit.poison.clone());
    let bridge_status = bridge.status();
    let bridge = bridge.start_supervised();
    let mut handles = Vec::new();
    for projection in [search.clone() as Arc<dyn Projection>, revenue.clone() as Arc<dyn Projection>] {
        // Each (re)start joins the consumer group again and resumes from its committed offsets.
        let (kafka, name) = (settings.kafka.clone(), projection.name());
        let feed: FeedFactory = Arc::new(move || {
            let subscription = KafkaSubscription::new(&kafka, name)
                .map(|s| Box::new(s) as Box<dyn FeedSubscription>)
                .map_err(|e| FeedError(format!("{e:#}")));
            Box::pin(std::future::ready(subscription))
        });
        handles.push(kit.start(projection, feed, 0).await?);
    }
    // Rebuilds scan the events table (see `store::dynamo`); the views swap their fresh copy in themselves.
    let source: Arc<dyn RebuildSource> = store.clone();
    let projections = Projections::new(handles, kit.parked, kit.poison, source).with_bridge(bridge, bridge_status);
    Ok(Wiring { store, feed, search, revenue, projections })
}

pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
    /// The JWT secret lives in the data folder (generated on first run), not in the config.
    secret_in_data_dir: bool,
}

impl Application {
    /// Opens the stores of the configured profile, starts the projectors (and, distributed, the bridge) and
    /// binds the server. Must run inside an actix system.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&settings.data_dir)
            .with_context(|| format!("cannot create data_dir {}", settings.data_dir.display()))?;
        let (secret, _generated) = resolve_secret(&settings.auth, &settings.data_dir)
            .with_context(|| format!("cannot read or create {}/jwt_secret", settings.data_dir.display()))?;
        let wiring = match settings.profile {
            Profile::Embedded => embedded(&settings).await?,
            Profile::Distributed => distributed(&settings).await?,
        };
        let Wiring { store, feed, search, revenue, projections } = wiring;

        let registry = OrderRegistry::new(
            Arc::clone(&store),
            settings.actors.mailbox_capacity,
            settings.store.snapshot_every,
            Duration::from_millis(settings.actors.idle_timeout_ms),
        );
        let state = web::Data::new(AppState {
            registry,
            store,
            feed,
            search,
            revenue,
            projections,
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
