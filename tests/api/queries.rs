//! The read side of docs/api.md §2: `GET /orders/{id}` (eventual, `consistency=strong`, `minVersion`), the history,
//! search (`q`, filters, sorts, limits, cursors), daily revenue, and the operations routes (`/admin/projections`,
//! `/health/*`, `/metrics`, docs/api.md §4).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{
    RevenueRows, TestApp, add_cancellation, add_payment, assert_problem, assert_utc_timestamp, eventually,
    find_samples, get_json, header, ids, json_ok, key_set, keys, metric_sum, metrics_text, new_id, ok_body,
    parse_metrics, place_items, revenue_between, revenue_rows, spawn_app, spawn_app_with,
};

fn today() -> NaiveDate {
    Utc::now().date_naive()
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

const ORDER_KEYS: [&str; 8] = ["orderId", "customerId", "status", "currency", "items", "total", "version", "placedAt"];

fn doc_keys(extra: &[&str]) -> BTreeSet<String> {
    ORDER_KEYS.iter().chain(extra).map(|s| s.to_string()).collect()
}

// --------------------------------------------------------------------------------------- GET /orders/{id}

#[actix_web::test]
async fn order_document_has_exactly_the_documented_fields_as_they_are_set() {
    let app = spawn_app().await;
    let id = new_id("doc");
    let placed = place_items(
        &app,
        &id,
        "c-doc",
        "EUR",
        &[("MUG-1", "Blue ceramic mug", 2, 1250), ("TEA-9", "Green tea", 1, 499)],
    )
    .await;

    let doc = app.projected(&id, 1).await;
    assert_eq!(keys(&doc), doc_keys(&[]), "optional fields are absent until set: {doc}");
    assert_eq!(doc["orderId"], json!(id));
    assert_eq!(doc["customerId"], "c-doc");
    assert_eq!(doc["status"], "placed");
    assert_eq!(doc["currency"], "EUR");
    assert_eq!(doc["total"], 2 * 1250 + 499);
    assert_eq!(doc["version"], 1);
    assert_utc_timestamp(&doc["placedAt"]);
    assert_eq!(
        doc["items"],
        json!([
            {"sku": "MUG-1", "name": "Blue ceramic mug", "quantity": 2, "unitPrice": 1250},
            {"sku": "TEA-9", "name": "Green tea", "quantity": 1, "unitPrice": 499}
        ])
    );
    assert_eq!(doc, placed, "the projected document equals the command's answer");

    let response = app.get(&format!("/orders/{id}"), &app.admin()).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "etag").as_deref(), Some("\"1\""));
    assert_eq!(header(&response, "x-consistency").as_deref(), Some("eventual"));
    assert!(header(&response, "content-type").unwrap_or_default().starts_with("application/json"));

    let paid = ok_body(app.pay(&id, "pay-doc-1", 2999).await).await;
    let doc = app.projected(&id, 2).await;
    assert_eq!(keys(&doc), doc_keys(&["paidAt", "paymentId"]), "{doc}");
    assert_eq!(doc["status"], "paid");
    assert_eq!(doc["paymentId"], "pay-doc-1");
    assert_utc_timestamp(&doc["paidAt"]);
    assert_eq!(doc, paid);

    let shipped = ok_body(
        app.post(&format!("/orders/{id}/ship"), &app.admin(), &json!({"carrier": "UPS", "trackingNumber": "1Z999"}))
            .await,
    )
    .await;
    let doc = app.projected(&id, 3).await;
    assert_eq!(keys(&doc), doc_keys(&["paidAt", "paymentId", "shippedAt", "carrier", "trackingNumber"]), "{doc}");
    assert_eq!(doc["status"], "shipped");
    assert_eq!(doc["carrier"], "UPS");
    assert_eq!(doc["trackingNumber"], "1Z999");
    assert_utc_timestamp(&doc["shippedAt"]);
    assert_eq!(doc, shipped);
    let response = app.get(&format!("/orders/{id}"), &app.admin()).await;
    assert_eq!(header(&response, "etag").as_deref(), Some("\"3\""));

    // Paid, then cancelled: the refund is the paid amount.
    let refunded = new_id("doc-refund");
    app.place(&refunded, "c-doc", 3, 700).await;
    assert_eq!(app.pay(&refunded, "pay-doc-2", 2100).await.status(), StatusCode::OK);
    let cancelled =
        ok_body(app.post(&format!("/orders/{refunded}/cancel"), &app.admin(), &json!({"reason": "too late"})).await)
            .await;
    let doc = app.projected(&refunded, 3).await;
    assert_eq!(keys(&doc), doc_keys(&["paidAt", "paymentId", "cancelledAt", "cancelReason", "refund"]), "{doc}");
    assert_eq!(doc["status"], "cancelled");
    assert_eq!(doc["cancelReason"], "too late");
    assert_eq!(doc["refund"], 2100);
    assert_utc_timestamp(&doc["cancelledAt"]);
    assert_eq!(doc, cancelled);

    // Cancelled unpaid: refund 0, no payment fields.
    let unpaid = new_id("doc-unpaid");
    app.place(&unpaid, "c-doc", 1, 100).await;
    assert_eq!(app.cancel(&unpaid).await.status(), StatusCode::OK);
    let doc = app.projected(&unpaid, 2).await;
    assert_eq!(keys(&doc), doc_keys(&["cancelledAt", "cancelReason", "refund"]), "{doc}");
    assert_eq!(doc["refund"], 0);
    assert_eq!(doc["cancelReason"], "changed my mind");
}

#[actix_web::test]
async fn unknown_orders_are_404_order_not_found() {
    let app = spawn_app().await;
    let admin = app.admin();
    for path in [
        "/orders/no-such-order",
        "/orders/no-such-order?consistency=strong",
        "/orders/no-such-order?minVersion=1",
        "/orders/no-such-order/history",
        // An id that breaks the id rules names no order either.
        "/orders/bad%20id",
        "/orders/bad%20id/history",
    ] {
        let response = app.get(path, &admin).await;
        assert_problem(response, 404, "order_not_found").await;
    }
}

