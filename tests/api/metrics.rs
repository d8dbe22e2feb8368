//! `/metrics` as Prometheus sees it (API.md §4): every series whose labels are known at startup is there from
//! the first scrape, at 0; the parked gauge comes back from the durable count right after a restart; HTTP
//! requests are counted by route template (never by raw path), method and status; process metrics and the
//! build are exported.
//!
//! The exposition is parsed with the Prometheus project's own Python parser (`prometheus_client`, installed by
//! `scripts/services.sh` into `.services/pytools`; `PROMETHEUS_PARSER_PYTHON` names that interpreter, as
//! `scripts/test.sh` sets it). Without it, the suite's own parser stands in and the test says so.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::{Client, Method, StatusCode};
use serde_json::Value;

use crate::helpers::{Sample, parse_metrics};
use crate::helpers::{distributed, eventually_within, new_id, spawn_app, spawn_app_poisoning, spawn_process};

const COMMANDS: [&str; 4] = ["place", "confirm-payment", "ship", "cancel"];
const COMMAND_OUTCOMES: [&str; 4] = ["ok", "rejected", "conflict", "error"];
const EVENT_TYPES: [&str; 4] = ["OrderPlaced", "PaymentConfirmed", "OrderShipped", "OrderCancelled"];
const PROJECTIONS: [&str; 2] = ["search", "revenue"];
const PROJECTION_OUTCOMES: [&str; 4] = ["applied", "skipped", "failed", "parked"];
const RATE_CLASSES: [&str; 4] = ["commands", "queries", "admin", "anonymous"];

/// The samples of a scrape, parsed strictly when the Prometheus parser is at hand.
fn parse(text: &str) -> Vec<Sample> {
    let Ok(python) = std::env::var("PROMETHEUS_PARSER_PYTHON") else {
        println!("prometheus_client not used: PROMETHEUS_PARSER_PYTHON is not set (scripts/test.sh sets it)");
        return parse_metrics(text);
    };
    const SCRIPT: &str = r#"
import json, math, sys
from prometheus_client.parser import text_string_to_metric_families
samples = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        value = s.value if math.isfinite(s.value) else str(s.value)
        samples.append({"name": s.name, "labels": s.labels, "value": value, "type": family.type})
print(json.dumps(samples))
"#;
    let mut child = std::process::Command::new(&python)
        .args(["-c", SCRIPT])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {python}: {e}"));
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(text.as_bytes()).expect("exposition written to the parser");
    }
    let output = child.wait_with_output().expect("parser finished");
    assert!(
        output.status.success(),
        "prometheus_client refuses the exposition:\n{}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    let parsed: Vec<Value> = serde_json::from_slice(&output.stdout).expect("parser output");
    parsed
        .into_iter()
        .map(|s| Sample {
            name: s["name"].as_str().expect("name").to_owned(),
            labels: s["labels"]
                .as_object()
                .expect("labels")
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect(),
            value: s["value"].as_f64().unwrap_or(f64::NAN),
        })
        .collect()
}

/// The value of the one sample with this name and exactly these labels.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let found: Vec<f64> = samples.iter().filter(|s| s.name == name && s.labels == wanted).map(|s| s.value).collect();
    assert!(found.len() <= 1, "{name} {labels:?} appears {} times", found.len());
    found.first().copied()
}

fn assert_zero(samples: &[Sample], name: &str, labels: &[(&str, &str)]) {
    assert_eq!(value(samples, name, labels), Some(0.0), "{name} {labels:?} must exist at 0 from the first scrape");
}

async fn scrape(client: &Client, address: &str) -> String {
    let response = client.get(format!("{address}/metrics")).send().await.expect("scrape");
    assert_eq!(response.status(), StatusCode::OK);
    response.text().await.expect("exposition")
}

#[actix_web::test]
async fn the_first_scrape_of_a_fresh_start_has_every_known_series_at_zero() {
    let app = spawn_app().await;
    let samples = parse(&scrape(&app.client, &app.address).await);

    for command in COMMANDS {
        for outcome in COMMAND_OUTCOMES {
            assert_zero(&samples, "orderflow_commands_total", &[("command", command), ("outcome", outcome)]);
        }
        assert_zero(&samples, "orderflow_command_duration_seconds_count", &[("command", command)]);
    }
    for event_type in EVENT_TYPES {
        assert_zero(&samples, "orderflow_events_appended_total", &[("type", event_type)]);
    }
    // Lag and restarts must exist; in the distributed profile a projector may already have been restarted (a
    // consumer group still forming), so only the embedded one is held to 0 there.
    let exists = |name: &str, labels: &[(&str, &str)]| {
        if distributed() {
            assert!(value(&samples, name, labels).is_some(), "{name} {labels:?} must exist from the first scrape");
        } else {
            assert_zero(&samples, name, labels);
        }
    };
    for projection in PROJECTIONS {
        let of = [("projection", projection)];
        exists("orderflow_projection_lag_seconds", &of);
        assert_zero(&samples, "orderflow_projection_parked_events", &of);
        exists("orderflow_projector_restarts_total", &of);
        for outcome in PROJECTION_OUTCOMES {
            let labels = [("projection", projection), ("outcome", outcome)];
            assert_zero(&samples, "orderflow_projection_events_total", &labels);
        }
    }
    if distributed() {
        let mut sources = vec!["dynamodb-streams"];
        if std::env::var("ORDERFLOW_TEST_SOURCE").is_ok_and(|s| s == "kinesis") {
            sources.push("kinesis");
        }
        for source in sources {
            assert_zero(&samples, "orderflow_bridge_records_total", &[("source", source)]);
            exists("orderflow_bridge_lag_seconds", &[("source", source)]);
        }
        exists("orderflow_projector_restarts_total", &[("projection", "bridge")]);
    }
    assert_zero(&samples, "orderflow_live_aggregates", &[]);
    for class in RATE_CLASSES {
        assert_zero(&samples, "orderflow_http_rate_limited_total", &[("class", class)]);
    }
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(value(&samples, "orderflow_build_info", &[("version", version)]), Some(1.0));
    for name in ["process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"] {
        assert!(value(&samples, name, &[]).is_some_and(|v| v >= 0.0), "{name} is missing");
    }
    let started = value(&samples, "process_start_time_seconds", &[]).expect("process_start_time_seconds");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs_f64();
    assert!(started > now - 3600.0 && started <= now + 1.0, "start time {started} is not this process's");
    assert!(value(&samples, "process_resident_memory_bytes", &[]).is_some_and(|v| v > 1e6), "RSS");
}

