//! The guarantees of docs/design.md, seen from outside: commands on one order are serialized (a race has one winner and
//! the stream has no gap or duplicate), projections are idempotent under a replay, passivated actors reload
//! their state (also from snapshots), and an acknowledged command survives SIGKILL.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use chrono::NaiveDate;
use futures_util::future::join_all;
use orderflow::auth::{Authenticator, Role};
use orderflow::config::Settings;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{
    RevenueRows, add_cancellation, add_payment, assert_utc_timestamp, get_json, metric_sum, metrics_text,
    parse_metrics, revenue_rows,
};
use crate::helpers::{
    SECRET, TestApp, eventually, eventually_within, new_id, spawn_app, spawn_app_with, spawn_process, test_env,
};

/// How long a restarted process may take to catch up (Kafka groups wait out the killed member's session).
const RESTART_WAIT: Duration = Duration::from_secs(45);

/// Polls `check` until it returns `Some`, for at most 10 s; panics saying what was awaited.
async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(std::time::Instant::now() < deadline, "not reached within 10 s: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The history's events, asserting versions 1..n without gap or duplicate and unique event ids.
async fn gap_free_history(app: &TestApp, id: &str) -> Vec<Value> {
    let history = get_json(app, &format!("/orders/{id}/history")).await;
    let events = history["events"].as_array().unwrap_or_else(|| panic!("{history}")).clone();
    let versions: Vec<u64> = events.iter().map(|e| e["version"].as_u64().expect("version")).collect();
    let expected: Vec<u64> = (1..=events.len() as u64).collect();
    assert_eq!(versions, expected, "versions of {id} are 1..n: {history}");
    let ids: BTreeSet<&str> = events.iter().map(|e| e["eventId"].as_str().expect("eventId")).collect();
    assert_eq!(ids.len(), events.len(), "event ids are unique: {history}");
    events
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().expect("type")).collect()
}

async fn status_and_body(response: reqwest::Response) -> (StatusCode, Option<String>, Value) {
    let status = response.status();
    let etag = response.headers().get("etag").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, etag, body)
}

// -------------------------------------------------------------------------------------- one order, a race

#[actix_web::test]
async fn two_hundred_concurrent_payments_with_different_ids_have_one_winner() {
    let app = spawn_app().await;
    let id = new_id("race");
    app.place(&id, "c-race", 2, 2100).await;
    let (app_ref, admin, path) = (&app, app.admin(), format!("/orders/{id}/confirm-payment"));
    let (admin, path) = (&admin, &path);
    let results = join_all((0..200).map(|i| async move {
        let body = json!({"paymentId": format!("pay-{i}"), "amount": 4200});
        status_and_body(app_ref.post(path, admin, &body).await).await
    }))
    .await;

    let winners: Vec<&(StatusCode, Option<String>, Value)> =
        results.iter().filter(|(status, _, _)| *status == StatusCode::OK).collect();
    assert_eq!(winners.len(), 1, "exactly one payment wins: {:?}", results.iter().map(|r| r.0).collect::<Vec<_>>());
    let (_, etag, winner) = winners[0];
    assert_eq!(etag.as_deref(), Some("\"2\""));
    assert_eq!(winner["version"], 2);
    assert_eq!(winner["status"], "paid");
    for (status, _, body) in &results {
        if *status != StatusCode::OK {
            assert_eq!(*status, StatusCode::CONFLICT, "{body}");
            assert_eq!(body["code"], "payment_already_confirmed", "{body}");
        }
    }

    let events = gap_free_history(&app, &id).await;
    assert_eq!(types(&events), ["OrderPlaced", "PaymentConfirmed"]);
    assert_eq!(events[1]["data"]["paymentId"], winner["paymentId"]);
    let strong = get_json(&app, &format!("/orders/{id}?consistency=strong")).await;
    assert_eq!(&strong, winner);
    assert_eq!(app.projected(&id, 2).await, strong);
}