#[actix_web::test]
async fn strong_read_right_after_a_command_sees_the_new_version() {
    let app = spawn_app().await;
    for i in 0..5 {
        let id = new_id(&format!("strong{i}"));
        app.place(&id, "c-strong", 1, 1000).await;
        let paid = ok_body(app.pay(&id, "p-1", 1000).await).await;
        let response = app.get(&format!("/orders/{id}?consistency=strong"), &app.admin()).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header(&response, "x-consistency").as_deref(), Some("strong"));
        assert_eq!(header(&response, "etag").as_deref(), Some("\"2\""));
        let doc: Value = response.json().await.unwrap();
        assert_eq!(doc["version"], 2);
        assert_eq!(doc["status"], "paid");
        assert_eq!(doc, paid, "the write model's fold equals the command's answer");

        let shipped = ok_body(app.ship(&id).await).await;
        let response = app.get(&format!("/orders/{id}?consistency=strong"), &app.admin()).await;
        assert_eq!(header(&response, "etag").as_deref(), Some("\"3\""));
        assert_eq!(response.json::<Value>().await.unwrap(), shipped);
    }
    // `consistency=eventual` is the default spelled out.
    let id = new_id("eventual");
    app.place(&id, "c-strong", 1, 1000).await;
    app.projected(&id, 1).await;
    let response = app.get(&format!("/orders/{id}?consistency=eventual"), &app.admin()).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "x-consistency").as_deref(), Some("eventual"));
}

#[actix_web::test]
async fn min_version_returns_at_least_that_version() {
    let app = spawn_app().await;
    for i in 0..5 {
        let id = new_id(&format!("minv{i}"));
        app.place(&id, "c-minv", 2, 300).await;
        let response = app.get(&format!("/orders/{id}?minVersion=1"), &app.admin()).await;
        assert_eq!(response.status(), StatusCode::OK);
        let consistency = header(&response, "x-consistency").unwrap_or_default();
        assert!(consistency == "eventual" || consistency == "strong", "X-Consistency: {consistency}");
        let doc: Value = response.json().await.unwrap();
        assert!(doc["version"].as_u64() >= Some(1));

        assert_eq!(app.pay(&id, "p", 600).await.status(), StatusCode::OK);
        assert_eq!(app.ship(&id).await.status(), StatusCode::OK);
        let response = app.get(&format!("/orders/{id}?minVersion=3"), &app.admin()).await;
        assert_eq!(response.status(), StatusCode::OK);
        let consistency = header(&response, "x-consistency").unwrap_or_default();
        assert!(consistency == "eventual" || consistency == "strong", "X-Consistency: {consistency}");
        let etag = header(&response, "etag").unwrap_or_default();
        let doc: Value = response.json().await.unwrap();
        assert_eq!(doc["version"], 3, "{doc}");
        assert_eq!(doc["status"], "shipped");
        assert_eq!(etag, "\"3\"");
    }
}

#[actix_web::test]
async fn min_version_beyond_the_stream_falls_back_to_strong_after_the_wait() {
    let app = spawn_app_with(&[("ORDERFLOW__PROJECTIONS__MIN_VERSION_WAIT_MS", "200")]).await;
    let id = new_id("minv-far");
    app.place(&id, "c-minv", 1, 100).await;
    app.projected(&id, 1).await;
    let started = Instant::now();
    let response = app.get(&format!("/orders/{id}?minVersion=5"), &app.admin()).await;
    let elapsed = started.elapsed();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "x-consistency").as_deref(), Some("strong"));
    assert_eq!(header(&response, "etag").as_deref(), Some("\"1\""));
    let doc: Value = response.json().await.unwrap();
    assert_eq!(doc["version"], 1);
    assert!(elapsed < Duration::from_millis(1500), "the configured wait (200 ms) is honoured: took {elapsed:?}");
}

#[actix_web::test]
async fn min_version_beyond_the_stream_waits_at_most_about_two_seconds_by_default() {
    let app = spawn_app().await;
    let id = new_id("minv-default");
    app.place(&id, "c-minv", 1, 100).await;
    let started = Instant::now();
    let response = app.get(&format!("/orders/{id}?minVersion=2"), &app.admin()).await;
    let elapsed = started.elapsed();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "x-consistency").as_deref(), Some("strong"));
    assert!(elapsed < Duration::from_millis(3500), "waits up to 2 s, then falls back: took {elapsed:?}");
}

#[actix_web::test]
async fn invalid_consistency_or_min_version_is_422() {
    let app = spawn_app().await;
    let id = new_id("badq");
    app.place(&id, "c-q", 1, 100).await;
    for (query, field) in [
        ("consistency=bogus", "consistency"),
        ("consistency=STRONG", "consistency"),
        ("consistency=", "consistency"),
        ("minVersion=abc", "minVersion"),
        ("minVersion=-1", "minVersion"),
        ("minVersion=1.5", "minVersion"),
        ("minVersion=", "minVersion"),
    ] {
        let response = app.get(&format!("/orders/{id}?{query}"), &app.admin()).await;
        let problem = assert_problem(response, 422, "validation_failed").await;
        let errors = problem["errors"].as_array().unwrap_or_else(|| panic!("errors for {query}: {problem}"));
        assert!(errors.iter().any(|e| e["field"] == field), "{query}: {problem}");
    }
}

// ------------------------------------------------------------------------------------------------ history

