//! The REST surface of API.md §2, on actix-web. One file per resource; request parsing in `body`, every
//! error mapped in `error`. Handlers authenticate first (401/403 come before any validation), then parse into
//! domain values, then call an actor (commands) or a view (queries).

pub mod admin;
pub mod body;
pub mod error;
pub mod openapi;
pub mod ops;
pub mod orders;
pub mod revenue;

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::actors::OrderRegistry;
use crate::actors::projector::Projections;
use crate::auth::{Authenticator, Principal};
use crate::feed::FeedHealth;
use crate::store::EventStore;
use crate::views::{RevenueView, SearchView};
use error::ApiError;

/// What the handlers share (behind `web::Data`).
pub struct AppState {
    pub registry: OrderRegistry,
    pub store: Arc<dyn EventStore>,
    /// The event feed's broker, for readiness.
    pub feed: Arc<dyn FeedHealth>,
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
    cfg.service(
        web::resource("/orders")
            .route(web::post().to(orders::place))
            .route(web::get().to(orders::search))
            .default_service(not_allowed("GET, POST")),
    )
    .service(get("/orders/{id}", orders::get))
    .service(get("/orders/{id}/history", orders::history))
    .service(post("/orders/{id}/confirm-payment", orders::confirm_payment))
    .service(post("/orders/{id}/ship", orders::ship))
    .service(post("/orders/{id}/cancel", orders::cancel))
    .service(get("/revenue/daily", revenue::daily))
    .service(get("/metrics", ops::metrics))
    .service(get("/health/live", ops::live))
    .service(get("/health/ready", ops::ready))
    .service(get("/openapi.json", openapi::document))
    .service(get("/admin/projections", admin::projections))
    .service(get("/admin/parked", admin::parked))
    .service(
        web::resource("/admin/parked/{id}")
            .route(web::delete().to(admin::discard))
            .default_service(not_allowed("DELETE")),
    )
    .service(post("/admin/parked/{id}/replay", admin::replay))
    .service(post("/admin/projections/{name}/rebuild", admin::rebuild))
    .default_service(web::to(|| async { ApiError::RouteNotFound.error_response_owned() }));
}

fn get<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path).route(web::get().to(handler)).default_service(not_allowed("GET"))
}

fn post<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path).route(web::post().to(handler)).default_service(not_allowed("POST"))
}

/// 405 with the `Allow` header RFC 9110 §15.5.6 asks for.
fn not_allowed(allow: &'static str) -> actix_web::Route {
    web::to(move || async move {
        let mut response = ApiError::MethodNotAllowed.error_response_owned();
        response.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static(allow));
        response
    })
}

impl ApiError {
    fn error_response_owned(self) -> HttpResponse {
        actix_web::ResponseError::error_response(&self)
    }
}
