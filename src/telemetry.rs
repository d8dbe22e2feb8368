//! Logs and metrics in one place. Business code calls the named functions below; the metric names and
//! labels are those of docs/api.md §4 and appear nowhere else. Label values come from small fixed sets
//! (command names, event types, projection names, route templates), never from an order id or a raw path.
//!
//! Every series whose labels are known at startup is registered at 0 before anything can use it (the known
//! sets at install, each projection and bridge source as it is wired), so a dashboard or an alert never sees
//! "no data" where the truth is zero. The recorder is installed before the projections are opened, so the
//! parked gauge they set from the durable count at startup is kept.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Counter, Histogram, counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};
use crate::domain::{Command, OrderEvent};

pub const COMMANDS_TOTAL: &str = "orderflow_commands_total";
pub const COMMAND_DURATION: &str = "orderflow_command_duration_seconds";
pub const EVENTS_APPENDED: &str = "orderflow_events_appended_total";
pub const PROJECTION_EVENTS: &str = "orderflow_projection_events_total";
pub const PROJECTION_LAG: &str = "orderflow_projection_lag_seconds";
pub const PROJECTION_PARKED: &str = "orderflow_projection_parked_events";
pub const PROJECTOR_RESTARTS: &str = "orderflow_projector_restarts_total";
pub const BRIDGE_RECORDS: &str = "orderflow_bridge_records_total";
pub const BRIDGE_LAG: &str = "orderflow_bridge_lag_seconds";
pub const LIVE_AGGREGATES: &str = "orderflow_live_aggregates";
pub const HTTP_REQUESTS: &str = "orderflow_http_requests_total";
pub const HTTP_DURATION: &str = "orderflow_http_request_duration_seconds";
pub const RATE_LIMITED: &str = "orderflow_http_rate_limited_total";
pub const BUILD_INFO: &str = "orderflow_build_info";

/// The `route` label of a request that matched no route (never the raw path: that is unbounded).
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Command handling, request to durable ack: from half a millisecond to seconds.
const COMMAND_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];
/// Whole HTTP requests: a cached read takes tens of microseconds, a search under load up to seconds.
const HTTP_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
/// How often histogram samples are folded into their buckets when nobody scrapes: they wait in the
/// recorder until then, and a busy instance that nobody scrapes would otherwise keep every one of them.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// How a command ended, as the `outcome` label of `orderflow_commands_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandOutcome {
    /// 2xx.
    Ok,
    /// A 4xx business rule or validation failure.
    Rejected,
    /// 412, or a write race lost even after one reload.
    Conflict,
    /// 5xx / 503.
    Error,
}

impl CommandOutcome {
    pub const ALL: [Self; 4] = [Self::Ok, Self::Rejected, Self::Conflict, Self::Error];

    fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Rejected => "rejected",
            Self::Conflict => "conflict",
            Self::Error => "error",
        }
    }
}

/// How a projector dealt with one event, as the `outcome` label of `orderflow_projection_events_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProjectionOutcome {
    Applied,
    Skipped,
    Failed,
    Parked,
}

impl ProjectionOutcome {
    pub const ALL: [Self; 4] = [Self::Applied, Self::Skipped, Self::Failed, Self::Parked];

    fn label(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Skipped => "skipped",
            Self::Failed => "failed",
            Self::Parked => "parked",
        }
    }
}

/// Where the bridge reads change records from, as the `source` label of the bridge metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BridgeSource {
    DynamoDbStreams,
    /// The projectors' Kinesis readers: records they took from the stream, and how old the newest one was.
    Kinesis,
}

impl BridgeSource {
    fn label(self) -> &'static str {
        match self {
            Self::DynamoDbStreams => "dynamodb-streams",
            Self::Kinesis => "kinesis",
        }
    }
}

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();
static PROCESS: OnceLock<metrics_process::Collector> = OnceLock::new();

/// Installs the process-wide Prometheus recorder once and returns its handle (for `/metrics`). Called first
/// thing when the application is built: a metric recorded before the recorder exists is lost.
pub fn prometheus() -> PrometheusHandle {
    PROMETHEUS
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(COMMAND_DURATION.to_owned()), COMMAND_BUCKETS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(HTTP_DURATION.to_owned()), HTTP_BUCKETS))
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics shows only this one's");
            }
            describe();
            register_known();
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                }
            });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "no metrics upkeep thread; histogram samples wait for the next scrape");
            }
            handle
        })
        .clone()
}