#[actix_web::test]
async fn history_lists_every_event_with_bare_types_and_documented_data() {
    let app = spawn_app().await;
    let id = new_id("hist");
    let placed =
        place_items(&app, &id, "c-hist", "EUR", &[("SKU-A", "Thing A", 3, 100), ("SKU-B", "Thing B", 1, 50)]).await;
    assert_eq!(app.pay(&id, "pay-h", 350).await.status(), StatusCode::OK);
    // The same payment again: 200, no new event.
    let again = app.pay(&id, "pay-h", 350).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(header(&again, "etag").as_deref(), Some("\"2\""));
    assert_eq!(
        app.post(&format!("/orders/{id}/ship"), &app.admin(), &json!({"carrier": "DHL", "trackingNumber": "JD0001"}))
            .await
            .status(),
        StatusCode::OK
    );

    let history = get_json(&app, &format!("/orders/{id}/history")).await;
    assert_eq!(keys(&history), key_set(&["events"]));
    let events = history["events"].as_array().expect("events");
    assert_eq!(events.len(), 3, "{history}");
    let mut event_ids = BTreeSet::new();
    for (i, event) in events.iter().enumerate() {
        assert_eq!(keys(event), key_set(&["eventId", "type", "version", "occurredAt", "data"]), "{event}");
        assert_eq!(event["version"], i as u64 + 1, "versions 1..n without gaps: {history}");
        let event_id = event["eventId"].as_str().expect("eventId is a string");
        assert!(!event_id.is_empty());
        assert!(event_ids.insert(event_id.to_owned()), "eventIds are unique: {history}");
        assert_utc_timestamp(&event["occurredAt"]);
    }
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().expect("type")).collect();
    assert_eq!(types, ["OrderPlaced", "PaymentConfirmed", "OrderShipped"]);

    let data = &events[0]["data"];
    // Schema version 2 of OrderPlaced: `shippingAddress` is always there, null when the order has none.
    let fields = ["customerId", "currency", "items", "total", "placedAt", "shippingAddress"];
    assert_eq!(keys(data), key_set(&fields), "{data}");
    assert_eq!(data["shippingAddress"], Value::Null);
    assert_eq!(data["customerId"], "c-hist");
    assert_eq!(data["currency"], "EUR");
    assert_eq!(data["total"], 350);
    assert_eq!(data["items"], placed["items"]);
    assert_eq!(data["placedAt"], placed["placedAt"]);

    let data = &events[1]["data"];
    assert_eq!(keys(data), key_set(&["paymentId", "amount", "paidAt"]), "{data}");
    assert_eq!(data["paymentId"], "pay-h");
    assert_eq!(data["amount"], 350);
    assert_utc_timestamp(&data["paidAt"]);

    let data = &events[2]["data"];
    assert_eq!(keys(data), key_set(&["carrier", "trackingNumber", "shippedAt"]), "{data}");
    assert_eq!(data["carrier"], "DHL");
    assert_eq!(data["trackingNumber"], "JD0001");
    assert_utc_timestamp(&data["shippedAt"]);

    // A cancellation, paid and unpaid.
    let paid = new_id("hist-paid");
    app.place(&paid, "c-hist", 1, 900).await;
    app.pay(&paid, "pay-x", 900).await;
    app.post(&format!("/orders/{paid}/cancel"), &app.admin(), &json!({"reason": "duplicate"})).await;
    let history = get_json(&app, &format!("/orders/{paid}/history")).await;
    let events = history["events"].as_array().expect("events");
    let versions: Vec<u64> = events.iter().map(|e| e["version"].as_u64().unwrap()).collect();
    assert_eq!(versions, [1, 2, 3]);
    assert_eq!(events[2]["type"], "OrderCancelled");
    let data = &events[2]["data"];
    assert_eq!(keys(data), key_set(&["reason", "refund", "cancelledAt"]), "{data}");
    assert_eq!(data["reason"], "duplicate");
    assert_eq!(data["refund"], 900);
    assert_utc_timestamp(&data["cancelledAt"]);

    let unpaid = new_id("hist-unpaid");
    app.place(&unpaid, "c-hist", 1, 900).await;
    app.cancel(&unpaid).await;
    let history = get_json(&app, &format!("/orders/{unpaid}/history")).await;
    assert_eq!(history["events"][1]["type"], "OrderCancelled");
    assert_eq!(history["events"][1]["data"]["refund"], 0);
    assert_eq!(history["events"].as_array().unwrap().len(), 2);
}

// ------------------------------------------------------------------------------------------------- search

/// Four orders with distinct placedAt and totals:
/// A (c-a, "Red ceramic mug" MUG-RED-1, 1000, placed), B (c-b, "Green tea leaves" TEA-42, 3000, paid),
/// C (c-a, "Steel kettle" KETTLE-9 + "Blue mug" MUG-BLUE-2, 2000, shipped), D (c-c, "Wooden spoon" SPOON-7, 500,
/// cancelled). Placed in that order.
struct Catalog {
    app: TestApp,
    a: Value,
    b: Value,
    c: Value,
    d: Value,
}

impl Catalog {
    fn id(&self, which: char) -> String {
        let doc = match which {
            'A' => &self.a,
            'B' => &self.b,
            'C' => &self.c,
            _ => &self.d,
        };
        doc["orderId"].as_str().unwrap().to_owned()
    }

    fn ids(&self, which: &str) -> Vec<String> {
        which.chars().map(|c| self.id(c)).collect()
    }

    async fn search(&self, query: &str) -> Value {
        let page = get_json(&self.app, &format!("/orders?{query}")).await;
        assert_eq!(keys(&page).intersection(&key_set(&["orders", "estimatedTotal"])).count(), 2, "{page}");
        page
    }

    async fn hits(&self, query: &str) -> Vec<String> {
        ids(&self.search(query).await)
    }
}

