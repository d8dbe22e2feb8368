//! Event schema evolution (docs/api.md §3, "Schema versions"): `OrderPlaced` is at schema version 2 (it gained
//! `shippingAddress`), and a log written before that keeps working end to end. The fixture
//! `tests/fixtures/v1-embedded/events.db` is an embedded event store written by orderflow before version 2 (all
//! events at schema version 1, no `shippingAddress`): five orders, one in each state plus a refunded one, placed
//! and paid on 2026-12-06. The service starts on it with empty views, so the projectors build them from the v1
//! log, and the write model is read by history and by the actors. Embedded profile only: the fixture is a
//! SQLite file (the DynamoDB item and CloudEvents decoders of v1 events are unit-tested in `store::codec`,
//! `store::dynamo` and `feed::cloudevents`).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem, distributed, eventually, eventually_within, new_id, spawn_app_in};

/// The business day of every event in the fixture.
const FIXTURE_DAY: &str = "2026-12-06";

async fn on_v1_fixture() -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/v1-embedded/events.db");
    std::fs::copy(fixture, dir.path().join("events.db")).expect("fixture copied");
    spawn_app_in(dir, &[]).await
}

async fn json(app: &TestApp, path: &str) -> Value {
    let response = app.get(path, &app.admin()).await;
    assert_eq!(response.status(), StatusCode::OK, "GET {path}");
    response.json().await.expect("json")
}

fn address() -> Value {
    json!({"name": "Alice Martin", "line1": "12 Rue de la Paix", "postalCode": "75002", "city": "Paris", "country": "FR"})
}

/// The `v1-*` orders of a search page, by id, with their status.
fn statuses(page: &Value) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = page["orders"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| o["orderId"].as_str().is_some_and(|id| id.starts_with("v1-")))
        .map(|o| (o["orderId"].as_str().unwrap_or("").to_owned(), o["status"].as_str().unwrap_or("").to_owned()))
        .collect();
    found.sort();
    found
}

