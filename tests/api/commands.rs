//! The business rules of docs/api.md §1 and the command semantics of §2 (`ETag`, `If-Match`, `Idempotency-Key`),
//! checked through HTTP only: exact status and problem `code`, and — for every refused or replayed command —
//! that nothing was appended (the order's `/history` is unchanged).

use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem, header, new_id, order_body, spawn_app};

// ----------------------------------------------------------------------------------------------- helpers

/// The `ETag` header of a response.
fn etag(response: &Response) -> Option<String> {
    header(response, "etag")
}

/// The order's events from the write model (as admin).
async fn history(app: &TestApp, id: &str) -> Vec<Value> {
    let response = app.get(&format!("/orders/{id}/history"), &app.admin()).await;
    assert_eq!(response.status(), StatusCode::OK, "history of {id}");
    let body: Value = response.json().await.expect("history json");
    body["events"].as_array().expect("events array").clone()
}

async fn history_len(app: &TestApp, id: &str) -> usize {
    history(app, id).await.len()
}

/// The order folded from the write model, or `None` on 404.
async fn strong(app: &TestApp, id: &str) -> Option<Value> {
    let response = app.get(&format!("/orders/{id}?consistency=strong"), &app.admin()).await;
    match response.status() {
        StatusCode::OK => Some(response.json().await.expect("json")),
        StatusCode::NOT_FOUND => None,
        other => panic!("GET {id}?consistency=strong answered {other}"),
    }
}

/// A command as admin with extra headers.
async fn post_with(app: &TestApp, path: &str, body: &Value, headers: &[(&str, &str)]) -> Response {
    app.request(Method::POST, path, Some(&app.admin()), Some(body), headers).await
}

fn pay_body(payment_id: &str, amount: u64) -> Value {
    json!({"paymentId": payment_id, "amount": amount})
}

fn ship_body() -> Value {
    json!({"carrier": "DHL", "trackingNumber": "TN-1"})
}

fn cancel_body() -> Value {
    json!({"reason": "changed my mind"})
}

fn absent(doc: &Value, field: &str) -> bool {
    doc.get(field).is_none_or(Value::is_null)
}

/// An RFC 3339 timestamp in UTC.
fn is_rfc3339(value: &Value) -> bool {
    value
        .as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .is_some_and(|t| t.offset().local_minus_utc() == 0)
}

// ------------------------------------------------------------------------------------------------- place

#[actix_web::test]
async fn place_answers_201_with_location_etag_1_and_the_order() {
    let app = spawn_app().await;
    let id = new_id("place");
    let body = json!({
        "orderId": id,
        "customerId": "c-1",
        "currency": "EUR",
        "items": [
            {"sku": "MUG-1", "name": "Blue ceramic mug", "quantity": 2, "unitPrice": 1250},
            {"sku": "TEA-9", "name": "Green tea", "quantity": 3, "unitPrice": 999}
        ]
    });
    let response = app.post("/orders", &app.admin(), &body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(header(&response, "location").as_deref(), Some(format!("/orders/{id}").as_str()));
    assert_eq!(etag(&response).as_deref(), Some("\"1\""));
    assert!(header(&response, "content-type").unwrap_or_default().starts_with("application/json"));
    let doc: Value = response.json().await.unwrap();
    assert_eq!(doc["orderId"], json!(id));
    assert_eq!(doc["customerId"], "c-1");
    assert_eq!(doc["status"], "placed");
    assert_eq!(doc["currency"], "EUR");
    assert_eq!(doc["items"], body["items"]);
    assert_eq!(doc["total"], 2 * 1250 + 3 * 999);
    assert_eq!(doc["version"], 1);
    assert!(is_rfc3339(&doc["placedAt"]), "{doc}");
    for field in ["paidAt", "paymentId", "shippedAt", "carrier", "trackingNumber", "cancelledAt", "cancelReason"] {
        assert!(absent(&doc, field), "{field} on a placed order: {doc}");
    }

    // The write model agrees, and the stream holds exactly one OrderPlaced at version 1.
    assert_eq!(strong(&app, &id).await.expect("order exists"), doc);
    let events = history(&app, &id).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["type"], "OrderPlaced");
    assert_eq!(events[0]["version"], 1);
    assert!(events[0]["eventId"].is_string());
    assert!(is_rfc3339(&events[0]["occurredAt"]));
    let data = &events[0]["data"];
    assert_eq!(data["customerId"], "c-1");
    assert_eq!(data["currency"], "EUR");
    assert_eq!(data["items"], body["items"]);
    assert_eq!(data["total"], 5497);
    assert!(is_rfc3339(&data["placedAt"]));
}

