//! `Application`: wires the ports to their adapters by config, starts the projectors and the HTTP server.
//! `build` binds the listener (port 0 picks a free port, which tests use), `run_until_stopped` serves until
//! SIGTERM / SIGINT, then lets in-flight requests finish.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{App, web};
use anyhow::Context as _;

use crate::actors::bridge::Bridge;
use crate::actors::projections::{ProjectionHandle, Projections};
use crate::actors::projector::FeedFactory;
use crate::actors::{OrderRegistry, Projector};
use crate::audit::{AuditLog, DynamoAuditLog, SqliteAuditLog};
use crate::auth::{Authenticator, Role, resolve_secret};
use crate::aws::Tables;
use crate::config::{Profile, Settings, Transport};
use crate::feed::kafka::{self, KafkaHealth, KafkaSink, KafkaSubscription};
use crate::feed::kinesis::{self, KinesisHealth, KinesisSink, KinesisSubscription};
use crate::feed::tail::LogTail;
use crate::feed::{EventSink, FeedChecks, FeedError, FeedHealth, FeedSubscription, InProcessFeed};
use crate::http::{self, AppState};
use crate::projection::ProjectionStatus;
use crate::projection::parking::{ParkingLot, RetryPolicy};
use crate::store::dynamo::DynamoEventStore;
use crate::store::sqlite::SqliteEventStore;
use crate::store::{EventStore, RebuildSource};
use crate::telemetry::BridgeSource;
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
    audit: Arc<dyn AuditLog>,
}

/// Seams where a caller puts its own adapter around a configured one before it is used; the service itself
/// passes `Adapters::default()` (nothing wrapped). The tests wrap the views in one that refuses or crashes on
/// the events of chosen orders, and the bridge's sinks in one that crashes, to drive the parking lot and the
/// supervisors through the real application.
#[derive(Clone, Default)]
pub struct Adapters {
    /// Wraps each view before its projector starts.
    pub view: Option<Wrap<dyn Projection>>,
    /// Wraps each sink the Streams bridge publishes to (distributed profile).
    pub sink: Option<Wrap<dyn EventSink>>,
}

/// Puts an adapter of its own around a configured one.
pub type Wrap<T> = Arc<dyn Fn(Arc<T>) -> Arc<T> + Send + Sync>;

/// What every projector of the application shares.
struct ProjectorKit<'a> {
    settings: &'a Settings,
    parked: Arc<dyn ParkedStore>,
    adapters: &'a Adapters,
}

