//! `orderflow backup <dir>` (the real binary) while the service takes writes, and a service started on the copy:
//! the copy is one consistent point of the data folder (every order's history a prefix of the original's, the
//! views caught up with the copied log, revenue equal to the copied payments).

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{TestApp, distributed, eventually, new_id, spawn_app, spawn_app_in, test_env};

fn backup(data: &Path, target: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(test_env(data, &[]))
        .arg("backup")
        .arg(target)
        .output()
        .expect("orderflow runs")
}

/// The order's event ids, oldest first (empty when the order is unknown there).
async fn history(app: &TestApp, id: &str) -> Vec<(String, String, u64)> {
    let response = app.get(&format!("/orders/{id}/history"), &app.admin()).await;
    if response.status() == StatusCode::NOT_FOUND {
        return Vec::new();
    }
    let body: Value = response.json().await.expect("history json");
    body["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            let amount = e["data"]["amount"].as_u64().unwrap_or(0);
            (
                e["eventId"].as_str().unwrap_or_default().to_owned(),
                e["type"].as_str().unwrap_or_default().to_owned(),
                amount,
            )
        })
        .collect()
}

#[actix_web::test]
async fn an_online_backup_is_one_consistent_point_that_a_service_starts_on() {
    if distributed() {
        println!("skipped: backup copies the embedded profile's data folder");
        return;
    }
    let app = Arc::new(spawn_app().await);
    for n in 0..20 {
        let id = format!("{}-{n}", new_id("bk"));
        app.place(&id, "c-backup", 1, 100 + n).await;
    }
    // Writes go on all through the backup: places and payments, one after the other.
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let (app, writing) = (Arc::clone(&app), Arc::clone(&writing));
        actix_web::rt::spawn(async move {
            let mut ids = Vec::new();
            while writing.load(Ordering::Relaxed) {
                let id = new_id("bk-live");
                app.place(&id, "c-backup", 2, 350).await;
                assert_eq!(app.pay(&id, &format!("pay-{id}"), 700).await.status(), StatusCode::OK);
                ids.push(id);
            }
            ids
        })
    };
    actix_web::rt::time::sleep(std::time::Duration::from_millis(300)).await;
    let target = tempfile::tempdir().expect("temp dir");
    let data = app.dir.path().to_owned();
    let into = target.path().to_owned();
    let output = actix_web::rt::task::spawn_blocking(move || backup(&data, &into)).await.expect("backup ran");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("event log:") && stdout.contains("events.db"), "a summary: {stdout}");
    actix_web::rt::time::sleep(std::time::Duration::from_millis(300)).await;
    writing.store(false, Ordering::Relaxed);
    let live = writer.await.expect("writer");
    assert!(live.len() >= 2, "writes went on during the backup");

    // A second backup into the same (now full) folder is refused, and leaves the first alone.
    let again = backup(app.dir.path(), target.path());
    assert_eq!(again.status.code(), Some(2), "{}", String::from_utf8_lossy(&again.stderr));

    let copy = spawn_app_in(target, &[]).await;
    let (mut orders, mut paid, mut partial) = (0, 0, false);
    for id in &live {
        let (original, copied) = (history(&app, id).await, history(&copy, id).await);
        assert!(original.starts_with(&copied), "{id}: the copy's history is a prefix of the original's");
        partial |= copied.len() < original.len();
        if !copied.is_empty() {
            orders += 1;
            paid += copied.iter().map(|(_, _, amount)| amount).sum::<u64>();
            // The copy's views catch up with its log.
            copy.projected(id, copied.len() as u64).await;
        }
    }
    assert!(orders > 0, "the copy holds the orders placed before it");
    assert!(partial || orders < live.len(), "and not what was written after it");
    // Revenue in the copy: exactly the payments of the copied log (the 20 first orders were never paid).
    eventually(|| async {
        let days = copy.revenue_today().await["days"].as_array().cloned().unwrap_or_default();
        let gross: u64 = days.iter().filter_map(|d| d["grossRevenue"].as_u64()).sum();
        (gross == paid).then_some(())
    })
    .await;
}
