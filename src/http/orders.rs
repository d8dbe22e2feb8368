//! `/orders`: the four commands (write model, through the order's actor) and the queries (read model, with
//! `consistency=strong` and `minVersion` for read-your-writes).

use crate::audit::{self, AuditEntry};
use std::collections::HashMap;
use std::time::Instant;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::AppState;
use super::body::{Integer, parse_json, read_limited, request_hash, require_json, typed};
use super::error::{ApiError, render};
use super::schemas;
use crate::actors::{Answers, CommandError, Execute, IdempotencyDraft, Precondition};
use crate::auth::Principal;
use crate::domain::values::{limits, order_total};
use crate::domain::{
    Command, Country, Currency, CustomerId, FieldError, LineItem, Money, Order, OrderEvent, OrderId, OrderStatus,
    Quantity, ShippingAddress, Text, ValidationErrors,
};
use crate::store::{StoredEvent, StoredResponse};
use crate::telemetry::{self, CommandOutcome};
use crate::views::{Cursor, SearchQuery, SortOrder};

type Data = web::Data<AppState>;

// ---------------------------------------------------------------------------------------------- commands

#[utoipa::path(
    post, path = "/orders", tag = "orders", operation_id = "placeOrder",
    summary = "Place an order",
    description = "Places an order for a customer; the answer is its state at version 1.",
    params(schemas::CommandHeaders),
    request_body(content = PlaceOrderRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "The order, placed", body = Order, headers(
            ("Location" = String, description = "`/orders/{orderId}`"),
            ("ETag" = String, description = "The order's version after the command, a strong ETag: `\"<version>\"`"),
            ("Idempotent-Replayed" = String, description = "`true` when this is the stored answer to an earlier request with the same `Idempotency-Key`"),
        )),
        schemas::InvalidJson,
        schemas::Unauthorized,
        schemas::Forbidden,
        schemas::PlaceConflict,
        schemas::VersionConflict,
        schemas::PayloadTooLarge,
        schemas::UnsupportedMediaType,
        schemas::CommandUnprocessable,
        schemas::Unavailable,
    ),
)]
pub async fn place(req: HttpRequest, payload: web::Payload, state: Data) -> HttpResponse {
    command(req, payload, state, "place", |json, principal, _| {
        // Authorization before validation: a customer may place orders only for itself.
        let customer_field = json.get("customerId").filter(|v| !v.is_null());
        if !principal.is_admin() && customer_field.is_some_and(|v| v.as_str() != Some(principal.subject.as_str())) {
            return Err(ApiError::Forbidden);
        }
        let mut body: PlaceOrderRequest = typed(json)?;
        if !principal.is_admin() {
            // A customer's orders are its own: the field may be left out.
            body.customer_id.get_or_insert_with(|| principal.subject.clone());
        }
        Ok(body.try_into()?)
    })
    .await
}

#[utoipa::path(
    post, path = "/orders/{id}/confirm-payment", tag = "orders", operation_id = "confirmPayment",
    summary = "Confirm an order's payment",
    description = "The amount must equal the total. The same `paymentId` again (also on a shipped order) is a 200 that changes nothing.",
    params(("id" = OrderId, Path, description = "The order's id"), schemas::CommandHeaders),
    request_body(content = ConfirmPaymentRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The order, paid", body = Order, headers(
            ("ETag" = String, description = "The order's version after the command, a strong ETag: `\"<version>\"`"),
            ("Idempotent-Replayed" = String, description = "`true` when this is the stored answer to an earlier request with the same `Idempotency-Key`"),
        )),
        schemas::InvalidJson,
        schemas::Unauthorized,
        schemas::OrderNotFound,
        schemas::PaymentConflict,
        schemas::VersionConflict,
        schemas::PayloadTooLarge,
        schemas::UnsupportedMediaType,
        schemas::PaymentUnprocessable,
        schemas::Unavailable,
    ),
)]
pub async fn confirm_payment(req: HttpRequest, payload: web::Payload, state: Data) -> HttpResponse {
    command(req, payload, state, "confirm-payment", |json, _, id| {
        Ok((id, typed::<ConfirmPaymentRequest>(json)?.try_into()?))
    })
    .await
}

