//! Operations routes, open without a token: `/metrics` (Prometheus text) and `/health/live|ready`.

use std::collections::BTreeMap;

use actix_web::{HttpResponse, web};
use serde::Serialize;

use super::AppState;

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
    HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(state.prometheus.render())
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
    description = "Checks every backend (event store, views) and every projector.",
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
    let (store, search, revenue) = tokio::join!(state.store.ping(), state.search.ping(), state.revenue.ping());
    check("eventStore".to_owned(), store.map_err(|e| e.to_string()));
    check("searchView".to_owned(), search.map_err(|e| e.to_string()));
    check("revenueView".to_owned(), revenue.map_err(|e| e.to_string()));
    for info in state.projections.infos() {
        let healthy = state.projections.status(info.name).is_some_and(|s| s.healthy());
        let result = if healthy { Ok(()) } else { Err(format!("{:?}", info.status).to_lowercase()) };
        check(format!("projection:{}", info.name), result);
    }
    let body = Health { status: if ok { "ok" } else { "unavailable" }, checks };
    if ok { HttpResponse::Ok().json(body) } else { HttpResponse::ServiceUnavailable().json(body) }
}
