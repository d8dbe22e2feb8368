//! `/admin/*` (admin only): the projections' state.

use actix_web::{HttpRequest, HttpResponse, web};

use super::AppState;
use super::error::ApiError;

/// `GET /admin/projections`: `[{name, status, position, lagSeconds, restarts, parked}]`.
pub async fn projections(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.admin(&req)?;
    Ok(HttpResponse::Ok().json(state.projections.infos()))
}