#[actix_web::test]
async fn place_without_order_id_generates_a_uuid_v7() {
    let app = spawn_app().await;
    let body = json!({
        "customerId": "c-1",
        "currency": "USD",
        "items": [{"sku": "S", "name": "N", "quantity": 1, "unitPrice": 0}]
    });
    let first = app.post("/orders", &app.admin(), &body).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    assert_eq!(etag(&first).as_deref(), Some("\"1\""));
    let location = header(&first, "location").expect("Location");
    let doc: Value = first.json().await.unwrap();
    let id = doc["orderId"].as_str().expect("generated orderId").to_owned();
    let uuid = uuid::Uuid::parse_str(&id).unwrap_or_else(|e| panic!("{id} is not a UUID: {e}"));
    assert_eq!(uuid.get_version_num(), 7, "{id} is not a UUIDv7");
    assert_eq!(location, format!("/orders/{id}"));
    assert_eq!(doc["total"], 0);
    assert_eq!(strong(&app, &id).await.expect("placed")["orderId"], json!(id));

    // Another request without a key is another order with another id.
    let second: Value = app.post("/orders", &app.admin(), &body).await.json().await.unwrap();
    assert_ne!(second["orderId"], json!(id));
}

#[actix_web::test]
async fn placing_an_existing_order_id_is_409_order_already_exists() {
    let app = spawn_app().await;
    let id = new_id("dup");
    app.place(&id, "c-1", 1, 100).await;
    assert_problem(
        app.post("/orders", &app.admin(), &order_body(&id, "c-1", 1, 100)).await,
        409,
        "order_already_exists",
    )
    .await;
    // Another customer or another body: still the same id.
    assert_problem(app.post("/orders", &app.admin(), &order_body(&id, "c-2", 5, 7)).await, 409, "order_already_exists")
        .await;
    assert_eq!(history_len(&app, &id).await, 1);
    let doc = strong(&app, &id).await.unwrap();
    assert_eq!((doc["customerId"].clone(), doc["total"].clone()), (json!("c-1"), json!(100)));
}

// ---------------------------------------------------------------------------------------- confirm-payment

#[actix_web::test]
async fn confirm_payment_of_the_total_is_200_and_the_order_is_paid() {
    let app = spawn_app().await;
    let id = new_id("pay");
    app.place(&id, "c-1", 2, 1250).await;
    let response = app.pay(&id, "pay-1", 2500).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(etag(&response).as_deref(), Some("\"2\""));
    let doc: Value = response.json().await.unwrap();
    assert_eq!(doc["status"], "paid");
    assert_eq!(doc["paymentId"], "pay-1");
    assert_eq!(doc["version"], 2);
    assert_eq!(doc["total"], 2500);
    assert!(is_rfc3339(&doc["paidAt"]));

    let events = history(&app, &id).await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[1]["type"], "PaymentConfirmed");
    assert_eq!(events[1]["version"], 2);
    assert_eq!(events[1]["data"]["paymentId"], "pay-1");
    assert_eq!(events[1]["data"]["amount"], 2500);
    assert!(is_rfc3339(&events[1]["data"]["paidAt"]));
}

#[actix_web::test]
async fn confirm_payment_of_another_amount_is_422_amount_mismatch() {
    let app = spawn_app().await;
    let id = new_id("mismatch");
    app.place(&id, "c-1", 2, 1250).await;
    for amount in [2499, 2501, 0, 1250] {
        assert_problem(app.pay(&id, "pay-1", amount).await, 422, "amount_mismatch").await;
    }
    assert_eq!(history_len(&app, &id).await, 1);
    assert_eq!(strong(&app, &id).await.unwrap()["status"], "placed");
    // The order can still be paid with the right amount afterwards.
    assert_eq!(app.pay(&id, "pay-1", 2500).await.status(), StatusCode::OK);
}

#[actix_web::test]
async fn the_same_payment_again_is_200_without_a_new_event() {
    let app = spawn_app().await;
    let id = new_id("repay");
    app.place(&id, "c-1", 2, 1250).await;
    assert_eq!(app.pay(&id, "pay-1", 2500).await.status(), StatusCode::OK);

    let again = app.pay(&id, "pay-1", 2500).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(etag(&again).as_deref(), Some("\"2\""));
    let doc: Value = again.json().await.unwrap();
    assert_eq!((doc["status"].clone(), doc["version"].clone()), (json!("paid"), json!(2)));
    assert_eq!(doc["paymentId"], "pay-1");
    assert_eq!(history_len(&app, &id).await, 2);

    // A shipped order counts as paid: the same payment is still a 200 with no new event.
    assert_eq!(app.ship(&id).await.status(), StatusCode::OK);
    let after_ship = app.pay(&id, "pay-1", 2500).await;
    assert_eq!(after_ship.status(), StatusCode::OK);
    assert_eq!(etag(&after_ship).as_deref(), Some("\"3\""));
    let doc: Value = after_ship.json().await.unwrap();
    assert_eq!((doc["status"].clone(), doc["version"].clone()), (json!("shipped"), json!(3)));
    assert_eq!(history_len(&app, &id).await, 3);
}