#[actix_web::test]
async fn http_requests_are_counted_by_route_template_method_and_status() {
    let app = spawn_app().await;
    let id = new_id("routed");
    app.place(&id, "c-http", 1, 100).await;
    // Read-your-writes (the view is eventually consistent): the route template is the same with a query string.
    assert_eq!(app.get(&format!("/orders/{id}?minVersion=1"), &app.admin()).await.status(), StatusCode::OK);
    let missing = new_id("missing");
    assert_eq!(app.get(&format!("/orders/{missing}"), &app.admin()).await.status(), StatusCode::NOT_FOUND);
    let unrouted = new_id("nowhere");
    let response = app.request(Method::GET, &format!("/no/such/{unrouted}"), None, None, &[]).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let response = app.request(Method::PUT, "/orders", Some(&app.admin()), None, &[]).await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(app.get("/revenue/daily", &app.customer("c-http")).await.status(), StatusCode::FORBIDDEN);

    let text = scrape(&app.client, &app.address).await;
    let samples = parse(&text);
    let requests = |route: &str, method: &str, status: &str| {
        value(&samples, "orderflow_http_requests_total", &[("route", route), ("method", method), ("status", status)])
    };
    assert_eq!(requests("/orders", "POST", "201"), Some(1.0), "{text}");
    assert_eq!(requests("/orders/{id}", "GET", "200"), Some(1.0), "{text}");
    assert_eq!(requests("/orders/{id}", "GET", "404"), Some(1.0), "{text}");
    assert_eq!(requests("unmatched", "GET", "404"), Some(1.0), "{text}");
    assert_eq!(requests("/orders", "PUT", "405"), Some(1.0), "{text}");
    assert_eq!(requests("/revenue/daily", "GET", "403"), Some(1.0), "{text}");
    // No raw path, and so no order id, ever becomes a label value.
    for s in samples.iter().filter(|s| s.name.starts_with("orderflow_http_request")) {
        let route = &s.labels["route"];
        assert!(route == "unmatched" || route.starts_with('/'), "{s:?}");
        for forbidden in [&id, &missing, &unrouted] {
            assert!(!route.contains(forbidden.as_str()), "a raw path became a label: {s:?}");
        }
    }
    // The latency histogram, by route and method.
    let count = value(
        &samples,
        "orderflow_http_request_duration_seconds_count",
        &[("route", "/orders/{id}"), ("method", "GET")],
    );
    assert_eq!(count, Some(2.0), "{text}");
    let buckets: Vec<&Sample> = samples
        .iter()
        .filter(|s| {
            s.name == "orderflow_http_request_duration_seconds_bucket"
                && s.labels.get("route").is_some_and(|r| r == "/orders/{id}")
        })
        .collect();
    assert!(buckets.len() > 5 && buckets.iter().any(|b| b.labels["le"] == "+Inf"), "{text}");
}

#[actix_web::test]
async fn after_a_restart_the_parked_gauge_shows_the_durable_count_at_once() {
    // Both views refuse this order's events: two parked in each, in the data folder's parked-events store.
    let overrides = [("ORDERFLOW__PROJECTIONS__MAX_ATTEMPTS", "2"), ("ORDERFLOW__PROJECTIONS__RETRY_BACKOFF_MS", "5")];
    let poisoned = spawn_app_poisoning(tempfile::tempdir().expect("temp dir"), &overrides, "parked-").await;
    let id = new_id("parked");
    poisoned.place(&id, "c-parked", 1, 700).await;
    assert_eq!(poisoned.pay(&id, "pay-parked", 700).await.status(), StatusCode::OK);
    eventually_within(Duration::from_secs(30), || async {
        let parked: Vec<Value> = poisoned.get("/admin/parked", &poisoned.admin()).await.json().await.ok()?;
        (parked.len() == 4).then_some(())
    })
    .await;
    poisoned.stop().await;
    let client = Client::new();

    // The service started on the same data folder, nothing refused any more: the four stay parked, and the first
    // scrape says so (this process's own recorder is shared by every in-process app of the suite).
    let process = spawn_process(poisoned.dir.path());
    let samples = parse(&scrape(&client, &process.address).await);
    for projection in PROJECTIONS {
        let parked = value(&samples, "orderflow_projection_parked_events", &[("projection", projection)]);
        assert_eq!(parked, Some(2.0), "{projection}: the first scrape after the restart shows the parked count");
    }
}