#[actix_web::test]
async fn a_log_written_before_schema_version_2_keeps_working_end_to_end() {
    if distributed() {
        return;
    }
    let app = on_v1_fixture().await;

    // History reads the v1 events in today's shape: `shippingAddress` is there, null.
    let history = json(&app, "/orders/v1-shipped/history").await;
    let events = history["events"].as_array().expect("events");
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(types, ["OrderPlaced", "PaymentConfirmed", "OrderShipped"]);
    assert_eq!(events[0]["data"]["total"], 3400);
    assert_eq!(events[0]["data"]["shippingAddress"], Value::Null, "{history}");
    assert_eq!(events[0]["data"]["customerId"], "bob");

    // The views were built from the v1 log by the projectors.
    let expected: Vec<(String, String)> = [
        ("v1-cancelled", "cancelled"),
        ("v1-paid", "paid"),
        ("v1-placed", "placed"),
        ("v1-refunded", "cancelled"),
        ("v1-shipped", "shipped"),
    ]
    .iter()
    .map(|(id, status)| (id.to_string(), status.to_string()))
    .collect();
    let page = eventually(|| async {
        let page = json(&app, "/orders?q=mug&limit=100").await;
        (statuses(&page) == expected).then_some(page)
    })
    .await;
    assert!(page["orders"].as_array().into_iter().flatten().all(|o| o.get("shippingAddress").is_none()), "{page}");
    let refunded = app.projected("v1-refunded", 3).await;
    assert_eq!((refunded["refund"].as_u64(), refunded["total"].as_u64()), (Some(2800), Some(2800)));
    let revenue_path = format!("/revenue/daily?from={FIXTURE_DAY}&to={FIXTURE_DAY}");
    let revenue = eventually(|| async {
        let revenue = json(&app, &revenue_path).await;
        let eur = revenue["days"].as_array()?.iter().find(|d| d["currency"] == "EUR")?.clone();
        (eur["paidOrders"] == 3 && eur["cancelledOrders"] == 1).then_some(eur)
    })
    .await;
    assert_eq!(
        (&revenue["grossRevenue"], &revenue["refunds"], &revenue["netRevenue"]),
        (&json!(9400), &json!(2800), &json!(6600))
    );

    // The actors load v1 streams and go on from them.
    let paid = app.pay("v1-placed", "pay-later", 3000).await;
    assert_eq!(paid.status(), StatusCode::OK);
    assert_eq!(paid.json::<Value>().await.expect("json")["version"], 2);
    let shipped = app.ship("v1-paid").await;
    assert_eq!(shipped.status(), StatusCode::OK);
    assert_problem(app.cancel("v1-cancelled").await, 409, "order_already_cancelled").await;
    assert_problem(app.pay("v1-shipped", "another", 3400).await, 409, "payment_already_confirmed").await;

    // A version 2 order beside them, with an address: in the answer, the view, the search and the history.
    let id = new_id("v2");
    let body = json!({"orderId": id, "customerId": "alice", "currency": "EUR", "shippingAddress": address(),
        "items": [{"sku": "MUG-01", "name": "Blue ceramic mug", "quantity": 1, "unitPrice": 1250}]});
    let placed = app.post("/orders", &app.admin(), &body).await;
    assert_eq!(placed.status(), StatusCode::CREATED);
    assert_eq!(placed.json::<Value>().await.expect("json")["shippingAddress"], address());
    assert_eq!(app.projected(&id, 1).await["shippingAddress"], address());
    let history = json(&app, &format!("/orders/{id}/history")).await;
    assert_eq!(history["events"][0]["data"]["shippingAddress"], address());
    let found = eventually(|| async {
        let page = json(&app, "/orders?customerId=alice&limit=100").await;
        page["orders"].as_array()?.iter().find(|o| o["orderId"] == json!(id)).cloned()
    })
    .await;
    assert_eq!(found["shippingAddress"], address());

    // A rebuild reads the mixed log (v1 and v2 events) from the start and ends where the feed did.
    let admin = app.admin();
    let rebuild = app.request(reqwest::Method::POST, "/admin/projections/search/rebuild", Some(&admin), None, &[]);
    assert_eq!(rebuild.await.status(), StatusCode::ACCEPTED);
    eventually_within(Duration::from_secs(20), || async {
        let infos = json(&app, "/admin/projections").await;
        let done = infos.as_array()?.iter().all(|p| p["status"] == "running" && p["rebuild"].is_null());
        let page = json(&app, "/orders?q=mug&limit=100").await;
        let rebuilt = statuses(&page).iter().any(|(id, status)| id == "v1-placed" && status == "paid");
        (done && rebuilt).then_some(())
    })
    .await;
    assert_eq!(app.projected(&id, 1).await["shippingAddress"], address());
}

#[actix_web::test]
async fn a_shipping_address_is_checked_and_every_broken_rule_is_listed() {
    let app = crate::helpers::spawn_app().await;
    let id = new_id("addr");
    let body = json!({"orderId": id, "customerId": "c-1", "currency": "EUR",
        "shippingAddress": {"name": "", "line2": "x".repeat(201), "postalCode": "75002", "city": "Paris", "country": "fr"},
        "items": [{"sku": "S", "name": "N", "quantity": 0, "unitPrice": 1}]});
    let problem = assert_problem(app.post("/orders", &app.admin(), &body).await, 422, "validation_failed").await;
    let mut fields: Vec<&str> =
        problem["errors"].as_array().into_iter().flatten().filter_map(|e| e["field"].as_str()).collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "items[0].quantity",
            "shippingAddress.country",
            "shippingAddress.line1",
            "shippingAddress.line2",
            "shippingAddress.name"
        ],
        "{problem}"
    );
    // A wrong JSON type in it is malformed, not invalid.
    let mut body = body;
    body["shippingAddress"] = json!("12 Rue de la Paix");
    assert_problem(app.post("/orders", &app.admin(), &body).await, 400, "invalid_json").await;
    // Left out or null, there is none.
    body["shippingAddress"] = Value::Null;
    body["items"][0]["quantity"] = json!(1);
    let placed = app.post("/orders", &app.admin(), &body).await;
    assert_eq!(placed.status(), StatusCode::CREATED);
    assert!(placed.json::<Value>().await.expect("json").get("shippingAddress").is_none());
    let history = json(&app, &format!("/orders/{id}/history")).await;
    assert_eq!(history["events"][0]["data"]["shippingAddress"], Value::Null);
}
