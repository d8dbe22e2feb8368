//! The REST surface of docs/api.md §2, on actix-web. One file per resource; request parsing in `body`, every
//! error mapped in `error`. Handlers authenticate first (401/403 come before any validation), then parse into
//! domain values, then call an actor (commands) or a view (queries).

pub mod admin;
pub mod asyncapi;
pub mod body;
pub mod console;
pub mod error;
pub mod limits;
pub mod openapi;
pub mod ops;
pub mod orders;
pub mod request_metrics;
pub mod revenue;
pub mod schemas;
pub mod server;

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::actors::OrderRegistry;
use crate::actors::projections::Projections;
use crate::auth::{Authenticator, Principal};
use crate::feed::FeedHealth;
use crate::store::EventStore;
use crate::trace::TraceParent;
use crate::views::{RevenueView, SearchView};
use error::ApiError;
use request_metrics::route;

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
    pub audit: Arc<dyn crate::audit::AuditLog>,
    pub limits: limits::RateLimits,
    pub prometheus: PrometheusHandle,
    pub min_version_wait: Duration,
    /// Longest request target accepted (`server.max_uri_bytes`).
    pub max_uri_bytes: usize,
    /// The last round of readiness checks (`/health/ready`).
    pub readiness: ops::ReadinessCache,
    /// Searches running at once (`GET /orders`).
    pub search_slots: limits::SearchSlots,
    /// How long a request body may take to arrive (`server.body_timeout_ms`).
    pub body_timeout: Duration,
}

impl AppState {
    /// The caller, from `Authorization: Bearer …`; 401 otherwise.
    /// Then draws from the caller's rate-limit bucket: 429 when it is empty, and for a refused token, from the
    /// client IP's, so that guessing tokens is limited too.
    pub async fn principal(&self, req: &HttpRequest) -> Result<Principal, ApiError> {
        let header = req.headers().get(actix_web::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        match self.auth.authenticate(header).await {
            Ok(principal) => {
                if self.limits.enabled() {
                    // With auth off everyone is "anonymous": one bucket per client then, not one for all.
                    let key = if self.auth.enabled() { principal.subject.clone() } else { limits::client_ip(req) };
                    self.limits.check(limits::RouteClass::of(req), &key).map_err(ApiError::RateLimited)?;
                }
                Ok(principal)
            }
            Err(e) => {
                tracing::debug!(error = %e, "request refused: bad token");
                if self.limits.enabled() {
                    let ip = limits::client_ip(req);
                    self.limits.check(limits::RouteClass::Anonymous, &ip).map_err(ApiError::RateLimited)?;
                }
                Err(ApiError::Unauthorized)
            }
        }
    }

    /// The caller, who must be an admin; 401 / 403 otherwise.
    pub async fn admin(&self, req: &HttpRequest) -> Result<Principal, ApiError> {
        let principal = self.principal(req).await?;
        if principal.is_admin() { Ok(principal) } else { Err(ApiError::Forbidden) }
    }
}

/// All routes. Unknown routes are 404 `not_found`, known routes with another method 405, both problem+json.
/// Every resource is made by [`route`], so its requests are counted under its template.
pub fn routes(cfg: &mut web::ServiceConfig) {
    api_routes(cfg);
    console_routes(cfg);
}

/// The API of docs/api.md §2, every one of them described in `/openapi.json` (tests/api/openapi.rs checks).
fn api_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        route("/orders")
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
    .service(get("/asyncapi.json", asyncapi::document))
    .service(get("/admin/projections", admin::projections))
    .service(get("/admin/parked", admin::parked))
    .service(get("/admin/audit", admin::audit_log))
    .service(route("/admin/parked/{id}").route(web::delete().to(admin::discard)).default_service(not_allowed("DELETE")))
    .service(post("/admin/parked/{id}/replay", admin::replay))
    .service(post("/admin/projections/{name}/rebuild", admin::rebuild))
    .default_service(web::to(|| async { ApiError::RouteNotFound.error_response_owned() }));
}

/// The admin console's page and assets: a UI over the API, not part of it (so not in `/openapi.json`).
fn console_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(get("/console", console::page))
        .service(get("/console/", console::page))
        .service(get("/console/app.js", console::script))
        .service(get("/console/app.css", console::style))
        .service(get("/console/uplot.js", console::chart_script))
        .service(get("/console/uplot.css", console::chart_style));
}

fn get<F, Args>(path: &'static str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    route(path).route(web::get().to(handler)).default_service(not_allowed("GET"))
}

fn post<F, Args>(path: &'static str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    route(path).route(web::post().to(handler)).default_service(not_allowed("POST"))
}

/// 414 `uri_too_long` for a request target longer than `server.max_uri_bytes`, before routing (so before any
/// handler, extractor or log line sees it).
pub async fn limit_uri(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<
    actix_web::dev::ServiceResponse<actix_web::body::EitherBody<impl actix_web::body::MessageBody>>,
    actix_web::Error,
> {
    let max = req.app_data::<web::Data<AppState>>().map_or(usize::MAX, |s| s.max_uri_bytes);
    let length = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if length > max {
        let response = ApiError::UriTooLong(max).error_response_owned();
        return Ok(req.into_response(response).map_into_right_body());
    }
    next.call(req).await.map(actix_web::dev::ServiceResponse::map_into_left_body)
}

/// Every request runs in a span (`http.request`) with the W3C trace it belongs to: the caller's `traceparent`
/// continued, or a new trace. Handlers find it in the request's extensions; commands store it with their events.
pub async fn trace_request(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    use actix_web::HttpMessage;
    use tracing::Instrument;
    let incoming = req.headers().get("traceparent").and_then(|v| v.to_str().ok()).and_then(TraceParent::parse);
    // The caller's span is this one's parent; without one, a new trace whose root is this request.
    let parent = incoming.unwrap_or_else(TraceParent::root);
    let trace = parent.child();
    req.extensions_mut().insert(trace);
    let span = tracing::info_span!(
        "http.request",
        method = %req.method(),
        path = %req.path(),
        trace_id = %trace.trace_id(),
        span_id = %trace.span_id(),
        status = tracing::field::Empty,
    );
    #[cfg(feature = "otlp")]
    crate::telemetry::otlp::set_parent(&span, &parent);
    let response = next.call(req).instrument(span.clone()).await?;
    span.record("status", response.status().as_u16());
    Ok(response)
}

/// The trace of a request (see [`trace_request`]).
pub fn request_trace(req: &HttpRequest) -> Option<TraceParent> {
    use actix_web::HttpMessage;
    req.extensions().get::<TraceParent>().copied()
}

/// CORS for the configured origins (none: no CORS headers, browsers keep other origins out).
pub fn cors(origins: &[String]) -> actix_cors::Cors {
    use actix_web::http::header::{AUTHORIZATION, CONTENT_TYPE, ETAG, IF_MATCH, LOCATION, RETRY_AFTER};
    let cors = origins.iter().fold(actix_cors::Cors::default(), |cors, origin| cors.allowed_origin(origin));
    cors.allowed_methods(["GET", "POST", "DELETE"])
        .allowed_headers([AUTHORIZATION, CONTENT_TYPE, IF_MATCH])
        .allowed_header("Idempotency-Key")
        .expose_headers([ETAG, LOCATION, RETRY_AFTER])
        .expose_headers(["Idempotent-Replayed", "X-Consistency"])
        .max_age(3600)
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
