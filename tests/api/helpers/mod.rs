//! Test harness: an orderflow on port 0 with its own data folder, talked to over real HTTP.
//!
//! `spawn_app()` runs the application inside the test's actix system; `spawn_process()` runs the real binary
//! (for SIGKILL / restart tests). Assertions that depend on the projectors poll with a deadline.

#![allow(dead_code)]

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use actix_web::web;
use orderflow::app::Application;
use orderflow::auth::{Authenticator, Role};
use orderflow::config::Settings;
use orderflow::http::AppState;
use reqwest::{Client, Method, Response, StatusCode};
use serde_json::{Value, json};

use crate::poison::PoisonSwitch;

mod reads;
mod workload;
pub use reads::*;
pub use workload::*;

pub const SECRET: &str = "test-secret-0123456789abcdef0123456789abcdef";

pub struct TestApp {
    pub address: String,
    pub client: Client,
    pub state: web::Data<AppState>,
    pub dir: tempfile::TempDir,
    /// Makes the app's views or bridge fail on chosen orders (off until a test sets a rule; see `poison`).
    pub poison: PoisonSwitch,
    server: actix_web::dev::ServerHandle,
    auth: Authenticator,
}

/// True when the suite runs against the distributed profile (`ORDERFLOW_TEST_PROFILE=distributed`):
/// DynamoDB Local and the Kafka broker of `scripts/services.sh`, and Meilisearch at `MEILI_URL` (with
/// `MEILI_MASTER_KEY`) or, without it, the in-process contract mock. The feed between the bridge and the
/// projectors is Kafka unless `ORDERFLOW_TEST_SINKS` (`kafka`, `kinesis`, `kafka,kinesis`) and
/// `ORDERFLOW_TEST_SOURCE` (`kafka`, `kinesis`) say otherwise; Kinesis is kinesalite at `ORDERFLOW_TEST_KINESIS`
/// (default `http://127.0.0.1:4567`).
pub fn distributed() -> bool {
    std::env::var("ORDERFLOW_TEST_PROFILE").is_ok_and(|p| p == "distributed")
}

fn var_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// The settings every test app starts from: its own folder, port 0, a known secret. In the distributed
/// profile, its own tables, topic, consumer groups and index, named after the data folder (so a restart on
/// the same folder finds the same ones).
pub fn test_env(dir: &Path, overrides: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = vec![
        ("ORDERFLOW__DATA_DIR".to_owned(), dir.display().to_string()),
        ("ORDERFLOW__SERVER__PORT".to_owned(), "0".to_owned()),
        ("ORDERFLOW__SERVER__WORKERS".to_owned(), "2".to_owned()),
        ("ORDERFLOW__AUTH__JWT_SECRET".to_owned(), SECRET.to_owned()),
        ("ORDERFLOW__LOG__LEVEL".to_owned(), "warn".to_owned()),
    ];
    if distributed() {
        let unique: String = dir
            .file_name()
            .map(|n| n.to_string_lossy().chars().filter(char::is_ascii_alphanumeric).collect())
            .unwrap_or_default();
        let meili = std::env::var("MEILI_URL").unwrap_or_else(|_| meili_mock::url());
        let pairs = [
            ("ORDERFLOW__PROFILE", "distributed".to_owned()),
            ("ORDERFLOW__AWS__ENDPOINT_URL", var_or("ORDERFLOW_TEST_DYNAMODB", "http://127.0.0.1:8000")),
            ("ORDERFLOW__AWS__ACCESS_KEY_ID", "local".to_owned()),
            ("ORDERFLOW__AWS__SECRET_ACCESS_KEY", "local".to_owned()),
            ("ORDERFLOW__DYNAMODB__TABLE_PREFIX", format!("t{unique}")),
            // One DynamoDB Local serves the whole parallel suite on two cores, and takes seconds per call under
            // its bursts (p99 11 s measured): the production timeouts (1 s / 3 s) would turn that slowness into
            // 503s. The DynamoDB outage test, which runs alone, uses the production values.
            ("ORDERFLOW__DYNAMODB__ATTEMPT_TIMEOUT_MS", "5000".to_owned()),
            ("ORDERFLOW__DYNAMODB__OPERATION_TIMEOUT_MS", "15000".to_owned()),
            ("ORDERFLOW__KAFKA__BROKERS", var_or("ORDERFLOW_TEST_KAFKA", "127.0.0.1:9092")),
            ("ORDERFLOW__KAFKA__TOPIC", format!("orders.events.{unique}")),
            ("ORDERFLOW__KAFKA__GROUP_PREFIX", format!("g{unique}")),
            ("ORDERFLOW__MEILISEARCH__URL", meili),
            ("ORDERFLOW__MEILISEARCH__API_KEY", var_or("MEILI_MASTER_KEY", "")),
            ("ORDERFLOW__MEILISEARCH__INDEX", format!("orders_{unique}")),
            ("ORDERFLOW__KINESIS__ENDPOINT_URL", var_or("ORDERFLOW_TEST_KINESIS", "http://127.0.0.1:4567")),
            ("ORDERFLOW__KINESIS__STREAM", format!("orders-events-{unique}")),
            // Two shards: enough to spread orders over several readers, light on kinesalite.
            ("ORDERFLOW__KINESIS__SHARDS", "2".to_owned()),
            ("ORDERFLOW__KINESIS__POLL_INTERVAL_MS", "100".to_owned()),
            ("ORDERFLOW__BRIDGE__SINKS", var_or("ORDERFLOW_TEST_SINKS", "kafka")),
            ("ORDERFLOW__PROJECTIONS__SOURCE", var_or("ORDERFLOW_TEST_SOURCE", "kafka")),
        ];
        env.extend(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)));
    }
    env.extend(overrides.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// An app with extra `ORDERFLOW__…` settings.
pub async fn spawn_app_with(overrides: &[(&str, &str)]) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    spawn_app_in(dir, overrides).await
}

