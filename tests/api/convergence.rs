//! No stale search documents with several instances (issue 17.4; `projection::reconcile`, ADR 007). Two
//! instances share DynamoDB, the broker and the search index and take a mixed workload, each order's commands
//! alternating between them. Meanwhile a rebuild of the search view runs on one of them (the other keeps
//! writing to the index the swap replaces), and a third instance joins the consumer groups and is killed
//! (two rebalances: partitions move to it, and back once its session expires). Afterwards every order's search
//! document equals its latest version in the write model, nothing is parked, and revenue is exact.
//!
//! Distributed profile only, on the Meilisearch mock (or `MEILI_URL`), DynamoDB Local and the broker.

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use orderflow::auth::{Authenticator, Role};
use orderflow::config::Settings;
use reqwest::Client;
use serde_json::Value;

use crate::helpers::{
    SECRET, Step, distributed, expected_totals, revenue_totals, run_alternating, script, spawn_process_with, test_env,
};

const ORDERS: usize = 600;

async fn get(client: &Client, url: String, token: &str) -> Option<(u16, Value)> {
    let response = client.get(url).bearer_auth(token).timeout(Duration::from_secs(20)).send().await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.unwrap_or(Value::Null)))
}

/// Whether the search projection is rebuilding on the instance at `address`.
async fn rebuilding(client: &Client, address: &str, token: &str) -> bool {
    let Some((_, rows)) = get(client, format!("{address}/admin/projections"), token).await else { return true };
    rows.as_array().into_iter().flatten().any(|row| row["name"] == "search" && row["status"] == "rebuilding")
}

/// The orders whose search document is not their latest version in the write model: (id, view, store).
async fn stale(client: &Client, address: &str, token: &str, ids: &[String]) -> Vec<(String, Option<u64>, u64)> {
    let mut stale = Vec::new();
    for id in ids {
        let history = get(client, format!("{address}/orders/{id}/history"), token).await;
        let latest = history.and_then(|(_, h)| h["events"].as_array().map(|e| e.len() as u64)).unwrap_or(0);
        let view = get(client, format!("{address}/orders/{id}"), token).await;
        let version = view.filter(|(status, _)| *status == 200).and_then(|(_, doc)| doc["version"].as_u64());
        if version != Some(latest) {
            stale.push((id.clone(), version, latest));
        }
    }
    stale
}

#[actix_web::test]
async fn a_rebuild_and_rebalances_under_load_on_two_instances_leave_no_stale_document() {
    if !distributed() {
        println!("skipped: several instances run on the distributed profile (ORDERFLOW_TEST_PROFILE=distributed)");
        return;
    }
    let run = uuid::Uuid::now_v7().simple().to_string()[..10].to_owned();
    let (prefix, topic, groups, index) =
        (format!("cv{run}"), format!("orders.events.cv{run}"), format!("gcv{run}"), format!("orders_cv{run}"));
    let shared = [
        ("ORDERFLOW__DYNAMODB__TABLE_PREFIX", prefix.as_str()),
        ("ORDERFLOW__KAFKA__TOPIC", topic.as_str()),
        ("ORDERFLOW__KAFKA__GROUP_PREFIX", groups.as_str()),
        ("ORDERFLOW__MEILISEARCH__INDEX", index.as_str()),
    ];
    let dirs =
        [tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir")];
    let a = spawn_process_with(dirs[0].path(), &shared, std::process::Stdio::null());
    let b = spawn_process_with(dirs[1].path(), &shared, std::process::Stdio::null());
    let settings = Settings::load_with(None, test_env(dirs[0].path(), &shared)).expect("settings");
    let token = Authenticator::new(&settings.auth, SECRET).mint("admin", Role::Admin, 3600).expect("token");
    let client = Client::new();
    let addresses = [a.address.clone(), b.address.clone()];
    let up = [AtomicBool::new(true), AtomicBool::new(true)];
    let scripts: Vec<(usize, Vec<Step>)> = (0..ORDERS).map(|i| (i, script(&run, i))).collect();
    // Half of them placed before anything else happens, so the rebuild has documents to copy.
    let (first, rest) = scripts.split_at(ORDERS / 2);
    let mut pending = run_alternating(&client, &addresses, &up, &token, first.to_vec()).await;

    // The rest under load; meanwhile a search rebuild on A, then a third instance that joins and dies.
    let workload = run_alternating(&client, &addresses, &up, &token, rest.to_vec());
    let disturb = async {
        let started =
            client.post(format!("{}/admin/projections/search/rebuild", a.address)).bearer_auth(&token).send().await;
        assert_eq!(started.map(|r| r.status().as_u16()).ok(), Some(202), "the rebuild starts");
        let deadline = Instant::now() + Duration::from_secs(120);
        while rebuilding(&client, &a.address, &token).await {
            assert!(Instant::now() < deadline, "the rebuild never finished");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let c = spawn_process_with(dirs[2].path(), &shared, std::process::Stdio::null());
        tokio::time::sleep(Duration::from_secs(4)).await;
        c.kill();
    };
    let (more, ()) = tokio::join!(workload, disturb);
    pending.extend(more);
    for _ in 0..5 {
        if pending.is_empty() {
            break;
        }
        pending = run_alternating(&client, &addresses, &up, &token, pending).await;
    }
    assert!(pending.is_empty(), "{} scripts never acknowledged", pending.len());

    // Revenue exact, then every document current, nothing parked.
    let expected = expected_totals(ORDERS);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let totals = revenue_totals(&client, &a.address, &token).await;
        if totals.as_ref() == Some(&expected) {
            break;
        }
        assert!(Instant::now() < deadline, "revenue {totals:?} never reached {expected:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let ids: Vec<String> = (0..ORDERS).map(|i| format!("rs{run}-{i}")).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stale = stale(&client, &a.address, &token, &ids).await;
        if stale.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "{} stale search documents (id, view, store): {stale:?}", stale.len());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for address in &addresses {
        let parked = get(&client, format!("{address}/admin/parked"), &token).await.map(|(_, p)| p);
        assert_eq!(parked, Some(Value::Array(vec![])), "parked events on {address}");
    }
    drop(b);
    drop(a);
}
