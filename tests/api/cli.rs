//! The operator CLI against a running service (the real binary on both sides): `token`, `rebuild`,
//! `parked list|replay|discard`, and the exit codes a shell user expects.

use std::path::Path;
use std::process::{Command, Output};

use crate::helpers::{spawn_process, test_env};

fn orderflow(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(test_env(dir, &[]))
        .args(args)
        .output()
        .expect("orderflow runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[actix_web::test]
async fn operator_commands_talk_to_the_running_service() {
    let dir = tempfile::tempdir().expect("temp dir");
    let process = spawn_process(dir.path());
    let url = process.address.clone();

    let token = orderflow(dir.path(), &["token", "--role", "admin", "--sub", "ops"]);
    assert!(token.status.success());
    let token = text(&token.stdout).trim().to_owned();
    let placed = reqwest::Client::new()
        .post(format!("{url}/orders"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"customerId": "c-cli", "currency": "EUR",
            "items": [{"sku": "CLI-1", "name": "Terminal mug", "quantity": 1, "unitPrice": 900}]}))
        .send()
        .await
        .expect("placed");
    assert_eq!(placed.status().as_u16(), 201, "the minted token works");

    let list = orderflow(dir.path(), &["parked", "list", "--url", &url]);
    assert!(list.status.success(), "{}", text(&list.stderr));
    assert_eq!(text(&list.stdout).trim(), "no parked events");

    let missing = orderflow(dir.path(), &["parked", "replay", "nope", "--url", &url]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("404 Not Found not_found"), "{}", text(&missing.stderr));

    // Both profiles: a fresh copy of the view (SQLite generation; Meilisearch index swap) is swapped in.
    let rebuild = orderflow(dir.path(), &["rebuild", "search", "--url", &url]);
    assert!(rebuild.status.success(), "{}", text(&rebuild.stderr));
    let unknown = orderflow(dir.path(), &["rebuild", "nope", "--url", &url]);
    assert_eq!(unknown.status.code(), Some(1));

    let unreachable = orderflow(dir.path(), &["parked", "list", "--url", "http://127.0.0.1:9"]);
    assert_eq!(unreachable.status.code(), Some(1));
    assert!(text(&unreachable.stderr).contains("cannot reach orderflow"), "{}", text(&unreachable.stderr));

    let usage = orderflow(dir.path(), &["parked", "frobnicate"]);
    assert_eq!(usage.status.code(), Some(2), "bad usage");
    process.kill();
}