#[utoipa::path(
    post, path = "/orders/{id}/ship", tag = "orders", operation_id = "shipOrder",
    summary = "Ship a paid order",
    description = "The order must be paid and neither cancelled nor shipped.",
    params(("id" = OrderId, Path, description = "The order's id"), schemas::CommandHeaders),
    request_body(content = ShipRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The order, shipped", body = Order, headers(
            ("ETag" = String, description = "The order's version after the command, a strong ETag: `\"<version>\"`"),
            ("Idempotent-Replayed" = String, description = "`true` when this is the stored answer to an earlier request with the same `Idempotency-Key`"),
        )),
        schemas::InvalidJson,
        schemas::Unauthorized,
        schemas::OrderNotFound,
        schemas::ShipConflict,
        schemas::VersionConflict,
        schemas::PayloadTooLarge,
        schemas::UnsupportedMediaType,
        schemas::CommandUnprocessable,
        schemas::Unavailable,
    ),
)]
pub async fn ship(req: HttpRequest, payload: web::Payload, state: Data) -> HttpResponse {
    command(req, payload, state, "ship", |json, _, id| Ok((id, typed::<ShipRequest>(json)?.try_into()?))).await
}

#[utoipa::path(
    post, path = "/orders/{id}/cancel", tag = "orders", operation_id = "cancelOrder",
    summary = "Cancel an order",
    description = "A placed or paid order can be cancelled; a paid one is refunded in full (`refund`).",
    params(("id" = OrderId, Path, description = "The order's id"), schemas::CommandHeaders),
    request_body(content = CancelRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The order, cancelled", body = Order, headers(
            ("ETag" = String, description = "The order's version after the command, a strong ETag: `\"<version>\"`"),
            ("Idempotent-Replayed" = String, description = "`true` when this is the stored answer to an earlier request with the same `Idempotency-Key`"),
        )),
        schemas::InvalidJson,
        schemas::Unauthorized,
        schemas::OrderNotFound,
        schemas::CancelConflict,
        schemas::VersionConflict,
        schemas::PayloadTooLarge,
        schemas::UnsupportedMediaType,
        schemas::CommandUnprocessable,
        schemas::Unavailable,
    ),
)]
pub async fn cancel(req: HttpRequest, payload: web::Payload, state: Data) -> HttpResponse {
    command(req, payload, state, "cancel", |json, _, id| Ok((id, typed::<CancelRequest>(json)?.try_into()?))).await
}

// ---------------------------------------------------------------------------------------- request bodies
//
// Each command's body is defined once, here: a DTO that serde reads (a JSON type it does not take is a 400
// naming the field) and utoipa describes in `/openapi.json`, converted with `TryFrom` into the domain command,
// which checks every rule and reports every one broken (422). Fields are `Option`s so that a missing one is a
// rule broken ("is required"), not a malformed body; the schema says which are required.

/// The body of `POST /orders`. A wrong JSON type is 400 `invalid_json`; a broken rule, 422 `validation_failed`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlaceOrderRequest {
    /// Left out, the server makes a UUIDv7.
    #[schema(value_type = Option<OrderId>)]
    pub order_id: Option<String>,
    /// Required with an admin token. With a customer token it may be left out, and must otherwise be the
    /// token's `sub` (403 `forbidden`).
    #[schema(value_type = Option<CustomerId>)]
    pub customer_id: Option<String>,
    #[schema(value_type = Currency, required = true)]
    pub currency: Option<String>,
    /// 1-100 lines; Σ quantity × unitPrice is the order's total.
    #[schema(value_type = Vec<PlaceOrderLine>, min_items = 1, max_items = 100, required = true)]
    pub items: Option<Vec<PlaceOrderLine>>,
    /// Where to ship the order; may be left out.
    #[schema(value_type = Option<ShippingAddress>)]
    pub shipping_address: Option<ShippingAddressRequest>,
}

