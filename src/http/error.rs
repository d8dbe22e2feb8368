//! Every error the API answers with, mapped in one place to an RFC 9457 `application/problem+json` body
//! `{type, title, status, detail, code}` (+ `errors` for validation). Infrastructure failures become 503 with
//! `Retry-After` and a generic detail: causes are logged, never sent.
//!
//! A 503 also says whether the request may have had an effect (`outcome`, docs/api.md §2): `not_applied`
//! ([`ApiError::Unavailable`]) when it surely had none (load shed, a read that failed, a write the store refused
//! or never received), `unknown` ([`ApiError::OutcomeUnknown`]) when a write was sent and its answer never came.
//! Only the store adapters can tell the two apart (`store::AppendError::Unknown`), so only they decide it; every
//! other 503 is a refusal before anything was written.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::actors::CommandError;
use crate::domain::{FieldError, OrderError};
use crate::store::{StoreUnavailable, StoredResponse};
use crate::views::ViewError;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// Seconds a client should wait before retrying a 503.
const RETRY_AFTER_SECS: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidJson(String),
    #[error("the request has invalid fields")]
    Validation(Vec<FieldError>),
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("the request body must be application/json")]
    UnsupportedMediaType,
    #[error("no such route")]
    RouteNotFound,
    #[error("this route does not allow the method")]
    MethodNotAllowed,
    #[error("the order does not exist")]
    OrderNotFound,
    #[error("a valid bearer token is required")]
    Unauthorized,
    #[error("the caller may not do this")]
    Forbidden,
    #[error("the order is at version {current}, not the one in If-Match")]
    VersionConflict { current: u64 },
    #[error("{0}")]
    Rule(OrderError),
    #[error("the order was changed concurrently; retry")]
    WriteConflict,
    #[error("this Idempotency-Key was used with a different request body")]
    IdempotencyKeyReused,
    #[error("the service is unavailable; retry later")]
    Unavailable,
    #[error(
        "the service is unavailable and a write it sent went unanswered, so it may have been applied; retry with the same Idempotency-Key"
    )]
    OutcomeUnknown,
    #[error("no parked event with this id")]
    ParkedNotFound,
    #[error("{0}")]
    ParkedNotFirst(String),
    #[error("the parked event failed again: {0}")]
    ReplayFailed(String),
    #[error("no projection with this name")]
    ProjectionNotFound,
    #[error("{0}")]
    RebuildInProgress(String),
    #[error("too many requests; retry after {} s", retry_after_secs(*.0))]
    RateLimited(std::time::Duration),
    #[error("the request target (path and query) is longer than {0} bytes")]
    UriTooLong(usize),
    #[error("the request body did not arrive in time")]
    RequestTimeout,
}

/// `Retry-After` for a wait: whole seconds, rounded up, at least 1.
fn retry_after_secs(wait: std::time::Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'static str,
    status: u16,
    detail: String,
    code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a [FieldError]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<&'static str>,
}

