//! The data lifecycle commands, run as the real binary: `orderflow export` / `import` (both profiles) and
//! `orderflow migrate` (embedded → distributed; needs the distributed services, so it runs in the distributed
//! pass of the suite), with their exit codes: 0 done, 1 failed or different, 2 bad usage.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use orderflow::config::Settings;
use orderflow::domain::{
    Command as OrderCommand, Currency, CustomerId, LineItem, Money, Order, OrderId, Quantity, Sku, Text, decide,
};
use orderflow::store::sqlite::SqliteEventStore;
use orderflow::store::{AppendRequest, EventStore};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, distributed, eventually_within, get_json, spawn_app, spawn_app_in, test_env};

const EMBEDDED: &[(&str, &str)] = &[("ORDERFLOW__PROFILE", "embedded")];

fn orderflow(dir: &Path, overrides: &[(&str, &str)], args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(test_env(dir, overrides))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("orderflow runs");
    let mut input = child.stdin.take().expect("stdin");
    let bytes = stdin.unwrap_or_default().to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&bytes);
    });
    let output = child.wait_with_output().expect("orderflow ends");
    let _ = writer.join();
    output
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Orders in every state through the API: placed, paid, shipped, cancelled before and after payment.
async fn orders_in_every_state(app: &TestApp) -> Vec<String> {
    let mut ids = Vec::new();
    for (i, state) in ["placed", "paid", "shipped", "cancelled", "refunded"].iter().enumerate() {
        let id = format!("life-{i}");
        app.place(&id, &format!("c-{i}"), 2, 1250).await;
        if matches!(*state, "paid" | "shipped" | "refunded") {
            assert_eq!(app.pay(&id, &format!("pay-{i}"), 2500).await.status(), StatusCode::OK);
        }
        if *state == "shipped" {
            assert_eq!(app.ship(&id).await.status(), StatusCode::OK);
        }
        if matches!(*state, "cancelled" | "refunded") {
            assert_eq!(app.cancel(&id).await.status(), StatusCode::OK);
        }
        ids.push(id);
    }
    ids
}

