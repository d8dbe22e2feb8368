//! The operator CLI against a running service (the real binary on both sides): `token`, `rebuild`,
//! `parked list|replay|discard`, and the exit codes a shell user expects: 0 done, 1 failed, 2 bad usage or
//! configuration. The CLI finds the secret as `serve` does and never creates one; a refused token names the
//! secret that signed it. A busy port is one clear line, not a panic.

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::{spawn_process, spawn_process_with, test_env};

fn orderflow(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(test_env(dir, &[]))
        .args(args)
        .output()
        .expect("orderflow runs")
}

/// The binary run from the folder `cwd` with only these `ORDERFLOW__…` variables: no test secret, no data folder,
/// as an operator would run it.
fn orderflow_in(cwd: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .current_dir(cwd)
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
    // Without a terminal (no progress bar), a final line still says how it went, with a whole rate.
    let last = text(&rebuild.stdout).lines().last().unwrap_or_default().to_owned();
    assert!(last.starts_with("search rebuilt and swapped in"), "{last}");
    if let Some(rate) = last.split('(').nth(1) {
        let number = rate.split_whitespace().next().unwrap_or_default();
        assert!(number.parse::<u64>().is_ok() || number.ends_with('s'), "rate not rounded: {last}");
    }
    // An unknown view is bad usage, and the valid names are listed.
    let unknown = orderflow(dir.path(), &["rebuild", "nope", "--url", &url]);
    assert_eq!(unknown.status.code(), Some(2));
    let listed = text(&unknown.stderr);
    assert!(listed.contains("search") && listed.contains("revenue"), "{listed}");

    // `--url host:port` means http.
    let bare = url.trim_start_matches("http://");
    let list = orderflow(dir.path(), &["parked", "list", "--url", bare]);
    assert!(list.status.success(), "{}", text(&list.stderr));
    let bad_url = orderflow(dir.path(), &["parked", "list", "--url", "ftp://127.0.0.1:21"]);
    assert_eq!(bad_url.status.code(), Some(2), "{}", text(&bad_url.stderr));

    let unreachable = orderflow(dir.path(), &["parked", "list", "--url", "http://127.0.0.1:9"]);
    assert_eq!(unreachable.status.code(), Some(1));
    assert!(text(&unreachable.stderr).contains("cannot reach orderflow"), "{}", text(&unreachable.stderr));

    let usage = orderflow(dir.path(), &["parked", "frobnicate"]);
    assert_eq!(usage.status.code(), Some(2), "bad usage");
    process.kill();
}