impl ApiError {
    /// A field rule broken by a query parameter or header (422 with one entry).
    pub fn field(field: &str, message: &str) -> Self {
        ApiError::Validation(vec![FieldError::new(field, message)])
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidJson(_) => "invalid_json",
            Self::Validation(_) => "validation_failed",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::RouteNotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::OrderNotFound | Self::Rule(OrderError::NotFound) => "order_not_found",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::VersionConflict { .. } => "version_conflict",
            Self::Rule(OrderError::AlreadyExists) => "order_already_exists",
            Self::Rule(OrderError::AmountMismatch) => "amount_mismatch",
            Self::Rule(OrderError::PaymentAlreadyConfirmed) => "payment_already_confirmed",
            Self::Rule(OrderError::Cancelled) => "order_cancelled",
            Self::Rule(OrderError::NotPaid) => "order_not_paid",
            Self::Rule(OrderError::AlreadyShipped) => "order_already_shipped",
            Self::Rule(OrderError::AlreadyCancelled) => "order_already_cancelled",
            Self::WriteConflict => "write_conflict",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::Unavailable | Self::OutcomeUnknown => "unavailable",
            Self::ParkedNotFound => "not_found",
            Self::ParkedNotFirst(_) => "not_first_parked",
            Self::ReplayFailed(_) => "replay_failed",
            Self::ProjectionNotFound => "not_found",
            Self::RebuildInProgress(_) => "rebuild_in_progress",
            Self::RateLimited(_) => "rate_limited",
            Self::UriTooLong(_) => "uri_too_long",
            Self::RequestTimeout => "request_timeout",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            Self::InvalidJson(_) => "Malformed JSON",
            Self::Validation(_) => "Validation failed",
            Self::PayloadTooLarge(_) => "Payload too large",
            Self::UnsupportedMediaType => "Unsupported media type",
            Self::RouteNotFound => "Not found",
            Self::MethodNotAllowed => "Method not allowed",
            Self::OrderNotFound | Self::Rule(OrderError::NotFound) => "Order not found",
            Self::Unauthorized => "Unauthorized",
            Self::Forbidden => "Forbidden",
            Self::VersionConflict { .. } => "Version conflict",
            Self::Rule(OrderError::AmountMismatch) | Self::IdempotencyKeyReused => "Unprocessable request",
            Self::Rule(_)
            | Self::WriteConflict
            | Self::ParkedNotFirst(_)
            | Self::ReplayFailed(_)
            | Self::RebuildInProgress(_) => "Conflict",
            Self::Unavailable | Self::OutcomeUnknown => "Service unavailable",
            Self::ParkedNotFound | Self::ProjectionNotFound => "Not found",
            Self::RateLimited(_) => "Too many requests",
            Self::UriTooLong(_) => "URI too long",
            Self::RequestTimeout => "Request timeout",
        }
    }

    /// With a 503: whether the request may have had an effect (`not_applied` or `unknown`).
    pub fn outcome(&self) -> Option<&'static str> {
        match self {
            Self::Unavailable => Some("not_applied"),
            Self::OutcomeUnknown => Some("unknown"),
            _ => None,
        }
    }

    /// The problem document and status, as stored under an idempotency key.
    pub fn to_stored(&self) -> StoredResponse {
        let status = self.status_code().as_u16();
        let errors = match self {
            Self::Validation(errors) => Some(errors.as_slice()),
            _ => None,
        };
        let problem = Problem {
            kind: format!("urn:orderflow:problem:{}", self.code()),
            title: self.title(),
            status,
            detail: self.to_string(),
            code: self.code(),
            errors,
            outcome: self.outcome(),
        };
        StoredResponse {
            status,
            body: serde_json::to_string(&problem).unwrap_or_default(),
            etag: match self {
                Self::VersionConflict { current } => Some(format!("\"{current}\"")),
                _ => None,
            },
            location: None,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::InvalidJson(_) => StatusCode::BAD_REQUEST,
            Self::Validation(_) | Self::IdempotencyKeyReused | Self::Rule(OrderError::AmountMismatch) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::RouteNotFound
            | Self::OrderNotFound
            | Self::Rule(OrderError::NotFound)
            | Self::ParkedNotFound
            | Self::ProjectionNotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::VersionConflict { .. } => StatusCode::PRECONDITION_FAILED,
            Self::Rule(_)
            | Self::WriteConflict
            | Self::ParkedNotFirst(_)
            | Self::ReplayFailed(_)
            | Self::RebuildInProgress(_) => StatusCode::CONFLICT,
            Self::Unavailable | Self::OutcomeUnknown => StatusCode::SERVICE_UNAVAILABLE,
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = render(&self.to_stored(), false);
        let headers = response.headers_mut();
        match self {
            Self::Unavailable | Self::OutcomeUnknown => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
            }
            Self::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::RateLimited(wait) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs(*wait)));
            }
            // The rest of a late body may still be on its way: the connection is not reused.
            Self::RequestTimeout => {
                response.head_mut().set_connection_type(actix_web::http::ConnectionType::Close);
            }
            _ => {}
        }
        response
    }
}

/// Writes a stored (or fresh) response: status, body, `ETag`, `Location`, and `Idempotent-Replayed` on replays.
pub fn render(stored: &StoredResponse, replayed: bool) -> HttpResponse {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let content_type = if status.as_u16() >= 400 { PROBLEM_JSON } else { "application/json" };
    let mut builder = HttpResponse::build(status);
    builder.insert_header((header::CONTENT_TYPE, content_type));
    if let Some(etag) = &stored.etag {
        builder.insert_header((header::ETAG, etag.as_str()));
    }
    if let Some(location) = &stored.location {
        builder.insert_header((header::LOCATION, location.as_str()));
    }
    if replayed {
        builder.insert_header(("Idempotent-Replayed", "true"));
    }
    builder.body(stored.body.clone())
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Rule(rule) => ApiError::Rule(rule),
            CommandError::PreconditionFailed { current } => ApiError::VersionConflict { current },
            CommandError::WriteConflict => ApiError::WriteConflict,
            CommandError::IdempotencyKeyTaken => ApiError::IdempotencyKeyReused,
            CommandError::Unavailable(cause) => {
                tracing::warn!(%cause, "command failed on a dependency");
                ApiError::Unavailable
            }
            CommandError::Unknown(cause) => {
                tracing::warn!(%cause, "command failed on a dependency; its write may have been applied");
                ApiError::OutcomeUnknown
            }
        }
    }
}

impl From<StoreUnavailable> for ApiError {
    fn from(e: StoreUnavailable) -> Self {
        tracing::warn!(cause = %e, "event store unavailable");
        ApiError::Unavailable
    }
}

impl From<ViewError> for ApiError {
    fn from(e: ViewError) -> Self {
        tracing::warn!(cause = %e, "view unavailable");
        ApiError::Unavailable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(error: &ApiError) -> serde_json::Value {
        serde_json::from_str(&error.to_stored().body).unwrap()
    }

    #[test]
    fn a_503_says_whether_the_request_may_have_had_an_effect() {
        assert_eq!(problem(&ApiError::Unavailable)["outcome"], "not_applied");
        assert_eq!(problem(&ApiError::OutcomeUnknown)["outcome"], "unknown");
        assert_eq!(problem(&ApiError::OutcomeUnknown)["code"], "unavailable");
        assert_eq!(ApiError::OutcomeUnknown.status_code(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(ApiError::OutcomeUnknown.error_response().headers().contains_key(header::RETRY_AFTER));
        assert!(problem(&ApiError::WriteConflict).get("outcome").is_none());
        assert_eq!(ApiError::from(CommandError::Unknown("timeout".into())), ApiError::OutcomeUnknown);
        assert_eq!(ApiError::from(CommandError::Unavailable("refused".into())), ApiError::Unavailable);
    }
}