#[actix_web::test]
async fn two_hundred_concurrent_retries_of_one_payment_all_succeed_with_one_event() {
    let app = spawn_app().await;
    let id = new_id("retry");
    app.place(&id, "c-race", 1, 999).await;
    let (app_ref, admin, path) = (&app, app.admin(), format!("/orders/{id}/confirm-payment"));
    let (admin, path) = (&admin, &path);
    let results = join_all((0..200).map(|_| async move {
        status_and_body(app_ref.post(path, admin, &json!({"paymentId": "the-one", "amount": 999})).await).await
    }))
    .await;
    for (status, etag, body) in &results {
        assert_eq!(*status, StatusCode::OK, "{body}");
        assert_eq!(etag.as_deref(), Some("\"2\""));
        assert_eq!(body["version"], 2);
        assert_eq!(body["paymentId"], "the-one");
    }
    let events = gap_free_history(&app, &id).await;
    assert_eq!(types(&events), ["OrderPlaced", "PaymentConfirmed"]);
}

// ---------------------------------------------------------------------------------------- many orders

#[actix_web::test]
async fn concurrent_lifecycles_on_many_orders_keep_every_stream_gap_free() {
    let app = spawn_app().await;
    let admin = app.admin();
    let (app_ref, admin) = (&app, &admin);
    let ids: Vec<String> = (0..50).map(|i| new_id(&format!("many{i}"))).collect();
    join_all(ids.iter().enumerate().map(|(i, id)| async move {
        let total = 100 * (i as u64 + 1);
        let (status, etag, _) =
            status_and_body(app_ref.post("/orders", admin, &crate::helpers::order_body(id, "c-many", 1, total)).await)
                .await;
        assert_eq!((status, etag.as_deref()), (StatusCode::CREATED, Some("\"1\"")), "place {id}");
        let (status, etag, _) = status_and_body(app_ref.pay(id, &format!("pay-{id}"), total).await).await;
        assert_eq!((status, etag.as_deref()), (StatusCode::OK, Some("\"2\"")), "pay {id}");
        let (status, etag, body) = status_and_body(app_ref.ship(id).await).await;
        assert_eq!((status, etag.as_deref()), (StatusCode::OK, Some("\"3\"")), "ship {id}");
        assert_eq!(body["status"], "shipped");
    }))
    .await;
    for id in &ids {
        let events = gap_free_history(&app, id).await;
        assert_eq!(types(&events), ["OrderPlaced", "PaymentConfirmed", "OrderShipped"], "{id}");
    }
    eventually(|| async {
        let page = get_json(&app, "/orders?status=shipped&customerId=c-many&limit=1").await;
        (page["estimatedTotal"] == 50).then_some(())
    })
    .await;
}

#[actix_web::test]
async fn racing_pay_ship_and_cancel_on_many_orders_serialize_into_valid_streams() {
    let app = spawn_app().await;
    let admin = app.admin();
    let (app_ref, admin) = (&app, &admin);
    let ids: Vec<String> = (0..50).map(|i| new_id(&format!("racing{i}"))).collect();
    let placed = join_all(ids.iter().map(|id| async move {
        app_ref.post("/orders", admin, &crate::helpers::order_body(id, "c-racing", 2, 150)).await.status()
    }))
    .await;
    assert!(placed.iter().all(|s| *s == StatusCode::CREATED), "{placed:?}");

    // Per order, pay, ship and cancel fired at once; all orders at once.
    let outcomes = join_all(ids.iter().map(|id| async move {
        let (pay, ship, cancel) = futures_util::join!(
            async { status_and_body(app_ref.pay(id, "p", 300).await).await },
            async { status_and_body(app_ref.ship(id).await).await },
            async { status_and_body(app_ref.cancel(id).await).await },
        );
        (id.clone(), [("PaymentConfirmed", pay), ("OrderShipped", ship), ("OrderCancelled", cancel)])
    }))
    .await;

    for (id, results) in &outcomes {
        let events = gap_free_history(&app, id).await;
        assert_eq!(events[0]["type"], "OrderPlaced");
        // The stream is a valid walk of the state machine.
        let mut status = "placed";
        let mut refund_expected = 0;
        for event in &events[1..] {
            status = match (status, event["type"].as_str().unwrap()) {
                ("placed", "PaymentConfirmed") => {
                    refund_expected = 300;
                    "paid"
                }
                ("paid", "OrderShipped") => "shipped",
                ("placed" | "paid", "OrderCancelled") => {
                    assert_eq!(event["data"]["refund"], refund_expected, "{id}: {events:?}");
                    "cancelled"
                }
                (from, to) => panic!("{id}: {to} after {from}: {events:?}"),
            };
        }
        // Each success appended exactly the event at the version it answered; each refusal is a 409 rule.
        let mut versions = BTreeSet::new();
        for (event_type, (code, etag, body)) in results {
            match *code {
                StatusCode::OK => {
                    let version = body["version"].as_u64().expect("version");
                    assert_eq!(etag.as_deref(), Some(format!("\"{version}\"").as_str()));
                    assert!(versions.insert(version), "{id}: two successes at v{version}");
                    assert_eq!(events[version as usize - 1]["type"], *event_type, "{id}: {body}");
                }
                StatusCode::CONFLICT => {
                    let code = body["code"].as_str().unwrap_or_default();
                    assert!(
                        ["order_not_paid", "order_cancelled", "order_already_shipped"].contains(&code),
                        "{id} {event_type}: {body}"
                    );
                }
                other => panic!("{id} {event_type}: unexpected {other}: {body}"),
            }
        }
        assert_eq!(versions, (2..=events.len() as u64).collect(), "{id}: one success per appended event");
        let strong = get_json(&app, &format!("/orders/{id}?consistency=strong")).await;
        assert_eq!(strong["status"], status);
        assert_eq!(strong["version"], events.len());
        assert_eq!(app.projected(id, events.len() as u64).await, strong, "{id}: the view agrees with the fold");
    }
}

