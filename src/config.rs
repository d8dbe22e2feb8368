//! Typed settings, layered: the built-in `config/default.toml` → an optional `--config FILE` → env vars
//! `ORDERFLOW__SECTION__KEY` (a top-level key: `ORDERFLOW__KEY`). Unknown keys are an error, so a typo
//! never silently falls back to a default. `Debug` never prints the JWT secret.

use std::fmt;
use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat};
use serde::Deserialize;

/// The embedded profile's defaults, compiled in so the binary runs from any folder.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    Embedded,
    Distributed,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub profile: Profile,
    pub data_dir: PathBuf,
    pub server: ServerSettings,
    pub auth: AuthSettings,
    pub rate_limit: RateLimitSettings,
    pub actors: ActorSettings,
    pub store: StoreSettings,
    pub projections: ProjectionSettings,
    pub revenue: RevenueSettings,
    pub log: LogSettings,
    pub aws: AwsSettings,
    pub dynamodb: DynamoSettings,
    pub kafka: KafkaSettings,
    pub kinesis: KinesisSettings,
    pub meilisearch: MeiliSettings,
    pub bridge: BridgeSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    pub workers: usize,
    pub shutdown_timeout_secs: u64,
    /// How long a client may take to send a request's head; then 408.
    pub request_timeout_ms: u64,
    /// How long a client may take to send a request's body, once its head is in; then 408.
    pub body_timeout_ms: u64,
    /// How long an idle keep-alive connection stays open.
    pub keep_alive_secs: u64,
    /// Most concurrent connections per worker; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Longest request target (path and query) accepted; longer: 414 `uri_too_long`.
    pub max_uri_bytes: usize,
    /// Origins allowed to call the API from a browser (CORS). Empty: no CORS headers at all (the console is
    /// same-origin and needs none).
    pub cors_allowed_origins: Vec<String>,
    /// TLS (rustls) when both are set: PEM files of the certificate chain and its private key.
    pub tls_cert: String,
    pub tls_key: String,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    pub enabled: bool,
    pub jwt_secret: String,
    pub leeway_secs: u64,
    /// RS256 / ES256 tokens: a JWKS file path or an `http(s)://` URL. Empty: HS256 only.
    pub jwks: String,
    pub jwks_refresh_secs: u64,
    /// Required `iss` / `aud` of JWKS tokens; empty: not checked.
    pub issuer: String,
    pub audience: String,
    /// The claim that holds a JWKS token's role (a string or a list); admin when it holds `admin_role`.
    pub role_claim: String,
    pub admin_role: String,
    /// The claim that holds a JWKS token's customer id.
    pub customer_claim: String,
    /// Cognito app client ids: a JWKS token without `aud` (a Cognito access token) is accepted only with
    /// `token_use: access` and a `client_id` in this list; a token with `aud` may name one of them.
    pub client_ids: Vec<String>,
    /// Allows a `customer_claim` its users can change themselves (`email`, `preferred_username`, …). Off: such
    /// a claim is a startup error, since whoever changes theirs to another's value gets that customer's orders.
    pub allow_mutable_customer_claim: bool,
}

/// One token bucket: a sustained rate and the burst a client may use at once.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bucket {
    pub per_second: u32,
    pub burst: u32,
}

/// Rate limits per token subject and route class, and per client IP for requests without a valid token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    pub enabled: bool,
    pub commands: Bucket,
    pub queries: Bucket,
    pub admin: Bucket,
    pub anonymous: Bucket,
}

/// The values of config/default.toml (for tests and tools that build settings in code).
impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            jwt_secret: String::new(),
            leeway_secs: 60,
            jwks: String::new(),
            jwks_refresh_secs: 300,
            issuer: String::new(),
            audience: String::new(),
            role_claim: "role".into(),
            admin_role: "admin".into(),
            customer_claim: "sub".into(),
            client_ids: Vec::new(),
            allow_mutable_customer_claim: false,
        }
    }
}

