//! A process killed (SIGKILL) in the middle of a stream of commands and started again loses nothing and
//! counts nothing twice: after 1,000 orders with payments and cancellations, the revenue view equals the totals
//! computed from the commands themselves. Every command carries an `Idempotency-Key`, so the ones whose answer
//! was lost in the kill are simply retried after the restart (they either replay or run once).

use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream;
use orderflow::auth::{Authenticator, Role};
use orderflow::config::Settings;
use reqwest::Client;

use crate::helpers::{SECRET, Step, expected_totals, revenue_totals, script, send, spawn_process, test_env};

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