/// A `ShippingAddress` as a request carries it (its schema is `ShippingAddress`'s).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShippingAddressRequest {
    pub name: Option<String>,
    pub line1: Option<String>,
    pub line2: Option<String>,
    pub postal_code: Option<String>,
    pub city: Option<String>,
    pub country: Option<String>,
}

impl ShippingAddressRequest {
    fn into_address(self, errors: &mut ValidationErrors) -> Option<ShippingAddress> {
        let field = |name: &str| format!("shippingAddress.{name}");
        let name = errors.require(&field("name"), self.name, text(limits::ADDRESS_NAME));
        let line1 = errors.require(&field("line1"), self.line1, text(limits::ADDRESS_LINE));
        let line2 = self.line2.map(|line| errors.collect(Text::parse(&field("line2"), &line, limits::ADDRESS_LINE)));
        let postal_code = errors.require(&field("postalCode"), self.postal_code, text(limits::POSTAL_CODE));
        let city = errors.require(&field("city"), self.city, text(limits::CITY));
        let country = errors.require(&field("country"), self.country, |f, v| Country::parse(f, &v));
        Some(ShippingAddress {
            name: name?,
            line1: line1?,
            line2: match line2 {
                Some(line) => Some(line?),
                None => None,
            },
            postal_code: postal_code?,
            city: city?,
            country: country?,
        })
    }
}

/// One line of a `PlaceOrderRequest`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlaceOrderLine {
    #[schema(schema_with = schemas::sku, required = true)]
    pub sku: Option<String>,
    #[schema(schema_with = schemas::item_name, required = true)]
    pub name: Option<String>,
    #[schema(value_type = Quantity, required = true)]
    pub quantity: Option<Integer>,
    #[schema(schema_with = schemas::unit_price, required = true)]
    pub unit_price: Option<Integer>,
}

/// The body of `POST /orders/{id}/confirm-payment`. The same `paymentId` again is a 200 that changes nothing.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfirmPaymentRequest {
    #[schema(schema_with = schemas::payment_id, required = true)]
    pub payment_id: Option<String>,
    /// Must equal the order's total (422 `amount_mismatch`).
    #[schema(value_type = Money, required = true)]
    pub amount: Option<Integer>,
}

/// The body of `POST /orders/{id}/ship`; the order must be paid.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShipRequest {
    #[schema(schema_with = schemas::carrier, required = true)]
    pub carrier: Option<String>,
    #[schema(schema_with = schemas::tracking_number, required = true)]
    pub tracking_number: Option<String>,
}

/// The body of `POST /orders/{id}/cancel`; a paid order is refunded in full.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct CancelRequest {
    #[schema(schema_with = schemas::reason, required = true)]
    pub reason: Option<String>,
}

fn text(max: usize) -> impl FnOnce(&str, String) -> Result<Text, FieldError> {
    move |field, value| Text::parse(field, &value, max)
}

/// The order's id (a fresh one when left out) and its place command.
impl TryFrom<PlaceOrderRequest> for (OrderId, Command) {
    type Error = ValidationErrors;

    fn try_from(body: PlaceOrderRequest) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let order_id = match body.order_id {
            Some(id) => errors.collect(OrderId::parse("orderId", &id)),
            None => Some(OrderId::generate()),
        };
        let customer_id = errors.require("customerId", body.customer_id, |f, v| CustomerId::parse(f, &v));
        let currency = errors.require("currency", body.currency, |f, v| Currency::parse(f, &v));
        let items = match body.items {
            Some(lines) if lines.is_empty() || lines.len() > limits::MAX_ITEMS => {
                errors.push(FieldError::new("items", format!("must have 1-{} lines", limits::MAX_ITEMS)));
                None
            }
            lines => errors.require("items", lines, |_, lines| Ok(lines)).map(|lines| {
                let lines = lines.into_iter().enumerate();
                lines.filter_map(|(i, line)| line.into_item(&format!("items[{i}]."), &mut errors)).collect::<Vec<_>>()
            }),
        };
        let total = items.as_deref().and_then(|items| {
            let total = order_total(items);
            if total.is_none() {
                errors.push(FieldError::new("items", "the order total is too large"));
            }
            total
        });
        // Left out, there is none; given, it is checked like the rest.
        let shipping_address = match body.shipping_address {
            Some(address) => address.into_address(&mut errors).map(Some),
            None => Some(None),
        };
        let command = (|| {
            Some(Command::Place {
                customer_id: customer_id?,
                currency: currency?,
                items: items?,
                total: total?,
                shipping_address: shipping_address?,
            })
        })();
        errors.finish(order_id.zip(command))
    }
}