// ------------------------------------------------------------------------------------------------ replay

/// Revenue over a window around today.
async fn revenue_window(app: &TestApp) -> RevenueRows {
    let today = chrono::Utc::now().date_naive();
    let (from, to) = (today - chrono::Duration::days(2), today + chrono::Duration::days(2));
    revenue_rows(&get_json(app, &format!("/revenue/daily?from={from}&to={to}")).await)
}

fn skipped(samples: &[crate::helpers::Sample], projection: &str) -> f64 {
    metric_sum(samples, "orderflow_projection_events_total", &[("projection", projection), ("outcome", "skipped")])
}

#[actix_web::test]
async fn replaying_the_feed_changes_neither_revenue_nor_search() {
    let app = spawn_app().await;
    let mut expected = RevenueRows::new();
    let mut events = 0u64;
    let mut ids = Vec::new();
    for i in 0..30u64 {
        let id = new_id(&format!("replay{i}"));
        let currency = if i % 4 == 3 { "USD" } else { "EUR" };
        let total = 100 * (i + 1);
        crate::helpers::place_items(&app, &id, "c-replay", currency, &[("RPL-1", "Replay gadget", 1, total)]).await;
        events += 1;
        if i % 3 != 0 {
            let paid = crate::helpers::ok_body(app.pay(&id, &format!("p{i}"), total).await).await;
            add_payment(&mut expected, &paid);
            events += 1;
        }
        if i % 5 == 0 {
            let cancelled = crate::helpers::ok_body(app.cancel(&id).await).await;
            add_cancellation(&mut expected, &cancelled);
            events += 1;
        }
        ids.push(id);
    }
    assert!(expected.values().any(|r| r[1] > 0) && expected.values().any(|r| r[3] > r[1]), "both kinds of cancel");

    let settled = eventually(|| async {
        let rows = revenue_window(&app).await;
        (rows == expected).then_some(rows)
    })
    .await;
    let search_count = |query: &'static str| {
        let app = &app;
        async move { get_json(app, &format!("/orders?{query}&limit=1")).await["estimatedTotal"].as_u64().unwrap() }
    };
    // Every order in the search view at its final status (the view may trail the revenue view): 6 cancelled
    // (i % 5 == 0), 16 paid and not cancelled (i % 3 != 0, i % 5 != 0).
    let (cancelled_before, paid_before) = (6, 16);
    eventually(|| async {
        let settled = search_count("customerId=c-replay").await == 30
            && search_count("status=cancelled").await == cancelled_before
            && search_count("status=paid").await == paid_before;
        settled.then_some(())
    })
    .await;
    let gadgets_before = search_count("q=gadget").await;
    let positions_before = eventually(|| async {
        let infos = get_json(&app, "/admin/projections").await;
        let positions: BTreeMap<String, u64> = infos
            .as_array()?
            .iter()
            .map(|p| (p["name"].as_str().unwrap().to_owned(), p["position"].as_u64().unwrap()))
            .collect();
        positions.values().all(|p| *p >= events).then_some(positions)
    })
    .await;
    let before = parse_metrics(&metrics_text(&app).await);
    let (search_skipped, revenue_skipped) = (skipped(&before, "search"), skipped(&before, "revenue"));

    app.state.projections.replay("revenue").await.expect("revenue replay");
    app.state.projections.replay("search").await.expect("search replay");

    // The whole feed comes through again, and every event is recognised as already applied.
    wait_for("the replay delivers the whole feed again (outcome=skipped counts every event)", || async {
        let now = parse_metrics(&metrics_text(&app).await);
        let caught_up = skipped(&now, "search") - search_skipped >= events as f64
            && skipped(&now, "revenue") - revenue_skipped >= events as f64;
        caught_up.then_some(())
    })
    .await;
    wait_for("the projections' positions are back where they were", || async {
        let infos = get_json(&app, "/admin/projections").await;
        infos
            .as_array()?
            .iter()
            .all(|p| p["position"].as_u64() >= p["name"].as_str().and_then(|n| positions_before.get(n)).copied())
            .then_some(())
    })
    .await;

    assert_eq!(revenue_window(&app).await, settled, "revenue unchanged by the replay");
    assert_eq!(search_count("customerId=c-replay").await, 30);
    assert_eq!(search_count("status=cancelled").await, cancelled_before);
    assert_eq!(search_count("status=paid").await, paid_before);
    assert_eq!(search_count("q=gadget").await, gadgets_before);
    for id in &ids {
        let strong = get_json(&app, &format!("/orders/{id}?consistency=strong")).await;
        assert_eq!(get_json(&app, &format!("/orders/{id}")).await, strong, "{id}");
    }
    let after = parse_metrics(&metrics_text(&app).await);
    for projection in ["search", "revenue"] {
        let failed = metric_sum(
            &after,
            "orderflow_projection_events_total",
            &[("projection", projection), ("outcome", "failed")],
        );
        assert_eq!(failed, 0.0, "{projection}");
    }
    // And it stays that way.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(revenue_window(&app).await, settled);
}

