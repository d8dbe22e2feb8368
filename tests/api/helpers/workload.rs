//! A scripted workload of orders with payments and cancellations, sent with idempotency keys, and the revenue
//! totals it must come to (the restart and scale-out tests).

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Client;
use serde_json::{Value, json};

/// One command of the script: where it goes, its body, and its idempotency key.
#[derive(Clone)]
pub struct Step {
    pub path: String,
    pub body: Value,
    pub key: String,
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
pub fn script(run: &str, i: usize) -> Vec<Step> {
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
pub fn expected_totals(n: usize) -> BTreeMap<String, [u64; 4]> {
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
pub async fn send(client: &Client, address: &str, token: &str, step: &Step) -> bool {
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

pub async fn revenue_totals(client: &Client, address: &str, token: &str) -> Option<BTreeMap<String, [u64; 4]>> {
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