/// export → import into an empty store → export gives the same bytes, on the suite's profile; import refuses a
/// store with events unless `--append`, and a malformed line stops it with its line number, nothing of its
/// batch written.
#[actix_web::test]
async fn export_then_import_then_export_gives_the_same_log() {
    let app = spawn_app().await;
    let ids = orders_in_every_state(&app).await;
    let first = orderflow(app.dir.path(), &[], &["export"], None);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let lines: Vec<Value> =
        text(&first.stdout).lines().map(|l| serde_json::from_str(l).expect("an NDJSON line")).collect();
    assert_eq!(lines.len(), 11, "{}", text(&first.stdout));
    // The feed's envelope, exactly (docs/api.md §3).
    assert_eq!(lines[0]["specversion"], "1.0");
    assert_eq!(lines[0]["type"], "orders.OrderPlaced");
    assert_eq!(lines[0]["subject"], "life-0");
    assert_eq!(lines[0]["sequence"], "1");

    let other = tempfile::tempdir().expect("temp dir");
    let imported = orderflow(other.path(), &[], &["import"], Some(&first.stdout));
    assert!(imported.status.success(), "{}", text(&imported.stderr));
    assert!(text(&imported.stderr).contains("imported 11 events"), "{}", text(&imported.stderr));
    // Through a file argument this time.
    let file = other.path().join("again.ndjson");
    let again = orderflow(other.path(), &[], &["export", file.to_str().expect("path")], None);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_eq!(text(&std::fs::read(&file).expect("export file")), text(&first.stdout));

    // The imported store serves the same histories.
    let copy = spawn_app_in(other, &[]).await;
    for id in &ids {
        let path = format!("/orders/{id}/history");
        let want: Value = app.get(&path, &app.admin()).await.json().await.expect("json");
        let got: Value = copy.get(&path, &copy.admin()).await.json().await.expect("json");
        assert_eq!(got, want, "{id}");
    }

    // Not into a store that holds events, unless appending (which skips what is there).
    let refused = orderflow(copy.dir.path(), &[], &["import"], Some(&first.stdout));
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused.stderr));
    assert!(text(&refused.stderr).contains("already holds events"), "{}", text(&refused.stderr));
    let appended = orderflow(copy.dir.path(), &[], &["import", "--append", "-"], Some(&first.stdout));
    assert!(appended.status.success(), "{}", text(&appended.stderr));
    assert!(text(&appended.stderr).contains("imported 0 events (11 already there)"), "{}", text(&appended.stderr));

    // A malformed line: its number, and nothing of its batch written.
    let mut broken: Vec<String> = text(&first.stdout).lines().map(str::to_owned).collect();
    broken[6] = broken[6].replace("\"sequence\":\"", "\"sequence\":\"x");
    let broken = broken.join("\n") + "\n";
    let empty = tempfile::tempdir().expect("temp dir");
    let stopped = orderflow(empty.path(), &[], &["import"], Some(broken.as_bytes()));
    assert_eq!(stopped.status.code(), Some(1), "{}", text(&stopped.stderr));
    assert!(text(&stopped.stderr).contains("line 7:"), "{}", text(&stopped.stderr));
    let nothing = orderflow(empty.path(), &[], &["export"], None);
    assert!(nothing.status.success(), "{}", text(&nothing.stderr));
    assert_eq!(text(&nothing.stdout), "");
    // Versions must follow one another per order.
    let exported = text(&first.stdout);
    let mut gap: Vec<&str> = exported.lines().collect();
    gap.retain(|l| !l.contains("\"sequence\":\"1\""));
    let gap = gap.join("\n");
    let refused = orderflow(empty.path(), &[], &["import"], Some(gap.as_bytes()));
    assert_eq!(refused.status.code(), Some(1));
    assert!(text(&refused.stderr).contains("line 1: order life-1 starts at version 2"), "{}", text(&refused.stderr));

    // A line written before OrderPlaced gained `shippingAddress` (schema version 1) is imported as it is: the
    // service reads it in today's shape, and an export gives it back as written (`--current-shape`: upcast).
    let v1 = json!({"specversion": "1.0", "id": uuid::Uuid::now_v7().to_string(), "source": "orderflow",
        "type": "orders.OrderPlaced", "subject": "life-v1", "time": "2026-11-30T10:00:00Z",
        "datacontenttype": "application/json", "sequence": "1", "schemaversion": 1,
        "dataschema": "urn:orderflow:schema:OrderPlaced:1",
        "data": {"customerId": "c-9", "currency": "EUR", "total": 900, "placedAt": "2026-11-30T10:00:00Z",
            "items": [{"sku": "MUG-1", "name": "Blue ceramic mug", "quantity": 1, "unitPrice": 900}]}});
    let exported_first = text(&first.stdout);
    let mixed = format!("{v1}\n{exported_first}");
    let old = tempfile::tempdir().expect("temp dir");
    let imported = orderflow(old.path(), &[], &["import"], Some(mixed.as_bytes()));
    assert!(imported.status.success(), "{}", text(&imported.stderr));
    // (On DynamoDB the export is in scan order: the v1 order's line is found by its subject.)
    let export = |flags: &[&str]| {
        let mut args = vec!["export"];
        args.extend(flags);
        let out = orderflow(old.path(), &[], &args, None);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let out = text(&out.stdout);
        let (legacy, mut rest): (Vec<String>, Vec<String>) =
            out.lines().map(str::to_owned).partition(|l| l.contains("\"life-v1\""));
        rest.sort_unstable();
        (serde_json::from_str::<Value>(legacy.first().expect("the v1 order's line")).expect("json"), rest)
    };
    let (as_written, rest) = export(&[]);
    assert_eq!(as_written, v1, "a legacy event is exported as it was written");
    let mut today: Vec<String> = exported_first.lines().map(str::to_owned).collect();
    today.sort_unstable();
    assert_eq!(rest, today);
    let (upcast, _) = export(&["--current-shape"]);
    assert_eq!(upcast["data"]["shippingAddress"], Value::Null, "{upcast}");
    assert_eq!(upcast["schemaversion"], lines[0]["schemaversion"], "{upcast}");
    assert_eq!(upcast["dataschema"], "urn:orderflow:schema:OrderPlaced:2", "{upcast}");

    // Usage errors are 2: an unknown flag; exporting a data folder that has no event log (embedded).
    assert_eq!(orderflow(app.dir.path(), &[], &["import", "--bogus"], None).status.code(), Some(2));
    let nowhere = tempfile::tempdir().expect("temp dir");
    let missing = orderflow(&nowhere.path().join("none"), EMBEDDED, &["export"], None);
    assert_eq!(missing.status.code(), Some(2), "{}", text(&missing.stderr));
    assert!(text(&missing.stderr).contains("no embedded event store"), "{}", text(&missing.stderr));
}