impl fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthSettings")
            .field("enabled", &self.enabled)
            .field("jwt_secret", &"<redacted>")
            .field("leeway_secs", &self.leeway_secs)
            .field("jwks", &self.jwks)
            .field("jwks_refresh_secs", &self.jwks_refresh_secs)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("role_claim", &self.role_claim)
            .field("admin_role", &self.admin_role)
            .field("customer_claim", &self.customer_claim)
            .field("client_ids", &self.client_ids)
            .field("allow_mutable_customer_claim", &self.allow_mutable_customer_claim)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActorSettings {
    pub mailbox_capacity: usize,
    pub idle_timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    Off,
    Normal,
    Full,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    pub snapshot_every: u64,
    pub max_batch: usize,
    pub queue_capacity: usize,
    pub idempotency_ttl_hours: u64,
    pub synchronous: Synchronous,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectionSettings {
    pub batch_size: usize,
    pub min_version_wait_ms: u64,
    pub max_attempts: u32,
    pub retry_backoff_ms: u64,
    /// The event feed the distributed profile's projectors read (the embedded profile tails its log).
    pub source: Transport,
}

/// The revenue view (both profiles).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevenueSettings {
    /// The business time zone, an IANA name: a payment counts on the date of its `paidAt` there, a refund on
    /// that of its `cancelledAt`. A name the zone database does not know is a startup error.
    #[serde(deserialize_with = "time_zone")]
    pub timezone: chrono_tz::Tz,
}

