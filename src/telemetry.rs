//! Logs and metrics in one place. Business code calls the named functions below; the metric names and
//! labels are those of API.md §4 and appear nowhere else. Label values come from small fixed sets
//! (command names, event types, projection names), never from an order id.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

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
pub const RATE_LIMITED: &str = "orderflow_http_rate_limited_total";

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

/// Installs the process-wide Prometheus recorder once and returns its handle (for `/metrics`).
pub fn prometheus() -> PrometheusHandle {
    PROMETHEUS
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(COMMAND_DURATION.to_owned()),
                    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5],
                )
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics shows only this one's");
            }
            describe();
            handle
        })
        .clone()
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

    /// The label names API.md §4 documents, plus the ones Prometheus adds itself when it scrapes.
    const LABELS: &[&str] = &["command", "outcome", "type", "projection", "source", "class", "le", "instance", "job"];

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
            RATE_LIMITED,
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
        // The board covers what issue 6 asks for: command rate and latency, lag, parked events, restarts, bridge lag.
        for wanted in
            [COMMANDS_TOTAL, COMMAND_DURATION, PROJECTION_LAG, PROJECTION_PARKED, PROJECTOR_RESTARTS, BRIDGE_LAG]
        {
            assert!(used.contains(wanted), "the dashboard does not show {wanted}");
        }
        let ids: std::collections::BTreeSet<_> =
            dashboard["panels"].as_array().into_iter().flatten().map(|p| p["id"].as_u64()).collect();
        assert_eq!(ids.len(), dashboard["panels"].as_array().map_or(0, Vec::len), "panel ids must be unique");
    }

    #[test]
    fn the_dashboard_parsers_find_names_and_labels() {
        let expr = r#"histogram_quantile(0.99, sum by (le, command) (rate(orderflow_command_duration_seconds_bucket{instance=~"$i"}[5m])))"#;
        assert_eq!(metric_names(expr), vec![COMMAND_DURATION.to_owned()]);
        assert_eq!(label_names(expr), vec!["le", "command", "instance"]);
    }
}