impl PlaceOrderLine {
    fn into_item(self, at: &str, errors: &mut ValidationErrors) -> Option<LineItem> {
        let field = |name: &str| format!("{at}{name}");
        let sku = errors.require(&field("sku"), self.sku, text(limits::SKU));
        let name = errors.require(&field("name"), self.name, text(limits::ITEM_NAME));
        let quantity = errors.require(&field("quantity"), self.quantity, |f, n| Quantity::parse(f, n.0));
        let unit_price =
            errors.require(&field("unitPrice"), self.unit_price, |f, n| Money::parse(f, n.0, limits::MAX_UNIT_PRICE));
        Some(LineItem { sku: sku?, name: name?, quantity: quantity?, unit_price: unit_price? })
    }
}

impl TryFrom<ConfirmPaymentRequest> for Command {
    type Error = ValidationErrors;

    fn try_from(body: ConfirmPaymentRequest) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let payment_id = errors.require("paymentId", body.payment_id, text(limits::PAYMENT_ID));
        let amount = errors.require("amount", body.amount, |f, n| Money::parse(f, n.0, limits::MAX_AMOUNT));
        errors.finish(payment_id.zip(amount).map(|(payment_id, amount)| Command::ConfirmPayment { payment_id, amount }))
    }
}

impl TryFrom<ShipRequest> for Command {
    type Error = ValidationErrors;

    fn try_from(body: ShipRequest) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let carrier = errors.require("carrier", body.carrier, text(limits::CARRIER));
        let tracking_number = errors.require("trackingNumber", body.tracking_number, text(limits::TRACKING_NUMBER));
        let command =
            carrier.zip(tracking_number).map(|(carrier, tracking_number)| Command::Ship { carrier, tracking_number });
        errors.finish(command)
    }
}

impl TryFrom<CancelRequest> for Command {
    type Error = ValidationErrors;

    fn try_from(body: CancelRequest) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let reason = errors.require("reason", body.reason, text(limits::CANCEL_REASON));
        errors.finish(reason.map(|reason| Command::Cancel { reason }))
    }
}

impl From<ValidationErrors> for ApiError {
    fn from(errors: ValidationErrors) -> Self {
        ApiError::Validation(errors.0)
    }
}

/// The pipeline every command goes through, timed and counted as one command.
async fn command(
    req: HttpRequest,
    payload: web::Payload,
    state: Data,
    name: &'static str,
    parse: impl FnOnce(&Value, &Principal, OrderId) -> Result<(OrderId, Command), ApiError>,
) -> HttpResponse {
    let started = Instant::now();
    let result = run_command(&req, payload, &state, name, parse).await;
    let (response, outcome) = match result {
        Ok(response) => {
            let outcome = match response.status().as_u16() {
                200..=299 => CommandOutcome::Ok,
                412 => CommandOutcome::Conflict,
                500.. => CommandOutcome::Error,
                _ => CommandOutcome::Rejected,
            };
            (response, outcome)
        }
        Err(e) => {
            let outcome = match e {
                ApiError::VersionConflict { .. } | ApiError::WriteConflict => CommandOutcome::Conflict,
                ApiError::Unavailable => CommandOutcome::Error,
                _ => CommandOutcome::Rejected,
            };
            (e.error_response(), outcome)
        }
    };
    telemetry::command_done(name, outcome, started.elapsed());
    response
}