/// The Prometheus text of a scrape: the process metrics (CPU, memory, file descriptors) read now, then
/// everything the recorder holds.
pub fn render(handle: &PrometheusHandle) -> String {
    PROCESS.get_or_init(metrics_process::Collector::default).collect();
    handle.render()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(COMMANDS_TOTAL, "Commands handled, by command and outcome.");
    describe_histogram!(COMMAND_DURATION, metrics::Unit::Seconds, "Command handling time, request to durable ack.");
    describe_counter!(RATE_LIMITED, "Requests refused with 429 by the rate limits, by route class.");
    describe_counter!(EVENTS_APPENDED, "Events durably appended to the write model, by type.");
    describe_counter!(PROJECTION_EVENTS, "Events seen by projectors, by projection and outcome.");
    describe_gauge!(PROJECTION_LAG, metrics::Unit::Seconds, "Age of the newest event a projection has applied.");
    describe_gauge!(PROJECTION_PARKED, "Events parked (poison) per projection.");
    describe_counter!(PROJECTOR_RESTARTS, "Projector restarts by their supervisor.");
    describe_counter!(BRIDGE_RECORDS, "Records moved from the change feed to the event feed.");
    describe_gauge!(BRIDGE_LAG, metrics::Unit::Seconds, "Age of the newest record the bridge has published.");
    describe_gauge!(LIVE_AGGREGATES, "Order actors currently in memory.");
    describe_counter!(HTTP_REQUESTS, "HTTP requests answered, by route template, method and status.");
    describe_histogram!(HTTP_DURATION, metrics::Unit::Seconds, "HTTP request time, by route template and method.");
    describe_gauge!(BUILD_INFO, "Always 1; the running build's version is its label.");
    PROCESS.get_or_init(metrics_process::Collector::default).describe();
}

/// The series whose labels are known before any request: every command and outcome, event type and rate
/// limit class, the live-aggregate gauge and the build.
fn register_known() {
    for command in Command::NAMES {
        for outcome in CommandOutcome::ALL {
            let _ = counter!(COMMANDS_TOTAL, "command" => command, "outcome" => outcome.label());
        }
        let _ = histogram!(COMMAND_DURATION, "command" => command);
    }
    for event_type in OrderEvent::TYPES {
        let _ = counter!(EVENTS_APPENDED, "type" => event_type);
    }
    for class in crate::http::limits::RouteClass::ALL {
        let _ = counter!(RATE_LIMITED, "class" => class.label());
    }
    let _ = gauge!(LIVE_AGGREGATES);
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

/// A projection's series, at 0 until it reports (registering again changes nothing).
pub fn register_projection(projection: &'static str) {
    let _ = gauge!(PROJECTION_LAG, "projection" => projection);
    let _ = gauge!(PROJECTION_PARKED, "projection" => projection);
    register_supervised(projection);
    for outcome in ProjectionOutcome::ALL {
        let _ = counter!(PROJECTION_EVENTS, "projection" => projection, "outcome" => outcome.label());
    }
}

/// The restart counter of a supervised actor (a projector, or the bridge), at 0.
pub fn register_supervised(name: &'static str) {
    let _ = counter!(PROJECTOR_RESTARTS, "projection" => name);
}

/// A bridge source's series, at 0 until it reports.
pub fn register_bridge(source: BridgeSource) {
    let _ = counter!(BRIDGE_RECORDS, "source" => source.label());
    let _ = gauge!(BRIDGE_LAG, "source" => source.label());
}

pub fn command_done(command: &'static str, outcome: CommandOutcome, elapsed: Duration) {
    counter!(COMMANDS_TOTAL, "command" => command, "outcome" => outcome.label()).increment(1);
    histogram!(COMMAND_DURATION, "command" => command).record(elapsed.as_secs_f64());
}

pub fn event_appended(event_type: &'static str) {
    counter!(EVENTS_APPENDED, "type" => event_type).increment(1);
}

pub fn projection_events(projection: &'static str, outcome: ProjectionOutcome, count: u64) {
    if count > 0 {
        counter!(PROJECTION_EVENTS, "projection" => projection, "outcome" => outcome.label()).increment(count);
    }
}

pub fn projection_lag(projection: &'static str, lag: Duration) {
    gauge!(PROJECTION_LAG, "projection" => projection).set(lag.as_secs_f64());
}

pub fn projection_parked(projection: &'static str, parked: u64) {
    gauge!(PROJECTION_PARKED, "projection" => projection).set(parked as f64);
}

pub fn projector_restarted(projection: &'static str) {
    counter!(PROJECTOR_RESTARTS, "projection" => projection).increment(1);
}

/// `count` records published to the event feed (delivery confirmed) by the bridge.
pub fn bridge_records(source: BridgeSource, count: u64) {
    if count > 0 {
        counter!(BRIDGE_RECORDS, "source" => source.label()).increment(count);
    }
}

/// Age of the newest record the bridge published; zero when it is caught up and idle.
pub fn bridge_lag(source: BridgeSource, lag: Duration) {
    gauge!(BRIDGE_LAG, "source" => source.label()).set(lag.as_secs_f64());
}

pub fn live_aggregate_started() {
    gauge!(LIVE_AGGREGATES).increment(1.0);
}

pub fn live_aggregate_stopped() {
    gauge!(LIVE_AGGREGATES).decrement(1.0);
}

/// Sets up `tracing` (text or JSON lines on stderr). `RUST_LOG` wins over `log.level`. Safe to call twice.
pub fn init_logging(settings: &LogSettings) {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.level));
    // Colours only on a terminal: in a file or a collector, escape sequences are noise (and the only ones a
    // line may hold are then escaped values, see `EscapedFields`).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi);
    let fmt = match settings.format {
        // serde_json escapes every control character of every value already.
        LogFormat::Json => fmt.json().boxed(),
        LogFormat::Text => fmt.fmt_fields(EscapedFields).boxed(),
    };
    let registry = tracing_subscriber::registry().with(filter).with(fmt);
    #[cfg(feature = "otlp")]
    let registry = registry.with(otlp::layer(&settings.otlp_endpoint));
    #[cfg(not(feature = "otlp"))]
    if !settings.otlp_endpoint.is_empty() {
        eprintln!("orderflow: log.otlp_endpoint is set, but this binary was built without the `otlp` feature");
    }
    let _ = registry.try_init();
}