#[actix_web::test]
async fn views_keep_following_the_feed_after_a_replay() {
    let app = spawn_app().await;
    let first = new_id("before-replay");
    app.place(&first, "c-replay", 1, 1000).await;
    assert_eq!(app.pay(&first, "p1", 1000).await.status(), StatusCode::OK);
    app.projected(&first, 2).await;
    wait_for("revenue counts the first payment", || async {
        let rows = revenue_window(&app).await;
        (rows.values().map(|r| r[0]).sum::<u64>() == 1000).then_some(())
    })
    .await;
    // Let the projectors go idle (waiting for new events), as they are most of the time.
    tokio::time::sleep(Duration::from_millis(700)).await;

    app.state.projections.replay("search").await.expect("search replay");
    app.state.projections.replay("revenue").await.expect("revenue replay");

    let second = new_id("after-replay");
    app.place(&second, "c-replay", 1, 500).await;
    assert_eq!(app.pay(&second, "p2", 500).await.status(), StatusCode::OK);
    wait_for("an order placed after a search replay reaches the search view", || async {
        let response = app.get(&format!("/orders/{second}"), &app.admin()).await;
        if response.status() != StatusCode::OK {
            return None;
        }
        let doc: Value = response.json().await.ok()?;
        (doc["version"] == 2).then_some(())
    })
    .await;
    wait_for("a payment made after a revenue replay reaches the revenue view (gross 1500)", || async {
        let rows = revenue_window(&app).await;
        (rows.values().map(|r| r[0]).sum::<u64>() == 1500).then_some(())
    })
    .await;
    assert_eq!(revenue_window(&app).await.values().map(|r| r[2]).sum::<u64>(), 2, "paidOrders");
}