async fn run_command(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    name: &'static str,
    parse: impl FnOnce(&Value, &Principal, OrderId) -> Result<(OrderId, Command), ApiError>,
) -> Result<HttpResponse, ApiError> {
    let principal = state.principal(req).await?;
    // Commands on an order name it in the path; an id that cannot exist is simply not found.
    let path_id = match req.match_info().get("id") {
        Some(raw) => OrderId::parse("orderId", raw).map_err(|_| ApiError::OrderNotFound)?,
        None => OrderId::generate(),
    };
    require_json(req)?;
    let bytes = read_limited(req, payload).await?;
    let json = parse_json(&bytes)?;
    let (order_id, command) = parse(&json, &principal, path_id)?;
    let precondition = if_match(req);
    let idempotency =
        idempotency_key(req, &principal)?.map(|scope| IdempotencyDraft { scope, request_hash: request_hash(&json) });
    if let Some(draft) = &idempotency
        && let Some(response) = replay(state, draft).await?
    {
        return Ok(response);
    }
    let is_place = matches!(command, Command::Place { .. });
    let visible_to = match principal.is_admin() {
        true => None,
        false => match CustomerId::parse("sub", &principal.subject) {
            Ok(customer) => Some(customer),
            // A subject that is not a valid customer id owns no order.
            Err(_) if !is_place => return Err(ApiError::OrderNotFound),
            Err(e) => return Err(ApiError::Validation(vec![e])),
        },
    };
    let trace = super::request_trace(req);
    let answers = Answers { success: if is_place { placed } else { changed }, refusal: refused };
    let msg = Execute { command, precondition, visible_to, idempotency: idempotency.clone(), trace, answers };
    match state.registry.execute(&order_id, msg).await {
        Ok(executed) => {
            // An admin acting on a customer's order is an admin action: audited (with auth on; with auth off
            // everyone is an anonymous admin and there is nobody to hold to account).
            let for_another = executed.order.customer_id.as_str() != principal.subject;
            if principal.is_admin() && state.auth.enabled() && for_another && !executed.appended.is_empty() {
                let detail = serde_json::json!({
                    "customerId": executed.order.customer_id.as_str(),
                    "version": executed.order.version,
                    "events": executed.appended.iter().map(|e| e.event.type_name()).collect::<Vec<_>>(),
                });
                let entry = AuditEntry::new(
                    &principal.subject,
                    &format!("order.{name}"),
                    order_id.as_str(),
                    "ok".into(),
                    detail,
                );
                audit::record(state.audit.as_ref(), entry).await;
            }
            Ok(render(&executed.response, false))
        }
        Err(CommandError::IdempotencyKeyTaken) => {
            // A concurrent request with the same key won the race: answer as a retry of it.
            match idempotency.as_ref() {
                Some(draft) => replay(state, draft).await?.ok_or(ApiError::WriteConflict),
                None => Err(ApiError::WriteConflict),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// The answer to a place: 201 with the order's `Location`.
fn placed(order: &Order) -> StoredResponse {
    order_response(201, order, Some(format!("/orders/{}", order.order_id)))
}

/// The answer to the other commands: 200.
fn changed(order: &Order) -> StoredResponse {
    order_response(200, order, None)
}

/// The order document, its version as a strong ETag.
fn order_response(status: u16, order: &Order, location: Option<String>) -> StoredResponse {
    StoredResponse {
        status,
        // Serializing our own plain struct cannot fail; an empty object would only hide a bug, not data.
        body: serde_json::to_string(order).unwrap_or_else(|_| "{}".into()),
        etag: Some(format!("\"{}\"", order.version)),
        location,
    }
}

/// The problem document of a refused command, as a retry with the same key gets it again.
fn refused(error: &CommandError) -> StoredResponse {
    ApiError::from(error.clone()).to_stored()
}

/// The stored answer to an earlier request with the same key: replayed if the body is the same,
/// 422 `idempotency_key_reused` if not, `None` if the key is new.
async fn replay(state: &AppState, draft: &IdempotencyDraft) -> Result<Option<HttpResponse>, ApiError> {
    match state.store.idempotency_get(&draft.scope).await? {
        Some(record) if record.request_hash == draft.request_hash => Ok(Some(render(&record.response, true))),
        Some(_) => Err(ApiError::IdempotencyKeyReused),
        None => Ok(None),
    }
}

/// `If-Match`: `*`, or one strong ETag `"N"`. A weak or malformed tag never matches (RFC 9110 §13.1.1).
fn if_match(req: &HttpRequest) -> Option<Precondition> {
    let value = req.headers().get(header::IF_MATCH)?;
    let value = value.to_str().unwrap_or("").trim();
    if value == "*" {
        return Some(Precondition::Exists);
    }
    let version = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).and_then(|v| v.parse::<u64>().ok());
    Some(version.map_or(Precondition::Never, Precondition::Version))
}

/// `Idempotency-Key`: 1–128 printable ASCII characters, scoped per (token subject, method, path).
fn idempotency_key(req: &HttpRequest, principal: &Principal) -> Result<Option<String>, ApiError> {
    let Some(value) = req.headers().get("Idempotency-Key") else {
        return Ok(None);
    };
    let key = value.to_str().unwrap_or("");
    if key.is_empty() || key.len() > 128 || !key.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return Err(ApiError::field("Idempotency-Key", "must be 1-128 printable ASCII characters"));
    }
    Ok(Some(format!("{}\u{1f}{}\u{1f}{}\u{1f}{key}", principal.subject, req.method(), req.path())))
}

// ----------------------------------------------------------------------------------------------- queries

fn query_params(req: &HttpRequest) -> Result<HashMap<String, String>, ApiError> {
    web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|_| ApiError::field("query", "the query string is malformed"))
}

/// Path id, or 404: an id that breaks the id rules names no order.
fn path_order_id(req: &HttpRequest) -> Result<OrderId, ApiError> {
    OrderId::parse("orderId", req.match_info().get("id").unwrap_or("")).map_err(|_| ApiError::OrderNotFound)
}

fn visible(principal: &Principal, order: &Order) -> bool {
    principal.is_admin() || order.customer_id.as_str() == principal.subject
}

/// A `200` for an order document at `version`, with the headers every read of one carries.
fn document_at(version: u64, consistency: &'static str) -> actix_web::HttpResponseBuilder {
    let mut response = HttpResponse::Ok();
    response
        .insert_header((header::ETAG, format!("\"{version}\"")))
        .insert_header(("X-Consistency", HeaderValue::from_static(consistency)));
    response
}

fn document(order: &Order, consistency: &'static str) -> HttpResponse {
    document_at(order.version, consistency).json(order)
}

/// The read model's document, answered with its stored JSON as it is.
fn stored_document(doc: &crate::views::Document) -> HttpResponse {
    document_at(doc.order.version, "eventual").content_type(header::ContentType::json()).body(doc.json.clone())
}

/// `GET /orders/{id}`: the projected document; `consistency=strong` folds the write model instead, and
/// `minVersion=N` waits (up to `projections.min_version_wait_ms`) for the view to reach N, then falls back.
#[utoipa::path(
    get, path = "/orders/{id}", tag = "orders", operation_id = "getOrder",
    summary = "An order's document",
    description = "From the read model (eventually consistent) unless `consistency=strong` or `minVersion` asks for more.",
    params(("id" = OrderId, Path, description = "The order's id"), schemas::OrderParams),
    responses(
        (status = 200, description = "The order", body = Order, headers(
            ("ETag" = String, description = "The order's version, a strong ETag: `\"<version>\"`"),
            ("X-Consistency" = String, description = "`eventual` (the read model answered) or `strong` (the write model did)"),
        )),
        schemas::Unauthorized, schemas::OrderNotFound, schemas::ValidationFailed, schemas::Unavailable,
    ),
)]
pub async fn get(req: HttpRequest, state: Data) -> Result<HttpResponse, ApiError> {
    let principal = state.principal(&req).await?;
    let id = path_order_id(&req)?;
    let params = query_params(&req)?;
    let strong = match params.get("consistency").map(String::as_str) {
        None | Some("eventual") => false,
        Some("strong") => true,
        Some(_) => return Err(ApiError::field("consistency", "must be `strong` or `eventual`")),
    };
    let min_version = match params.get("minVersion") {
        None => None,
        Some(v) => Some(v.parse::<u64>().map_err(|_| ApiError::field("minVersion", "must be a non-negative integer"))?),
    };
    if !strong {
        let deadline = tokio::time::Instant::now() + state.min_version_wait;
        let mut progress = state.projections.status("search").map(|s| s.subscribe());
        loop {
            // Someone else's order is treated as missing before anything else looks at it, so it waits and
            // answers exactly like a missing id: an early 404 once the view holds N would tell its version.
            let doc = state.search.document(&id).await?.filter(|d| visible(&principal, &d.order));
            match (doc, min_version) {
                (Some(doc), Some(n)) if doc.order.version >= n => return Ok(stored_document(&doc)),
                (doc, None) => return doc.map(|doc| stored_document(&doc)).ok_or(ApiError::OrderNotFound),
                _ => {}
            }
            let Some(progress) = progress.as_mut().filter(|_| tokio::time::Instant::now() < deadline) else {
                break;
            };
            let _ = tokio::time::timeout_at(deadline, progress.changed()).await;
        }
    }
    let order = state.store.load(&id).await?.fold(&id).ok_or(ApiError::OrderNotFound)?;
    found(&principal, order, "strong")
}

