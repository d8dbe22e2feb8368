//! The operator commands of the CLI (`orderflow rebuild`, `orderflow parked …`): a small client of the running
//! service's `/admin` API, authenticated with an admin token minted from the configured secret. Errors come
//! back as the service's problem `detail`; the process exits 1 on any of them.

use std::time::Duration;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::{Client, Method, Response};
use serde_json::Value;

use crate::auth::{Authenticator, Role, resolve_secret};
use crate::config::Settings;

pub struct AdminClient {
    http: Client,
    base: String,
    token: String,
}

impl AdminClient {
    /// A client of the service at `url`, or at the configured `server.host:server.port`.
    pub fn new(settings: &Settings, url: Option<&str>) -> anyhow::Result<Self> {
        let base = match url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => {
                let host = match settings.server.host.as_str() {
                    "0.0.0.0" | "::" => "127.0.0.1",
                    host => host,
                };
                format!("http://{host}:{}", settings.server.port)
            }
        };
        let (secret, _) = resolve_secret(&settings.auth, &settings.data_dir)?;
        let token = Authenticator::new(&settings.auth, &secret).mint("cli", Role::Admin, 3600)?;
        let http = Client::builder().timeout(Duration::from_secs(30)).build()?;
        Ok(Self { http, base, token })
    }

    async fn call(&self, method: Method, path: &str) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let response = self
            .http
            .request(method, &url)
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach orderflow at {}", self.base))?;
        json_or_problem(response).await
    }

    /// `orderflow rebuild NAME`: starts the rebuild and follows it with a progress bar.
    pub async fn rebuild(&self, name: &str) -> anyhow::Result<()> {
        self.call(Method::POST, &format!("/admin/projections/{name}/rebuild")).await?;
        let bar = ProgressBar::new(1).with_style(
            ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(format!("rebuilding {name}"));
        loop {
            let projections = self.call(Method::GET, "/admin/projections").await?;
            let Some(me) = projections.as_array().and_then(|all| all.iter().find(|p| p["name"] == name)).cloned()
            else {
                bail!("projection {name} disappeared");
            };
            match me.get("rebuild").filter(|r| !r.is_null()) {
                Some(progress) => {
                    bar.set_length(progress["target"].as_u64().unwrap_or(1).max(1));
                    bar.set_position(progress["position"].as_u64().unwrap_or(0));
                }
                None => {
                    bar.finish_with_message(format!("{name} rebuilt and swapped in"));
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `orderflow parked list`: one line per parked event.
    pub async fn parked_list(&self) -> anyhow::Result<()> {
        let parked = self.call(Method::GET, "/admin/parked").await?;
        let parked = parked.as_array().cloned().unwrap_or_default();
        if parked.is_empty() {
            println!("no parked events");
            return Ok(());
        }
        println!("{:<48} {:<8} {:<40} {:>4} {:<17} {:>8}  error", "id", "view", "order", "ver", "type", "attempts");
        for p in &parked {
            let e = &p["event"];
            println!(
                "{:<48} {:<8} {:<40} {:>4} {:<17} {:>8}  {}",
                p["id"].as_str().unwrap_or("?"),
                p["projection"].as_str().unwrap_or("?"),
                e["orderId"].as_str().unwrap_or("?"),
                e["version"],
                e["type"].as_str().unwrap_or("?"),
                p["attempts"],
                p["error"].as_str().unwrap_or(""),
            );
        }
        Ok(())
    }

    /// `orderflow parked replay ID` / `discard ID`.
    pub async fn parked_action(&self, id: &str, discard: bool) -> anyhow::Result<()> {
        let (method, path, verb) = match discard {
            true => (Method::DELETE, format!("/admin/parked/{id}"), "discarded"),
            false => (Method::POST, format!("/admin/parked/{id}/replay"), "replayed"),
        };
        let report = self.call(method, &path).await?;
        let replayed = report["replayed"].as_array().map_or(0, Vec::len);
        println!("{id} {verb}; {replayed} event(s) applied; {} still parked for that order", report["remaining"]);
        Ok(())
    }
}

/// The JSON body of a 2xx, or an error carrying the problem's detail.
async fn json_or_problem(response: Response) -> anyhow::Result<Value> {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(body);
    }
    let detail = body["detail"].as_str().unwrap_or("no detail");
    let code = body["code"].as_str().unwrap_or("?");
    bail!("{status} {code}: {detail}")
}