/// The text format's fields, `name=value` separated by spaces (the message bare), with every control
/// character escaped (`\n`, `\r`, `\t`, `\u{1b}`…). Field values come from outside (paths, ids, names,
/// backend errors): printed raw, a `%0A` in a path would start a forged log line. Escaping here, where every
/// field of every event and span is written, covers them all at once.
struct EscapedFields;

impl<'w> tracing_subscriber::fmt::FormatFields<'w> for EscapedFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        writer: tracing_subscriber::fmt::format::Writer<'w>,
        fields: R,
    ) -> std::fmt::Result {
        let mut visitor = EscapedVisitor { writer, result: Ok(()), first: true };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct EscapedVisitor<'w> {
    writer: tracing_subscriber::fmt::format::Writer<'w>,
    result: std::fmt::Result,
    first: bool,
}

impl tracing::field::Visit for EscapedVisitor<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        // `log` records bridged into tracing carry their metadata as `log.*` fields, shown elsewhere.
        if self.result.is_err() || field.name().starts_with("log.") {
            return;
        }
        let separator = if std::mem::take(&mut self.first) { "" } else { " " };
        self.result = match field.name() {
            "message" => write!(self.writer, "{separator}"),
            name => write!(self.writer, "{separator}{}=", name.trim_start_matches("r#")),
        }
        .and_then(|()| write!(Escaping(&mut self.writer), "{value:?}"));
    }
}

/// Writes through to `0`, escaping control characters.
struct Escaping<W>(W);

impl<W: std::fmt::Write> std::fmt::Write for Escaping<W> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        for c in s.chars() {
            match c {
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                c if c.is_control() => write!(self.0, "\\u{{{:x}}}", u32::from(c))?,
                c => self.0.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// OTLP/HTTP export of the spans (feature `otlp`). The `http.request` span takes the request's W3C trace as
/// its remote parent, so the exported trace has the trace id the logs, the event store and Kafka carry.
#[cfg(feature = "otlp")]
pub mod otlp {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState, TracerProvider as _,
    };
    use opentelemetry_otlp::WithExportConfig as _;

    use crate::trace::TraceParent;

    pub fn layer<S>(
        endpoint: &str,
    ) -> Option<tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        if endpoint.is_empty() {
            return None;
        }
        let exporter = match opentelemetry_otlp::SpanExporter::builder().with_http().with_endpoint(endpoint).build() {
            Ok(exporter) => exporter,
            Err(e) => {
                eprintln!("orderflow: OTLP export off, the exporter could not be built: {e}");
                return None;
            }
        };
        let resource = opentelemetry_sdk::Resource::builder().with_service_name("orderflow").build();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("orderflow");
        opentelemetry::global::set_tracer_provider(provider);
        Some(tracing_opentelemetry::layer().with_tracer(tracer))
    }

    /// Makes `parent` the remote parent of `span` in the exported trace.
    pub fn set_parent(span: &tracing::Span, parent: &TraceParent) {
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        let context = SpanContext::new(
            TraceId::from_bytes(parent.trace_id_bytes()),
            SpanId::from_bytes(parent.span_id_bytes()),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(context));
    }
}

