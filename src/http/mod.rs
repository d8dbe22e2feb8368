//! The REST surface of API.md §2, on actix-web. One file per resource; request parsing in `body`, every
//! error mapped in `error`. Handlers authenticate first (401/403 come before any validation), then parse into
//! domain values, then call an actor (commands) or a view (queries).

pub mod admin;
pub mod body;
pub mod error;
pub mod ops;
pub mod orders;
pub mod revenue;

use std::sync::Arc;
use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::actors::OrderRegistry;
use crate::actors::projector::Projections;
use crate::auth::{Authenticator, Principal};
use crate::store::EventStore;
use crate::views::{RevenueView, SearchView};
use error::ApiError;

/// What the handlers share (behind `web::Data`).
pub struct AppState {
    pub registry: OrderRegistry,
    pub store: Arc<dyn EventStore>,
    pub search: Arc<dyn SearchView>,
    pub revenue: Arc<dyn RevenueView>,
    pub projections: Projections,
    pub auth: Authenticator,
    pub prometheus: PrometheusHandle,
    pub min_version_wait: Duration,
}

impl AppState {
    /// The caller, from `Authorization: Bearer …`; 401 otherwise.
    pub fn principal(&self, req: &HttpRequest) -> Result<Principal, ApiError> {
        let header = req.headers().get(actix_web::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        self.auth.authenticate(header).map_err(|e| {
            tracing::debug!(error = %e, "request refused: bad token");
            ApiError::Unauthorized
        })
    }

    /// The caller, who must be an admin; 401 / 403 otherwise.
    pub fn admin(&self, req: &HttpRequest) -> Result<Principal, ApiError> {
        let principal = self.principal(req)?;
        if principal.is_admin() { Ok(principal) } else { Err(ApiError::Forbidden) }
    }
}

/// All routes. Unknown routes are 404 `not_found`, known routes with another method 405, both problem+json.
pub fn routes(cfg: &mut web::ServiceConfig) {
    let not_allowed = || web::to(|| async { ApiError::MethodNotAllowed.error_response_owned() });
    cfg.service(
        web::resource("/orders")
            .route(web::post().to(orders::place))
            .route(web::get().to(orders::search))
            .default_service(not_allowed()),
    )
    .service(web::resource("/orders/{id}").route(web::get().to(orders::get)).default_service(not_allowed()))
    .service(
        web::resource("/orders/{id}/history").route(web::get().to(orders::history)).default_service(not_allowed()),
    )
    .service(
        web::resource("/orders/{id}/confirm-payment")
            .route(web::post().to(orders::confirm_payment))
            .default_service(not_allowed()),
    )
    .service(web::resource("/orders/{id}/ship").route(web::post().to(orders::ship)).default_service(not_allowed()))
    .service(web::resource("/orders/{id}/cancel").route(web::post().to(orders::cancel)).default_service(not_allowed()))
    .service(web::resource("/revenue/daily").route(web::get().to(revenue::daily)).default_service(not_allowed()))
    .service(web::resource("/metrics").route(web::get().to(ops::metrics)).default_service(not_allowed()))
    .service(web::resource("/health/live").route(web::get().to(ops::live)).default_service(not_allowed()))
    .service(web::resource("/health/ready").route(web::get().to(ops::ready)).default_service(not_allowed()))
    .service(
        web::resource("/admin/projections").route(web::get().to(admin::projections)).default_service(not_allowed()),
    )
    .default_service(web::to(|| async { ApiError::RouteNotFound.error_response_owned() }));
}

impl ApiError {
    fn error_response_owned(self) -> HttpResponse {
        actix_web::ResponseError::error_response(&self)
    }
}