#[actix_web::test]
async fn another_payment_on_a_paid_or_shipped_order_is_409_payment_already_confirmed() {
    let app = spawn_app().await;
    let id = new_id("pay2");
    app.place(&id, "c-1", 2, 1250).await;
    assert_eq!(app.pay(&id, "pay-1", 2500).await.status(), StatusCode::OK);
    assert_problem(app.pay(&id, "pay-2", 2500).await, 409, "payment_already_confirmed").await;
    // State rules come before the amount check: a wrong amount is still the 409, not a 422.
    assert_problem(app.pay(&id, "pay-2", 1).await, 409, "payment_already_confirmed").await;
    assert_eq!(history_len(&app, &id).await, 2);

    assert_eq!(app.ship(&id).await.status(), StatusCode::OK);
    assert_problem(app.pay(&id, "pay-2", 2500).await, 409, "payment_already_confirmed").await;
    assert_problem(app.pay(&id, "pay-3", 7).await, 409, "payment_already_confirmed").await;
    assert_eq!(history_len(&app, &id).await, 3);
    assert_eq!(strong(&app, &id).await.unwrap()["paymentId"], "pay-1");
}

#[actix_web::test]
async fn payment_on_a_cancelled_order_is_409_order_cancelled() {
    let app = spawn_app().await;
    // Cancelled before any payment.
    let unpaid = new_id("cxl-unpaid");
    app.place(&unpaid, "c-1", 2, 1250).await;
    assert_eq!(app.cancel(&unpaid).await.status(), StatusCode::OK);
    assert_problem(app.pay(&unpaid, "pay-1", 2500).await, 409, "order_cancelled").await;
    // State before amount: a wrong amount on a cancelled order is still order_cancelled.
    assert_problem(app.pay(&unpaid, "pay-1", 1).await, 409, "order_cancelled").await;
    assert_eq!(history_len(&app, &unpaid).await, 2);

    // Paid, then cancelled: even the original payment is refused now.
    let paid = new_id("cxl-paid");
    app.place(&paid, "c-1", 2, 1250).await;
    assert_eq!(app.pay(&paid, "pay-1", 2500).await.status(), StatusCode::OK);
    assert_eq!(app.cancel(&paid).await.status(), StatusCode::OK);
    assert_problem(app.pay(&paid, "pay-1", 2500).await, 409, "order_cancelled").await;
    assert_problem(app.pay(&paid, "pay-2", 2500).await, 409, "order_cancelled").await;
    assert_eq!(history_len(&app, &paid).await, 3);
}

// --------------------------------------------------------------------------------------------------- ship

#[actix_web::test]
async fn ship_needs_a_paid_order() {
    let app = spawn_app().await;
    let id = new_id("ship");
    app.place(&id, "c-1", 1, 500).await;
    assert_problem(app.ship(&id).await, 409, "order_not_paid").await;
    assert_eq!(history_len(&app, &id).await, 1);

    assert_eq!(app.pay(&id, "pay-1", 500).await.status(), StatusCode::OK);
    let shipped = app
        .post(&format!("/orders/{id}/ship"), &app.admin(), &json!({"carrier": "UPS", "trackingNumber": "1Z999"}))
        .await;
    assert_eq!(shipped.status(), StatusCode::OK);
    assert_eq!(etag(&shipped).as_deref(), Some("\"3\""));
    let doc: Value = shipped.json().await.unwrap();
    assert_eq!(doc["status"], "shipped");
    assert_eq!(doc["carrier"], "UPS");
    assert_eq!(doc["trackingNumber"], "1Z999");
    assert!(is_rfc3339(&doc["shippedAt"]));
    assert_eq!(doc["version"], 3);

    let events = history(&app, &id).await;
    assert_eq!(events.len(), 3);
    assert_eq!(events[2]["type"], "OrderShipped");
    assert_eq!(events[2]["data"]["carrier"], "UPS");
    assert_eq!(events[2]["data"]["trackingNumber"], "1Z999");
    assert!(is_rfc3339(&events[2]["data"]["shippedAt"]));
}

#[actix_web::test]
async fn shipping_a_shipped_order_is_409_order_already_shipped() {
    let app = spawn_app().await;
    let id = new_id("ship2");
    app.place(&id, "c-1", 1, 500).await;
    assert_eq!(app.pay(&id, "pay-1", 500).await.status(), StatusCode::OK);
    assert_eq!(app.ship(&id).await.status(), StatusCode::OK);
    assert_problem(app.ship(&id).await, 409, "order_already_shipped").await;
    assert_eq!(history_len(&app, &id).await, 3);
}