/// Orders of the generated data folder: half of them placed only, the rest paid, shipped, cancelled before
/// and after payment; two currencies, three products, 50 customers.
const ORDERS: usize = 10_000;

fn words(i: usize) -> (&'static str, &'static str) {
    [("KET-1", "Red kettle"), ("MUG-1", "Blue ceramic mug"), ("POT-1", "Green teapot")][i % 3]
}

/// The commands of order `i`, decided by the domain so that the history is one the service could have written.
fn history(i: usize, base: DateTime<Utc>) -> Vec<orderflow::domain::OrderEvent> {
    let at = |minutes: i64| base + chrono::Duration::seconds(i as i64 * 20) + chrono::Duration::minutes(minutes);
    let text = |s: &str| Text::parse("t", s, 500).expect("text");
    let (sku, name) = words(i);
    let items = vec![LineItem {
        sku: Sku::parse("sku", sku, 64).expect("sku"),
        name: text(name),
        quantity: Quantity::parse("q", (i % 5 + 1) as i128).expect("quantity"),
        unit_price: Money::from_minor(100 + (i % 7) as u64 * 250),
    }];
    let total = orderflow::domain::values::order_total(&items).expect("total");
    let mut commands = vec![(
        OrderCommand::Place {
            customer_id: CustomerId::parse("c", &format!("c-{}", i % 50)).expect("customer"),
            currency: Currency::parse("c", if i.is_multiple_of(2) { "EUR" } else { "USD" }).expect("currency"),
            items,
            total,
            shipping_address: None,
        },
        at(0),
    )];
    let pay = (OrderCommand::ConfirmPayment { payment_id: text(&format!("pay-{i}")), amount: total }, at(30));
    let cancel = (OrderCommand::Cancel { reason: text("changed my mind") }, at(60 * 20));
    match i % 8 {
        0..4 => {}
        4 => commands.push(pay),
        5 => commands.extend([pay, (OrderCommand::Ship { carrier: text("DHL"), tracking_number: text("T1") }, at(90))]),
        6 => commands.push(cancel),
        _ => commands.extend([pay, cancel]),
    }
    let id = OrderId::parse("o", &format!("m-{i:05}")).expect("id");
    let mut state: Option<Order> = None;
    let mut events = Vec::new();
    for (command, now) in commands {
        for event in decide(state.as_ref(), &command, now).expect("a valid command") {
            state = Order::evolve(state, &id, &event);
            events.push(event);
        }
    }
    events
}

/// How many events [`write_orders`] writes.
fn events_written() -> u64 {
    (0..ORDERS).map(|i| history(i, Utc::now()).len() as u64).sum()
}

