//! `GET /asyncapi.json` (docs/api.md §3): served without a token; parsed by the AsyncAPI project's own parser
//! (npm `@asyncapi/parser`, `tests/asyncapi/parse.mjs`) without errors or warnings; documents every event type
//! of the domain on both the Kafka and the Kinesis channel; and the CloudEvents the service really makes of an
//! order's events match the documented payloads. The parser part needs Node and the parser: `scripts/test.sh`
//! installs them (scripts/services.sh) and sets `ASYNCAPI_PARSER_PREFIX`; without it that test says "skipped".

use std::collections::BTreeSet;

use orderflow::domain::{OrderEvent, OrderId};
use orderflow::feed::cloudevents::CloudEvent;
use orderflow::store::StoredEvent;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, new_id, spawn_app};

async fn document(app: &TestApp) -> String {
    let response = app.client.get(app.url("/asyncapi.json")).send().await.expect("request sent");
    assert_eq!(response.status(), StatusCode::OK, "served without a token");
    assert_eq!(response.headers()["content-type"], "application/json");
    response.text().await.expect("body")
}

/// The event types of the domain, `orders.<Name>`, from the derived schema of `OrderEvent` (so a new event
/// type is expected in the document without touching this test).
fn domain_types() -> BTreeSet<String> {
    use utoipa::PartialSchema;
    let schema = serde_json::to_value(OrderEvent::schema()).expect("schema");
    let branches = schema["oneOf"].as_array().expect("OrderEvent is a oneOf").iter();
    branches.map(|b| format!("orders.{}", b["properties"]["type"]["enum"][0].as_str().expect("type"))).collect()
}

/// The order's events from its history, as the CloudEvents the bridge publishes for them.
async fn cloud_events(app: &TestApp, id: &str) -> Vec<Value> {
    let history: Value = app.get(&format!("/orders/{id}/history"), &app.admin()).await.json().await.expect("JSON");
    let events = history["events"].as_array().expect("events").iter();
    events
        .map(|e| {
            let stored = StoredEvent {
                event_id: e["eventId"].as_str().and_then(|s| s.parse().ok()).expect("eventId"),
                order_id: OrderId::parse("orderId", id).expect("order id"),
                version: e["version"].as_u64().expect("version"),
                position: 0,
                schema_version: 1,
                recorded_at: e["occurredAt"].as_str().and_then(|s| s.parse().ok()).expect("occurredAt"),
                traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned()),
                event: serde_json::from_value(json!({"type": e["type"], "data": e["data"]})).expect("an OrderEvent"),
            };
            serde_json::from_slice(&CloudEvent::encode(&stored)).expect("a CloudEvent")
        })
        .collect()
}

#[actix_web::test]
async fn the_document_is_served_without_a_token_and_names_every_event_type() {
    let app = spawn_app().await;
    let doc: Value = serde_json::from_str(&document(&app).await).expect("JSON");
    assert_eq!(doc["asyncapi"], "3.0.0");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    let types = domain_types();
    assert_eq!(types.len(), 4, "{types:?}");
    let documented: BTreeSet<String> =
        doc["components"]["messages"].as_object().expect("messages").values().map(|m| m["name"].to_string()).collect();
    let expected: BTreeSet<String> = types.iter().map(|t| json!(t).to_string()).collect();
    assert_eq!(documented, expected);
    let addresses: Vec<&Value> =
        doc["channels"].as_object().expect("channels").values().map(|c| &c["address"]).collect();
    assert_eq!(addresses, [&json!("orders.events"), &json!("orders-events")], "the Kafka topic and the Kinesis stream");
}

#[actix_web::test]
async fn the_asyncapi_parser_accepts_the_document_and_real_events_match_it() {
    let Ok(prefix) = std::env::var("ASYNCAPI_PARSER_PREFIX") else {
        println!(
            "skipped: ASYNCAPI_PARSER_PREFIX is not set (scripts/test.sh sets it; scripts/services.sh installs it)"
        );
        return;
    };
    let app = spawn_app().await;
    // Every event type: placed, paid and shipped; placed, paid and cancelled (with a refund).
    let (shipped, cancelled) = (new_id("aa-shipped"), new_id("aa-cancelled"));
    for id in [&shipped, &cancelled] {
        app.place(id, "c-asyncapi", 2, 1250).await;
        assert_eq!(app.pay(id, &format!("pay-{id}"), 2500).await.status(), StatusCode::OK);
    }
    assert_eq!(app.ship(&shipped).await.status(), StatusCode::OK);
    assert_eq!(app.cancel(&cancelled).await.status(), StatusCode::OK);
    let mut events = cloud_events(&app, &shipped).await;
    events.extend(cloud_events(&app, &cancelled).await);
    let produced: BTreeSet<String> = events.iter().map(|e| e["type"].as_str().unwrap_or("").to_owned()).collect();
    assert_eq!(produced, domain_types(), "the test produces every event type");
    // A record as orderflow published it before OrderPlaced schema version 2 (no `dataschema`, no address): the
    // document still describes it, as consumers may find it on the topic or stream.
    events.push(json!({"specversion": "1.0", "id": "01a249c5-2403-744d-807f-ed31b0a7e55d", "source": "orderflow",
        "type": "orders.OrderPlaced", "subject": "v1-order", "time": "2026-12-06T05:13:06.307Z",
        "datacontenttype": "application/json", "sequence": "1", "schemaversion": 1,
        "data": {"customerId": "bob", "currency": "EUR", "total": 2500, "placedAt": "2026-12-06T05:13:06.307Z",
            "items": [{"sku": "MUG-01", "name": "Blue ceramic mug", "quantity": 2, "unitPrice": 1250}]}}));

    let dir = tempfile::tempdir().expect("temp dir");
    let (document_file, events_file) = (dir.path().join("asyncapi.json"), dir.path().join("events.json"));
    std::fs::write(&document_file, document(&app).await).expect("document written");
    std::fs::write(&events_file, Value::Array(events).to_string()).expect("events written");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/asyncapi/parse.mjs");
    let output = std::process::Command::new("node")
        .arg(script)
        .env("ASYNCAPI_PARSER_PREFIX", &prefix)
        .env("ASYNCAPI_DOCUMENT", &document_file)
        .env("ASYNCAPI_EVENTS", &events_file)
        .output()
        .expect("node runs (scripts/test.sh installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the AsyncAPI check failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("all checks passed"), "{stdout}");

    // What the parser saw: each channel carries a message for every event type of the domain.
    for channel in ["orderEventsKafka", "orderEventsKinesis"] {
        let messages: BTreeSet<String> = stdout
            .lines()
            .filter_map(|line| line.strip_prefix(&format!("message {channel} ")))
            .map(str::to_owned)
            .collect();
        assert_eq!(messages, domain_types(), "{channel}");
    }
}
