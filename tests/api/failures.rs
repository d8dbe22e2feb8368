//! Failure handling end to end (docs/design.md guarantees 5–7), with the views (or the bridge) made to fail on chosen
//! orders through the application's adapter seam (`poison.rs`): an event the views refuse is retried, then parked with its error; the same order's later events are
//! parked behind it; other orders keep flowing; a replay after the fix applies them in order; a discard removes
//! one and lets the rest proceed; revenue is exact afterwards. A projector that panics is restarted by its
//! supervisor, counted, shown as a crash loop, and loses nothing. A rebuild never shows a partial view.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{
    TestApp, assert_problem, distributed, eventually, eventually_within, new_id, spawn_app_poisoning, spawn_app_with,
};

const POISONED: &[(&str, &str)] =
    &[("ORDERFLOW__PROJECTIONS__MAX_ATTEMPTS", "3"), ("ORDERFLOW__PROJECTIONS__RETRY_BACKOFF_MS", "5")];

async fn app_poisoning(rule: &str) -> TestApp {
    spawn_app_poisoning(tempfile::tempdir().expect("temp dir"), POISONED, rule).await
}

async fn parked(app: &TestApp) -> Vec<Value> {
    let response = app.get("/admin/parked", &app.admin()).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json::<Vec<Value>>().await.expect("json array")
}

/// The parked entries of one projection, for one order, in version order.
fn of(parked: &[Value], projection: &str, order: &str) -> Vec<Value> {
    let mut mine: Vec<Value> =
        parked.iter().filter(|p| p["projection"] == projection && p["event"]["orderId"] == order).cloned().collect();
    mine.sort_by_key(|p| p["event"]["version"].as_u64());
    mine
}

async fn wait_parked(app: &TestApp, order: &str, per_projection: usize) -> Vec<Value> {
    eventually(|| async {
        let all = parked(app).await;
        let done = ["search", "revenue"].iter().all(|p| of(&all, p, order).len() == per_projection);
        done.then_some(all)
    })
    .await
}

async fn admin_post(app: &TestApp, path: &str) -> reqwest::Response {
    app.request(Method::POST, path, Some(&app.admin()), None, &[]).await
}

async fn gross_today(app: &TestApp) -> (u64, u64) {
    let revenue = app.revenue_today().await;
    let days = revenue["days"].as_array().cloned().unwrap_or_default();
    let sum = |field: &str| days.iter().filter_map(|d| d[field].as_u64()).sum::<u64>();
    (sum("grossRevenue"), sum("paidOrders"))
}