/// Writes the generated orders through the embedded store itself (group commit), many at once.
async fn write_orders(dir: &Path) {
    let settings = Settings::load_with(None, test_env(dir, EMBEDDED)).expect("settings");
    std::fs::create_dir_all(dir).expect("dir");
    let store = SqliteEventStore::open(dir, &settings.store, 2).expect("store");
    let base = Utc::now() - chrono::Duration::days(3);
    let store: Arc<dyn EventStore> = store;
    for chunk in (0..ORDERS).collect::<Vec<_>>().chunks(500) {
        let appends = chunk.iter().map(|&i| {
            let store = Arc::clone(&store);
            async move {
                let request = AppendRequest {
                    order_id: OrderId::parse("o", &format!("m-{i:05}")).expect("id"),
                    expected_version: 0,
                    events: history(i, base),
                    snapshot: None,
                    idempotency: None,
                    traceparent: None,
                };
                store.append(request).await.expect("append")
            }
        });
        futures_util::future::join_all(appends).await;
    }
}

/// Waits until a rebuild started through the app's projections has swapped its copy in.
async fn rebuild(app: &TestApp, name: &str) {
    app.state.projections.rebuild(name).await.expect("rebuild starts");
    eventually_within(Duration::from_secs(60), || async {
        let info = app.state.projections.infos().into_iter().find(|i| i.name == name)?;
        info.rebuild.is_none().then_some(())
    })
    .await;
}

