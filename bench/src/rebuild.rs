//! Rebuild speed: `POST /admin/projections/{name}/rebuild`, then `GET /admin/projections` every 20 ms until the
//! view is back at the head of the log. A query is sent every half second meanwhile to check the view keeps
//! answering.

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use crate::load::{Target, round2};
use crate::observe::metrics_text;
use crate::service;

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RebuildReport {
    /// False when the service has no rebuild route (404 / 405).
    pub available: bool,
    pub note: Option<String>,
    pub views: Vec<ViewRebuild>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ViewRebuild {
    pub name: String,
    /// Events in the log (`orderflow_events_appended_total` of this service process).
    pub events: u64,
    pub seconds: f64,
    pub events_per_s: f64,
    pub finished: bool,
    /// `GET /orders` answers other than 200 while the rebuild ran (the view must stay queryable).
    pub query_errors: u64,
    pub queries: u64,
}

/// The `/admin/projections` entry of one projection.
async fn entry(http: &reqwest::Client, target: &Target, name: &str) -> Option<Value> {
    let response = target.get(http, "/admin/projections").send().await.ok()?;
    let list: Value = response.json().await.ok()?;
    list.as_array()?.iter().find(|p| p["name"] == name).cloned()
}

fn position(entry: &Value) -> u64 {
    entry["position"].as_u64().unwrap_or(0)
}

/// Whether an entry says a rebuild is under way: a status naming it, or a field about it that is set and not
/// marked done. (The progress fields are the service's to choose; this reads the obvious spellings.)
fn rebuilding(entry: &Value) -> bool {
    let says = |v: &Value| v.as_str().is_some_and(|s| s.to_ascii_lowercase().contains("rebuild"));
    if says(&entry["status"]) || says(&entry["state"]) {
        return true;
    }
    let Some(fields) = entry.as_object() else { return false };
    fields.iter().filter(|(k, _)| k.to_ascii_lowercase().contains("rebuild")).any(|(_, v)| match v {
        Value::Null | Value::Bool(false) => false,
        Value::Object(o) => {
            let done =
                ["done", "finished", "complete", "completed"].iter().any(|k| o.get(*k) == Some(&Value::Bool(true)));
            let state =
                ["status", "state"].iter().filter_map(|k| o.get(*k)?.as_str()).next().map(str::to_ascii_lowercase);
            !done
                && !state.is_some_and(|s| {
                    ["done", "finished", "complete", "completed", "idle", "swapped"].contains(&s.as_str())
                })
        }
        _ => true,
    })
}

const QUERY_EVERY: Duration = Duration::from_millis(500);

/// Rebuilds each view in turn and times it: from the request to the first poll that shows the view no longer
/// rebuilding (the service marks the rebuild as running before it answers 202).
pub async fn run(http: &reqwest::Client, target: &Target, timeout: Duration) -> RebuildReport {
    let appended = metrics_text(http, target)
        .await
        .and_then(|t| service::metric(&t, "orderflow_events_appended_total", ""))
        .unwrap_or(0.0) as u64;
    let mut report = RebuildReport { available: true, ..Default::default() };
    for name in ["search", "revenue"] {
        let Some(before) = entry(http, target, name).await else {
            report.note = Some(format!("no projection `{name}` in /admin/projections"));
            continue;
        };
        let head = position(&before);
        let started = Instant::now();
        let response = match target.post(http, &format!("/admin/projections/{name}/rebuild")).send().await {
            Ok(r) => r,
            Err(e) => {
                report.note = Some(format!("rebuild request failed: {e}"));
                continue;
            }
        };
        match response.status().as_u16() {
            404 | 405 => {
                return RebuildReport { available: false, note: Some("rebuild: not available".into()), views: vec![] };
            }
            200..=299 => {}
            other => {
                report.note = Some(format!("rebuild of {name} answered {other}"));
                continue;
            }
        }
        let deadline = started + timeout;
        let mut finished = None;
        let (mut queries, mut query_errors) = (0u64, 0u64);
        // The log size the rebuild reads: its `rebuild.target` (the head when it started), else the events
        // this service process appended.
        let mut events = appended;
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            // A query every half second (each one counts the whole view, so not more often).
            if started.elapsed() >= QUERY_EVERY * queries as u32 {
                queries += 1;
                match target.get(http, "/orders?limit=1").send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                    }
                    _ => query_errors += 1,
                }
            }
            let Some(now) = entry(http, target, name).await else { continue };
            if let Some(t) = now["rebuild"]["target"].as_u64() {
                events = events.max(t);
            }
            if !rebuilding(&now) && position(&now) >= head {
                finished = Some(Instant::now());
                break;
            }
        }
        let seconds = finished.map_or(timeout, |at| at.duration_since(started)).as_secs_f64();
        report.views.push(ViewRebuild {
            name: name.into(),
            events,
            seconds: round2(seconds),
            events_per_s: if finished.is_some() { (events as f64 / seconds.max(1e-3)).round() } else { 0.0 },
            finished: finished.is_some(),
            query_errors,
            queries,
        });
    }
    report
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::rebuilding;

    #[test]
    fn recognises_a_rebuild_in_progress() {
        assert!(!rebuilding(&json!({"name": "search", "status": "running", "position": 5})));
        assert!(rebuilding(&json!({"name": "search", "status": "rebuilding"})));
        assert!(rebuilding(&json!({"status": "running", "rebuild": {"position": 3, "total": 9}})));
        assert!(!rebuilding(&json!({"status": "running", "rebuild": null})));
        assert!(!rebuilding(&json!({"status": "running", "rebuild": {"state": "done"}})));
    }
}
