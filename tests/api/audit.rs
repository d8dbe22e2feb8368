//! The audit log (`GET /admin/audit`): admin actions — replay, discard, rebuild, and commands an admin ran on
//! another customer's order — kept durably with who, what, when and how it ended; newest first, paged.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{TestApp, assert_problem, eventually, new_id, order_body, spawn_app_poisoning};

async fn audit(app: &TestApp, query: &str) -> Value {
    let response = app.get(&format!("/admin/audit{query}"), &app.admin()).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.expect("json")
}

fn actions(page: &Value) -> Vec<String> {
    page["entries"].as_array().into_iter().flatten().map(|e| e["action"].as_str().unwrap_or("").to_owned()).collect()
}

#[actix_web::test]
async fn replays_rebuilds_and_admin_commands_for_customers_are_audited() {
    let app = spawn_app_poisoning(
        tempfile::tempdir().expect("temp dir"),
        &[("ORDERFLOW__PROJECTIONS__MAX_ATTEMPTS", "2"), ("ORDERFLOW__PROJECTIONS__RETRY_BACKOFF_MS", "5")],
        "audited-poison-",
    )
    .await;
    let ops = app.token(orderflow::auth::Role::Admin, "ops-alice");

    // A customer's own command is not an admin action; an admin's command on a customer's order is.
    let own = new_id("audit-own");
    assert_eq!(
        app.post("/orders", &app.customer("c-aud"), &order_body(&own, "c-aud", 1, 100)).await.status(),
        StatusCode::CREATED
    );
    let for_customer = new_id("audit-admin");
    let placed = app.post("/orders", &ops, &order_body(&for_customer, "c-aud", 2, 150)).await;
    assert_eq!(placed.status(), StatusCode::CREATED);

    // A replay (which fails: the order is still poisoned) and a rebuild.
    let poison = new_id("audited-poison");
    app.place(&poison, "c-aud", 1, 100).await;
    let parked: Vec<Value> = eventually(|| async {
        let list: Vec<Value> = app.get("/admin/parked", &app.admin()).await.json().await.unwrap_or_default();
        (list.len() >= 2).then_some(list)
    })
    .await;
    let parked_id = parked[0]["id"].as_str().expect("id").to_owned();
    let replay = app.request(Method::POST, &format!("/admin/parked/{parked_id}/replay"), Some(&ops), None, &[]).await;
    assert_problem(replay, 409, "replay_failed").await;
    let rebuild = app.request(Method::POST, "/admin/projections/revenue/rebuild", Some(&ops), None, &[]).await;
    assert_eq!(rebuild.status(), StatusCode::ACCEPTED);

    let page = audit(&app, "").await;
    let entries = page["entries"].as_array().expect("entries");
    // Nothing for the customer's own order (`app.place` places with an admin token: those are audited too).
    assert!(entries.iter().all(|e| e["target"] != own.as_str()), "{page}");
    let find = |action: &str, target: &str| {
        entries.iter().find(|e| e["action"] == action && e["target"] == target).cloned().unwrap_or(Value::Null)
    };
    let placed = find("order.place", &for_customer);
    assert_eq!(placed["actor"], "ops-alice", "{page}");
    assert_eq!(placed["outcome"], "ok");
    assert_eq!(placed["detail"]["customerId"], "c-aud");
    let replayed = find("parked.replay", &parked_id);
    assert_eq!(replayed["actor"], "ops-alice", "{page}");
    assert_eq!(replayed["outcome"], "failed: replay_failed");
    assert_eq!(replayed["detail"]["orderId"], poison.as_str());
    let rebuilt = find("projection.rebuild", "revenue");
    assert_eq!(rebuilt["actor"], "ops-alice", "{page}");
    assert_eq!(rebuilt["outcome"], "ok");
    assert!(rebuilt["at"].as_str().is_some_and(|at| at.ends_with('Z')), "{rebuilt}");
    let ids: Vec<&str> = entries.iter().filter_map(|e| e["id"].as_str()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");

    // Paging: one at a time walks the same entries.
    let first = audit(&app, "?limit=1").await;
    let cursor = first["nextCursor"].as_str().expect("a next page").to_owned();
    let second = audit(&app, &format!("?limit=1&cursor={cursor}")).await;
    assert_eq!(actions(&first)[0], actions(&page)[0]);
    assert_eq!(actions(&second)[0], actions(&page)[1]);

    // Admin only, and validated.
    assert_problem(app.get("/admin/audit", &app.customer("c-aud")).await, 403, "forbidden").await;
    assert_problem(app.get("/admin/audit?limit=0", &app.admin()).await, 422, "validation_failed").await;
    assert_problem(app.get("/admin/audit?cursor=nope", &app.admin()).await, 422, "validation_failed").await;
}
