//! `/admin/*` (admin only): the projections' state, their parked (poison) events, replay and discard.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::AppState;
use super::error::ApiError;
use crate::actors::projections::RebuildError;
use crate::audit::{self, AuditEntry};
use crate::auth::Principal;
use crate::domain::OrderEvent;
use crate::projection::parking::{ParkingError, ReplayReport};
use crate::views::parked::ParkedEvent;

/// `GET /admin/projections`: `[{name, status, position, lagSeconds, restarts, parked}]`.
#[utoipa::path(
    get, path = "/admin/projections", tag = "admin", operation_id = "projections",
    summary = "The projections' state",
    responses(
        (status = 200, description = "One row per projection", body = Vec<crate::projection::ProjectionInfo>),
        super::schemas::Unauthorized,
        super::schemas::Forbidden,
    ),
)]
pub async fn projections(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.admin(&req).await?;
    Ok(HttpResponse::Ok().json(state.projections.infos()))
}

/// The event inside a parked entry, in the shape of `/orders/{id}/history`, plus its order.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct ParkedEventBody<'a> {
    order_id: &'a str,
    event_id: String,
    version: u64,
    occurred_at: DateTime<Utc>,
    #[serde(flatten)]
    event: &'a OrderEvent,
}

/// One parked (poison) event: the projection it failed in, the event, the last error and the attempts.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct ParkedBody<'a> {
    id: &'a str,
    projection: &'a str,
    event: ParkedEventBody<'a>,
    error: &'a str,
    attempts: u32,
    parked_at: DateTime<Utc>,
}

impl<'a> From<&'a ParkedEvent> for ParkedBody<'a> {
    fn from(p: &'a ParkedEvent) -> Self {
        ParkedBody {
            id: &p.id,
            projection: &p.projection,
            event: ParkedEventBody {
                order_id: p.event.order_id.as_str(),
                event_id: p.event.event_id.to_string(),
                version: p.event.version,
                occurred_at: p.event.occurred_at(),
                event: &p.event.event,
            },
            error: &p.error,
            attempts: p.attempts,
            parked_at: p.parked_at,
        }
    }
}

/// `GET /admin/parked`: every parked event, oldest first.
#[utoipa::path(
    get, path = "/admin/parked", tag = "admin", operation_id = "parkedEvents",
    summary = "Parked (poison) events, oldest first",
    responses(
        (status = 200, description = "Every parked event", body = Vec<ParkedBody>),
        super::schemas::Unauthorized, super::schemas::Forbidden, super::schemas::Unavailable,
    ),
)]
pub async fn parked(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.admin(&req).await?;
    let parked = state.projections.parked().await?;
    Ok(HttpResponse::Ok().json(parked.iter().map(ParkedBody::from).collect::<Vec<_>>()))
}

/// The parked event named in the path, and the parking lot of its projection.
async fn find(
    req: &HttpRequest,
    state: &AppState,
) -> Result<(ParkedEvent, crate::projection::parking::ParkingLot), ApiError> {
    let id = req.match_info().get("id").unwrap_or_default();
    let parked = state.projections.parked().await?;
    let entry = parked.into_iter().find(|p| p.id == id).ok_or(ApiError::ParkedNotFound)?;
    let lot = state.projections.lot(&entry.projection).cloned().ok_or(ApiError::ParkedNotFound)?;
    Ok((entry, lot))
}

/// Records an admin action and how it ended in the audit log, then hands the answer on.
async fn audited(
    state: &AppState,
    admin: &Principal,
    action: &str,
    target: &str,
    detail: serde_json::Value,
    answer: Result<HttpResponse, ApiError>,
) -> Result<HttpResponse, ApiError> {
    let outcome = match &answer {
        Ok(_) => "ok".to_owned(),
        Err(e) => format!("failed: {}", e.code()),
    };
    audit::record(state.audit.as_ref(), AuditEntry::new(&admin.subject, action, target, outcome, detail)).await;
    answer
}

fn parked_detail(parked: &ParkedEvent) -> serde_json::Value {
    serde_json::json!({
        "projection": parked.projection,
        "orderId": parked.event.order_id.as_str(),
        "version": parked.event.version,
        "type": parked.event.event.type_name(),
    })
}

fn answer(result: Result<ReplayReport, ParkingError>) -> Result<HttpResponse, ApiError> {
    match result {
        Ok(ReplayReport { error: Some(error), .. }) => Err(ApiError::ReplayFailed(error)),
        Ok(report) => Ok(HttpResponse::Ok().json(report)),
        Err(ParkingError::NotFound(_)) => Err(ApiError::ParkedNotFound),
        Err(e @ ParkingError::NotFirst { .. }) => Err(ApiError::ParkedNotFirst(e.to_string())),
        Err(ParkingError::View(e)) => Err(e.into()),
    }
}