#[actix_web::test]
async fn shipping_a_cancelled_order_is_409_order_cancelled() {
    let app = spawn_app().await;
    let unpaid = new_id("ship-cxl");
    app.place(&unpaid, "c-1", 1, 500).await;
    assert_eq!(app.cancel(&unpaid).await.status(), StatusCode::OK);
    // Cancelled wins over "not paid".
    assert_problem(app.ship(&unpaid).await, 409, "order_cancelled").await;

    let paid = new_id("ship-cxl-paid");
    app.place(&paid, "c-1", 1, 500).await;
    assert_eq!(app.pay(&paid, "pay-1", 500).await.status(), StatusCode::OK);
    assert_eq!(app.cancel(&paid).await.status(), StatusCode::OK);
    assert_problem(app.ship(&paid).await, 409, "order_cancelled").await;
    assert_eq!(history_len(&app, &unpaid).await, 2);
    assert_eq!(history_len(&app, &paid).await, 3);
}

// ------------------------------------------------------------------------------------------------- cancel

#[actix_web::test]
async fn cancelling_a_placed_order_refunds_nothing() {
    let app = spawn_app().await;
    let id = new_id("cancel");
    app.place(&id, "c-1", 2, 1250).await;
    let response =
        app.post(&format!("/orders/{id}/cancel"), &app.admin(), &json!({"reason": "found it cheaper"})).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(etag(&response).as_deref(), Some("\"2\""));
    let doc: Value = response.json().await.unwrap();
    assert_eq!(doc["status"], "cancelled");
    assert_eq!(doc["refund"], 0);
    assert_eq!(doc["cancelReason"], "found it cheaper");
    assert!(is_rfc3339(&doc["cancelledAt"]));
    assert_eq!(doc["version"], 2);

    let events = history(&app, &id).await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[1]["type"], "OrderCancelled");
    assert_eq!(events[1]["data"]["refund"], 0);
    assert_eq!(events[1]["data"]["reason"], "found it cheaper");
    assert!(is_rfc3339(&events[1]["data"]["cancelledAt"]));
}

#[actix_web::test]
async fn cancelling_a_paid_order_refunds_the_paid_total() {
    let app = spawn_app().await;
    let id = new_id("refund");
    app.place(&id, "c-1", 3, 333).await;
    assert_eq!(app.pay(&id, "pay-1", 999).await.status(), StatusCode::OK);
    let response = app.cancel(&id).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(etag(&response).as_deref(), Some("\"3\""));
    let doc: Value = response.json().await.unwrap();
    assert_eq!(doc["status"], "cancelled");
    assert_eq!(doc["refund"], 999);
    let events = history(&app, &id).await;
    assert_eq!(events[2]["type"], "OrderCancelled");
    assert_eq!(events[2]["data"]["refund"], 999);
}

#[actix_web::test]
async fn cancelling_a_shipped_order_is_409_order_already_shipped() {
    let app = spawn_app().await;
    let id = new_id("cancel-shipped");
    app.place(&id, "c-1", 1, 100).await;
    assert_eq!(app.pay(&id, "pay-1", 100).await.status(), StatusCode::OK);
    assert_eq!(app.ship(&id).await.status(), StatusCode::OK);
    assert_problem(app.cancel(&id).await, 409, "order_already_shipped").await;
    assert_eq!(history_len(&app, &id).await, 3);
    assert_eq!(strong(&app, &id).await.unwrap()["status"], "shipped");
}

#[actix_web::test]
async fn cancelling_a_cancelled_order_is_409_order_already_cancelled() {
    let app = spawn_app().await;
    let id = new_id("cancel-twice");
    app.place(&id, "c-1", 1, 100).await;
    assert_eq!(app.cancel(&id).await.status(), StatusCode::OK);
    assert_problem(app.cancel(&id).await, 409, "order_already_cancelled").await;
    assert_eq!(history_len(&app, &id).await, 2);
}

// ------------------------------------------------------------------------------------------ missing orders

#[actix_web::test]
async fn commands_on_a_missing_order_are_404_order_not_found() {
    let app = spawn_app().await;
    let id = new_id("ghost");
    assert_problem(app.pay(&id, "pay-1", 100).await, 404, "order_not_found").await;
    assert_problem(app.ship(&id).await, 404, "order_not_found").await;
    assert_problem(app.cancel(&id).await, 404, "order_not_found").await;
    // An id that could never exist (too long, bad characters) is simply not found too.
    for bad in ["x".repeat(65), "a.b".to_owned(), "%C3%BC".to_owned()] {
        assert_problem(app.cancel(&bad).await, 404, "order_not_found").await;
    }
    // Refused commands did not bring the order into existence.
    assert_eq!(strong(&app, &id).await, None);
    assert_problem(app.get(&format!("/orders/{id}/history"), &app.admin()).await, 404, "order_not_found").await;
}

// ------------------------------------------------------------------------------------------- ETag / If-Match

