//! Scale-out (docs/design.md, "Scale-out"): two instances on one DynamoDB + Kafka (+ search index) take a mixed
//! workload in which every order's commands alternate between them; one is killed (SIGKILL) in the middle. The
//! survivor takes the rest (every command carries an `Idempotency-Key`, so the unanswered ones are retried).
//! Afterwards: every acknowledged command is in the store once, each order's history is gap-free, the search
//! view and revenue equal what the commands imply, and the topic holds every event at least once, in order per
//! order. Distributed profile only: an embedded instance owns its SQLite files.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream;
use orderflow::auth::{Authenticator, Role};
use orderflow::config::Settings;
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use reqwest::Client;
use serde_json::Value;

use crate::helpers::{SECRET, distributed, spawn_process_with, test_env};
use crate::helpers::{Step, expected_totals, revenue_totals, script, send};

const ORDERS: usize = 240;
const CONCURRENCY: usize = 24;

/// Runs the scripts with step `k` of order `i` sent to instance `(i + k) % 2` (while it is up, else to the
/// other); returns the scripts' unacknowledged rests.
async fn run_alternating(
    client: &Client,
    addresses: &[String; 2],
    up: &[std::sync::atomic::AtomicBool; 2],
    token: &str,
    orders: Vec<(usize, Vec<Step>)>,
) -> Vec<(usize, Vec<Step>)> {
    use std::sync::atomic::Ordering;
    stream::iter(orders)
        .map(|(i, steps)| async move {
            for (k, step) in steps.iter().enumerate() {
                let mut target = (i + k) % 2;
                if !up[target].load(Ordering::Relaxed) {
                    target = 1 - target;
                }
                if !send(client, &addresses[target], token, step).await {
                    return (i, steps[k..].to_vec());
                }
            }
            (i, vec![])
        })
        .buffer_unordered(CONCURRENCY)
        .filter(|(_, rest)| std::future::ready(!rest.is_empty()))
        .collect()
        .await
}

#[actix_web::test]
async fn two_instances_share_the_work_and_one_dies_without_loss() {
    if !distributed() {
        println!("skipped: scale-out runs on the distributed profile (ORDERFLOW_TEST_PROFILE=distributed)");
        return;
    }
    let run = uuid::Uuid::now_v7().simple().to_string()[..10].to_owned();
    let (prefix, topic, groups, index) =
        (format!("so{run}"), format!("orders.events.so{run}"), format!("gso{run}"), format!("orders_so{run}"));
    let shared = [
        ("ORDERFLOW__DYNAMODB__TABLE_PREFIX", prefix.as_str()),
        ("ORDERFLOW__KAFKA__TOPIC", topic.as_str()),
        ("ORDERFLOW__KAFKA__GROUP_PREFIX", groups.as_str()),
        ("ORDERFLOW__MEILISEARCH__INDEX", index.as_str()),
    ];
    let (dir_a, dir_b) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let mut a = spawn_process_with(dir_a.path(), &shared, std::process::Stdio::null());
    let b = spawn_process_with(dir_b.path(), &shared, std::process::Stdio::null());
    let settings = Settings::load_with(None, test_env(dir_a.path(), &shared)).expect("settings");
    let token = Authenticator::new(&settings.auth, SECRET).mint("admin", Role::Admin, 3600).expect("token");
    let client = Client::new();
    let addresses = [a.address.clone(), b.address.clone()];
    let up = [std::sync::atomic::AtomicBool::new(true), std::sync::atomic::AtomicBool::new(true)];
    let scripts: Vec<(usize, Vec<Step>)> = (0..ORDERS).map(|i| (i, script(&run, i))).collect();

    // The workload on both; B is killed while it runs.
    let workload = run_alternating(&client, &addresses, &up, &token, scripts.clone());
    let killer = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        up[1].store(false, std::sync::atomic::Ordering::Relaxed);
        b.kill();
    };
    let (mut pending, ()) = tokio::join!(workload, killer);
    for _ in 0..5 {
        if pending.is_empty() {
            break;
        }
        pending = run_alternating(&client, &addresses, &up, &token, pending).await;
    }
    assert!(pending.is_empty(), "{} scripts never acknowledged", pending.len());

    // The store: each order's history is exactly its script, versions 1..n, no event twice.
    let survivor = &a.address;
    let mut event_ids = HashSet::new();
    let mut histories: HashMap<String, Vec<(String, u64)>> = HashMap::new();
    for (i, steps) in &scripts {
        let id = format!("rs{run}-{i}");
        let history: Value = client
            .get(format!("{survivor}/orders/{id}/history"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("history")
            .json()
            .await
            .expect("json");
        let events = history["events"].as_array().expect("events");
        let versions: Vec<u64> = events.iter().filter_map(|e| e["version"].as_u64()).collect();
        assert_eq!(versions, (1..=steps.len() as u64).collect::<Vec<_>>(), "order {id}: {history}");
        for e in events {
            let event_id = e["eventId"].as_str().expect("eventId").to_owned();
            assert!(event_ids.insert(event_id.clone()), "event {event_id} twice");
            histories.entry(id.clone()).or_default().push((event_id, e["version"].as_u64().unwrap_or(0)));
        }
    }

    // The views: revenue equals the scripts' totals; every order's document reaches its last version.
    let expected = expected_totals(ORDERS);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let totals = revenue_totals(&client, survivor, &token).await;
        if totals.as_ref() == Some(&expected) {
            break;
        }
        assert!(Instant::now() < deadline, "revenue {totals:?} never reached {expected:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for (id, events) in &histories {
        let last = events.len();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let response = client
                .get(format!("{survivor}/orders/{id}?minVersion={last}"))
                .bearer_auth(&token)
                .send()
                .await
                .expect("get");
            let from_view = response.headers().get("x-consistency").is_some_and(|v| v == "eventual");
            if from_view {
                let doc: Value = response.json().await.expect("json");
                assert_eq!(doc["version"].as_u64(), Some(last as u64), "{id}: {doc}");
                break;
            }
            assert!(Instant::now() < deadline, "the search view never reached version {last} of {id}");
        }
    }

    // The topic, read as an outside consumer would: every event at least once, first seen in version order.
    let brokers = std::env::var("ORDERFLOW_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".to_owned());
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", format!("outside.{run}"))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic.as_str()]).expect("subscribe");
    let mut first_seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut seen = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while seen.len() < event_ids.len() && Instant::now() < deadline {
        let Ok(Ok(message)) = tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await else { continue };
        let value: Value = serde_json::from_slice(message.payload().unwrap_or_default()).expect("JSON value");
        let (Some(id), Some(subject)) = (value["id"].as_str(), value["subject"].as_str()) else { continue };
        if seen.insert(id.to_owned()) {
            let version = value["sequence"].as_str().and_then(|s| s.parse().ok()).unwrap_or(0);
            first_seen.entry(subject.to_owned()).or_default().push(version);
        }
    }
    assert_eq!(seen, event_ids, "the topic holds every event");
    for (order, versions) in &first_seen {
        assert!(versions.windows(2).all(|w| w[0] < w[1]), "order {order} arrived out of order: {versions:?}");
    }
    a.stop();
}