async fn catalog() -> Catalog {
    let app = spawn_app().await;
    let a = place_items(&app, &new_id("A"), "c-a", "EUR", &[("MUG-RED-1", "Red ceramic mug", 1, 1000)]).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let b = place_items(&app, &new_id("B"), "c-b", "EUR", &[("TEA-42", "Green tea leaves", 2, 1500)]).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let c = place_items(
        &app,
        &new_id("C"),
        "c-a",
        "EUR",
        &[("KETTLE-9", "Steel kettle", 1, 1500), ("MUG-BLUE-2", "Blue mug", 2, 250)],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let d = place_items(&app, &new_id("D"), "c-c", "EUR", &[("SPOON-7", "Wooden spoon", 5, 100)]).await;
    let id = |v: &Value| v["orderId"].as_str().unwrap().to_owned();
    assert_eq!(app.pay(&id(&b), "pay-b", 3000).await.status(), StatusCode::OK);
    assert_eq!(app.pay(&id(&c), "pay-c", 2000).await.status(), StatusCode::OK);
    assert_eq!(app.ship(&id(&c)).await.status(), StatusCode::OK);
    assert_eq!(app.cancel(&id(&d)).await.status(), StatusCode::OK);
    app.projected(&id(&a), 1).await;
    app.projected(&id(&b), 2).await;
    app.projected(&id(&c), 3).await;
    app.projected(&id(&d), 2).await;
    Catalog { app, a, b, c, d }
}

#[actix_web::test]
async fn search_full_text_matches_words_skus_and_prefixes() {
    let cat = catalog().await;
    let set = |v: Vec<String>| v.into_iter().collect::<BTreeSet<_>>();
    assert_eq!(set(cat.hits("q=mug").await), set(cat.ids("AC")), "a word in item names");
    assert_eq!(set(cat.hits("q=MUG").await), set(cat.ids("AC")), "case-insensitive");
    assert_eq!(cat.hits("q=ceramic").await, cat.ids("A"));
    assert_eq!(cat.hits("q=kettle").await, cat.ids("C"), "a word in the second line");
    assert_eq!(cat.hits("q=kett").await, cat.ids("C"), "a prefix");
    assert_eq!(cat.hits("q=TEA-42").await, cat.ids("B"), "a sku");
    assert_eq!(cat.hits("q=SPOON-7").await, cat.ids("D"), "a sku");
    assert_eq!(cat.hits("q=MUG-BLUE-2").await, cat.ids("C"), "a sku with a shared word");
    assert_eq!(cat.hits("q=green%20tea").await, cat.ids("B"), "several words");
    assert_eq!(cat.hits("q=red%20mug").await, cat.ids("A"), "several words, all must match");

    let none = cat.search("q=zebra").await;
    assert_eq!(ids(&none), Vec::<String>::new());
    assert_eq!(none["estimatedTotal"], 0);
    assert!(none["nextCursor"].is_null());

    let mug = cat.search("q=mug").await;
    assert_eq!(mug["estimatedTotal"], 2);
    // Every hit is a full order document.
    for hit in mug["orders"].as_array().unwrap() {
        let expected = if hit["orderId"] == cat.a["orderId"] { &cat.a } else { &cat.c };
        assert_eq!(hit["items"], expected["items"]);
        assert!(keys(hit).is_superset(&doc_keys(&[])), "{hit}");
    }
    assert_eq!(mug["orders"][0], cat.app.projected(&cat.id('C'), 3).await, "hits are the projected documents");

    // Punctuation and FTS syntax are just text, never a 500.
    for q in ["%2D%2D%21%21", "%22", "%22mug", "mug*", "mug%20OR%20tea", "NEAR(mug)", "%27%3B%20DROP", "%28", "%5E"] {
        let response = cat.app.get(&format!("/orders?q={q}"), &cat.app.admin()).await;
        let status = response.status();
        let body = response.text().await.unwrap();
        assert_eq!(status, StatusCode::OK, "q={q}: {body}");
        let page: Value = serde_json::from_str(&body).unwrap();
        assert!(page["orders"].is_array(), "q={q}: {page}");
    }
    // A q made of punctuation only has no words to match: no hits (or, read as "no q", all of them; docs/api.md is
    // silent), never an error.
    let punct = cat.search("q=%2D%2D%21%21").await;
    let n = ids(&punct).len();
    assert!(n == 0 || n == 4, "{punct}");
    assert_eq!(punct["estimatedTotal"], n);
    // An empty q is no filter.
    assert_eq!(cat.search("q=").await["estimatedTotal"], 4);
}

#[actix_web::test]
async fn search_filters_by_customer_status_and_placed_range() {
    let cat = catalog().await;
    let set = |v: Vec<String>| v.into_iter().collect::<BTreeSet<_>>();
    assert_eq!(set(cat.hits("customerId=c-a").await), set(cat.ids("AC")));
    assert_eq!(cat.hits("customerId=c-b").await, cat.ids("B"));
    assert_eq!(cat.hits("customerId=nobody").await, Vec::<String>::new());
    assert_eq!(cat.hits("status=placed").await, cat.ids("A"));
    assert_eq!(cat.hits("status=paid").await, cat.ids("B"));
    assert_eq!(cat.hits("status=shipped").await, cat.ids("C"));
    assert_eq!(cat.hits("status=cancelled").await, cat.ids("D"));
    assert_eq!(cat.hits("customerId=c-a&q=kettle").await, cat.ids("C"));
    assert_eq!(cat.hits("customerId=c-a&status=placed").await, cat.ids("A"));
    assert_eq!(cat.hits("customerId=c-b&q=mug").await, Vec::<String>::new());
    assert_eq!(cat.search("status=cancelled").await["estimatedTotal"], 1);
    // Counts of words within one customer's orders, with and without another filter.
    assert_eq!(cat.search("customerId=c-a&q=mug").await["estimatedTotal"], 2);
    assert_eq!(cat.search("customerId=c-b&q=mug").await["estimatedTotal"], 0);
    assert_eq!(cat.search("customerId=c-a&q=mug&status=placed").await["estimatedTotal"], 1);
    assert_eq!(cat.hits("customerId=c-a&q=mug&status=placed").await, cat.ids("A"));

    let at = |v: &Value| assert_utc_timestamp(&v["placedAt"]);
    let one_ms = chrono::Duration::milliseconds(1);
    // Strictly between A and D: B and C (no reliance on whether the bounds are inclusive).
    let from = rfc3339(at(&cat.b) - one_ms);
    let to = rfc3339(at(&cat.c) + one_ms);
    assert_eq!(set(cat.hits(&format!("placedFrom={from}&placedTo={to}")).await), set(cat.ids("BC")));
    assert_eq!(set(cat.hits(&format!("placedFrom={from}")).await), set(cat.ids("BCD")));
    assert_eq!(set(cat.hits(&format!("placedTo={to}")).await), set(cat.ids("ABC")));
    assert_eq!(cat.hits(&format!("placedFrom={from}&placedTo={to}&customerId=c-a")).await, cat.ids("C"));
    // Dates.
    let yesterday = today().pred_opt().unwrap();
    let tomorrow = today().succ_opt().unwrap();
    assert_eq!(cat.search(&format!("placedFrom={yesterday}&placedTo={tomorrow}")).await["estimatedTotal"], 4);
    assert_eq!(cat.hits(&format!("placedFrom={tomorrow}")).await, Vec::<String>::new());
    assert_eq!(cat.hits(&format!("placedTo={yesterday}")).await, Vec::<String>::new());

    for query in ["status=bogus", "placedFrom=notadate", "placedTo=2024-13-40", "customerId=bad%20id"] {
        let response = cat.app.get(&format!("/orders?{query}"), &cat.app.admin()).await;
        assert_problem(response, 422, "validation_failed").await;
    }

    // A customer sees only its own orders.
    let response = cat.app.get("/orders", &cat.app.customer("c-a")).await;
    let page = json_ok(response).await;
    assert_eq!(ids(&page).into_iter().collect::<BTreeSet<_>>(), set(cat.ids("AC")));
    let response = cat.app.get("/orders?customerId=c-b", &cat.app.customer("c-a")).await;
    assert_eq!(ids(&json_ok(response).await), Vec::<String>::new());
}

#[actix_web::test]
async fn search_sorts() {
    let cat = catalog().await;
    assert_eq!(cat.hits("").await, cat.ids("DCBA"), "default placedAt:desc");
    assert_eq!(cat.hits("sort=placedAt:desc").await, cat.ids("DCBA"));
    assert_eq!(cat.hits("sort=placedAt:asc").await, cat.ids("ABCD"));
    assert_eq!(cat.hits("sort=total:desc").await, cat.ids("BCAD"));
    assert_eq!(cat.hits("sort=total:asc").await, cat.ids("DACB"));
    assert_eq!(cat.hits("sort=total:asc&q=mug").await, cat.ids("AC"));
    assert_eq!(cat.hits("sort=total:desc&q=mug").await, cat.ids("CA"));
    for sort in ["bogus", "total", "placedAt", "total:up", "TOTAL:desc", "customerId:asc", ""] {
        let response = cat.app.get(&format!("/orders?sort={sort}"), &cat.app.admin()).await;
        let problem = assert_problem(response, 422, "validation_failed").await;
        assert!(problem["errors"].as_array().is_some_and(|e| e.iter().any(|e| e["field"] == "sort")), "{problem}");
    }
}

#[actix_web::test]
async fn search_limits_are_1_to_100() {
    let cat = catalog().await;
    let page = cat.search("limit=1").await;
    assert_eq!(ids(&page), cat.ids("D"));
    assert_eq!(page["estimatedTotal"], 4, "the total counts every match, not the page");
    assert!(page["nextCursor"].is_string(), "{page}");
    assert_eq!(cat.hits("limit=100").await.len(), 4);
    let page = cat.search("limit=4").await;
    assert_eq!(ids(&page).len(), 4);
    assert!(page["nextCursor"].is_null(), "no next page after the last: {page}");
    for limit in ["0", "101", "abc", "-1", "1.5", "", "1000000000000000000000"] {
        let response = cat.app.get(&format!("/orders?limit={limit}"), &cat.app.admin()).await;
        let problem = assert_problem(response, 422, "validation_failed").await;
        assert!(problem["errors"].as_array().is_some_and(|e| e.iter().any(|e| e["field"] == "limit")), "{problem}");
    }
}

#[actix_web::test]
async fn search_default_limit_is_20() {
    let app = spawn_app().await;
    for i in 0..23 {
        app.place(&new_id(&format!("lim{i}")), "c-lim", 1, 100).await;
    }
    let page = eventually(|| async {
        let page = get_json(&app, "/orders").await;
        (page["estimatedTotal"] == 23).then_some(page)
    })
    .await;
    assert_eq!(ids(&page).len(), 20);
    assert!(page["nextCursor"].is_string());
}

/// Walks every page of `query` with `limit=2`; returns the ids in order.
async fn walk(app: &TestApp, query: &str) -> Vec<String> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let path = match &cursor {
            Some(c) => format!("/orders?{query}&limit=2&cursor={c}"),
            None => format!("/orders?{query}&limit=2"),
        };
        let page = get_json(app, &path).await;
        let page_ids = ids(&page);
        assert!(page_ids.len() <= 2, "{page}");
        all.extend(page_ids);
        match page["nextCursor"].as_str() {
            Some(next) => {
                assert!(!next.is_empty());
                cursor = Some(next.to_owned());
            }
            None => {
                assert!(page["nextCursor"].is_null(), "{page}");
                return all;
            }
        }
    }
    panic!("pagination of `{query}` did not end");
}

