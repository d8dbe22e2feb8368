//! A process killed (SIGKILL) in the middle of a stream of commands and started again loses nothing and
//! counts nothing twice: after 1,000 orders with payments and cancellations, the revenue view equals the totals
//! computed from the commands themselves. Every command carries an `Idempotency-Key`, so the ones whose answer
//! was lost in the kill are simply retried after the restart (they either replay or run once).

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream;
use orderflow::auth::{Authenticator, Role};
use orderflow::config::Settings;
use reqwest::Client;
use serde_json::Value;

use crate::helpers::{
    SECRET, Step, currency, expected_totals, revenue_totals, script, send, spawn_process, test_env, total,
};

const ORDERS: usize = 1000;
/// Concurrent requests in flight.
const CONCURRENCY: usize = 32;

/// Runs every order's script (its steps in order, orders concurrently); returns the steps not acknowledged.
async fn run_scripts(client: &Client, address: &str, token: &str, orders: Vec<Vec<Step>>) -> Vec<Vec<Step>> {
    stream::iter(orders)
        .map(|steps| async move {
            for (n, step) in steps.iter().enumerate() {
                if !send(client, address, token, step).await {
                    return steps[n..].to_vec();
                }
            }
            vec![]
        })
        .buffer_unordered(CONCURRENCY)
        .filter(|rest| std::future::ready(!rest.is_empty()))
        .collect()
        .await
}

#[actix_web::test]
async fn a_sigkill_mid_stream_loses_nothing_and_counts_nothing_twice() {
    let dir = tempfile::tempdir().expect("temp dir");
    let settings = Settings::load_with(None, test_env(dir.path(), &[])).expect("settings");
    let token = Authenticator::new(&settings.auth, SECRET).mint("admin", Role::Admin, 3600).expect("token");
    let client = Client::new();
    let run = uuid::Uuid::now_v7().simple().to_string()[..8].to_owned();
    let all: Vec<Vec<Step>> = (0..ORDERS).map(|i| script(&run, i)).collect();

    // First half on the first process, then SIGKILL while the second half is in flight.
    let process = spawn_process(dir.path());
    let (first, second) = all.split_at(ORDERS / 2);
    let mut pending = run_scripts(&client, &process.address, &token, first.to_vec()).await;
    let address = process.address.clone();
    let in_flight = {
        let (client, token, second) = (client.clone(), token.clone(), second.to_vec());
        actix_web::rt::spawn(async move { run_scripts(&client, &address, &token, second).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    process.kill();
    pending.extend(in_flight.await.expect("second half ran"));

    // Restart on the same data; retry whatever was not acknowledged, until everything is.
    let process = spawn_process(dir.path());
    for _ in 0..5 {
        if pending.is_empty() {
            break;
        }
        pending = run_scripts(&client, &process.address, &token, pending).await;
    }
    assert!(pending.is_empty(), "{} scripts never acknowledged", pending.len());

    let expected = expected_totals(ORDERS);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let totals = revenue_totals(&client, &process.address, &token).await;
        if totals.as_ref() == Some(&expected) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "revenue {totals:?} never reached {expected:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How long the restart test lets the Kafka group coordinator wait for a silent member: far longer than a
/// restart takes, so a restarted instance that waited for its dead predecessor's session would be plainly late.
const SESSION_TIMEOUT: Duration = Duration::from_secs(30);

/// Static Kafka group membership (issue 17.7; `feed::kafka`): an instance killed with SIGKILL and started again on
/// its data folder (so with its `instance_id`) rejoins its projections' consumer groups as the same members and
/// takes its partitions back without a rebalance: its views show commands made after the restart before the dead
/// member's session would have expired. A dynamic member cannot: it is made to wait for the dead leader, and on
/// the tansu broker its views were still stale after the whole session timeout (30 s). On Kafka a static rejoin
/// takes seconds; tansu answers it after about half the session timeout, so that is all this test can ask.
#[actix_web::test]
async fn a_restarted_instance_takes_its_partitions_back_without_waiting_out_its_session() {
    if !crate::helpers::distributed() {
        println!("skipped: Kafka group membership is the distributed profile's (ORDERFLOW_TEST_PROFILE=distributed)");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let session = SESSION_TIMEOUT.as_millis().to_string();
    let overrides =
        [("ORDERFLOW__KAFKA__SESSION_TIMEOUT_MS", session.as_str()), ("ORDERFLOW__KAFKA__STATIC_MEMBERSHIP", "true")];
    let settings = Settings::load_with(None, test_env(dir.path(), &overrides)).expect("settings");
    let token = Authenticator::new(&settings.auth, SECRET).mint("admin", Role::Admin, 3600).expect("token");
    let client = Client::new();
    let run = uuid::Uuid::now_v7().simple().to_string()[..8].to_owned();
    let (before, after) = (script(&run, 1), script(&run, 2));
    let shown = |address: String, id: String, version: u64| {
        let (client, token) = (client.clone(), token.clone());
        async move {
            let response = client.get(format!("{address}/orders/{id}")).bearer_auth(&token).send().await.ok()?;
            let doc: Value = response.json().await.ok()?;
            (doc["version"].as_u64() >= Some(version)).then_some(())
        }
    };

    // Up, and its consumers own every partition: an order reaches the view.
    let process = crate::helpers::spawn_process_with(dir.path(), &overrides, std::process::Stdio::null());
    assert!(send(&client, &process.address, &token, &before[0]).await, "placing before the kill");
    let first = format!("rs{run}-1");
    crate::helpers::eventually_within(Duration::from_secs(60), || shown(process.address.clone(), first.clone(), 1))
        .await;
    process.kill();

    // Started again on the same folder: the commands after the restart (order 1's payment, order 2 placed and
    // paid) reach both views within seconds.
    let restarted = std::time::Instant::now();
    let process = crate::helpers::spawn_process_with(dir.path(), &overrides, std::process::Stdio::null());
    for step in before[1..].iter().chain(&after) {
        assert!(send(&client, &process.address, &token, step).await, "{} after the restart", step.path);
    }
    let second = format!("rs{run}-2");
    let last = after.len() as u64;
    crate::helpers::eventually_within(SESSION_TIMEOUT, || shown(process.address.clone(), second.clone(), last)).await;
    let search_after = restarted.elapsed();
    let mut want: BTreeMap<String, [u64; 4]> = BTreeMap::new();
    for i in [1, 2] {
        let row = want.entry(currency(i).to_owned()).or_default();
        row[0] += total(i);
        row[2] += 1;
    }
    crate::helpers::eventually_within(SESSION_TIMEOUT, || {
        let (client, address, token, want) = (client.clone(), process.address.clone(), token.clone(), want.clone());
        async move { (revenue_totals(&client, &address, &token).await? == want).then_some(()) }
    })
    .await;
    let revenue_after = restarted.elapsed();
    println!("after the restart: search view current in {search_after:?}, revenue view in {revenue_after:?}");
    assert!(
        revenue_after < SESSION_TIMEOUT && search_after < SESSION_TIMEOUT,
        "views current only after {revenue_after:?}"
    );
}