#[actix_web::test]
async fn a_poison_event_is_parked_with_the_orders_later_events_behind_it_and_replayed_after_the_fix() {
    let app = app_poisoning("poison-").await;
    let before = new_id("ok");
    app.place(&before, "c-p", 1, 1000).await;

    let poison = new_id("poison");
    app.place(&poison, "c-p", 2, 500).await;
    assert_eq!(app.pay(&poison, "pay-p", 1000).await.status(), StatusCode::OK);
    assert_eq!(app.ship(&poison).await.status(), StatusCode::OK);

    // Other orders keep flowing, before and after the poison one.
    let after = new_id("ok");
    app.place(&after, "c-p", 1, 300).await;
    assert_eq!(app.pay(&after, "pay-a", 300).await.status(), StatusCode::OK);
    app.projected(&before, 1).await;
    app.projected(&after, 2).await;
    eventually(|| async { (gross_today(&app).await == (300, 1)).then_some(()) }).await;

    let all = wait_parked(&app, &poison, 3).await;
    for projection in ["search", "revenue"] {
        let mine = of(&all, projection, &poison);
        let versions: Vec<u64> = mine.iter().map(|p| p["event"]["version"].as_u64().unwrap()).collect();
        assert_eq!(versions, [1, 2, 3], "{projection}: {mine:?}");
        assert_eq!(mine[0]["attempts"], 3, "the first was tried max_attempts times");
        assert!(mine[0]["error"].as_str().unwrap().contains("injected failure"), "{}", mine[0]);
        assert_eq!(mine[0]["event"]["type"], "OrderPlaced");
        assert!(mine[0]["parkedAt"].is_string() && mine[0]["id"].is_string());
        assert_eq!(mine[1]["attempts"], 0, "parked behind, never tried");
    }
    // Never applied out of order: the poison order is not in the search view at all.
    assert_eq!(app.get(&format!("/orders/{poison}"), &app.admin()).await.status(), StatusCode::NOT_FOUND);
    let projections: Vec<Value> = app.get("/admin/projections", &app.admin()).await.json().await.unwrap();
    // The views' rows (the distributed profile's Streams bridge has a row too, and nothing to park).
    assert!(projections.iter().filter(|p| p["name"] != "bridge").all(|p| p["parked"] == 3), "{projections:?}");
    let metrics = app.request(Method::GET, "/metrics", None, None, &[]).await.text().await.unwrap();
    assert!(metrics.contains("orderflow_projection_parked_events{projection=\"search\"} 3"), "{metrics}");
    assert!(metrics.contains("outcome=\"parked\""), "{metrics}");

    // Not fixed yet: the replay fails again and everything stays parked.
    let search = of(&all, "search", &poison);
    let first = search[0]["id"].as_str().unwrap().to_owned();
    assert_problem(admin_post(&app, &format!("/admin/parked/{first}/replay")).await, 409, "replay_failed").await;
    // Only the earliest of an order can be replayed.
    let second = search[1]["id"].as_str().unwrap();
    assert_problem(admin_post(&app, &format!("/admin/parked/{second}/replay")).await, 409, "not_first_parked").await;
    assert_problem(admin_post(&app, "/admin/parked/nope/replay").await, 404, "not_found").await;

    // The fix, then the replay: all three, in order.
    app.poison.set("");
    let response = admin_post(&app, &format!("/admin/parked/{first}/replay")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let report: Value = response.json().await.unwrap();
    assert_eq!(report["replayed"].as_array().map(Vec::len), Some(3), "{report}");
    assert_eq!(report["remaining"], 0);
    let doc = app.projected(&poison, 3).await;
    assert_eq!(doc["status"], "shipped");

    let revenue_first = of(&parked(&app).await, "revenue", &poison)[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(admin_post(&app, &format!("/admin/parked/{revenue_first}/replay")).await.status(), StatusCode::OK);
    assert!(parked(&app).await.is_empty());
    assert_eq!(gross_today(&app).await, (1300, 2), "revenue exact after the replay");

    // The order is unblocked: its next events flow as usual.
    assert_eq!(app.cancel(&poison).await.status(), StatusCode::CONFLICT, "shipped orders cannot be cancelled");
    let projections: Vec<Value> = app.get("/admin/projections", &app.admin()).await.json().await.unwrap();
    assert!(projections.iter().all(|p| p["parked"] == 0), "{projections:?}");
}

#[actix_web::test]
async fn discarding_a_parked_event_lets_the_ones_behind_it_proceed() {
    // Only the payments of these orders are refused.
    let app = app_poisoning("dpoison-:PaymentConfirmed").await;
    let id = new_id("dpoison");
    app.place(&id, "c-d", 1, 700).await;
    assert_eq!(app.pay(&id, "pay-d", 700).await.status(), StatusCode::OK);
    assert_eq!(app.ship(&id).await.status(), StatusCode::OK);
    let all = wait_parked(&app, &id, 2).await;
    app.poison.set("");

    // Revenue: discard the payment; the shipment behind it proceeds; the payment never counts.
    let revenue = of(&all, "revenue", &id);
    assert_eq!(revenue[0]["event"]["type"], "PaymentConfirmed");
    let path = format!("/admin/parked/{}", revenue[0]["id"].as_str().unwrap());
    let response = app.request(Method::DELETE, &path, Some(&app.admin()), None, &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    let report: Value = response.json().await.unwrap();
    assert_eq!((report["replayed"].as_array().map(Vec::len), &report["remaining"]), (Some(1), &Value::from(0)));
    assert_eq!(gross_today(&app).await, (0, 0), "a discarded payment is not revenue");
    assert_problem(app.request(Method::DELETE, &path, Some(&app.admin()), None, &[]).await, 404, "not_found").await;

    // Search: replaying instead brings the document to the shipped state.
    let search = of(&all, "search", &id);
    let response = admin_post(&app, &format!("/admin/parked/{}/replay", search[0]["id"].as_str().unwrap())).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(app.projected(&id, 3).await["status"], "shipped");
    assert!(parked(&app).await.is_empty());
}

#[actix_web::test]
async fn parked_routes_are_for_admins_only() {
    let app = app_poisoning("").await;
    let customer = app.customer("c-1");
    assert_problem(app.get("/admin/parked", &customer).await, 403, "forbidden").await;
    let replay = app.request(Method::POST, "/admin/parked/x/replay", Some(&customer), None, &[]).await;
    assert_problem(replay, 403, "forbidden").await;
    let discard = app.request(Method::DELETE, "/admin/parked/x", None, None, &[]).await;
    assert_problem(discard, 401, "unauthorized").await;
    assert!(parked(&app).await.is_empty());
}

async fn projections_info(app: &TestApp) -> Vec<Value> {
    app.get("/admin/projections", &app.admin()).await.json().await.expect("json")
}

#[actix_web::test]
async fn a_crashing_projector_is_restarted_counted_shown_as_a_crash_loop_and_loses_nothing() {
    let app = app_poisoning("panic!crash-").await;
    let fine = new_id("fine");
    app.place(&fine, "c-s", 1, 250).await;
    assert_eq!(app.pay(&fine, "pay-f", 250).await.status(), StatusCode::OK);
    let crash = new_id("crash");
    app.place(&crash, "c-s", 1, 400).await;
    assert_eq!(app.pay(&crash, "pay-c", 400).await.status(), StatusCode::OK);

    // The batch holding the crashing order panics again and again: restarts counted, a crash loop shown,
    // readiness failing. (On Kafka each restart rejoins the consumer group, which takes a few seconds.)
    eventually_within(Duration::from_secs(90), || async {
        let infos = projections_info(&app).await;
        infos
            .iter()
            .filter(|p| p["name"] != "bridge")
            .all(|p| p["status"] == "crashLooping" && p["restarts"].as_u64() >= Some(3))
            .then_some(())
    })
    .await;
    let ready = app.request(Method::GET, "/health/ready", None, None, &[]).await;
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = ready.json().await.unwrap();
    assert!(body["checks"]["projection:search"].as_str().unwrap().starts_with("failing"), "{body}");
    let metrics = app.request(Method::GET, "/metrics", None, None, &[]).await.text().await.unwrap();
    assert!(metrics.contains("orderflow_projector_restarts_total{projection=\"revenue\"}"), "{metrics}");

    // The fix: the next restart goes through and resumes from the checkpoint; nothing lost, nothing doubled.
    app.poison.set("");
    eventually_within(Duration::from_secs(60), || async {
        let infos = projections_info(&app).await;
        infos.iter().all(|p| p["status"] == "running").then_some(())
    })
    .await;
    app.projected(&crash, 2).await;
    app.projected(&fine, 2).await;
    eventually(|| async { (gross_today(&app).await == (650, 2)).then_some(()) }).await;
    // Readiness reuses a round of checks for a second: it turns 200 within one.
    eventually(|| async {
        let ready = app.request(Method::GET, "/health/ready", None, None, &[]).await;
        (ready.status() == StatusCode::OK).then_some(())
    })
    .await;
    // Later orders flow as usual.
    let later = new_id("later");
    app.place(&later, "c-s", 1, 100).await;
    assert_eq!(app.pay(&later, "pay-l", 100).await.status(), StatusCode::OK);
    app.projected(&later, 2).await;
    eventually(|| async { (gross_today(&app).await == (750, 3)).then_some(()) }).await;
}

#[actix_web::test]
async fn a_crashing_bridge_is_restarted_from_its_checkpoints_counted_shown_as_a_crash_loop_and_loses_nothing() {
    if !distributed() {
        println!("skipped: the Streams bridge exists on the distributed profile only");
        return;
    }
    let app = app_poisoning("bridge!bcrash-").await;
    let fine = new_id("bfine");
    app.place(&fine, "c-b", 1, 250).await;
    assert_eq!(app.pay(&fine, "pay-f", 250).await.status(), StatusCode::OK);
    app.projected(&fine, 2).await;
    let crash = new_id("bcrash");
    app.place(&crash, "c-b", 1, 400).await;
    assert_eq!(app.pay(&crash, "pay-c", 400).await.status(), StatusCode::OK);

    // Every restart reads the crashing record again from the checkpoint: restarts counted, a crash loop shown,
    // readiness failing; the projectors themselves are fine.
    let bridge = |infos: Vec<Value>| infos.into_iter().find(|p| p["name"] == "bridge");
    eventually_within(Duration::from_secs(60), || async {
        let info = bridge(projections_info(&app).await)?;
        (info["status"] == "crashLooping" && info["restarts"].as_u64() >= Some(3)).then_some(())
    })
    .await;
    let ready = app.request(Method::GET, "/health/ready", None, None, &[]).await;
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = ready.json().await.unwrap();
    assert!(body["checks"]["projection:bridge"].as_str().unwrap().starts_with("failing"), "{body}");
    assert_eq!(body["checks"]["projection:search"], "ok", "{body}");
    let metrics = app.request(Method::GET, "/metrics", None, None, &[]).await.text().await.unwrap();
    assert!(metrics.contains("orderflow_projector_restarts_total{projection=\"bridge\"}"), "{metrics}");
    assert_eq!(app.get(&format!("/orders/{crash}"), &app.admin()).await.status(), StatusCode::NOT_FOUND);

    // The fix: the next restart goes through from the checkpoint; nothing lost, nothing doubled.
    app.poison.set("");
    eventually_within(Duration::from_secs(60), || async {
        let info = bridge(projections_info(&app).await)?;
        (info["status"] == "running").then_some(())
    })
    .await;
    app.projected(&crash, 2).await;
    eventually(|| async { (gross_today(&app).await == (650, 2)).then_some(()) }).await;
    // Readiness reuses a round of checks for a second: it turns 200 within one.
    eventually(|| async {
        let ready = app.request(Method::GET, "/health/ready", None, None, &[]).await;
        (ready.status() == StatusCode::OK).then_some(())
    })
    .await;
    let later = new_id("blater");
    app.place(&later, "c-b", 1, 100).await;
    assert_eq!(app.pay(&later, "pay-l", 100).await.status(), StatusCode::OK);
    app.projected(&later, 2).await;
    eventually(|| async { (gross_today(&app).await == (750, 3)).then_some(()) }).await;
}

#[actix_web::test]
async fn a_rebuild_swaps_in_a_fresh_view_without_queries_ever_seeing_a_partial_one() {
    let app = spawn_app_with(&[]).await;
    let orders = 150;
    let mut paid = 0;
    for i in 0..orders {
        let id = new_id("rb");
        app.place(&id, "c-rb", 1, 100 + i).await;
        if i % 2 == 0 {
            assert_eq!(app.pay(&id, &format!("p{i}"), 100 + i).await.status(), StatusCode::OK);
            paid += 100 + i;
        }
    }
    let count = || async {
        let page: Value = app.get("/orders?customerId=c-rb&q=mug&limit=1", &app.admin()).await.json().await.unwrap();
        page["estimatedTotal"].as_u64().unwrap()
    };
    eventually(|| async { (count().await == orders).then_some(()) }).await;
    eventually(|| async { (gross_today(&app).await.0 == paid).then_some(()) }).await;

    // Both profiles: embedded swaps SQLite generations; distributed swaps Meilisearch indexes and switches the
    // revenue view's DynamoDB table generation.
    let response = admin_post(&app, "/admin/projections/search/rebuild").await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(admin_post(&app, "/admin/projections/revenue/rebuild").await.status(), StatusCode::ACCEPTED);
    assert_problem(admin_post(&app, "/admin/projections/nope/rebuild").await, 404, "not_found").await;

    // While the rebuilds run and after, every query sees the whole view. (The DynamoDB revenue view writes
    // event by event, so its rebuild takes longer on a busy DynamoDB Local.)
    let limit = if crate::helpers::distributed() { 60 } else { 10 };
    let deadline = std::time::Instant::now() + Duration::from_secs(limit);
    loop {
        assert_eq!(count().await, orders, "search never partial");
        assert_eq!(gross_today(&app).await.0, paid, "revenue never partial");
        let infos = projections_info(&app).await;
        if infos.iter().all(|p| p["status"] == "running" && p["rebuild"].is_null()) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "rebuild did not finish: {infos:?}");
    }
    // The rebuilt views follow the feed as before.
    let later = new_id("rb-later");
    app.place(&later, "c-rb", 1, 5).await;
    assert_eq!(app.pay(&later, "p-later", 5).await.status(), StatusCode::OK);
    app.projected(&later, 2).await;
    eventually(|| async { (gross_today(&app).await.0 == paid + 5).then_some(()) }).await;
    assert_eq!(count().await, orders + 1);
    if crate::helpers::distributed() {
        assert_distributed_views_swapped(&app).await;
        return;
    }
    let generations: Vec<String> = std::fs::read_dir(app.dir.path())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".current"))
        .collect();
    assert_eq!(generations.len(), 2, "both views switched generation: {generations:?}");
}

