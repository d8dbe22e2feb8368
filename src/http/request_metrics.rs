//! `orderflow_http_requests_total{route,method,status}` and `orderflow_http_request_duration_seconds{route,method}`
//! for every request, from one middleware.
//!
//! It runs on every request of the hot path, so it costs no allocation: each route carries its own
//! [`HttpRouteMetrics`] (its template and its cached metric handles) as resource data, registered by
//! [`route`]; the middleware finds it on the routed request in one type-keyed lookup, with no string built or
//! compared (`HttpRequest::match_pattern` would allocate the template each time). A request that matched no
//! route is counted under the fixed route `unmatched`, never under its raw path. Its future is a plain
//! wrapper of the inner one, not a boxed one.

use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::{Error, web};

use crate::telemetry::{self, HttpRouteMetrics};

/// A resource whose requests are counted under its template `path`.
pub fn route(path: &'static str) -> actix_web::Resource {
    web::resource(path).app_data(HttpRouteMetrics::new(path))
}

/// The middleware (wrap it outermost, so that it also sees answers given before routing).
pub struct RequestMetrics;

impl<S, B> Transform<S, ServiceRequest> for RequestMetrics
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Transform = RequestMetricsService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(RequestMetricsService { service }))
    }
}

pub struct RequestMetricsService<S> {
    service: S,
}

impl<S, B> Service<ServiceRequest> for RequestMetricsService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Future = Counted<S::Future>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let method = telemetry::http_method_label(req.method().as_str());
        Counted { inner: self.service.call(req), method, started: Instant::now() }
    }
}

pin_project_lite::pin_project! {
    /// The inner service's future; records the request when it completes.
    pub struct Counted<F> {
        #[pin]
        inner: F,
        method: &'static str,
        started: Instant,
    }
}

impl<F, B> Future for Counted<F>
where
    F: Future<Output = Result<ServiceResponse<B>, Error>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        // The routed request carries its resource's data; an error (rare: handlers answer with responses)
        // has no request left to ask, and counts as unmatched.
        let (metrics, status) = match &result {
            Ok(response) => (response.request().app_data::<HttpRouteMetrics>(), response.status()),
            Err(e) => (None, e.as_response_error().status_code()),
        };
        let metrics = metrics.unwrap_or_else(|| HttpRouteMetrics::unmatched());
        metrics.request_done(this.method, status.as_u16(), this.started.elapsed());
        Poll::Ready(result)
    }
}
