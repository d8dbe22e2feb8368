//! The distributed search view's backend as readiness sees it: Meilisearch's `/health` needs no key, so a wrong or
//! revoked key must fail readiness through an authenticated call, with the reason; and what the projector writes
//! meanwhile is retried, never parked (README, "Meilisearch").

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{TestApp, distributed, eventually, new_id, spawn_app_with};

/// The actions the README documents for `meilisearch.api_key`.
const ACTIONS: [&str; 9] = orderflow::views::search_meili::API_KEY_ACTIONS;

/// `/health/ready` with an admin token: its status and the `searchView` check.
async fn search_check(app: &TestApp) -> (StatusCode, String) {
    let ready = app.request(Method::GET, "/health/ready", Some(&app.admin()), None, &[]).await;
    let status = ready.status();
    let body: Value = ready.json().await.expect("a JSON body");
    (status, body["checks"]["searchView"].as_str().unwrap_or_default().to_owned())
}

#[actix_web::test]
async fn a_revoked_meilisearch_key_fails_readiness_with_the_reason_until_it_works_again() {
    if !distributed() || std::env::var("MEILI_URL").is_ok() {
        println!("skipped: needs the distributed profile on the in-process Meilisearch mock (no MEILI_URL)");
        return;
    }
    let mock = meili_mock::launch(Some("meili-master-key"));
    mock.add_key("orderflow-key", &ACTIONS, &["*"]);
    let app = spawn_app_with(&[
        ("ORDERFLOW__MEILISEARCH__URL", mock.url()),
        ("ORDERFLOW__MEILISEARCH__API_KEY", "orderflow-key"),
    ])
    .await;
    eventually(|| async { (search_check(&app).await == (StatusCode::OK, "ok".to_owned())).then_some(()) }).await;

    mock.revoke_key("orderflow-key");
    let failing = eventually(|| async {
        let (status, check) = search_check(&app).await;
        (status == StatusCode::SERVICE_UNAVAILABLE && check.starts_with("failing")).then_some(check)
    })
    .await;
    assert!(failing.contains("meilisearch.api_key") && failing.contains("invalid_api_key"), "{failing}");

    // Commands go on; the projector cannot write the order's document, and parks nothing.
    let id = new_id("revoked");
    app.place(&id, "c-revoked", 1, 100).await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let parked: Vec<Value> = app.get("/admin/parked", &app.admin()).await.json().await.expect("a list");
    assert_eq!(parked, Vec::<Value>::new(), "a refused key is no event's fault");

    mock.add_key("orderflow-key", &ACTIONS, &["*"]);
    eventually(|| async { (search_check(&app).await == (StatusCode::OK, "ok".to_owned())).then_some(()) }).await;
    app.projected(&id, 1).await;
}