fn found(principal: &Principal, order: Order, consistency: &'static str) -> Result<HttpResponse, ApiError> {
    if visible(principal, &order) { Ok(document(&order, consistency)) } else { Err(ApiError::OrderNotFound) }
}

/// One event of an order's history: `{eventId, type, version, occurredAt, data}`.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct HistoryEvent<'a> {
    event_id: Uuid,
    version: u64,
    occurred_at: DateTime<Utc>,
    #[serde(flatten)]
    event: &'a OrderEvent,
}

/// An order's events, oldest first.
#[derive(Serialize, utoipa::ToSchema)]
struct History<'a> {
    events: Vec<HistoryEvent<'a>>,
}

/// `GET /orders/{id}/history`: every event of the order, from the write model.
#[utoipa::path(
    get, path = "/orders/{id}/history", tag = "orders", operation_id = "getOrderHistory",
    summary = "An order's events",
    description = "Every event of the order, oldest first, from the write model. Each event's `data` has today's \
        shape of its type, whatever schema version it was written with (stored events are never rewritten; older \
        versions are upcast on reading, so an `OrderPlaced` from before schema version 2 shows `shippingAddress: null`). \
        The versions and the compatibility policy are in docs/api.md §3 and `/asyncapi.json`.",
    params(("id" = OrderId, Path, description = "The order's id")),
    responses(
        (status = 200, description = "The order's events", body = History),
        schemas::Unauthorized, schemas::OrderNotFound, schemas::Unavailable,
    ),
)]
pub async fn history(req: HttpRequest, state: Data) -> Result<HttpResponse, ApiError> {
    let principal = state.principal(&req).await?;
    let id = path_order_id(&req)?;
    let events: Vec<StoredEvent> = state.store.history(&id).await?;
    let owner = events.iter().find_map(|e| match &e.event {
        OrderEvent::OrderPlaced { customer_id, .. } => Some(customer_id),
        _ => None,
    });
    match owner {
        Some(owner) if principal.is_admin() || owner.as_str() == principal.subject => {}
        _ => return Err(ApiError::OrderNotFound),
    }
    let body = History {
        events: events
            .iter()
            .map(|e| HistoryEvent {
                event_id: e.event_id,
                version: e.version,
                occurred_at: e.occurred_at(),
                event: &e.event,
            })
            .collect(),
    };
    Ok(HttpResponse::Ok().json(body))
}