#[actix_web::test]
async fn every_command_response_carries_the_version_as_a_strong_etag() {
    let app = spawn_app().await;
    let a = new_id("etag-a");
    let placed = app.post("/orders", &app.admin(), &order_body(&a, "c-1", 1, 10)).await;
    assert_eq!(etag(&placed).as_deref(), Some("\"1\""));
    let paid = app.pay(&a, "p", 10).await;
    assert_eq!(etag(&paid).as_deref(), Some("\"2\""));
    let shipped = app.ship(&a).await;
    assert_eq!(etag(&shipped).as_deref(), Some("\"3\""));
    let doc: Value = shipped.json().await.unwrap();
    assert_eq!(doc["version"], 3);

    let b = new_id("etag-b");
    app.place(&b, "c-1", 1, 10).await;
    let cancelled = app.cancel(&b).await;
    assert_eq!(etag(&cancelled).as_deref(), Some("\"2\""));

    // The query side tags the same version.
    let got = app.get(&format!("/orders/{a}?consistency=strong"), &app.admin()).await;
    assert_eq!(etag(&got).as_deref(), Some("\"3\""));
}

#[actix_web::test]
async fn if_match_with_the_current_version_succeeds() {
    let app = spawn_app().await;
    let id = new_id("ifmatch");
    app.place(&id, "c-1", 1, 100).await;
    let paid =
        post_with(&app, &format!("/orders/{id}/confirm-payment"), &pay_body("p", 100), &[("If-Match", "\"1\"")]).await;
    assert_eq!(paid.status(), StatusCode::OK);
    assert_eq!(etag(&paid).as_deref(), Some("\"2\""));
    let shipped = post_with(&app, &format!("/orders/{id}/ship"), &ship_body(), &[("If-Match", "\"2\"")]).await;
    assert_eq!(shipped.status(), StatusCode::OK);
    assert_eq!(etag(&shipped).as_deref(), Some("\"3\""));
}

#[actix_web::test]
async fn if_match_with_another_version_is_412_version_conflict_and_appends_nothing() {
    let app = spawn_app().await;
    let id = new_id("stale");
    app.place(&id, "c-1", 1, 100).await;
    for tag in ["\"2\"", "\"0\"", "\"99\""] {
        let response =
            post_with(&app, &format!("/orders/{id}/confirm-payment"), &pay_body("p", 100), &[("If-Match", tag)]).await;
        assert_problem(response, 412, "version_conflict").await;
    }
    assert_problem(
        post_with(&app, &format!("/orders/{id}/cancel"), &cancel_body(), &[("If-Match", "\"2\"")]).await,
        412,
        "version_conflict",
    )
    .await;
    assert_eq!(history_len(&app, &id).await, 1);
    assert_eq!(strong(&app, &id).await.unwrap()["status"], "placed");

    // After a change, the old tag is stale.
    assert_eq!(app.pay(&id, "p", 100).await.status(), StatusCode::OK);
    assert_problem(
        post_with(&app, &format!("/orders/{id}/ship"), &ship_body(), &[("If-Match", "\"1\"")]).await,
        412,
        "version_conflict",
    )
    .await;
    assert_eq!(history_len(&app, &id).await, 2);
}

#[actix_web::test]
async fn if_match_star_matches_any_version() {
    let app = spawn_app().await;
    let id = new_id("star");
    app.place(&id, "c-1", 1, 100).await;
    let paid =
        post_with(&app, &format!("/orders/{id}/confirm-payment"), &pay_body("p", 100), &[("If-Match", "*")]).await;
    assert_eq!(paid.status(), StatusCode::OK);
    assert_eq!(etag(&paid).as_deref(), Some("\"2\""));
    let cancelled = post_with(&app, &format!("/orders/{id}/cancel"), &cancel_body(), &[("If-Match", "*")]).await;
    assert_eq!(cancelled.status(), StatusCode::OK);
    assert_eq!(history_len(&app, &id).await, 3);
}

#[actix_web::test]
async fn a_weak_if_match_never_matches() {
    let app = spawn_app().await;
    let id = new_id("weak");
    app.place(&id, "c-1", 1, 100).await;
    // The order is at version 1, but `W/"1"` is weak and If-Match compares strongly.
    let response =
        post_with(&app, &format!("/orders/{id}/confirm-payment"), &pay_body("p", 100), &[("If-Match", "W/\"1\"")])
            .await;
    assert_problem(response, 412, "version_conflict").await;
    assert_eq!(history_len(&app, &id).await, 1);
}

// --------------------------------------------------------------------------------------- Idempotency-Key