/// An embedded data folder of 10,000 orders in every state is migrated into the distributed profile; the first
/// run is SIGKILLed midway, the second finishes and verifies; then the distributed service, its views rebuilt,
/// answers history, search and revenue as the embedded one did, and replays an idempotency key used there.
#[actix_web::test]
async fn migrate_a_data_folder_into_the_distributed_profile() {
    if !distributed() {
        return;
    }
    let embedded_dir = tempfile::tempdir().expect("temp dir");
    write_orders(embedded_dir.path()).await;
    let embedded = spawn_app_in(embedded_dir, EMBEDDED).await;
    // A command with an Idempotency-Key: its record is migrated with the events.
    let keyed = |app: &TestApp| {
        let request = app.client.post(app.url("/orders")).bearer_auth(app.admin()).header("Idempotency-Key", "k-life");
        request.json(&json!({"orderId": "m-keyed", "customerId": "c-1", "currency": "EUR",
            "items": [{"sku": "MUG-1", "name": "Blue ceramic mug", "quantity": 1, "unitPrice": 900}]}))
    };
    let first = keyed(&embedded).send().await.expect("sent");
    assert_eq!(first.status(), StatusCode::CREATED);
    let first_body: Value = first.json().await.expect("json");
    // Both embedded views have caught up with the whole log (the keyed order is its last event).
    let written = events_written();
    eventually_within(Duration::from_secs(60), || async {
        let head = embedded.state.projections.infos();
        let views: Vec<_> = head.iter().filter(|i| i.name == "search" || i.name == "revenue").collect();
        (views.len() == 2 && views.iter().all(|i| i.position > written)).then_some(())
    })
    .await;

    let target = tempfile::tempdir().expect("temp dir");
    let from = embedded.dir.path().to_str().expect("path").to_owned();
    let args = ["migrate", "--from", from.as_str()];
    // First run: killed once it has copied some but not all.
    let mut child = Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(test_env(target.path(), &[]))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("migrate runs");
    // The reader is kept until the kill, so the child never writes into a closed pipe.
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    loop {
        let line = lines.next().expect("a progress line").expect("a line");
        if let Some(progress) = line.strip_prefix("copy: ") {
            let done: u64 = progress.split('/').next().and_then(|n| n.parse().ok()).expect("a count");
            assert!(done > 0, "{line}");
            break;
        }
    }
    assert!(child.try_wait().expect("status").is_none(), "the first run ended before it could be killed");
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    drop(lines);

    // Second run: finishes what the first started, skipping what is there, and verifies.
    let second = orderflow(target.path(), &[], &args, None);
    let (out, err) = (text(&second.stdout), text(&second.stderr));
    assert!(second.status.success(), "{out}\n{err}");
    assert!(out.contains("migration verified"), "{out}");
    let already: u64 = out
        .split("events written, ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("a count of events already there");
    assert!(already > 0, "the second run found nothing of the first: {out}");
    assert!(out.contains("missing in the target: 0") && out.contains("different in the target: 0"), "{out}");
    assert!(out.contains("idempotency records: 1 written"), "{out}");

    // A data folder whose order m-00001 has another history: refused, named, exit 1.
    let clash = tempfile::tempdir().expect("temp dir");
    {
        let settings = Settings::load_with(None, test_env(clash.path(), EMBEDDED)).expect("settings");
        let store = SqliteEventStore::open(clash.path(), &settings.store, 1).expect("store");
        let events = history(1, Utc::now());
        let order_id = OrderId::parse("o", "m-00001").expect("id");
        let request = AppendRequest {
            order_id,
            expected_version: 0,
            events,
            snapshot: None,
            idempotency: None,
            traceparent: None,
        };
        store.append(request).await.expect("append");
    }
    let clash_from = clash.path().to_str().expect("path");
    let refused = orderflow(target.path(), &[], &["migrate", "--from", clash_from], None);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused.stdout));
    let why = text(&refused.stderr);
    assert!(why.contains("order m-00001 version 1") && why.contains("different event"), "{why}");
    // Not the distributed profile: usage.
    let usage = orderflow(target.path(), EMBEDDED, &args, None);
    assert_eq!(usage.status.code(), Some(2), "{}", text(&usage.stderr));

    // The distributed service on the migrated tables; its views built from the write model.
    let dist = spawn_app_in(target, &[]).await;
    rebuild(&dist, "search").await;
    rebuild(&dist, "revenue").await;
    for i in (0..ORDERS).step_by(499).chain([4, 5, 6, 7, 12, 13, 14, 15]) {
        let id = format!("m-{i:05}");
        let history = format!("/orders/{id}/history");
        assert_eq!(get_json(&dist, &history).await, get_json(&embedded, &history).await, "{history}");
        let order = format!("/orders/{id}");
        assert_eq!(get_json(&dist, &order).await, get_json(&embedded, &order).await, "{order}");
    }
    for query in [
        "/orders?customerId=c-7&status=shipped&sort=placedAt:asc&limit=100",
        "/orders?q=kettle&customerId=c-3&sort=placedAt:desc&limit=100",
        "/orders?status=cancelled&sort=total:desc&customerId=c-4&limit=50",
    ] {
        let want = get_json(&embedded, query).await;
        assert!(want["orders"].as_array().is_some_and(|o| !o.is_empty()), "{query}: {want}");
        assert_eq!(get_json(&dist, query).await["orders"], want["orders"], "{query}");
    }
    let from_day = (Utc::now() - chrono::Duration::days(4)).date_naive();
    let to_day = (Utc::now() + chrono::Duration::days(1)).date_naive();
    let revenue = format!("/revenue/daily?from={from_day}&to={to_day}");
    let want = get_json(&embedded, &revenue).await;
    assert!(want["days"].as_array().is_some_and(|d| d.len() >= 6), "{want}");
    assert_eq!(get_json(&dist, &revenue).await, want);
    // The idempotency key used on the embedded service replays there.
    let replayed = keyed(&dist).send().await.expect("sent");
    assert_eq!(replayed.status(), StatusCode::CREATED);
    assert_eq!(replayed.headers().get("idempotent-replayed").and_then(|v| v.to_str().ok()), Some("true"));
    assert_eq!(replayed.json::<Value>().await.expect("json"), first_body);
    // A command on a migrated order (m-00004 is paid): its event is published and projected after the history,
    // and it is the only one published: the bridge read the migrated items before it in the stream and passed
    // over them.
    assert_eq!(dist.ship("m-00004").await.status(), StatusCode::OK);
    let shipped = dist.projected("m-00004", 3).await;
    assert_eq!(shipped["status"], "shipped");
    let published = || dist.state.projections.infos().into_iter().find(|i| i.name == "bridge").map(|i| i.position);
    eventually_within(Duration::from_secs(30), || async { (published() >= Some(1)).then_some(()) }).await;
    assert_eq!(published(), Some(1));
}