/// `GET /orders?customerId=&status=&q=&placedFrom=&placedTo=&sort=&limit=&cursor=`.
#[utoipa::path(
    get, path = "/orders", tag = "orders", operation_id = "searchOrders",
    summary = "Search orders",
    description = "From the read model (eventually consistent). A customer token finds only its own orders.",
    params(schemas::SearchParams),
    responses(
        (status = 200, description = "One page of orders", body = crate::views::SearchPage),
        schemas::Unauthorized, schemas::ValidationFailed, schemas::Unavailable,
    ),
)]
pub async fn search(req: HttpRequest, state: Data) -> Result<HttpResponse, ApiError> {
    let principal = state.principal(&req).await?;
    let params = query_params(&req)?;
    let query = parse_search(&params)?;
    let query = if principal.is_admin() {
        query
    } else {
        // A customer searches only its own orders; asking for someone else's finds nothing.
        match (&query.customer_id, CustomerId::parse("sub", &principal.subject)) {
            (Some(asked), Ok(own)) if asked != &own => return Ok(HttpResponse::Ok().json(empty_page())),
            (_, Ok(own)) => SearchQuery { customer_id: Some(own), ..query },
            (_, Err(_)) => return Ok(HttpResponse::Ok().json(empty_page())),
        }
    };
    // At most one search per core at a time, so that searches cannot starve point reads (see `SearchSlots`).
    let _slot = state.search_slots.acquire().await.ok_or(ApiError::Unavailable)?;
    let page = state.search.search(&query).await?;
    Ok(HttpResponse::Ok().json(page))
}