impl ProjectorKit<'_> {
    async fn start(
        &self,
        view: Arc<dyn Projection>,
        feed: FeedFactory,
        position: u64,
    ) -> anyhow::Result<ProjectionHandle> {
        // Its series exist from the first scrape; the parking lot sets the parked gauge from the durable count.
        crate::telemetry::register_projection(view.name());
        let status = ProjectionStatus::new(view.name());
        status.set_position(position);
        let projection = match &self.adapters.view {
            Some(wrap) => wrap(view),
            None => view,
        };
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
async fn embedded(settings: &Settings, adapters: &Adapters) -> anyhow::Result<Wiring> {
    let dir = &settings.data_dir;
    let store = SqliteEventStore::open(dir, &settings.store, READ_CONNECTIONS).context("event store")?;
    let search = SqliteSearchView::open(dir, READ_CONNECTIONS).context("search view")?;
    let revenue = SqliteRevenueView::open(dir, READ_CONNECTIONS, settings.revenue.timezone).context("revenue view")?;
    let kit = ProjectorKit { settings, parked: SqliteParkedStore::open(dir).context("parked events")?, adapters };
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
    let projections = Projections::new(handles, kit.parked, source);
    let audit = SqliteAuditLog::open(dir).context("audit log")?;
    Ok(Wiring { store, feed: Arc::new(InProcessFeed), search, revenue, projections, audit })
}

/// DynamoDB (write model, revenue view) → Streams bridge → Kafka and/or Kinesis → projectors (reading one of
/// them) → Meilisearch / DynamoDB.
async fn distributed(settings: &Settings, adapters: &Adapters) -> anyhow::Result<Wiring> {
    let sdk = crate::aws::sdk_config(&settings.aws).await;
    // Every DynamoDB user (store, revenue view, parked events, audit, the bridge's checkpoints) gets the
    // timeouts of `[dynamodb]`.
    let dynamo = crate::aws::dynamo_client(&sdk, &settings.dynamodb);
    let streams = aws_sdk_dynamodbstreams::Client::new(&sdk);
    let tables = Tables::new(&settings.dynamodb.table_prefix);
    let create = settings.dynamodb.create_tables;
    let store = DynamoEventStore::open(dynamo.clone(), tables.clone(), &settings.store, create)
        .await
        .context("DynamoDB event store")?;
    let revenue = DynamoRevenueView::open(dynamo.clone(), tables.clone(), create, settings.revenue.timezone)
        .await
        .context("DynamoDB revenue view")?;
    let search = MeiliSearchView::open(&settings.meilisearch).await.context("Meilisearch search view")?;
    let uses = |t: Transport| settings.bridge.sinks.contains(&t) || settings.projections.source == t;
    let mut sinks: Vec<Arc<dyn EventSink>> = Vec::new();
    // Readiness check `feed`: every transport this instance publishes to or reads from.
    let mut feed_checks: Vec<Arc<dyn FeedHealth>> = Vec::new();
    if uses(Transport::Kafka) {
        if settings.kafka.create_topic {
            kafka::ensure_topic(&settings.kafka).await.context("creating the Kafka topic")?;
        }
        let producer = kafka::producer(&settings.kafka).context("Kafka producer")?;
        feed_checks.push(Arc::new(KafkaHealth::new(producer.clone(), &settings.kafka.topic)));
        if settings.bridge.sinks.contains(&Transport::Kafka) {
            sinks.push(Arc::new(KafkaSink::new(producer, settings.kafka.topic.clone())));
        }
    }
    let kinesis_client = if uses(Transport::Kinesis) {
        let client = kinesis::client(&settings.aws, &settings.kinesis).await;
        if settings.kinesis.create_stream {
            kinesis::ensure_stream(&client, &settings.kinesis).await.context("creating the Kinesis stream")?;
        }
        if settings.bridge.sinks.contains(&Transport::Kinesis) {
            sinks.push(Arc::new(KinesisSink::new(client.clone(), settings.kinesis.stream.clone())));
        }
        feed_checks.push(Arc::new(KinesisHealth::new(client.clone(), &settings.kinesis.stream)));
        Some(client)
    } else {
        None
    };
    let kit =
        ProjectorKit { settings, parked: DynamoParkedStore::new(dynamo.clone(), tables.parked.clone()), adapters };
    let audit = DynamoAuditLog::new(dynamo.clone(), tables.audit.clone());
    let checkpoints =
        crate::feed::shards::CheckpointTable { dynamo: dynamo.clone(), table: tables.checkpoints.clone() };
    let owner = crate::lease::instance_id(&settings.data_dir).context("data_dir/instance_id")?;
    let period = Duration::from_millis(settings.bridge.lease_period_ms.max(1));
    let leases = Arc::new(crate::lease::Leases::new(dynamo.clone(), tables.checkpoints.clone(), owner, period));
    if let Some(wrap) = &adapters.sink {
        sinks = sinks.into_iter().map(|sink| wrap(sink)).collect();
    }
    let bridge = Bridge::new(streams, dynamo, tables, sinks, settings.bridge.clone()).with_leases(Arc::clone(&leases));
    let bridge_status = bridge.status();
    crate::telemetry::register_bridge(BridgeSource::DynamoDbStreams);
    crate::telemetry::register_supervised(crate::actors::bridge::NAME);
    if settings.projections.source == Transport::Kinesis {
        crate::telemetry::register_bridge(BridgeSource::Kinesis);
    }
    let bridge = bridge.start_supervised();
    let mut handles = Vec::new();
    for projection in [search.clone() as Arc<dyn Projection>, revenue.clone() as Arc<dyn Projection>] {
        let name = projection.name();
        let feed: FeedFactory = match (&settings.projections.source, &kinesis_client) {
            (Transport::Kinesis, Some(client)) => {
                // Each (re)start lists the shards again and resumes after the checkpoints saved on ack.
                let (client, checkpoints, kinesis, leases) =
                    (client.clone(), checkpoints.clone(), settings.kinesis.clone(), Arc::clone(&leases));
                Arc::new(move || {
                    let subscription = KinesisSubscription::new(client.clone(), checkpoints.clone(), &kinesis, name)
                        .with_leases(Arc::clone(&leases));
                    Box::pin(std::future::ready(Ok(Box::new(subscription) as Box<dyn FeedSubscription>)))
                })
            }
            _ => {
                // Each (re)start joins the consumer group again and resumes from its committed offsets.
                let kafka = settings.kafka.clone();
                Arc::new(move || {
                    let subscription = KafkaSubscription::new(&kafka, name)
                        .map(|s| Box::new(s) as Box<dyn FeedSubscription>)
                        .map_err(|e| FeedError(format!("{e:#}")));
                    Box::pin(std::future::ready(subscription))
                })
            }
        };
        handles.push(kit.start(projection, feed, 0).await?);
    }
    // Rebuilds scan the events table (see `store::dynamo`); the views swap their fresh copy in themselves.
    let source: Arc<dyn RebuildSource> = store.clone();
    let projections = Projections::new(handles, kit.parked, source).with_bridge(bridge, bridge_status);
    let feed = Arc::new(FeedChecks::new(feed_checks));
    Ok(Wiring { store, feed, search, revenue, projections, audit })
}

pub struct Application {
    port: u16,
    tls: bool,
    server: Server,
    state: web::Data<AppState>,
    /// The JWT secret lives in the data folder (generated on first run), not in the config.
    secret_in_data_dir: bool,
}

impl Application {
    /// Binds the port (first, so that a busy one fails before anything starts), opens the stores of the
    /// configured profile, starts the projectors (and, distributed, the bridge) and the server. Must run inside
    /// an actix system.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with(settings, Adapters::default()).await
    }

    /// [`Self::build`] with some adapters wrapped (see [`Adapters`]).
    pub async fn build_with(settings: Settings, adapters: Adapters) -> anyhow::Result<Self> {
        // First: whatever the wiring records (the parked counts it loads) must reach the recorder.
        let prometheus = crate::telemetry::prometheus();
        // Then the port and the TLS files: a busy port or a bad certificate fails here, before any store is opened
        // or actor started.
        let listener = TcpListener::bind((settings.server.host.as_str(), settings.server.port))
            .with_context(|| format!("cannot listen on {}:{}", settings.server.host, settings.server.port))?;
        let tls = match (settings.server.tls_cert.as_str(), settings.server.tls_key.as_str()) {
            ("", _) | (_, "") => None,
            (cert, key) => Some(tls_config(cert, key)?),
        };
        // The data folder and every file in it are private to the service's user (see `files`).
        crate::files::private_dir(&settings.data_dir)
            .with_context(|| format!("cannot create data_dir {}", settings.data_dir.display()))?;
        let (secret, _generated) = resolve_secret(&settings.auth, &settings.data_dir)?;
        let wiring = match settings.profile {
            Profile::Embedded => embedded(&settings, &adapters).await?,
            Profile::Distributed => distributed(&settings, &adapters).await?,
        };
        let Wiring { store, feed, search, revenue, projections, audit } = wiring;

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
            auth: Authenticator::from_settings(&settings.auth, &secret).await?,
            audit,
            limits: http::limits::RateLimits::new(&settings.rate_limit),
            prometheus,
            min_version_wait: Duration::from_millis(settings.projections.min_version_wait_ms),
            max_uri_bytes: settings.server.max_uri_bytes,
            readiness: http::ops::ReadinessCache::default(),
            search_slots: http::limits::SearchSlots::per_core(),
            body_timeout: Duration::from_millis(settings.server.body_timeout_ms),
        });

        if state.limits.enabled() {
            // Buckets that filled up again are forgotten, so the limiter's memory follows active clients.
            let state = state.clone();
            actix_web::rt::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(60));
                loop {
                    every.tick().await;
                    state.limits.forget_idle();
                }
            });
        }

        let port = listener.local_addr()?.port();
        let app_state = state.clone();
        let origins = settings.server.cors_allowed_origins.clone();
        let app = move || {
            App::new()
                .app_data(app_state.clone())
                .wrap(actix_web::middleware::Condition::new(!origins.is_empty(), http::cors(&origins)))
                .wrap(actix_web::middleware::from_fn(http::limit_uri))
                .wrap(actix_web::middleware::from_fn(http::trace_request))
                .wrap(http::request_metrics::RequestMetrics)
                .configure(http::routes)
        };
        let scheme_is_https = tls.is_some();
        // actix-web's `HttpServer` with every request head timed (see `http::server`).
        let server = http::server::start(app, listener, tls, &settings.server)?;
        Ok(Self { port, tls: scheme_is_https, server, state, secret_in_data_dir: settings.auth.jwt_secret.is_empty() })
    }

    /// `https` when TLS is configured, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    /// Stops the HTTP server from outside (`stop(true)`: let in-flight requests finish). The projectors run on
    /// until the actix system stops.
    pub fn server_handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
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

/// The rustls server configuration of `server.tls_cert` / `server.tls_key` (PEM).
fn tls_config(cert: &str, key: &str) -> anyhow::Result<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("server.tls_cert {cert}"))?;
    anyhow::ensure!(!chain.is_empty(), "server.tls_cert {cert}: no certificate");
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("server.tls_key {key}"))?;
    // The provider is named: two are compiled in (ring for the HTTP clients, aws-lc-rs for the AWS SDK).
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the TLS certificate and key do not match")
}