/// A business time zone the zone database does not know stops `serve` before it binds: exit 2, one line
/// naming the key and the value.
#[test]
fn an_unknown_revenue_time_zone_is_a_configuration_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().display().to_string();
    let env = [("ORDERFLOW__DATA_DIR", data_dir.as_str()), ("ORDERFLOW__REVENUE__TIMEZONE", "Europe/Berln")];
    let output = orderflow_in(dir.path(), &env, &["serve"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("revenue.timezone") && stderr.contains("`Europe/Berln` is not an IANA time zone"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

#[test]
fn token_from_another_folder_creates_no_secret_and_says_where_it_looked() {
    let elsewhere = tempfile::tempdir().expect("temp dir");
    let output = orderflow_in(elsewhere.path(), &[], &["token", "--role", "admin", "--sub", "ops"]);
    assert_eq!(output.status.code(), Some(2), "no secret is a configuration problem");
    assert!(output.stdout.is_empty(), "no token: {}", text(&output.stdout));
    let stderr = text(&output.stderr);
    let expected = elsewhere.path().canonicalize().expect("path").join("data").join("jwt_secret");
    assert!(stderr.contains(&expected.display().to_string()) && stderr.contains("does not exist"), "{stderr}");
    assert!(!elsewhere.path().join("data").exists(), "only `serve` creates the data folder and the secret");
}

#[actix_web::test]
async fn the_cli_uses_the_secret_serve_generated_and_names_it_when_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    // The service generates its secret in its data folder (no configured one).
    let process = spawn_process_with(dir.path(), &[("ORDERFLOW__AUTH__JWT_SECRET", "")], Stdio::null());
    let data_dir = dir.path().display().to_string();
    let generated = dir.path().join("jwt_secret");
    assert!(generated.exists());

    let same = [("ORDERFLOW__DATA_DIR", data_dir.as_str())];
    let token = orderflow_in(dir.path(), &same, &["token", "--role", "admin", "--sub", "ops"]);
    assert!(token.status.success(), "{}", text(&token.stderr));
    assert!(text(&token.stderr).contains(&generated.display().to_string()), "{}", text(&token.stderr));
    let token = text(&token.stdout).trim().to_owned();
    let answer = reqwest::Client::new()
        .get(format!("{}/admin/parked", process.address))
        .bearer_auth(&token)
        .send()
        .await
        .expect("answered");
    assert_eq!(answer.status().as_u16(), 200, "the token of the service's own secret works");
    let list = orderflow_in(dir.path(), &same, &["parked", "list", "--url", &process.address]);
    assert!(list.status.success(), "{}", text(&list.stderr));

    // Another data folder with another secret: the service refuses the token, and the CLI says which secret.
    let other = tempfile::tempdir().expect("temp dir");
    std::fs::write(other.path().join("jwt_secret"), "0123456789abcdef0123456789abcdef-another-secret").expect("secret");
    let other_dir = other.path().display().to_string();
    let refused = orderflow_in(
        other.path(),
        &[("ORDERFLOW__DATA_DIR", other_dir.as_str())],
        &["parked", "list", "--url", &process.address],
    );
    assert_eq!(refused.status.code(), Some(1));
    let stderr = text(&refused.stderr);
    let other_secret = other.path().join("jwt_secret");
    assert!(stderr.contains("refused") && stderr.contains(&other_secret.display().to_string()), "{stderr}");
    process.kill();
}

/// A server that is not orderflow: every connection gets `answer`.
fn foreign_server(answer: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bound");
    let address = format!("http://{}", listener.local_addr().expect("address"));
    std::thread::spawn(move || {
        for stream in listener.incoming().take(16) {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    address
}

#[test]
fn a_server_that_is_not_orderflow_is_named_as_such() {
    let dir = tempfile::tempdir().expect("temp dir");
    for answer in [
        "HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot here\n",
        "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 7\r\nConnection: close\r\n\r\n<html>\n",
        "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    ] {
        let url = foreign_server(answer);
        let output = orderflow(dir.path(), &["parked", "list", "--url", &url]);
        assert_eq!(output.status.code(), Some(1));
        let stderr = text(&output.stderr);
        assert!(stderr.contains(&format!("the server at {url} is not orderflow")), "{stderr}");
    }
}

/// Starts `orderflow serve` with these settings, expecting it to give up: its exit code and stderr.
fn failed_start(overrides: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(test_env(dir.path(), overrides))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("orderflow starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("waited") {
            break status;
        }
        assert!(Instant::now() < deadline, "orderflow kept running with {overrides:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child.stderr.take().expect("stderr").read_to_string(&mut stderr).expect("stderr read");
    (status.code(), stderr)
}

#[test]
fn a_busy_port_or_a_bad_certificate_is_one_clear_line_and_a_failure_exit() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bound");
    let port = taken.local_addr().expect("address").port().to_string();
    let (code, stderr) = failed_start(&[("ORDERFLOW__SERVER__PORT", &port)]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")), "{stderr}");
    drop(taken);

    let missing = [
        ("ORDERFLOW__SERVER__TLS_CERT", "/nonexistent/cert.pem"),
        ("ORDERFLOW__SERVER__TLS_KEY", "/nonexistent/key.pem"),
    ];
    let (code, stderr) = failed_start(&missing);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("/nonexistent/cert.pem"), "{stderr}");
}