fn empty_page() -> crate::views::SearchPage {
    crate::views::SearchPage { orders: vec![], next_cursor: None, estimated_total: 0 }
}

fn parse_search(params: &HashMap<String, String>) -> Result<SearchQuery, ApiError> {
    let mut errors = ValidationErrors::default();
    let get = |k: &str| params.get(k).map(String::as_str);
    let customer_id = get("customerId").and_then(|v| errors.collect(CustomerId::parse("customerId", v)));
    let status = get("status").and_then(|v| {
        let status = OrderStatus::parse(v);
        if status.is_none() {
            errors.push(FieldError::new("status", "must be placed, paid, shipped or cancelled"));
        }
        status
    });
    let text = get("q").filter(|q| !q.trim().is_empty()).and_then(|q| {
        let ok = q.chars().count() <= 200;
        if !ok {
            errors.push(FieldError::new("q", "must be at most 200 characters"));
        }
        ok.then(|| q.to_owned())
    });
    let placed_from = get("placedFrom").and_then(|v| errors.collect(parse_instant("placedFrom", v, false)));
    let placed_to = get("placedTo").and_then(|v| errors.collect(parse_instant("placedTo", v, true)));
    let sort = match get("sort") {
        None => SortOrder::default(),
        Some(v) => SortOrder::parse(v).unwrap_or_else(|| {
            errors.push(FieldError::new("sort", "must be placedAt:desc, placedAt:asc, total:desc or total:asc"));
            SortOrder::default()
        }),
    };
    let limit = match get("limit") {
        None => 20,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=100).contains(&n) => n,
            _ => {
                errors.push(FieldError::new("limit", "must be an integer from 1 to 100"));
                20
            }
        },
    };
    let cursor = get("cursor").and_then(|v| {
        let cursor = Cursor::decode(v);
        if cursor.is_none() {
            errors.push(FieldError::new("cursor", "is not a cursor this API returned"));
        }
        cursor
    });
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors.0));
    }
    Ok(SearchQuery { customer_id, status, text, placed_from, placed_to, sort, limit, cursor })
}

/// An RFC 3339 instant, or a date (`YYYY-MM-DD`: its start, or its end when `end_of_day`).
fn parse_instant(field: &str, value: &str, end_of_day: bool) -> Result<DateTime<Utc>, FieldError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        return Ok(t.with_timezone(&Utc));
    }
    let date = NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .map_err(|_| FieldError::new(field, "must be an RFC 3339 timestamp or a YYYY-MM-DD date"))?;
    let time = if end_of_day { date.and_hms_milli_opt(23, 59, 59, 999) } else { date.and_hms_opt(0, 0, 0) };
    time.map(|t| t.and_utc()).ok_or_else(|| FieldError::new(field, "is out of range"))
}