/// An app on an existing data folder (for restart tests inside one process).
pub async fn spawn_app_in(dir: tempfile::TempDir, overrides: &[(&str, &str)]) -> TestApp {
    spawn_app_poisoning(dir, overrides, "").await
}

/// An app whose views or bridge fail on the orders `rule` names from the start (see `poison`).
pub async fn spawn_app_poisoning(dir: tempfile::TempDir, overrides: &[(&str, &str)], rule: &str) -> TestApp {
    let settings = Settings::load_with(None, test_env(dir.path(), overrides)).expect("settings");
    let auth = Authenticator::new(&settings.auth, SECRET);
    let poison = PoisonSwitch::default();
    poison.set(rule);
    let app = Application::build_with(settings, poison.adapters()).await.expect("app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let state = app.state();
    let server = app.server_handle();
    actix_web::rt::spawn(app.run_until_stopped());
    TestApp { address, client: Client::new(), state, dir, poison, server, auth }
}

impl TestApp {
    /// Stops serving HTTP (its projectors stay, idle, until the test ends), so that another instance can take
    /// over the data folder.
    pub async fn stop(&self) {
        self.server.stop(true).await;
    }

    pub fn token(&self, role: Role, sub: &str) -> String {
        self.auth.mint(sub, role, 3600).expect("token")
    }

    pub fn admin(&self) -> String {
        self.token(Role::Admin, "admin")
    }

    pub fn customer(&self, id: &str) -> String {
        self.token(Role::Customer, id)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// A JSON request with a bearer token (when given) and extra headers.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Response {
        let mut req = self.client.request(method, self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.header("Content-Type", "application/json").body(body.to_string());
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.expect("request sent")
    }

    pub async fn post(&self, path: &str, token: &str, body: &Value) -> Response {
        self.request(Method::POST, path, Some(token), Some(body), &[]).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.request(Method::GET, path, Some(token), None, &[]).await
    }

    /// Places `id` for `customer` (as admin) with one line of `quantity` × `unit_price`; asserts 201.
    pub async fn place(&self, id: &str, customer: &str, quantity: u64, unit_price: u64) -> Value {
        let response = self.post("/orders", &self.admin(), &order_body(id, customer, quantity, unit_price)).await;
        assert_eq!(response.status(), StatusCode::CREATED, "placing {id}");
        response.json().await.expect("json")
    }

    pub async fn pay(&self, id: &str, payment_id: &str, amount: u64) -> Response {
        self.post(
            &format!("/orders/{id}/confirm-payment"),
            &self.admin(),
            &json!({"paymentId": payment_id, "amount": amount}),
        )
        .await
    }

    pub async fn ship(&self, id: &str) -> Response {
        self.post(&format!("/orders/{id}/ship"), &self.admin(), &json!({"carrier": "DHL", "trackingNumber": "TN-1"}))
            .await
    }

    pub async fn cancel(&self, id: &str) -> Response {
        self.post(&format!("/orders/{id}/cancel"), &self.admin(), &json!({"reason": "changed my mind"})).await
    }

    /// The projected document once it has reached `version` (polls until the deadline).
    pub async fn projected(&self, id: &str, version: u64) -> Value {
        let path = format!("/orders/{id}");
        eventually(|| async {
            let response = self.get(&path, &self.admin()).await;
            if response.status() != StatusCode::OK {
                return None;
            }
            let doc: Value = response.json().await.ok()?;
            (doc["version"].as_u64() >= Some(version)).then_some(doc)
        })
        .await
    }

    /// `GET /revenue/daily` for today (UTC), all currencies.
    pub async fn revenue_today(&self) -> Value {
        let today = chrono::Utc::now().date_naive();
        let response = self.get(&format!("/revenue/daily?from={today}&to={today}"), &self.admin()).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("json")
    }
}

pub fn order_body(id: &str, customer: &str, quantity: u64, unit_price: u64) -> Value {
    json!({
        "orderId": id,
        "customerId": customer,
        "currency": "EUR",
        "items": [{"sku": "MUG-1", "name": "Blue ceramic mug", "quantity": quantity, "unitPrice": unit_price}]
    })
}

/// A fresh order id, unique per call.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7().simple())
}

/// Polls `check` until it returns `Some`, for at most 10 s.
pub async fn eventually<T, F, Fut>(check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_within(Duration::from_secs(10), check).await
}

/// Polls `check` until it returns `Some`, for at most `limit` (a restarted process rejoins its Kafka consumer
/// groups only after the killed one's session times out, so restart tests wait longer).
pub async fn eventually_within<T, F, Fut>(limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "condition not reached within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts a problem+json response with this status and code; returns the problem document.
pub async fn assert_problem(response: Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "status for expected `{code}`");
    let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    assert_eq!(content_type, "application/problem+json");
    let problem: Value = response.json().await.expect("problem json");
    assert_eq!(problem["code"], code, "{problem}");
    assert_eq!(problem["status"], status);
    assert!(problem["type"].is_string() && problem["title"].is_string() && problem["detail"].is_string());
    problem
}

/// The real binary, for tests that kill and restart the process.
pub struct Process {
    pub child: Child,
    pub address: String,
    pub dir: PathBuf,
}

/// Starts `orderflow serve` on `dir` and waits for its "listening on" line.
pub fn spawn_process(dir: &Path) -> Process {
    spawn_process_with(dir, &[], Stdio::null())
}

/// The same, with extra `ORDERFLOW__…` settings and its stderr (the logs) where the test wants it.
pub fn spawn_process_with(dir: &Path, overrides: &[(&str, &str)], stderr: impl Into<Stdio>) -> Process {
    let mut child = Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(test_env(dir, overrides))
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("orderflow starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let address = loop {
        let line = lines.next().expect("orderflow printed its address").expect("stdout line");
        if let Some(address) = line.strip_prefix("orderflow listening on ") {
            break address.trim().to_owned();
        }
    };
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Process { child, address, dir: dir.to_owned() }
}

impl Process {
    /// SIGTERM, and waits for the process to exit (flushing its logs).
    pub fn stop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Speaks raw HTTP/1.1 to the app over a blocking socket, for what a client library will not send (a head that
/// never ends, a body that stops arriving): `talk` writes (and may read a response first), then everything the
/// server sends until it closes the connection is the answer. A read that times out (10 s) ends it too.
pub async fn until_closed(address: &str, talk: impl FnOnce(&mut std::net::TcpStream) + Send + 'static) -> String {
    let address = address.trim_start_matches("http://").to_owned();
    actix_web::rt::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(address).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        talk(&mut stream);
        let mut answer = String::new();
        let _ = std::io::Read::read_to_string(&mut stream, &mut answer);
        answer
    })
    .await
    .expect("join")
}