/// A request refused with 429 (`class`: commands, queries, admin, anonymous).
pub fn rate_limited(class: &'static str) {
    counter!(RATE_LIMITED, "class" => class).increment(1);
}

/// The HTTP metrics of one route template. Their handles are resolved on the first request of each method
/// and status and kept, so that counting a request takes no lookup in the registry and allocates nothing: it
/// runs on every request of the hot path.
pub struct HttpRouteMetrics {
    route: &'static str,
    by_method: [OnceLock<Box<MethodMetrics>>; HTTP_METHODS.len() + 1],
}

struct MethodMetrics {
    duration: Histogram,
    by_status: [OnceLock<Counter>; HTTP_STATUSES.len()],
}

/// Methods with a label of their own; any other is `other`.
const HTTP_METHODS: [&str; 7] = ["GET", "POST", "DELETE", "HEAD", "OPTIONS", "PUT", "PATCH"];

/// The statuses orderflow answers with (sorted), whose counters are kept; another one is counted too, through
/// the registry.
const HTTP_STATUSES: [&str; 27] = [
    "200", "201", "202", "204", "301", "302", "304", "400", "401", "403", "404", "405", "406", "408", "409", "411",
    "412", "413", "414", "415", "422", "428", "429", "431", "500", "503", "504",
];

impl HttpRouteMetrics {
    /// `route` is the template the route was registered with (`/orders/{id}`).
    pub const fn new(route: &'static str) -> Self {
        Self { route, by_method: [const { OnceLock::new() }; HTTP_METHODS.len() + 1] }
    }

    /// The metrics of requests that matched no route.
    pub fn unmatched() -> &'static Self {
        static UNMATCHED: HttpRouteMetrics = HttpRouteMetrics::new(UNMATCHED_ROUTE);
        &UNMATCHED
    }

    /// One request answered with `status` after `elapsed`; `method` is an [`http_method_label`].
    pub fn request_done(&self, method: &'static str, status: u16, elapsed: Duration) {
        let slot = HTTP_METHODS.iter().position(|m| *m == method).unwrap_or(HTTP_METHODS.len());
        let route = self.route;
        let metrics = self.by_method[slot].get_or_init(|| {
            Box::new(MethodMetrics {
                duration: histogram!(HTTP_DURATION, "route" => route, "method" => method),
                by_status: [const { OnceLock::new() }; HTTP_STATUSES.len()],
            })
        });
        metrics.duration.record(elapsed.as_secs_f64());
        let mut digits = [0u8; 3];
        let text = status_text(status, &mut digits);
        match HTTP_STATUSES.binary_search(&text) {
            Ok(i) => metrics.by_status[i]
                .get_or_init(
                    || counter!(HTTP_REQUESTS, "route" => route, "method" => method, "status" => HTTP_STATUSES[i]),
                )
                .increment(1),
            Err(_) => counter!(HTTP_REQUESTS, "route" => route, "method" => method, "status" => status.to_string())
                .increment(1),
        }
    }
}

/// The `method` label of an HTTP method: its name, or `other` for a method outside the fixed set.
pub fn http_method_label(method: &str) -> &'static str {
    HTTP_METHODS.iter().find(|m| **m == method).copied().unwrap_or(OTHER_METHOD)
}

const OTHER_METHOD: &str = "other";

