//! Reading answers: JSON shapes, headers, the metrics exposition and revenue rows.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, Utc};
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

use super::TestApp;

/// The keys of a JSON object, sorted.
pub fn keys(value: &Value) -> BTreeSet<String> {
    value.as_object().unwrap_or_else(|| panic!("not an object: {value}")).keys().cloned().collect()
}

pub fn key_set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// An RFC 3339 timestamp in UTC.
pub fn assert_utc_timestamp(value: &Value) -> DateTime<Utc> {
    let text = value.as_str().unwrap_or_else(|| panic!("timestamp is not a string: {value}"));
    let parsed = DateTime::parse_from_rfc3339(text).unwrap_or_else(|e| panic!("`{text}` is not RFC 3339: {e}"));
    assert_eq!(parsed.offset().local_minus_utc(), 0, "`{text}` is not UTC");
    parsed.with_timezone(&Utc)
}

pub fn header(response: &Response, name: &str) -> Option<String> {
    response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

pub async fn json_ok(response: Response) -> Value {
    let status = response.status();
    let body = response.text().await.expect("body");
    assert_eq!(status, StatusCode::OK, "body: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// `GET` as admin, expecting 200 and JSON.
pub async fn get_json(app: &TestApp, path: &str) -> Value {
    json_ok(app.get(path, &app.admin()).await).await
}

/// Places an order with these `(sku, name, quantity, unitPrice)` lines; asserts 201 and returns the body.
pub async fn place_items(
    app: &TestApp,
    id: &str,
    customer: &str,
    currency: &str,
    items: &[(&str, &str, u64, u64)],
) -> Value {
    let items: Vec<Value> = items
        .iter()
        .map(|(sku, name, quantity, unit_price)| {
            json!({"sku": sku, "name": name, "quantity": quantity, "unitPrice": unit_price})
        })
        .collect();
    let body = json!({"orderId": id, "customerId": customer, "currency": currency, "items": items});
    let response = app.post("/orders", &app.admin(), &body).await;
    let status = response.status();
    let text = response.text().await.expect("body");
    assert_eq!(status, StatusCode::CREATED, "placing {id}: {text}");
    serde_json::from_str(&text).expect("json")
}

/// The command's 200 body (asserting the status).
pub async fn ok_body(response: Response) -> Value {
    json_ok(response).await
}

pub fn ids(page: &Value) -> Vec<String> {
    page["orders"]
        .as_array()
        .unwrap_or_else(|| panic!("no orders array: {page}"))
        .iter()
        .map(|o| o["orderId"].as_str().expect("orderId").to_owned())
        .collect()
}

/// One sample of a Prometheus text exposition: name, labels, value.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the samples of a Prometheus text exposition (comments skipped).
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = line[..name_end].to_owned();
        let mut labels = BTreeMap::new();
        let mut rest = &line[name_end..];
        if let Some(inner) = rest.strip_prefix('{') {
            // label="value" pairs, values with \" \\ \n escapes.
            let mut chars = inner.char_indices().peekable();
            let mut end = inner.len();
            loop {
                while chars.peek().is_some_and(|(_, c)| *c == ',' || *c == ' ') {
                    chars.next();
                }
                match chars.peek() {
                    Some((i, '}')) => {
                        end = *i;
                        break;
                    }
                    None => break,
                    _ => {}
                }
                let mut key = String::new();
                for (_, c) in chars.by_ref() {
                    if c == '=' {
                        break;
                    }
                    key.push(c);
                }
                assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "label value not quoted in `{line}`");
                let mut value = String::new();
                while let Some((_, c)) = chars.next() {
                    match c {
                        '\\' => match chars.next().map(|(_, c)| c) {
                            Some('n') => value.push('\n'),
                            Some(other) => value.push(other),
                            None => break,
                        },
                        '"' => break,
                        c => value.push(c),
                    }
                }
                labels.insert(key.trim().to_owned(), value);
            }
            rest = &inner[(end + 1).min(inner.len())..];
        }
        let value_text = rest.split_whitespace().next().unwrap_or_else(|| panic!("no value in `{line}`"));
        let value = match value_text {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in `{line}`")),
        };
        samples.push(Sample { name, labels, value });
    }
    samples
}

/// The samples named `name` whose labels include all of `labels`.
pub fn find_samples<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
        .collect()
}

/// Sum of the samples named `name` with these labels (0 when there are none).
pub fn metric_sum(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    find_samples(samples, name, labels).iter().map(|s| s.value).sum()
}

pub async fn metrics_text(app: &TestApp) -> String {
    let response = app.request(Method::GET, "/metrics", None, None, &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.text().await.expect("metrics text")
}

/// Expected revenue rows, keyed by (date, currency): [gross, refunds, paidOrders, cancelledOrders].
pub type RevenueRows = BTreeMap<(String, String), [u64; 4]>;

pub fn add_payment(rows: &mut RevenueRows, paid: &Value) {
    let day = assert_utc_timestamp(&paid["paidAt"]).date_naive().to_string();
    let currency = paid["currency"].as_str().expect("currency").to_owned();
    let row = rows.entry((day, currency)).or_default();
    row[0] += paid["total"].as_u64().expect("total");
    row[2] += 1;
}

pub fn add_cancellation(rows: &mut RevenueRows, cancelled: &Value) {
    let day = assert_utc_timestamp(&cancelled["cancelledAt"]).date_naive().to_string();
    let currency = cancelled["currency"].as_str().expect("currency").to_owned();
    let row = rows.entry((day, currency)).or_default();
    row[1] += cancelled["refund"].as_u64().expect("refund");
    row[3] += 1;
}

/// The `days` of a revenue answer in the same shape as [`RevenueRows`] (checking each row's fields).
pub fn revenue_rows(answer: &Value) -> RevenueRows {
    let mut rows = RevenueRows::new();
    for day in answer["days"].as_array().unwrap_or_else(|| panic!("no days: {answer}")) {
        assert_eq!(
            keys(day),
            key_set(&["date", "currency", "grossRevenue", "refunds", "netRevenue", "paidOrders", "cancelledOrders"]),
            "{day}"
        );
        let gross = day["grossRevenue"].as_u64().expect("grossRevenue is an integer");
        let refunds = day["refunds"].as_u64().expect("refunds is an integer");
        let net = day["netRevenue"].as_i64().expect("netRevenue is an integer");
        assert_eq!(net, gross as i64 - refunds as i64, "netRevenue = grossRevenue - refunds: {day}");
        let date = day["date"].as_str().expect("date").to_owned();
        NaiveDate::parse_from_str(&date, "%Y-%m-%d").unwrap_or_else(|_| panic!("date is not YYYY-MM-DD: {day}"));
        let key = (date, day["currency"].as_str().expect("currency").to_owned());
        let counts = [
            gross,
            refunds,
            day["paidOrders"].as_u64().expect("paidOrders"),
            day["cancelledOrders"].as_u64().expect("cancelledOrders"),
        ];
        assert!(rows.insert(key, counts).is_none(), "one row per (date, currency): {answer}");
    }
    rows
}

/// The revenue rows from `from` to `to` (all currencies), as admin.
pub async fn revenue_between(app: &TestApp, from: NaiveDate, to: NaiveDate) -> RevenueRows {
    revenue_rows(&get_json(app, &format!("/revenue/daily?from={from}&to={to}")).await)
}
