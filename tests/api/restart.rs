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
use serde_json::{Value, json};

use crate::helpers::{SECRET, spawn_process, test_env};

const ORDERS: usize = 1000;
/// Concurrent requests in flight.
const CONCURRENCY: usize = 32;

/// One command of the script: where it goes, its body, and its idempotency key.
#[derive(Clone)]
pub(crate) struct Step {
    pub(crate) path: String,
    pub(crate) body: Value,
    pub(crate) key: String,
}

// Order `i` costs 100 + i, is in USD one time in five, is paid two times in three and cancelled (paid or
// not) one time in four.
fn total(i: usize) -> u64 {
    100 + i as u64
}

fn currency(i: usize) -> &'static str {
    if i.is_multiple_of(5) { "USD" } else { "EUR" }
}

fn pays(i: usize) -> bool {
    !i.is_multiple_of(3)
}

fn cancels(i: usize) -> bool {
    i.is_multiple_of(4)
}

/// The command script for order `i`.
pub(crate) fn script(run: &str, i: usize) -> Vec<Step> {
    let id = format!("rs{run}-{i}");
    let (total, currency) = (total(i), currency(i));
    let mut steps = vec![Step {
        path: "/orders".into(),
        body: json!({"orderId": id, "customerId": format!("c{}", i % 17), "currency": currency,
                     "items": [{"sku": "RST-1", "name": "Restart widget", "quantity": 1, "unitPrice": total}]}),
        key: format!("{id}-place"),
    }];
    if pays(i) {
        steps.push(Step {
            path: format!("/orders/{id}/confirm-payment"),
            body: json!({"paymentId": format!("pay-{id}"), "amount": total}),
            key: format!("{id}-pay"),
        });
    }
    if cancels(i) {
        steps.push(Step {
            path: format!("/orders/{id}/cancel"),
            body: json!({"reason": "restart test"}),
            key: format!("{id}-cancel"),
        });
    }
    steps
}

/// Totals per currency: [gross, refunds, paidOrders, cancelledOrders], from the scripts of orders 0..n alone.
pub(crate) fn expected_totals(n: usize) -> BTreeMap<String, [u64; 4]> {
    let mut totals: BTreeMap<String, [u64; 4]> = BTreeMap::new();
    for i in 0..n {
        let row = totals.entry(currency(i).to_owned()).or_default();
        if pays(i) {
            row[0] += total(i);
            row[2] += 1;
        }
        if cancels(i) {
            row[1] += if pays(i) { total(i) } else { 0 };
            row[3] += 1;
        }
    }
    totals
}

/// Sends one step; `true` once it has an answer (2xx, or the 409 of a command that had already run).
pub(crate) async fn send(client: &Client, address: &str, token: &str, step: &Step) -> bool {
    let response = client
        .post(format!("{address}{}", step.path))
        .bearer_auth(token)
        .header("Idempotency-Key", &step.key)
        .json(&step.body)
        .timeout(Duration::from_secs(20))
        .send()
        .await;
    match response {
        Ok(r) => {
            let status = r.status().as_u16();
            assert!(status < 500 || status == 503, "{} answered {status}", step.path);
            (200..300).contains(&status)
        }
        Err(_) => false,
    }
}

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

pub(crate) async fn revenue_totals(client: &Client, address: &str, token: &str) -> Option<BTreeMap<String, [u64; 4]>> {
    let today = chrono::Utc::now().date_naive();
    let (from, to) = (today - chrono::Duration::days(1), today + chrono::Duration::days(1));
    let url = format!("{address}/revenue/daily?from={from}&to={to}");
    let body: Value = client.get(url).bearer_auth(token).send().await.ok()?.json().await.ok()?;
    let mut totals: BTreeMap<String, [u64; 4]> = BTreeMap::new();
    for day in body["days"].as_array()? {
        let row = totals.entry(day["currency"].as_str()?.to_owned()).or_default();
        for (i, field) in ["grossRevenue", "refunds", "paidOrders", "cancelledOrders"].iter().enumerate() {
            row[i] += day[*field].as_u64()?;
        }
    }
    Some(totals)
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