/// A three-digit status as text, without allocating ("" for anything else).
fn status_text(status: u16, digits: &mut [u8; 3]) -> &str {
    if !(100..1000).contains(&status) {
        return "";
    }
    *digits = [b'0' + (status / 100) as u8, b'0' + (status / 10 % 10) as u8, b'0' + (status % 10) as u8];
    std::str::from_utf8(digits).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    const DASHBOARD: &str = include_str!("../deploy/grafana/dashboards/orderflow.json");

    #[test]
    fn control_characters_in_text_log_values_are_escaped() {
        use std::fmt::Write as _;
        let mut out = String::new();
        Escaping(&mut out).write_str("x\nFORGED\r\t\u{1b}[31m é").expect("write");
        assert_eq!(out, "x\\nFORGED\\r\\t\\u{1b}[31m é");
    }

    /// The label names docs/api.md §4 documents, plus the ones Prometheus adds itself when it scrapes.
    const LABELS: &[&str] = &[
        "command",
        "outcome",
        "type",
        "projection",
        "source",
        "class",
        "route",
        "method",
        "status",
        "le",
        "instance",
        "job",
    ];

    fn exprs(dashboard: &serde_json::Value) -> Vec<String> {
        let panels = dashboard["panels"].as_array().expect("panels");
        panels
            .iter()
            .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
            .filter_map(|t| t["expr"].as_str().map(str::to_owned))
            .collect()
    }

    /// Every `orderflow_*` name a query uses, with a histogram's `_bucket`/`_sum`/`_count` suffix taken off.
    fn metric_names(expr: &str) -> Vec<String> {
        let mut names = Vec::new();
        let mut rest = expr;
        while let Some(at) = rest.find("orderflow_") {
            let tail = &rest[at..];
            let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
            let name = &tail[..end];
            let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
            names.push(base.to_owned());
            rest = &tail[end..];
        }
        names
    }

    /// The label names of every `by (...)` clause and every `{label=...}` selector of a query.
    fn label_names(expr: &str) -> Vec<String> {
        let mut labels = Vec::new();
        for (open, close) in [("by (", ')'), ("{", '}')] {
            let mut rest = expr;
            while let Some(at) = rest.find(open) {
                let tail = &rest[at + open.len()..];
                let end = tail.find(close).unwrap_or(tail.len());
                for part in tail[..end].split(',') {
                    let name: String =
                        part.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                    if !name.is_empty() {
                        labels.push(name);
                    }
                }
                rest = &tail[end..];
            }
        }
        labels
    }

    #[test]
    fn the_grafana_dashboard_queries_only_documented_metrics_and_labels() {
        let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).expect("dashboard JSON");
        let known = [
            COMMANDS_TOTAL,
            COMMAND_DURATION,
            EVENTS_APPENDED,
            PROJECTION_EVENTS,
            PROJECTION_LAG,
            PROJECTION_PARKED,
            PROJECTOR_RESTARTS,
            BRIDGE_RECORDS,
            BRIDGE_LAG,
            LIVE_AGGREGATES,
            HTTP_REQUESTS,
            HTTP_DURATION,
            RATE_LIMITED,
            BUILD_INFO,
        ];
        let exprs = exprs(&dashboard);
        assert!(exprs.len() >= 10, "{exprs:?}");
        let mut used = std::collections::BTreeSet::new();
        for expr in &exprs {
            for name in metric_names(expr) {
                assert!(known.contains(&name.as_str()), "{name} in {expr} is not a metric orderflow exports");
                used.insert(name);
            }
            for label in label_names(expr) {
                assert!(LABELS.contains(&label.as_str()), "label {label} in {expr} is not documented");
            }
        }
        // The board shows command rate and latency, lag, parked events, restarts, bridge lag, HTTP errors and
        // latency by route, and the process's CPU and memory.
        for wanted in [
            COMMANDS_TOTAL,
            COMMAND_DURATION,
            PROJECTION_LAG,
            PROJECTION_PARKED,
            PROJECTOR_RESTARTS,
            BRIDGE_LAG,
            HTTP_REQUESTS,
            HTTP_DURATION,
        ] {
            assert!(used.contains(wanted), "the dashboard does not show {wanted}");
        }
        for process in ["process_cpu_seconds_total", "process_resident_memory_bytes"] {
            assert!(exprs.iter().any(|e| e.contains(process)), "the dashboard does not show {process}");
        }
        // The instance selector lists instances from a series that exists from the first scrape.
        let instances = dashboard["templating"]["list"][0]["query"]["query"].as_str().unwrap_or_default();
        assert_eq!(instances, format!("label_values({BUILD_INFO}, instance)"));
        let ids: std::collections::BTreeSet<_> =
            dashboard["panels"].as_array().into_iter().flatten().map(|p| p["id"].as_u64()).collect();
        assert_eq!(ids.len(), dashboard["panels"].as_array().map_or(0, Vec::len), "panel ids must be unique");
    }

    #[test]
    fn statuses_are_sorted_and_three_digits_are_read_without_allocating() {
        assert!(HTTP_STATUSES.windows(2).all(|w| w[0] < w[1]));
        let mut digits = [0u8; 3];
        assert_eq!(status_text(404, &mut digits), "404");
        assert_eq!(status_text(99, &mut digits), "");
        assert_eq!(http_method_label("GET"), "GET");
        assert_eq!(http_method_label("BREW"), "other");
    }

    #[test]
    fn the_dashboard_parsers_find_names_and_labels() {
        let expr = r#"histogram_quantile(0.99, sum by (le, command) (rate(orderflow_command_duration_seconds_bucket{instance=~"$i"}[5m])))"#;
        assert_eq!(metric_names(expr), vec![COMMAND_DURATION.to_owned()]);
        assert_eq!(label_names(expr), vec!["le", "command", "instance"]);
    }
}