#[actix_web::test]
async fn cursor_pagination_visits_every_order_exactly_once() {
    let app = spawn_app().await;
    // Ties on total (and possibly on placedAt) so that the tie-break is exercised across page boundaries.
    let totals = [500, 500, 500, 1000, 1000, 2000, 3000, 3000, 100];
    let mut placed = BTreeMap::new();
    for (i, total) in totals.iter().enumerate() {
        let id = new_id(&format!("page{i}"));
        let customer = if i % 2 == 0 { "c-even" } else { "c-odd" };
        place_items(&app, &id, customer, "EUR", &[("PAGE-1", "Paged widget", 1, *total)]).await;
        placed.insert(id, *total);
    }
    eventually(|| async { (get_json(&app, "/orders").await["estimatedTotal"] == totals.len()).then_some(()) }).await;
    let all_ids: BTreeSet<String> = placed.keys().cloned().collect();

    for sort in ["placedAt:desc", "placedAt:asc", "total:desc", "total:asc"] {
        let walked = walk(&app, &format!("sort={sort}")).await;
        let unique: BTreeSet<String> = walked.iter().cloned().collect();
        assert_eq!(walked.len(), unique.len(), "no order twice ({sort}): {walked:?}");
        assert_eq!(unique, all_ids, "every order once ({sort})");
        let one_page = ids(&get_json(&app, &format!("/orders?sort={sort}&limit=100")).await);
        assert_eq!(walked, one_page, "pages follow the sort ({sort})");
        if sort.starts_with("total") {
            let keys: Vec<u64> = walked.iter().map(|id| placed[id]).collect();
            let mut sorted = keys.clone();
            sorted.sort_unstable();
            if sort.ends_with("desc") {
                sorted.reverse();
            }
            assert_eq!(keys, sorted, "{sort}");
        }
    }
    // Filters apply to every page.
    let evens = walk(&app, "customerId=c-even&sort=total:asc").await;
    assert_eq!(evens.len(), 5);
    assert_eq!(evens.iter().cloned().collect::<BTreeSet<_>>().len(), 5);
    let walked_q = walk(&app, "q=widget").await;
    assert_eq!(walked_q.into_iter().collect::<BTreeSet<_>>(), all_ids);

    for cursor in ["garbage!!!", "abc", "%00", "bm90LWEtY3Vyc29y"] {
        let response = app.get(&format!("/orders?limit=2&cursor={cursor}"), &app.admin()).await;
        let problem = assert_problem(response, 422, "validation_failed").await;
        assert!(problem["errors"].as_array().is_some_and(|e| e.iter().any(|e| e["field"] == "cursor")), "{problem}");
    }
}

