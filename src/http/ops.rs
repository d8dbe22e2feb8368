//! Operations routes, open without a token: `/metrics` (Prometheus text) and `/health/live|ready`.

use std::collections::BTreeMap;

use actix_web::{HttpResponse, web};
use serde::Serialize;

use super::AppState;

#[derive(Serialize)]
struct Health {
    status: &'static str,
    checks: BTreeMap<String, String>,
}

/// Prometheus text exposition format 0.0.4.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(state.prometheus.render())
}

/// The process is up and serving.
pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok", checks: BTreeMap::new() })
}

/// Every backend answers and every projector is healthy; 503 names the failing checks.
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let mut checks = BTreeMap::new();
    let mut ok = true;
    let mut check = |name: String, result: Result<(), String>| {
        ok &= result.is_ok();
        checks.insert(name, result.map_or_else(|e| format!("failing: {e}"), |()| "ok".to_owned()));
    };
    check("eventStore".to_owned(), state.store.ping().await.map_err(|e| e.to_string()));
    for info in state.projections.infos() {
        let healthy = state.projections.status(info.name).is_some_and(|s| s.healthy());
        let result = if healthy { Ok(()) } else { Err(format!("{:?}", info.status).to_lowercase()) };
        check(format!("projection:{}", info.name), result);
    }
    let body = Health { status: if ok { "ok" } else { "unavailable" }, checks };
    if ok { HttpResponse::Ok().json(body) } else { HttpResponse::ServiceUnavailable().json(body) }
}