/// After one rebuild of each view on the distributed profile: the revenue view's pointer item names table
/// generation 1, whose tables exist while generation 0's are gone; the Meilisearch index is there and the
/// fresh index it was swapped with has been deleted.
async fn assert_distributed_views_swapped(app: &TestApp) {
    use aws_sdk_dynamodb::types::AttributeValue;
    let settings =
        orderflow::config::Settings::load_with(None, crate::helpers::test_env(app.dir.path(), &[])).expect("settings");
    let tables = orderflow::aws::Tables::new(&settings.dynamodb.table_prefix);
    let dynamo = aws_sdk_dynamodb::Client::new(&orderflow::aws::sdk_config(&settings.aws).await);
    let pointer = dynamo
        .get_item()
        .table_name(&tables.checkpoints)
        .key("id", AttributeValue::S("revenue#generation".into()))
        .consistent_read(true)
        .send()
        .await
        .expect("get the generation pointer");
    let generation = pointer.item.as_ref().and_then(|i| i.get("generation"));
    assert_eq!(generation, Some(&AttributeValue::N("1".into())), "revenue switched generation: {pointer:?}");
    let exists = |table: String| {
        let dynamo = dynamo.clone();
        async move { dynamo.describe_table().table_name(table).send().await.is_ok() }
    };
    assert!(exists(tables.revenue_generation(1).daily).await, "generation 1 is live");
    assert!(!exists(tables.revenue_daily.clone()).await, "generation 0 was deleted");

    let meili = &settings.meilisearch;
    let mut request = app.client.get(format!("{}/indexes?limit=1000", meili.url.trim_end_matches('/')));
    if !meili.api_key.is_empty() {
        request = request.bearer_auth(&meili.api_key);
    }
    let indexes: Value = request.send().await.expect("list indexes").json().await.expect("json");
    let uids: Vec<&str> =
        indexes["results"].as_array().expect("results").iter().filter_map(|i| i["uid"].as_str()).collect();
    assert!(uids.contains(&meili.index.as_str()), "live index kept: {uids:?}");
    let prefix = format!("{}_rebuild_", meili.index);
    assert!(!uids.iter().any(|u| u.starts_with(&prefix)), "the swapped-out index was deleted: {uids:?}");
}