// ------------------------------------------------------------------------------------------------ revenue

#[actix_web::test]
async fn daily_revenue_sums_payments_and_refunds_per_day_and_currency() {
    let app = spawn_app().await;
    let mut expected = RevenueRows::new();

    // EUR: paid; paid then cancelled (refund = total); unpaid then cancelled (refund 0); paid and shipped;
    // placed only.
    let r1 = new_id("rev1");
    app.place(&r1, "c-rev", 1, 1000).await;
    add_payment(&mut expected, &ok_body(app.pay(&r1, "p1", 1000).await).await);
    let r2 = new_id("rev2");
    app.place(&r2, "c-rev", 5, 500).await;
    add_payment(&mut expected, &ok_body(app.pay(&r2, "p2", 2500).await).await);
    let cancelled = ok_body(app.cancel(&r2).await).await;
    assert_eq!(cancelled["refund"], 2500);
    add_cancellation(&mut expected, &cancelled);
    let r3 = new_id("rev3");
    app.place(&r3, "c-rev", 1, 700).await;
    let cancelled = ok_body(app.cancel(&r3).await).await;
    assert_eq!(cancelled["refund"], 0);
    add_cancellation(&mut expected, &cancelled);
    let r4 = new_id("rev4");
    app.place(&r4, "c-rev", 2, 2000).await;
    add_payment(&mut expected, &ok_body(app.pay(&r4, "p4", 4000).await).await);
    assert_eq!(app.ship(&r4).await.status(), StatusCode::OK);
    app.place(&new_id("rev5"), "c-rev", 1, 99999).await;
    // A rejected payment changes nothing.
    assert_eq!(app.pay(&r1, "p-other", 1000).await.status(), StatusCode::CONFLICT);

    // USD: one paid, one placed only.
    let u1 = new_id("usd1");
    place_items(&app, &u1, "c-rev", "USD", &[("HAT-1", "Sun hat", 3, 500)]).await;
    add_payment(&mut expected, &ok_body(app.pay(&u1, "pu1", 1500).await).await);
    place_items(&app, &new_id("usd2"), "c-rev", "USD", &[("HAT-1", "Sun hat", 1, 500)]).await;

    // Paid today and cancelled today (unless the test straddles midnight UTC: then per day).
    let days: BTreeSet<&String> = expected.keys().map(|(d, _)| d).collect();
    let first: NaiveDate = days.first().unwrap().parse().unwrap();
    let last: NaiveDate = days.last().unwrap().parse().unwrap();
    if first == last {
        let eur = expected[&(first.to_string(), "EUR".to_owned())];
        assert_eq!(eur, [7500, 2500, 3, 2]);
    }

    // Days with no activity are left out, over a wide range.
    let from = first - chrono::Duration::days(30);
    let to = last + chrono::Duration::days(30);
    let rows = eventually(|| async {
        let rows = revenue_between(&app, from, to).await;
        (rows == expected).then_some(rows)
    })
    .await;
    assert_eq!(rows, expected);
    for ((_, currency), row) in &rows {
        if currency == "USD" {
            assert_eq!(row[..], [1500, 0, 1, 0]);
        }
    }

    // The currency filter.
    let usd = revenue_rows(&get_json(&app, &format!("/revenue/daily?from={from}&to={to}&currency=USD")).await);
    let expected_usd: RevenueRows =
        expected.iter().filter(|((_, c), _)| c == "USD").map(|(k, v)| (k.clone(), *v)).collect();
    assert_eq!(usd, expected_usd);
    let eur = revenue_rows(&get_json(&app, &format!("/revenue/daily?from={from}&to={to}&currency=EUR")).await);
    assert!(eur.keys().all(|(_, c)| c == "EUR") && eur.len() == expected.len() - expected_usd.len());
    let gbp = get_json(&app, &format!("/revenue/daily?from={from}&to={to}&currency=GBP")).await;
    assert_eq!(gbp, json!({"days": []}));
    // A range with no activity at all.
    let old = get_json(&app, "/revenue/daily?from=2001-01-01&to=2001-12-31").await;
    assert_eq!(old, json!({"days": []}));
    // Exactly 366 days is allowed.
    let from_366 = last - chrono::Duration::days(365);
    let year = revenue_rows(&get_json(&app, &format!("/revenue/daily?from={from_366}&to={last}")).await);
    assert_eq!(
        year,
        expected
            .iter()
            .filter(|((d, _), _)| d.as_str() >= from_366.to_string().as_str())
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    );
}

