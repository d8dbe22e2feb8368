//! Operations routes, open without a token: `/metrics` (Prometheus text) and `/health/live|ready`.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use actix_web::{HttpResponse, web};
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

/// Every backend answers and every projector is healthy; 503 names the failing checks.
#[utoipa::path(
    get, path = "/health/ready", tag = "operations", operation_id = "ready",
    summary = "Readiness",
    description = "Checks every backend (event store, event feed broker, views) and every projector.",
    security(()),
    responses(
        (status = 200, description = "Ready: every check is `ok`", body = Health),
        (status = 503, description = "Not ready: the failing checks say why", body = Health),
    ),
)]
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let mut checks = BTreeMap::new();
    let mut ok = true;
    let mut check = |name: String, result: Result<(), String>| {
        ok &= result.is_ok();
        checks.insert(name, result.map_or_else(|e| format!("failing: {e}"), |()| "ok".to_owned()));
    };
    let (store, feed, search, revenue) = tokio::join!(
        bounded(state.store.ping()),
        bounded(state.feed.ping()),
        bounded(state.search.ping()),
        bounded(state.revenue.ping())
    );
    check("eventStore".to_owned(), store);
    check("feed".to_owned(), feed);
    check("searchView".to_owned(), search);
    check("revenueView".to_owned(), revenue);
    for info in state.projections.infos() {
        let healthy = state.projections.status(info.name).is_some_and(|s| s.healthy());
        let result = if healthy { Ok(()) } else { Err(format!("{:?}", info.status).to_lowercase()) };
        check(format!("projection:{}", info.name), result);
    }
    let body = Health { status: if ok { "ok" } else { "unavailable" }, checks };
    if ok { HttpResponse::Ok().json(body) } else { HttpResponse::ServiceUnavailable().json(body) }
}