/// `POST /admin/parked/{id}/replay`: applies the parked event now and, if it succeeds, the events of the same
/// order parked behind it, in order. 409 `replay_failed` if it fails again (it stays parked).
#[utoipa::path(
    post, path = "/admin/parked/{id}/replay", tag = "admin", operation_id = "replayParked",
    summary = "Retry one parked event now",
    params(("id" = String, Path, description = "The parked event's id")),
    responses(
        (status = 200, description = "What the replay did", body = crate::projection::parking::ReplayReport),
        super::schemas::Unauthorized, super::schemas::Forbidden, super::schemas::ParkedNotFound,
        super::schemas::ParkedConflict, super::schemas::Unavailable,
    ),
)]
pub async fn replay(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let admin = state.admin(&req).await?;
    let (parked, lot) = find(&req, &state).await?;
    let result = answer(lot.replay(&parked.id).await);
    audited(&state, &admin, "parked.replay", &parked.id, parked_detail(&parked), result).await
}

/// `DELETE /admin/parked/{id}`: discards the parked event (logged) and lets the events behind it proceed.
#[utoipa::path(
    delete, path = "/admin/parked/{id}", tag = "admin", operation_id = "discardParked",
    summary = "Discard one parked event (logged)",
    params(("id" = String, Path, description = "The parked event's id")),
    responses(
        (status = 200, description = "What the discard did", body = crate::projection::parking::ReplayReport),
        super::schemas::Unauthorized, super::schemas::Forbidden, super::schemas::ParkedNotFound,
        super::schemas::ParkedConflict, super::schemas::Unavailable,
    ),
)]
pub async fn discard(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let admin = state.admin(&req).await?;
    let (parked, lot) = find(&req, &state).await?;
    let result = answer(lot.discard(&parked.id).await);
    audited(&state, &admin, "parked.discard", &parked.id, parked_detail(&parked), result).await
}

/// `POST /admin/projections/{name}/rebuild`: 202; the view is rebuilt from the write model into a fresh copy
/// and swapped in, while queries go on being served from the current one. Progress: `GET /admin/projections`.
#[utoipa::path(
    post, path = "/admin/projections/{name}/rebuild", tag = "admin", operation_id = "rebuildProjection",
    summary = "Rebuild a view from the write model",
    params(("name" = String, Path, description = "The projection: `search` or `revenue`")),
    responses(
        (status = 202, description = "The rebuild started", body = Object),
        super::schemas::Unauthorized, super::schemas::Forbidden, super::schemas::ProjectionNotFound,
        super::schemas::RebuildInProgress, super::schemas::Unavailable,
    ),
)]
pub async fn rebuild(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let admin = state.admin(&req).await?;
    let name = req.match_info().get("name").unwrap_or_default();
    let result = match state.projections.rebuild(name).await {
        Ok(()) => Ok(HttpResponse::Accepted().json(serde_json::json!({"projection": name, "status": "rebuilding"}))),
        Err(RebuildError::UnknownProjection(_)) => Err(ApiError::ProjectionNotFound),
        Err(e @ RebuildError::AlreadyRunning(_)) => Err(ApiError::RebuildInProgress(e.to_string())),
        Err(RebuildError::Unavailable(why)) => {
            tracing::warn!(projection = name, error = %why, "rebuild could not start");
            Err(ApiError::Unavailable)
        }
    };
    audited(&state, &admin, "projection.rebuild", name, serde_json::json!({"projection": name}), result).await
}

/// The query of `GET /admin/audit`.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// How many entries, 1-1000 (default 100).
    limit: Option<String>,
    /// `nextCursor` of the previous page: entries older than it.
    cursor: Option<String>,
}

/// A page of the audit log, newest first.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct AuditPage {
    entries: Vec<AuditEntry>,
    /// Pass as `cursor` for the next (older) page; null on the last page.
    next_cursor: Option<String>,
}

/// `GET /admin/audit`: the admin actions, newest first: who did what to what, when, and how it ended.
#[utoipa::path(
    get, path = "/admin/audit", tag = "admin", operation_id = "auditLog",
    summary = "The audit log of admin actions, newest first",
    params(AuditQuery),
    responses(
        (status = 200, description = "A page of the audit log", body = AuditPage),
        super::schemas::ValidationFailed, super::schemas::Unauthorized, super::schemas::Forbidden,
        super::schemas::Unavailable,
    ),
)]
pub async fn audit_log(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.admin(&req).await?;
    let query = web::Query::<AuditQuery>::from_query(req.query_string())
        .map_err(|_| ApiError::field("query", "unknown or malformed query parameter"))?;
    let limit = match query.limit.as_deref() {
        None => 100,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| ApiError::field("limit", "must be an integer from 1 to 1000"))?,
    };
    let cursor = match query.cursor.as_deref() {
        Some(c) if uuid::Uuid::parse_str(c).is_err() => {
            return Err(ApiError::field("cursor", "not a cursor of this log"));
        }
        other => other,
    };
    let entries = state.audit.recent(limit + 1, cursor).await.map_err(|e| {
        tracing::warn!(error = %e, "audit log unreadable");
        ApiError::Unavailable
    })?;
    let more = entries.len() > limit;
    let entries: Vec<AuditEntry> = entries.into_iter().take(limit).collect();
    let next_cursor = if more { entries.last().map(|e| e.id.clone()) } else { None };
    Ok(HttpResponse::Ok().json(AuditPage { entries, next_cursor }))
}