/// A time zone by its IANA name. The config crate adds the key to the message.
fn time_zone<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<chrono_tz::Tz, D::Error> {
    use serde::de::Error as _;
    let name = String::deserialize(deserializer)?;
    name.trim().parse().map_err(|_| {
        D::Error::custom(format!(
            "`{name}` is not an IANA time zone name (for example UTC, Europe/Berlin, America/New_York)"
        ))
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
    /// OTLP/HTTP endpoint for the spans (binaries built with the `otlp` feature); empty: no export.
    pub otlp_endpoint: String,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsSettings {
    pub region: String,
    pub endpoint_url: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl fmt::Debug for AwsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsSettings")
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DynamoSettings {
    pub table_prefix: String,
    pub create_tables: bool,
    /// One attempt of a DynamoDB call, and one whole call with the SDK's retries (see `aws::dynamo_client`).
    pub attempt_timeout_ms: u64,
    pub operation_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    pub brokers: String,
    pub topic: String,
    pub group_prefix: String,
    pub create_topic: bool,
    pub partitions: i32,
    pub replication_factor: i32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KinesisSettings {
    /// The Kinesis endpoint; empty: `aws.endpoint_url` (and with that empty too, the SDK's own: real AWS).
    /// It is separate because DynamoDB Local and kinesalite are two servers.
    pub endpoint_url: String,
    pub stream: String,
    /// Shards of a stream created at startup; an existing stream keeps its own.
    pub shards: i32,
    pub create_stream: bool,
    /// How long a caught-up shard reader waits before asking its shard again (AWS allows 5 GetRecords per
    /// second per shard, shared by every consumer).
    pub poll_interval_ms: u64,
}

/// A transport between the bridge and the projectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Kafka,
    Kinesis,
}

/// `["kafka", "kinesis"]` in a file, or `"kafka,kinesis"` (what an env var can carry): the same list.
fn transports<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<Transport>, D::Error> {
    use serde::de::Error as _;
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        List(Vec<Transport>),
        Text(String),
    }
    let mut list = match Form::deserialize(deserializer)? {
        Form::List(list) => list,
        Form::Text(text) => text
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| match t.to_ascii_lowercase().as_str() {
                "kafka" => Ok(Transport::Kafka),
                "kinesis" => Ok(Transport::Kinesis),
                other => Err(D::Error::custom(format!("unknown transport `{other}` (kafka, kinesis)"))),
            })
            .collect::<Result<_, _>>()?,
    };
    list.sort();
    list.dedup();
    Ok(list)
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeiliSettings {
    pub url: String,
    pub api_key: String,
    pub index: String,
}

impl fmt::Debug for MeiliSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeiliSettings")
            .field("url", &self.url)
            .field("api_key", &"<redacted>")
            .field("index", &self.index)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeSettings {
    pub poll_interval_ms: u64,
    pub batch_size: i32,
    /// Where the bridge publishes every event: Kafka, Kinesis, or both (fan-out).
    #[serde(deserialize_with = "transports")]
    pub sinks: Vec<Transport>,
    /// How long a silent instance keeps a Streams shard's lease (see `lease`).
    pub lease_period_ms: u64,
}

impl Settings {
    /// Loads the layers: defaults, then `file` (if any), then the process environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        Self::load_with(file, std::env::vars())
    }

    /// Like [`Settings::load`] with an explicit environment, so tests need not touch the process's.
    pub fn load_with(file: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> anyhow::Result<Self> {
        let mut builder = Config::builder().add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml));
        if let Some(path) = file {
            builder = builder.add_source(File::from(path).format(FileFormat::Toml).required(true));
        }
        let env = env.into_iter().filter(|(k, _)| k.starts_with("ORDERFLOW__")).collect();
        builder = builder.add_source(
            Environment::with_prefix("ORDERFLOW")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                // List keys take a comma-separated value: ORDERFLOW__SERVER__CORS_ALLOWED_ORIGINS=https://a,https://b
                .list_separator(",")
                .with_list_parse_key("server.cors_allowed_origins")
                .with_list_parse_key("auth.client_ids")
                .source(Some(env)),
        );
        let settings: Settings = builder.build()?.try_deserialize()?;
        settings.check()?;
        Ok(settings)
    }

    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.actors.mailbox_capacity > 0, "actors.mailbox_capacity must be at least 1");
        anyhow::ensure!(self.store.max_batch > 0, "store.max_batch must be at least 1");
        anyhow::ensure!(self.store.queue_capacity > 0, "store.queue_capacity must be at least 1");
        anyhow::ensure!(self.projections.batch_size > 0, "projections.batch_size must be at least 1");
        anyhow::ensure!(self.projections.max_attempts > 0, "projections.max_attempts must be at least 1");
        anyhow::ensure!(self.auth.leeway_secs <= 60, "auth.leeway_secs must be at most 60");
        anyhow::ensure!(self.server.body_timeout_ms > 0, "server.body_timeout_ms must be at least 1");
        anyhow::ensure!((1..=1000).contains(&self.bridge.batch_size), "bridge.batch_size must be from 1 to 1000");
        anyhow::ensure!(self.kafka.partitions > 0, "kafka.partitions must be at least 1");
        anyhow::ensure!(self.dynamodb.attempt_timeout_ms > 0, "dynamodb.attempt_timeout_ms must be at least 1");
        anyhow::ensure!(
            self.dynamodb.operation_timeout_ms >= self.dynamodb.attempt_timeout_ms,
            "dynamodb.operation_timeout_ms must be at least dynamodb.attempt_timeout_ms"
        );
        anyhow::ensure!(self.kinesis.shards > 0, "kinesis.shards must be at least 1");
        anyhow::ensure!(!self.bridge.sinks.is_empty(), "bridge.sinks must name kafka, kinesis or both");
        if self.profile == Profile::Distributed {
            anyhow::ensure!(
                self.bridge.sinks.contains(&self.projections.source),
                "projections.source ({:?}) must be one of bridge.sinks ({:?}): the projectors would read a feed \
                 nothing publishes to",
                self.projections.source,
                self.bridge.sinks
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_are_the_embedded_profile_on_8080() {
        let s = Settings::load_with(None, env(&[])).unwrap();
        assert_eq!(s.profile, Profile::Embedded);
        assert_eq!(s.server.port, 8080);
        assert!(s.auth.enabled);
    }

    #[test]
    fn env_overrides_nested_and_top_level_keys() {
        let s = Settings::load_with(
            None,
            env(&[
                ("ORDERFLOW__SERVER__PORT", "9999"),
                ("ORDERFLOW__AUTH__JWT_SECRET", "12345"),
                ("ORDERFLOW__DATA_DIR", "/tmp/x"),
                ("ORDERFLOW_UNRELATED", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(s.server.port, 9999);
        assert_eq!(s.auth.jwt_secret, "12345");
        assert_eq!(s.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn unknown_keys_are_an_error() {
        assert!(Settings::load_with(None, env(&[("ORDERFLOW__SERVER__PROT", "1")])).is_err());
        assert!(Settings::load_with(None, env(&[("ORDERFLOW__NOPE", "1")])).is_err());
    }

    #[test]
    fn the_distributed_file_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/distributed.toml");
        let s = Settings::load_with(Some(&path), env(&[])).unwrap();
        assert_eq!(s.profile, Profile::Distributed);
        assert_eq!(s.aws.endpoint_url, "http://127.0.0.1:8000");
        assert!(s.dynamodb.operation_timeout_ms >= s.dynamodb.attempt_timeout_ms);
    }

    #[test]
    fn dynamodb_timeouts_are_prompt_by_default_and_checked() {
        let s = Settings::load_with(None, env(&[])).unwrap();
        assert!(s.dynamodb.operation_timeout_ms <= 5000, "a hung DynamoDB must become a prompt 503");
        let attempt_above_operation = env(&[
            ("ORDERFLOW__DYNAMODB__ATTEMPT_TIMEOUT_MS", "5000"),
            ("ORDERFLOW__DYNAMODB__OPERATION_TIMEOUT_MS", "1000"),
        ]);
        assert!(Settings::load_with(None, attempt_above_operation).is_err());
        assert!(Settings::load_with(None, env(&[("ORDERFLOW__DYNAMODB__ATTEMPT_TIMEOUT_MS", "0")])).is_err());
    }

    #[test]
    fn sinks_and_source_come_from_a_list_or_an_env_string() {
        let s = Settings::load_with(None, env(&[])).unwrap();
        assert_eq!(s.bridge.sinks, vec![Transport::Kafka]);
        assert_eq!(s.projections.source, Transport::Kafka);
        let s = Settings::load_with(
            None,
            env(&[
                ("ORDERFLOW__PROFILE", "distributed"),
                ("ORDERFLOW__BRIDGE__SINKS", "kinesis, kafka"),
                ("ORDERFLOW__PROJECTIONS__SOURCE", "kinesis"),
            ]),
        )
        .unwrap();
        assert_eq!(s.bridge.sinks, vec![Transport::Kafka, Transport::Kinesis]);
        assert_eq!(s.projections.source, Transport::Kinesis);
        assert!(Settings::load_with(None, env(&[("ORDERFLOW__BRIDGE__SINKS", "kafka,sqs")])).is_err());
        // The projectors must read a feed the bridge writes.
        let lonely = [("ORDERFLOW__PROFILE", "distributed"), ("ORDERFLOW__PROJECTIONS__SOURCE", "kinesis")];
        assert!(Settings::load_with(None, env(&lonely)).is_err());
    }

    #[test]
    fn the_business_time_zone_is_an_iana_name_utc_by_default() {
        let s = Settings::load_with(None, env(&[])).unwrap();
        assert_eq!(s.revenue.timezone, chrono_tz::Tz::UTC);
        let s = Settings::load_with(None, env(&[("ORDERFLOW__REVENUE__TIMEZONE", "Europe/Berlin")])).unwrap();
        assert_eq!(s.revenue.timezone, chrono_tz::Tz::Europe__Berlin);
        let error = Settings::load_with(None, env(&[("ORDERFLOW__REVENUE__TIMEZONE", "Mars/Olympus_Mons")]))
            .expect_err("an unknown zone is a config error");
        let message = format!("{error:#}");
        assert!(message.contains("revenue.timezone") && message.contains("Mars/Olympus_Mons"), "{message}");
        for bad in ["", "CEST", "+02:00"] {
            assert!(Settings::load_with(None, env(&[("ORDERFLOW__REVENUE__TIMEZONE", bad)])).is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let s = Settings::load_with(None, env(&[("ORDERFLOW__AUTH__JWT_SECRET", "hunter2hunter2")])).unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