// ------------------------------------------------------------------------------------------- passivation

/// Waits until no order actor is live (all passivated), and at least `min` has passed.
async fn all_passivated(app: &TestApp, min: Duration) {
    tokio::time::sleep(min).await;
    eventually(|| async { (app.state.registry.live() == 0).then_some(()) }).await;
}

#[actix_web::test]
async fn a_passivated_order_reloads_its_state() {
    let app = spawn_app_with(&[("ORDERFLOW__ACTORS__IDLE_TIMEOUT_MS", "100")]).await;
    let id = new_id("passive");
    app.place(&id, "c-passive", 3, 333).await;
    assert!(app.state.registry.live() >= 1);
    all_passivated(&app, Duration::from_millis(350)).await;

    let (status, etag, paid) = status_and_body(app.pay(&id, "pay-passive", 999).await).await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    assert_eq!(etag.as_deref(), Some("\"2\""));
    assert_eq!(paid["status"], "paid");
    assert_eq!(paid["total"], 999);
    all_passivated(&app, Duration::from_millis(350)).await;

    // The reloaded state knows the payment.
    let (status, _, body) = status_and_body(app.pay(&id, "another", 999).await).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::CONFLICT, Some("payment_already_confirmed")));
    all_passivated(&app, Duration::from_millis(350)).await;
    let (status, etag, _) = status_and_body(app.pay(&id, "pay-passive", 999).await).await;
    assert_eq!((status, etag.as_deref()), (StatusCode::OK, Some("\"2\"")), "the same payment again");
    all_passivated(&app, Duration::from_millis(350)).await;
    let (status, etag, shipped) = status_and_body(app.ship(&id).await).await;
    assert_eq!((status, etag.as_deref()), (StatusCode::OK, Some("\"3\"")), "{shipped}");

    let events = gap_free_history(&app, &id).await;
    assert_eq!(types(&events), ["OrderPlaced", "PaymentConfirmed", "OrderShipped"]);
    // A place with the same id after passivation still conflicts.
    all_passivated(&app, Duration::from_millis(350)).await;
    let response = app.post("/orders", &app.admin(), &crate::helpers::order_body(&id, "c-passive", 1, 1)).await;
    crate::helpers::assert_problem(response, 409, "order_already_exists").await;
}

#[actix_web::test]
async fn snapshots_fold_to_the_same_state_as_the_events() {
    for every in ["1", "2", "3"] {
        let app = spawn_app_with(&[
            ("ORDERFLOW__ACTORS__IDLE_TIMEOUT_MS", "100"),
            ("ORDERFLOW__STORE__SNAPSHOT_EVERY", every),
        ])
        .await;
        let pause = Duration::from_millis(300);

        // place, pay, ship, each on a freshly loaded actor.
        let shipped_id = new_id("snap-ship");
        app.place(&shipped_id, "c-snap", 2, 450).await;
        all_passivated(&app, pause).await;
        assert_eq!(app.pay(&shipped_id, "pay-snap", 900).await.status(), StatusCode::OK);
        all_passivated(&app, pause).await;
        let (status, etag, shipped) = status_and_body(app.ship(&shipped_id).await).await;
        assert_eq!((status, etag.as_deref()), (StatusCode::OK, Some("\"3\"")), "every={every}: {shipped}");
        all_passivated(&app, pause).await;
        let strong = get_json(&app, &format!("/orders/{shipped_id}?consistency=strong")).await;
        assert_eq!(strong, shipped, "every={every}");
        assert_eq!(app.projected(&shipped_id, 3).await, strong, "every={every}: the view agrees with the fold");
        let (status, _, body) = status_and_body(app.cancel(&shipped_id).await).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::CONFLICT, Some("order_already_shipped")),
            "every={every}"
        );
        all_passivated(&app, pause).await;
        let (status, _, body) = status_and_body(app.pay(&shipped_id, "other", 900).await).await;
        assert_eq!((status, body["code"].as_str()), (StatusCode::CONFLICT, Some("payment_already_confirmed")));
        let (status, etag, _) = status_and_body(app.pay(&shipped_id, "pay-snap", 900).await).await;
        assert_eq!((status, etag.as_deref()), (StatusCode::OK, Some("\"3\"")), "a shipped order counts as paid");
        let events = gap_free_history(&app, &shipped_id).await;
        assert_eq!(types(&events), ["OrderPlaced", "PaymentConfirmed", "OrderShipped"], "snapshots never cut history");

        // place, pay, then cancel from a reloaded (snapshotted) state: the refund is the paid amount.
        let cancelled_id = new_id("snap-cancel");
        app.place(&cancelled_id, "c-snap", 1, 1234).await;
        assert_eq!(app.pay(&cancelled_id, "pay-c", 1234).await.status(), StatusCode::OK);
        all_passivated(&app, pause).await;
        let (status, etag, cancelled) = status_and_body(app.cancel(&cancelled_id).await).await;
        assert_eq!((status, etag.as_deref()), (StatusCode::OK, Some("\"3\"")), "{cancelled}");
        assert_eq!(cancelled["refund"], 1234);
        assert_eq!(cancelled["paymentId"], "pay-c");
        all_passivated(&app, pause).await;
        let strong = get_json(&app, &format!("/orders/{cancelled_id}?consistency=strong")).await;
        assert_eq!(strong, cancelled);
        assert_eq!(app.projected(&cancelled_id, 3).await, strong);
        let (status, _, body) = status_and_body(app.ship(&cancelled_id).await).await;
        assert_eq!((status, body["code"].as_str()), (StatusCode::CONFLICT, Some("order_cancelled")));
    }
}