#[actix_web::test]
async fn an_idempotent_retry_replays_the_first_response_and_appends_nothing() {
    let app = spawn_app().await;
    let id = new_id("idem");
    let body = order_body(&id, "c-1", 2, 1250);
    let key = [("Idempotency-Key", "place-once-1")];

    let first = post_with(&app, "/orders", &body, &key).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    assert_eq!(header(&first, "idempotent-replayed"), None, "a first response is not a replay");
    let (first_etag, first_location) = (etag(&first), header(&first, "location"));
    let first_body: Value = first.json().await.unwrap();

    let retry = post_with(&app, "/orders", &body, &key).await;
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(header(&retry, "idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(etag(&retry), first_etag);
    assert_eq!(header(&retry, "location"), first_location);
    assert_eq!(retry.json::<Value>().await.unwrap(), first_body);
    assert_eq!(history_len(&app, &id).await, 1);

    // The same for a state change, even after the order has moved on: the first answer comes back.
    let pay_key = [("Idempotency-Key", "pay-once-1")];
    let path = format!("/orders/{id}/confirm-payment");
    let paid = post_with(&app, &path, &pay_body("pay-1", 2500), &pay_key).await;
    assert_eq!(paid.status(), StatusCode::OK);
    let paid_body: Value = paid.json().await.unwrap();
    assert_eq!(app.ship(&id).await.status(), StatusCode::OK);
    let retry = post_with(&app, &path, &pay_body("pay-1", 2500), &pay_key).await;
    assert_eq!(retry.status(), StatusCode::OK);
    assert_eq!(header(&retry, "idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(etag(&retry).as_deref(), Some("\"2\""));
    assert_eq!(retry.json::<Value>().await.unwrap(), paid_body);
    assert_eq!(history_len(&app, &id).await, 3);
}

#[actix_web::test]
async fn an_idempotent_retry_replays_even_when_its_if_match_is_now_stale() {
    let app = spawn_app().await;
    let id = new_id("idem-ifmatch");
    app.place(&id, "c-1", 1, 100).await;
    let path = format!("/orders/{id}/confirm-payment");
    let headers = [("Idempotency-Key", "pay-if-match"), ("If-Match", "\"1\"")];
    let first = post_with(&app, &path, &pay_body("p", 100), &headers).await;
    assert_eq!(first.status(), StatusCode::OK);
    let first: Value = first.json().await.unwrap();
    // The order is at version 2 now, but the retry is the same request: it gets the first answer, not a 412.
    let retry = post_with(&app, &path, &pay_body("p", 100), &headers).await;
    assert_eq!(retry.status(), StatusCode::OK);
    assert_eq!(header(&retry, "idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(retry.json::<Value>().await.unwrap(), first);
    assert_eq!(history_len(&app, &id).await, 2);
}

/// A client that times out and retries while its first request is still running sends the same request
/// concurrently. Sends `COPIES` identical requests with one key at once; returns (status, replayed, body) each.
async fn concurrent_copies(app: &TestApp, path: &str, body: &Value, key: &str) -> Vec<(StatusCode, bool, Value)> {
    const COPIES: usize = 8;
    let headers = [("Idempotency-Key", key)];
    let responses = futures_util::future::join_all((0..COPIES).map(|_| post_with(app, path, body, &headers))).await;
    let mut copies = Vec::new();
    for response in responses {
        let status = response.status();
        let replayed = header(&response, "idempotent-replayed").as_deref() == Some("true");
        copies.push((status, replayed, response.json::<Value>().await.unwrap()));
    }
    copies
}

/// Every copy got the first answer: the same status and body, all but one as replays, never a refusal of
/// its own. Returns the common body.
fn assert_first_answer(path: &str, copies: &[(StatusCode, bool, Value)], expected: StatusCode) -> Value {
    let answers: Vec<String> = copies
        .iter()
        .map(|(status, replayed, body)| format!("{} {} {}", status.as_u16(), replayed, body["code"]))
        .collect();
    for (status, _, body) in copies {
        assert_eq!(
            *status, expected,
            "{path}: one copy answered {status}: {body}; all (status replayed code): {answers:?}"
        );
    }
    let replays = copies.iter().filter(|(_, replayed, _)| *replayed).count();
    assert_eq!(replays, copies.len() - 1, "{path}: all but the first are replays");
    assert!(copies.iter().all(|(_, _, b)| *b == copies[0].2), "{path}: different bodies: {copies:?}");
    copies[0].2.clone()
}

#[actix_web::test]
async fn concurrent_retries_of_a_place_with_an_order_id_all_get_the_201() {
    let app = spawn_app().await;
    let id = new_id("race");
    let copies = concurrent_copies(&app, "/orders", &order_body(&id, "c-1", 1, 100), "race-place").await;
    assert_eq!(history_len(&app, &id).await, 1);
    let placed = assert_first_answer("/orders", &copies, StatusCode::CREATED);
    assert_eq!(placed["orderId"], json!(id));
}

#[actix_web::test]
async fn concurrent_retries_of_a_place_without_an_order_id_all_get_the_same_order() {
    let app = spawn_app().await;
    let body = json!({"customerId": "c-1", "currency": "EUR", "items": [{"sku": "S", "name": "N", "quantity": 1, "unitPrice": 100}]});
    let copies = concurrent_copies(&app, "/orders", &body, "race-generated").await;
    let placed = assert_first_answer("/orders", &copies, StatusCode::CREATED);
    assert_eq!(history_len(&app, placed["orderId"].as_str().unwrap()).await, 1);
}

#[actix_web::test]
async fn concurrent_retries_of_a_payment_all_get_the_200() {
    let app = spawn_app().await;
    let id = new_id("race-pay");
    app.place(&id, "c-1", 1, 100).await;
    let path = format!("/orders/{id}/confirm-payment");
    let copies = concurrent_copies(&app, &path, &pay_body("pay-1", 100), "race-pay").await;
    assert_eq!(history_len(&app, &id).await, 2);
    assert_first_answer(&path, &copies, StatusCode::OK);
}

#[actix_web::test]
async fn concurrent_retries_of_a_ship_all_get_the_200() {
    let app = spawn_app().await;
    let id = new_id("race-ship");
    app.place(&id, "c-1", 1, 100).await;
    assert_eq!(app.pay(&id, "pay-1", 100).await.status(), StatusCode::OK);
    let path = format!("/orders/{id}/ship");
    let copies = concurrent_copies(&app, &path, &ship_body(), "race-ship").await;
    assert_eq!(history_len(&app, &id).await, 3);
    assert_eq!(assert_first_answer(&path, &copies, StatusCode::OK)["status"], "shipped");
}

#[actix_web::test]
async fn concurrent_retries_of_a_cancel_all_get_the_200() {
    let app = spawn_app().await;
    let id = new_id("race-cancel");
    app.place(&id, "c-1", 1, 100).await;
    let path = format!("/orders/{id}/cancel");
    let copies = concurrent_copies(&app, &path, &cancel_body(), "race-cancel").await;
    assert_eq!(history_len(&app, &id).await, 2);
    assert_eq!(assert_first_answer(&path, &copies, StatusCode::OK)["status"], "cancelled");
}

#[actix_web::test]
async fn an_idempotent_retry_is_recognised_whatever_the_key_order_of_the_body() {
    let app = spawn_app().await;
    let id = new_id("idem-order");
    app.place(&id, "c-1", 1, 100).await;
    let path = format!("/orders/{id}/confirm-payment");
    let send = |raw: &'static str| {
        app.client
            .post(app.url(&path))
            .bearer_auth(app.admin())
            .header("Content-Type", "application/json")
            .header("Idempotency-Key", "k-order")
            .body(raw)
            .send()
    };
    assert_eq!(send(r#"{"paymentId":"p","amount":100}"#).await.unwrap().status(), StatusCode::OK);
    let retry = send(r#"{ "amount": 100, "paymentId": "p" }"#).await.unwrap();
    assert_eq!(retry.status(), StatusCode::OK);
    assert_eq!(header(&retry, "idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(history_len(&app, &id).await, 2);
}

#[actix_web::test]
async fn the_same_key_with_another_body_is_422_idempotency_key_reused() {
    let app = spawn_app().await;
    let id = new_id("reuse");
    let key = [("Idempotency-Key", "reuse-key")];
    assert_eq!(post_with(&app, "/orders", &order_body(&id, "c-1", 1, 100), &key).await.status(), StatusCode::CREATED);
    let other = new_id("reuse-other");
    assert_problem(
        post_with(&app, "/orders", &order_body(&other, "c-1", 1, 100), &key).await,
        422,
        "idempotency_key_reused",
    )
    .await;
    assert_eq!(strong(&app, &other).await, None, "the refused request placed nothing");

    let path = format!("/orders/{id}/confirm-payment");
    let pay_key = [("Idempotency-Key", "reuse-pay")];
    assert_eq!(post_with(&app, &path, &pay_body("pay-1", 100), &pay_key).await.status(), StatusCode::OK);
    assert_problem(post_with(&app, &path, &pay_body("pay-2", 100), &pay_key).await, 422, "idempotency_key_reused")
        .await;
    assert_eq!(history_len(&app, &id).await, 2);
    assert_eq!(strong(&app, &id).await.unwrap()["paymentId"], "pay-1");
}

#[actix_web::test]
async fn idempotency_keys_are_scoped_per_subject() {
    let app = spawn_app().await;
    let key = [("Idempotency-Key", "shared-key")];
    // The very same body and key from two customers: two orders, neither a replay.
    let body = json!({"currency": "EUR", "items": [{"sku": "S", "name": "N", "quantity": 1, "unitPrice": 5}]});
    let mut ids = vec![];
    for customer in ["c-1", "c-2"] {
        let response = app.request(Method::POST, "/orders", Some(&app.customer(customer)), Some(&body), &key).await;
        assert_eq!(response.status(), StatusCode::CREATED, "{customer}");
        assert_eq!(header(&response, "idempotent-replayed"), None, "{customer}");
        let doc: Value = response.json().await.unwrap();
        assert_eq!(doc["customerId"], customer);
        ids.push(doc["orderId"].as_str().unwrap().to_owned());
    }
    assert_ne!(ids[0], ids[1]);

    // The admin using the same key is independent too.
    let admin_id = new_id("scoped-admin");
    let response = post_with(&app, "/orders", &order_body(&admin_id, "c-1", 1, 5), &key).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(header(&response, "idempotent-replayed"), None);

    // Each subject's retry still replays its own first answer.
    let retry = app.request(Method::POST, "/orders", Some(&app.customer("c-2")), Some(&body), &key).await;
    assert_eq!(header(&retry, "idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(retry.json::<Value>().await.unwrap()["orderId"], json!(ids[1]));
    for id in ids.iter().chain([&admin_id]) {
        assert_eq!(history_len(&app, id).await, 1);
    }
}

#[actix_web::test]
async fn idempotency_keys_are_scoped_per_path() {
    let app = spawn_app().await;
    let (a, b) = (new_id("path-a"), new_id("path-b"));
    app.place(&a, "c-1", 1, 100).await;
    app.place(&b, "c-1", 1, 100).await;
    let key = [("Idempotency-Key", "same-key-two-orders")];
    for id in [&a, &b] {
        let response = post_with(&app, &format!("/orders/{id}/confirm-payment"), &pay_body("pay-1", 100), &key).await;
        assert_eq!(response.status(), StatusCode::OK, "{id}");
        assert_eq!(header(&response, "idempotent-replayed"), None, "{id}");
        assert_eq!(history_len(&app, id).await, 2);
    }
}

#[actix_web::test]
async fn placing_without_an_order_id_retried_with_the_same_key_returns_the_same_id() {
    let app = spawn_app().await;
    let body = json!({"customerId": "c-1", "currency": "EUR", "items": [{"sku": "S", "name": "N", "quantity": 1, "unitPrice": 5}]});
    let key = [("Idempotency-Key", "generated-id")];
    let first = post_with(&app, "/orders", &body, &key).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first_location = header(&first, "location");
    let first: Value = first.json().await.unwrap();
    let id = first["orderId"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        let retry = post_with(&app, "/orders", &body, &key).await;
        assert_eq!(retry.status(), StatusCode::CREATED);
        assert_eq!(header(&retry, "idempotent-replayed").as_deref(), Some("true"));
        assert_eq!(header(&retry, "location"), first_location);
        assert_eq!(retry.json::<Value>().await.unwrap(), first);
    }
    assert_eq!(history_len(&app, &id).await, 1);
}

#[actix_web::test]
async fn a_refused_command_replays_as_the_same_refusal() {
    let app = spawn_app().await;
    let id = new_id("refused");
    app.place(&id, "c-1", 1, 100).await;
    let path = format!("/orders/{id}/ship");
    let key = [("Idempotency-Key", "ship-too-early")];
    let first = assert_problem(post_with(&app, &path, &ship_body(), &key).await, 409, "order_not_paid").await;

    // Even once shipping would succeed, the retry gets the first answer and changes nothing.
    assert_eq!(app.pay(&id, "pay-1", 100).await.status(), StatusCode::OK);
    let retry = post_with(&app, &path, &ship_body(), &key).await;
    assert_eq!(header(&retry, "idempotent-replayed").as_deref(), Some("true"));
    let replayed = assert_problem(retry, 409, "order_not_paid").await;
    assert_eq!(replayed, first);
    assert_eq!(history_len(&app, &id).await, 2);
    assert_eq!(strong(&app, &id).await.unwrap()["status"], "paid");

    // The same for a 409 on place.
    let place_key = [("Idempotency-Key", "place-dup")];
    let first = assert_problem(
        post_with(&app, "/orders", &order_body(&id, "c-1", 1, 100), &place_key).await,
        409,
        "order_already_exists",
    )
    .await;
    let retry = post_with(&app, "/orders", &order_body(&id, "c-1", 1, 100), &place_key).await;
    assert_eq!(header(&retry, "idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(assert_problem(retry, 409, "order_already_exists").await, first);
}

#[actix_web::test]
async fn an_invalid_idempotency_key_is_422_and_changes_nothing() {
    let app = spawn_app().await;
    let too_long = "k".repeat(129);
    for key in [too_long.as_str(), "", "tab\there"] {
        let id = new_id("badkey");
        let response = post_with(&app, "/orders", &order_body(&id, "c-1", 1, 100), &[("Idempotency-Key", key)]).await;
        assert_problem(response, 422, "validation_failed").await;
        assert_eq!(strong(&app, &id).await, None, "key {key:?} placed the order");
    }
    // 128 printable characters is fine.
    let id = new_id("okkey");
    let longest = "k".repeat(128);
    let response = post_with(&app, "/orders", &order_body(&id, "c-1", 1, 100), &[("Idempotency-Key", &longest)]).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let retry = post_with(&app, "/orders", &order_body(&id, "c-1", 1, 100), &[("Idempotency-Key", &longest)]).await;
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(header(&retry, "idempotent-replayed").as_deref(), Some("true"));
}
