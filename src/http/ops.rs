//! Operations routes, open without a token: `/metrics` (Prometheus text) and `/health/live|ready`. Readiness
//! shows the causes of failing checks to admins only, and runs its backend calls at most once a second.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;

use super::AppState;

/// How long one readiness check may take. A backend that hangs (a frozen process, a black-holed connection)
/// would otherwise hold the probe for as long as its adapter's own timeouts (10 s for Meilisearch), and the
/// prober would give up on us without learning which check failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// One backend check, cut off after [`CHECK_TIMEOUT`].
async fn bounded<E: Display>(check: impl Future<Output = Result<(), E>>) -> Result<(), String> {
    match tokio::time::timeout(CHECK_TIMEOUT, check).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
    }
}

/// `status` is `ok` or `unavailable`; `checks` names each check with `ok` or `failing: <why>`.
#[derive(Serialize, utoipa::ToSchema)]
struct Health {
    status: &'static str,
    checks: BTreeMap<String, String>,
}

/// Prometheus text exposition format 0.0.4.
#[utoipa::path(
    get, path = "/metrics", tag = "operations", operation_id = "metrics",
    summary = "Prometheus metrics",
    security(()),
    responses((
        status = 200, description = "Prometheus text exposition format 0.0.4",
        body = String, content_type = "text/plain; version=0.0.4; charset=utf-8",
    )),
)]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(crate::telemetry::render(&state.prometheus))
}

/// The process is up and serving.
#[utoipa::path(
    get, path = "/health/live", tag = "operations", operation_id = "live",
    summary = "Liveness",
    security(()),
    responses((status = 200, description = "The process is up and serving", body = Health)),
)]
pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok", checks: BTreeMap::new() })
}

/// How long one round of readiness checks is reused. A probe every few seconds (Kubernetes, a load balancer)
/// always sees fresh results; a flood of probes costs one round of backend calls per second, not one per probe.
const READY_CACHE: Duration = Duration::from_secs(1);

/// One round of readiness checks: each check's name and its failure, if any.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: BTreeMap<String, Result<(), String>>,
}

impl Readiness {
    fn ok(&self) -> bool {
        self.checks.values().all(Result::is_ok)
    }

    /// The body: with `details`, each failure's cause (backend errors can name tables, brokers and URLs, so
    /// only admins see them); without, `ok` or `failing`.
    fn body(&self, details: bool) -> Health {
        let checks = self
            .checks
            .iter()
            .map(|(name, result)| {
                let value = match result {
                    Ok(()) => "ok".to_owned(),
                    Err(e) if details => format!("failing: {e}"),
                    Err(_) => "failing".to_owned(),
                };
                (name.clone(), value)
            })
            .collect();
        Health { status: if self.ok() { "ok" } else { "unavailable" }, checks }
    }
}

/// The last round of checks and when it ran. Probes that arrive while a round runs wait for it and share its
/// result (the lock is held across the round).
#[derive(Default)]
pub struct ReadinessCache {
    last: tokio::sync::Mutex<Option<(tokio::time::Instant, Readiness)>>,
}

impl ReadinessCache {
    /// The last round if it is younger than [`READY_CACHE`], else a new one from `round`.
    pub async fn get<F: Future<Output = Readiness>>(&self, round: impl FnOnce() -> F) -> Readiness {
        let mut last = self.last.lock().await;
        if let Some((at, readiness)) = last.as_ref()
            && at.elapsed() < READY_CACHE
        {
            return readiness.clone();
        }
        let readiness = round().await;
        *last = Some((tokio::time::Instant::now(), readiness.clone()));
        readiness
    }
}

/// Every backend answers and every projector is healthy; 503 names the failing checks.
#[utoipa::path(
    get, path = "/health/ready", tag = "operations", operation_id = "ready",
    summary = "Readiness",
    description = "Checks every backend (event store, event feed broker, views) and every projector. Without a \
        token each check is `ok` or `failing`; with an admin token a failing check says why. Results are reused \
        for one second.",
    security(()),
    responses(
        (status = 200, description = "Ready: every check is `ok`", body = Health),
        (status = 503, description = "Not ready: the failing checks are named (with an admin token, with their cause)", body = Health),
    ),
)]
pub async fn ready(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let readiness = state.readiness.get(|| checks(&state)).await;
    // Details for an admin only; a missing or refused token is simply not an admin (this route stays open). A
    // token that is sent is checked as on any route, rate limits included, so this is no free token oracle.
    let details = req.headers().contains_key(actix_web::http::header::AUTHORIZATION)
        && state.principal(&req).await.is_ok_and(|p| p.is_admin());
    let body = readiness.body(details);
    if readiness.ok() { HttpResponse::Ok().json(body) } else { HttpResponse::ServiceUnavailable().json(body) }
}

/// One round: the four backends at once, then the projectors.
async fn checks(state: &AppState) -> Readiness {
    let mut checks = BTreeMap::new();
    let (store, feed, search, revenue) = tokio::join!(
        bounded(state.store.ping()),
        bounded(state.feed.ping()),
        bounded(state.search.ping()),
        bounded(state.revenue.ping())
    );
    checks.insert("eventStore".to_owned(), store);
    checks.insert("feed".to_owned(), feed);
    checks.insert("searchView".to_owned(), search);
    checks.insert("revenueView".to_owned(), revenue);
    for info in state.projections.infos() {
        let healthy = state.projections.status(info.name).is_some_and(|s| s.healthy());
        let result = if healthy { Ok(()) } else { Err(format!("{:?}", info.status).to_lowercase()) };
        checks.insert(format!("projection:{}", info.name), result);
    }
    Readiness { checks }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_probes_share_one_round_and_a_round_is_reused_for_a_second() {
        let cache = Arc::new(ReadinessCache::default());
        let rounds = Arc::new(AtomicUsize::new(0));
        let probe = |cache: Arc<ReadinessCache>, rounds: Arc<AtomicUsize>| async move {
            cache
                .get(|| async move {
                    rounds.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Readiness { checks: BTreeMap::from([("x".to_owned(), Err("table t_events: down".to_owned()))]) }
                })
                .await
        };
        let probes: Vec<_> = (0..20).map(|_| tokio::spawn(probe(cache.clone(), rounds.clone()))).collect();
        for p in probes {
            let readiness = p.await.expect("probe");
            assert_eq!(readiness.body(false).checks["x"], "failing", "no cause without details");
            assert_eq!(readiness.body(true).checks["x"], "failing: table t_events: down");
        }
        assert_eq!(rounds.load(Ordering::SeqCst), 1, "one round for concurrent probes");
        probe(cache.clone(), rounds.clone()).await;
        assert_eq!(rounds.load(Ordering::SeqCst), 1, "reused within a second");
        tokio::time::sleep(READY_CACHE + Duration::from_millis(50)).await;
        probe(cache.clone(), rounds.clone()).await;
        assert_eq!(rounds.load(Ordering::SeqCst), 2, "checked again after a second");
    }
}