/// `revenue.timezone`: a payment counts on the date of its `paidAt` in the business time zone, a refund on
/// that of its `cancelledAt`. `paidAt` is the server's clock, so the zone is picked for the hour the test runs
/// in, such that the local date is almost surely not the UTC date (UTC−11 before 10:00 UTC, UTC+14 from then):
/// a view that counted UTC days would fail here.
#[actix_web::test]
async fn daily_revenue_counts_business_days_in_the_configured_time_zone() {
    use chrono::Timelike;
    let name = if Utc::now().hour() < 10 { "Pacific/Pago_Pago" } else { "Pacific/Kiritimati" };
    let zone: chrono_tz::Tz = name.parse().expect("a zone name");
    let app = spawn_app_with(&[("ORDERFLOW__REVENUE__TIMEZONE", name)]).await;
    let local = |at: &Value| assert_utc_timestamp(at).with_timezone(&zone).date_naive().to_string();

    let mut expected = RevenueRows::new();
    let mut count = |day: String, add: [u64; 4]| {
        let row = expected.entry((day, "EUR".to_owned())).or_default();
        row.iter_mut().zip(add).for_each(|(sum, n)| *sum += n);
    };
    let paid_only = new_id("tz1");
    app.place(&paid_only, "c-tz", 1, 1200).await;
    let paid = ok_body(app.pay(&paid_only, "p1", 1200).await).await;
    count(local(&paid["paidAt"]), [1200, 0, 1, 0]);
    let refunded = new_id("tz2");
    app.place(&refunded, "c-tz", 1, 800).await;
    let paid = ok_body(app.pay(&refunded, "p2", 800).await).await;
    count(local(&paid["paidAt"]), [800, 0, 1, 0]);
    let cancelled = ok_body(app.cancel(&refunded).await).await;
    assert_eq!(cancelled["refund"], 800);
    count(local(&cancelled["cancelledAt"]), [0, 800, 0, 1]);

    let today = Utc::now().date_naive();
    let (from, to) = (today - chrono::Duration::days(2), today + chrono::Duration::days(2));
    let rows = eventually(|| async {
        let rows = revenue_between(&app, from, to).await;
        (rows == expected).then_some(rows)
    })
    .await;
    assert_eq!(rows, expected, "days are dates in {name}");
}

#[actix_web::test]
async fn daily_revenue_validates_its_parameters() {
    let app = spawn_app().await;
    let t = today();
    // (query, the field the error must name; None where either bound could be blamed)
    let cases = [
        (String::new(), Some("from")),
        (format!("to={t}"), Some("from")),
        (format!("from={t}"), Some("to")),
        (format!("from=notadate&to={t}"), Some("from")),
        (format!("from={t}&to=2024-02-30"), Some("to")),
        (format!("from=2024-13-01&to={t}"), Some("from")),
        (format!("from={t}T00:00:00Z&to={t}"), Some("from")),
        (format!("from={t}&to={}", t.pred_opt().unwrap()), None),
        (format!("from={}&to={t}", t - chrono::Duration::days(366)), None),
        ("from=2020-01-01&to=2024-01-01".to_owned(), None),
        (format!("from={t}&to={t}&currency=EURO"), Some("currency")),
        (format!("from={t}&to={t}&currency=E1"), Some("currency")),
    ];
    for (query, field) in cases {
        let response = app.get(&format!("/revenue/daily?{query}"), &app.admin()).await;
        let problem = assert_problem(response, 422, "validation_failed").await;
        let errors = problem["errors"].as_array().unwrap_or_else(|| panic!("errors for `{query}`: {problem}"));
        assert!(!errors.is_empty(), "`{query}`: {problem}");
        if let Some(field) = field {
            assert!(errors.iter().any(|e| e["field"] == field), "`{query}` names `{field}`: {problem}");
        }
    }
    // Admin only.
    let response = app.get(&format!("/revenue/daily?from={t}&to={t}"), &app.customer("c-1")).await;
    assert_problem(response, 403, "forbidden").await;
    let response = app.request(Method::GET, &format!("/revenue/daily?from={t}&to={t}"), None, None, &[]).await;
    assert_problem(response, 401, "unauthorized").await;
}

// --------------------------------------------------------------------------------------------- operations

#[actix_web::test]
async fn admin_projections_lists_each_projection_with_its_state() {
    let app = spawn_app().await;
    let id = new_id("adm");
    app.place(&id, "c-adm", 1, 100).await;
    app.pay(&id, "p", 100).await;
    app.projected(&id, 2).await;
    let infos = eventually(|| async {
        let infos = get_json(&app, "/admin/projections").await;
        let arr = infos.as_array()?;
        arr.iter().all(|p| p["position"].as_u64().unwrap_or(0) >= 2).then_some(infos.clone())
    })
    .await;
    let arr = infos.as_array().expect("an array");
    let names: BTreeSet<&str> = arr.iter().map(|p| p["name"].as_str().expect("name")).collect();
    assert!(names.contains("search") && names.contains("revenue"), "{infos}");
    for p in arr {
        assert_eq!(keys(p), key_set(&["name", "status", "position", "lagSeconds", "restarts", "parked"]), "{p}");
        assert!(p["status"].is_string(), "{p}");
        assert!(p["position"].is_u64(), "{p}");
        assert!(p["lagSeconds"].as_f64().is_some_and(|l| l >= 0.0), "{p}");
        assert_eq!(p["restarts"], 0, "{p}");
        assert_eq!(p["parked"], 0, "{p}");
    }
    assert_problem(app.get("/admin/projections", &app.customer("c-adm")).await, 403, "forbidden").await;
    assert_problem(app.request(Method::GET, "/admin/projections", None, None, &[]).await, 401, "unauthorized").await;
}