// -------------------------------------------------------------------------------------------- durability

#[derive(Default)]
struct Acked {
    /// orderId → total, for every 201 place.
    placed: BTreeMap<String, u64>,
    /// orderId → paymentId, for every 200 payment.
    paid: BTreeMap<String, String>,
}

async fn send(client: &Client, url: String, token: &str, body: &Value) -> Option<(StatusCode, Value)> {
    let response = client
        .post(url)
        .bearer_auth(token)
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .ok()?;
    let status = response.status();
    let body = response.json().await.ok()?;
    Some((status, body))
}

async fn get_process(client: &Client, address: &str, token: &str, path: &str) -> (StatusCode, Value) {
    let response = client.get(format!("{address}{path}")).bearer_auth(token).send().await.expect("request sent");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[actix_web::test]
async fn acknowledged_commands_survive_sigkill() {
    let dir = tempfile::tempdir().expect("temp dir");
    let settings = Settings::load_with(None, test_env(dir.path(), &[])).expect("settings");
    let token = Authenticator::new(&settings.auth, SECRET).mint("admin", Role::Admin, 3600).expect("token");
    let client = Client::builder().timeout(Duration::from_secs(10)).build().expect("client");

    let process = spawn_process(dir.path());
    let address = process.address.clone();
    let acked = Rc::new(RefCell::new(Acked::default()));
    let ids: Vec<String> = (0..50).map(|i| new_id(&format!("durable{i}"))).collect();
    let mut tasks = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let (client, address, token, acked, id) =
            (client.clone(), address.clone(), token.clone(), acked.clone(), id.clone());
        let total = 100 * (i as u64 + 1);
        tasks.push(actix_web::rt::spawn(async move {
            let body = crate::helpers::order_body(&id, "c-durable", 1, total);
            match send(&client, format!("{address}/orders"), &token, &body).await {
                Some((status, _)) if status.is_success() => {
                    assert_eq!(status, StatusCode::CREATED);
                    acked.borrow_mut().placed.insert(id.clone(), total);
                }
                _ => return,
            }
            let body = json!({"paymentId": format!("pay-{id}"), "amount": total});
            if let Some((status, _)) =
                send(&client, format!("{address}/orders/{id}/confirm-payment"), &token, &body).await
                && status.is_success()
            {
                acked.borrow_mut().paid.insert(id.clone(), format!("pay-{id}"));
            }
        }));
    }
    // Kill while the burst is still in flight (or once it is over, whichever comes first).
    loop {
        let count = {
            let a = acked.borrow();
            a.placed.len() + a.paid.len()
        };
        if count >= 60 || tasks.iter().all(|t| t.is_finished()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    process.kill();
    for task in tasks {
        task.await.expect("task");
    }
    let acked = Rc::try_unwrap(acked).ok().expect("tasks done").into_inner();
    assert!(!acked.placed.is_empty(), "some commands were acknowledged before the kill");
    eprintln!("acknowledged before SIGKILL: {} places, {} payments", acked.placed.len(), acked.paid.len());

    let process = spawn_process(dir.path());
    let address = process.address.clone();
    for (id, total) in &acked.placed {
        let (status, doc) = get_process(&client, &address, &token, &format!("/orders/{id}?consistency=strong")).await;
        assert_eq!(status, StatusCode::OK, "acknowledged place of {id} survived: {doc}");
        assert_eq!(doc["total"], *total);
    }
    for (id, payment) in &acked.paid {
        let (status, doc) = get_process(&client, &address, &token, &format!("/orders/{id}?consistency=strong")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(doc["status"], "paid", "acknowledged payment of {id} survived: {doc}");
        assert_eq!(doc["paymentId"], json!(payment));
        let (_, history) = get_process(&client, &address, &token, &format!("/orders/{id}/history")).await;
        let events = history["events"].as_array().expect("events");
        assert_eq!(types(events), ["OrderPlaced", "PaymentConfirmed"], "{id}");
    }

    // Revenue converges to what the write model holds: every acknowledged payment, plus any that was durable
    // but whose answer the kill cut off.
    let mut expected = RevenueRows::new();
    let mut stored_orders = 0;
    for id in &ids {
        let (status, doc) = get_process(&client, &address, &token, &format!("/orders/{id}?consistency=strong")).await;
        match status {
            StatusCode::OK => {
                stored_orders += 1;
                let (_, history) = get_process(&client, &address, &token, &format!("/orders/{id}/history")).await;
                let versions: Vec<u64> =
                    history["events"].as_array().unwrap().iter().map(|e| e["version"].as_u64().unwrap()).collect();
                assert_eq!(versions, (1..=doc["version"].as_u64().unwrap()).collect::<Vec<_>>(), "{id}");
                if doc["status"] == "paid" {
                    add_payment(&mut expected, &doc);
                } else {
                    assert!(!acked.paid.contains_key(id), "{id}");
                }
            }
            StatusCode::NOT_FOUND => assert!(!acked.placed.contains_key(id), "{id} was acknowledged"),
            other => panic!("{id}: {other} {doc}"),
        }
    }
    let acked_gross: u64 = acked.paid.keys().map(|id| acked.placed[id]).sum();
    let expected_gross: u64 = expected.values().map(|r| r[0]).sum();
    assert!(expected_gross >= acked_gross);
    let days: Vec<NaiveDate> = expected.keys().map(|(d, _)| d.parse().unwrap()).collect();
    if let (Some(from), Some(to)) = (days.iter().min(), days.iter().max()) {
        let path = format!("/revenue/daily?from={from}&to={to}");
        eventually_within(RESTART_WAIT, || async {
            let (status, answer) = get_process(&client, &address, &token, &path).await;
            (status == StatusCode::OK && revenue_rows(&answer) == expected).then_some(())
        })
        .await;
    }
    eventually_within(RESTART_WAIT, || async {
        let (_, page) = get_process(&client, &address, &token, "/orders?customerId=c-durable&limit=1").await;
        (page["estimatedTotal"] == stored_orders).then_some(())
    })
    .await;

    // The restarted service takes commands again.
    if let Some(unpaid) = ids.iter().find(|id| acked.placed.contains_key(*id) && !acked.paid.contains_key(*id)) {
        let (status, doc) =
            get_process(&client, &address, &token, &format!("/orders/{unpaid}?consistency=strong")).await;
        assert_eq!(status, StatusCode::OK);
        if doc["status"] == "placed" {
            let body = json!({"paymentId": "after-restart", "amount": doc["total"]});
            let (status, paid) = send(&client, format!("{address}/orders/{unpaid}/confirm-payment"), &token, &body)
                .await
                .expect("answer");
            assert_eq!(status, StatusCode::OK, "{paid}");
            assert_eq!(paid["version"], 2);
            assert_utc_timestamp(&paid["paidAt"]);
        }
    }
    process.kill();
}
