//! `GET /revenue/daily?from=&to=&currency=` (admin only): the daily revenue view.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::NaiveDate;
use serde::Serialize;

use super::AppState;
use super::error::ApiError;
use crate::domain::{Currency, FieldError, ValidationErrors};
use crate::views::RevenueDay;

/// The longest range one request may ask for, in days (both ends included).
const MAX_DAYS: i64 = 366;

/// Daily revenue by (day, currency), by date then currency; days with no activity are left out.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = DailyRevenue)]
struct Days {
    days: Vec<RevenueDay>,
}

#[utoipa::path(
    get, path = "/revenue/daily", tag = "revenue", operation_id = "dailyRevenue",
    summary = "Daily revenue",
    description = "A payment counts on the date of its `paidAt` in the business time zone (config `revenue.timezone`, \
                   default UTC), a refund on the date of its `cancelledAt`. Admin only.",
    params(super::schemas::RevenueParams),
    responses(
        (status = 200, description = "The days with activity in the range", body = Days),
        super::schemas::Unauthorized,
        super::schemas::Forbidden,
        super::schemas::ValidationFailed,
        super::schemas::Unavailable,
    ),
)]
pub async fn daily(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.admin(&req).await?;
    let params = web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
        .map_err(|_| ApiError::field("query", "the query string is malformed"))?;
    let mut errors = ValidationErrors::default();
    let mut date = |field: &str| match params.get(field) {
        Some(v) => errors.collect(
            NaiveDate::parse_from_str(v, "%Y-%m-%d").map_err(|_| FieldError::new(field, "must be a YYYY-MM-DD date")),
        ),
        None => {
            errors.push(FieldError::new(field, "is required"));
            None
        }
    };
    let (from, to) = (date("from"), date("to"));
    let currency = params.get("currency").and_then(|c| errors.collect(Currency::parse("currency", c)));
    if let (Some(from), Some(to)) = (from, to) {
        let days = (to - from).num_days() + 1;
        if days < 1 {
            errors.push(FieldError::new("to", "must not be before `from`"));
        } else if days > MAX_DAYS {
            errors.push(FieldError::new("to", format!("the range may cover at most {MAX_DAYS} days")));
        }
    }
    let (Some(from), Some(to), true) = (from, to, errors.is_empty()) else {
        return Err(ApiError::Validation(errors.0));
    };
    let days = state.revenue.daily(from, to, currency).await?;
    Ok(HttpResponse::Ok().json(Days { days }))
}
