//! The operator commands of the CLI (`orderflow rebuild`, `orderflow parked …`): a small client of the running
//! service's `/admin` API, authenticated with an admin token minted from the configured secret. Errors come
//! back as the service's problem `detail`; the process exits 1 on any of them, 2 on a [`UsageError`].
//!
//! The secret is found exactly as `serve` finds it (same config layers, same data folder), but never created:
//! a secret made up by the CLI would only mint tokens the service refuses. When the service does refuse the
//! token, the error names the secret that signed it, which is what differs between the two.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::{Client, Method, Response, StatusCode, Url};
use serde_json::Value;

use crate::auth::{Authenticator, Role, SecretSource, find_secret};
use crate::config::Settings;
use crate::projection::RebuildProgress;

/// A mistake in how a command was called or configured (exit code 2), as opposed to a failure (exit code 1).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The secret `serve` uses with these settings, and where it comes from. Never creates one.
pub fn service_secret(settings: &Settings) -> anyhow::Result<(String, SecretSource)> {
    let file = SecretSource::File(settings.data_dir.join("jwt_secret"));
    match find_secret(&settings.auth, &settings.data_dir).with_context(|| format!("cannot read {file}"))? {
        Some(found) => Ok(found),
        None => Err(UsageError(format!(
            "no JWT secret to sign with: auth.jwt_secret is empty and {file} does not exist (`orderflow serve` \
             creates it on its first start). Run this command with the service's configuration: from its working \
             folder, or with its --config / ORDERFLOW__DATA_DIR / ORDERFLOW__AUTH__JWT_SECRET"
        ))
        .into()),
    }
}

/// The service's base URL from `--url` (`host:port` alone means `http://host:port`).
pub fn base_url(url: &str) -> Result<String, UsageError> {
    let url = url.trim();
    let full = if url.contains("://") { url.to_owned() } else { format!("http://{url}") };
    let full = full.trim_end_matches('/').to_owned();
    match Url::parse(&full) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some() => Ok(full),
        _ => Err(UsageError(format!("--url {url}: not an http(s) URL of the service (e.g. http://127.0.0.1:8080)"))),
    }
}

pub struct AdminClient {
    http: Client,
    base: String,
    token: String,
    /// Where the token's secret came from, to say so when the service refuses it.
    secret: SecretSource,
}

impl AdminClient {
    /// A client of the service at `url`, or at the configured `server.host:server.port`.
    pub fn new(settings: &Settings, url: Option<&str>) -> anyhow::Result<Self> {
        let base = match url {
            Some(url) => base_url(url)?,
            None => {
                let host = match settings.server.host.as_str() {
                    "0.0.0.0" | "::" => "127.0.0.1",
                    host => host,
                };
                let scheme = if settings.server.tls_cert.is_empty() { "http" } else { "https" };
                format!("{scheme}://{host}:{}", settings.server.port)
            }
        };
        let (secret, source) = service_secret(settings)?;
        let token = Authenticator::new(&settings.auth, &secret).mint("cli", Role::Admin, 3600)?;
        let http = Client::builder().timeout(Duration::from_secs(30)).build()?;
        Ok(Self { http, base, token, secret: source })
    }

    async fn call(&self, method: Method, path: &str) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let response = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach orderflow at {}", self.base))?;
        self.json_or_problem(&method, path, response).await
    }

    /// The JSON body of a 2xx, or an error carrying the problem's detail; an answer orderflow would not give
    /// (no problem document, not JSON) says that the server is not orderflow.
    async fn json_or_problem(&self, method: &Method, path: &str, response: Response) -> anyhow::Result<Value> {
        let status = response.status();
        let content_type =
            response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("no content type");
        let content_type = content_type.to_owned();
        let body: Option<Value> = response.json().await.ok();
        let not_orderflow = || {
            anyhow::anyhow!(
                "the server at {} is not orderflow: it answered {method} {path} with {status} ({content_type})",
                self.base
            )
        };
        let Some(body) = body else { return Err(not_orderflow()) };
        if status.is_success() {
            return Ok(body);
        }
        let (Some(code), Some(detail)) = (body["code"].as_str(), body["detail"].as_str()) else {
            return Err(not_orderflow());
        };
        if status == StatusCode::UNAUTHORIZED {
            bail!(
                "{status} {code}: the service at {} refused the CLI's admin token, signed with the secret of {}. \
                 Run this command with the service's configuration (its working folder, --config, \
                 ORDERFLOW__DATA_DIR or ORDERFLOW__AUTH__JWT_SECRET)",
                self.base,
                self.secret
            );
        }
        bail!("{status} {code}: {detail}")
    }

    /// `orderflow rebuild NAME`: starts the rebuild and follows it with a progress bar (on a terminal), then
    /// prints one line saying how it went.
    pub async fn rebuild(&self, name: &str) -> anyhow::Result<()> {
        self.call(Method::POST, &format!("/admin/projections/{name}/rebuild")).await?;
        let started = Instant::now();
        let bar = ProgressBar::new(1).with_style(
            ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({rate}, eta {eta})")
                .map(|style| {
                    style.with_key("rate", |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = write!(w, "{:.0}/s", state.per_sec());
                    })
                })
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(format!("rebuilding {name}"));
        let mut last: Option<RebuildProgress> = None;
        loop {
            let projections = self.call(Method::GET, "/admin/projections").await?;
            let Some(me) = projections.as_array().and_then(|all| all.iter().find(|p| p["name"] == name)).cloned()
            else {
                bail!("projection {name} disappeared");
            };
            match me.get("rebuild").filter(|r| !r.is_null()) {
                Some(progress) => {
                    let progress = RebuildProgress {
                        position: progress["position"].as_u64().unwrap_or(0),
                        target: progress["target"].as_u64().unwrap_or(1),
                        events: progress["events"].as_u64().unwrap_or(0),
                    };
                    bar.set_length(progress.target.max(progress.position).max(1));
                    bar.set_position(progress.position);
                    last = Some(progress);
                }
                None => {
                    bar.finish_and_clear();
                    println!("{}", rebuilt_line(name, last.map(|p| p.events), started.elapsed()));
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

/// The last line of `orderflow rebuild`, terminal or not: what was rebuilt, how many events, how fast (whole
/// events per second).
fn rebuilt_line(name: &str, events: Option<u64>, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    match events {
        Some(events) if secs > 0.0 => {
            format!(
                "{name} rebuilt and swapped in: {events} events in {secs:.1} s ({:.0} events/s)",
                events as f64 / secs
            )
        }
        _ => format!("{name} rebuilt and swapped in ({secs:.1} s)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_without_a_scheme_is_http() {
        assert_eq!(base_url("127.0.0.1:8080").unwrap(), "http://127.0.0.1:8080");
        assert_eq!(base_url("localhost:8080/").unwrap(), "http://localhost:8080");
        assert_eq!(base_url("https://orders.example.com").unwrap(), "https://orders.example.com");
        assert!(base_url("ftp://host:21").is_err());
        assert!(base_url("http://").is_err());
        assert!(base_url("not a url").is_err());
    }

    #[test]
    fn the_rebuild_line_rounds_the_rate() {
        let line = rebuilt_line("search", Some(12_345), Duration::from_millis(2_500));
        assert_eq!(line, "search rebuilt and swapped in: 12345 events in 2.5 s (4938 events/s)");
        assert_eq!(rebuilt_line("revenue", None, Duration::from_millis(200)), "revenue rebuilt and swapped in (0.2 s)");
    }
}