#[actix_web::test]
async fn health_endpoints_answer_without_a_token() {
    let app = spawn_app().await;
    let response = app.request(Method::GET, "/health/ready", None, None, &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    let ready: Value = response.json().await.unwrap();
    assert_eq!(ready["status"], "ok", "{ready}");
    let checks = ready["checks"].as_object().unwrap_or_else(|| panic!("checks: {ready}"));
    assert!(!checks.is_empty(), "ready checks every backend: {ready}");
    for check in ["eventStore", "feed", "searchView", "revenueView"] {
        assert_eq!(checks.get(check).and_then(Value::as_str), Some("ok"), "{check}: {ready}");
    }

    let response = app.request(Method::GET, "/health/live", None, None, &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    let live: Value = response.json().await.unwrap();
    assert!(live["status"].is_string() && live["checks"].is_object(), "{live}");
}

#[actix_web::test]
async fn metrics_expose_the_documented_names_and_labels() {
    let app = spawn_app().await;
    let id = new_id("metrics");
    app.place(&id, "c-met", 1, 100).await;
    // rejected: a rule (amount) and validation
    assert_eq!(app.pay(&id, "p", 99).await.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.pay(&id, "p", 100).await.status(), StatusCode::OK);
    // conflict: If-Match on a stale version
    let stale = app
        .request(
            Method::POST,
            &format!("/orders/{id}/ship"),
            Some(&app.admin()),
            Some(&json!({"carrier": "DHL", "trackingNumber": "T"})),
            &[("If-Match", "\"1\"")],
        )
        .await;
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(app.ship(&id).await.status(), StatusCode::OK);
    app.projected(&id, 3).await;
    // Both projectors have applied the three events (they run independently of each other).
    eventually(|| async {
        let samples = parse_metrics(&metrics_text(&app).await);
        let applied =
            |p| metric_sum(&samples, "orderflow_projection_events_total", &[("projection", p), ("outcome", "applied")]);
        (applied("search") >= 3.0 && applied("revenue") >= 3.0).then_some(())
    })
    .await;

    let response = app.request(Method::GET, "/metrics", None, None, &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = header(&response, "content-type").unwrap_or_default();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = response.text().await.unwrap();
    let samples = parse_metrics(&text);
    let has_type = |name: &str, kind: &str| text.lines().any(|l| l.trim() == format!("# TYPE {name} {kind}"));

    assert!(has_type("orderflow_commands_total", "counter"), "{text}");
    let count = |command, outcome| {
        metric_sum(&samples, "orderflow_commands_total", &[("command", command), ("outcome", outcome)])
    };
    assert!(count("place", "ok") >= 1.0, "{text}");
    assert!(count("confirm-payment", "ok") >= 1.0, "{text}");
    assert!(count("confirm-payment", "rejected") >= 1.0, "{text}");
    assert!(count("ship", "conflict") >= 1.0, "{text}");
    assert!(count("ship", "ok") >= 1.0, "{text}");
    for s in find_samples(&samples, "orderflow_commands_total", &[]) {
        assert!(
            ["ok", "rejected", "conflict", "error"].contains(&s.labels["outcome"].as_str()),
            "outcome label values are ok|rejected|conflict|error: {s:?}"
        );
        assert!(s.labels.contains_key("command"), "{s:?}");
    }

    assert!(has_type("orderflow_command_duration_seconds", "histogram"), "{text}");
    let buckets = find_samples(&samples, "orderflow_command_duration_seconds_bucket", &[("command", "place")]);
    assert!(buckets.len() >= 2, "histogram buckets: {text}");
    assert!(buckets.iter().all(|b| b.labels.contains_key("le")));
    let inf = buckets.iter().find(|b| b.labels["le"] == "+Inf").expect("+Inf bucket");
    assert!(inf.value >= 1.0);
    assert!(metric_sum(&samples, "orderflow_command_duration_seconds_count", &[("command", "place")]) >= 1.0);
    assert!(!find_samples(&samples, "orderflow_command_duration_seconds_sum", &[("command", "ship")]).is_empty());

    assert!(has_type("orderflow_events_appended_total", "counter"), "{text}");
    let appended = find_samples(&samples, "orderflow_events_appended_total", &[]);
    let of_type = |t: &str| {
        appended.iter().filter(|s| s.labels.get("type").is_some_and(|v| v.ends_with(t))).map(|s| s.value).sum::<f64>()
    };
    assert!(of_type("OrderPlaced") >= 1.0, "{text}");
    assert!(of_type("PaymentConfirmed") >= 1.0, "{text}");
    assert!(of_type("OrderShipped") >= 1.0, "{text}");

    assert!(has_type("orderflow_projection_events_total", "counter"), "{text}");
    for projection in ["search", "revenue"] {
        let applied = metric_sum(
            &samples,
            "orderflow_projection_events_total",
            &[("projection", projection), ("outcome", "applied")],
        );
        assert!(applied >= 3.0, "{projection} applied: {text}");
    }
    assert!(has_type("orderflow_projection_lag_seconds", "gauge"), "{text}");
    assert!(
        !find_samples(&samples, "orderflow_projection_lag_seconds", &[("projection", "search")]).is_empty(),
        "{text}"
    );
    assert!(has_type("orderflow_live_aggregates", "gauge"), "{text}");
    let live = find_samples(&samples, "orderflow_live_aggregates", &[]);
    assert_eq!(live.len(), 1, "{text}");
    assert!(live[0].value >= 1.0, "the order's actor is live: {text}");
    // Label values never carry an order id.
    assert!(!text.contains(&id), "metrics must not be labelled by order id");
}

#[test]
fn metrics_parser_reads_labels_and_values() {
    let samples = parse_metrics(
        "# TYPE x counter\nx{a=\"1\",b=\"q\\\"z\"} 3\ny 2.5\nh_bucket{le=\"+Inf\",command=\"place\"} 7\n",
    );
    assert_eq!(samples.len(), 3);
    assert_eq!(samples[0].labels["b"], "q\"z");
    assert_eq!(samples[0].value, 3.0);
    assert_eq!(samples[1].name, "y");
    assert_eq!(metric_sum(&samples, "h_bucket", &[("le", "+Inf")]), 7.0);
}
