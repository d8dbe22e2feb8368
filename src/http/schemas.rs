//! What the OpenAPI document (`http::openapi`) says that the code does not spell out as types, kept apart from
//! the document itself so that the handlers, which name these in their `#[utoipa::path]` attributes, do not
//! depend on the module that lists the handlers:
//! - the value types' schemas (ids, currency, quantity, money, text), built from the same limits that
//!   `domain::values` enforces;
//! - the schemas of the request bodies' text and money fields (the bodies themselves are the DTOs of
//!   `http::orders`, described by their derive);
//! - schema-only parameters: the handlers parse query strings by hand (that is how docs/api.md's 400 vs 422
//!   split works), so these structs exist only to be described;
//! - the problem responses, built from the real [`ApiError`]s: status, `code`, headers and examples are what
//!   `error.rs` answers.

use std::collections::BTreeMap;

use actix_web::ResponseError;
use actix_web::http::header;
use chrono::NaiveDate;
use utoipa::openapi::example::ExampleBuilder;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::{ContentBuilder, HeaderBuilder, Ref, RefOr};
use utoipa::{IntoParams, IntoResponses, PartialSchema, ToSchema};

use super::error::{ApiError, PROBLEM_JSON};
use crate::domain::values::limits;
use crate::domain::{Currency, CustomerId, FieldError, Money, OrderError, OrderId, OrderStatus, Quantity, Text};

// ----------------------------------------------------------------------------------------- value types

/// Lengths of [`Text`] by field; the `Text` component carries the loosest bound.
const TEXT_LIMITS: [(&str, usize); 6] = [
    ("sku", limits::SKU),
    ("name", limits::ITEM_NAME),
    ("paymentId", limits::PAYMENT_ID),
    ("carrier", limits::CARRIER),
    ("trackingNumber", limits::TRACKING_NUMBER),
    ("reason", limits::CANCEL_REASON),
];

fn id_schema(description: &str, example: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .pattern(Some("^[A-Za-z0-9_-]{1,64}$"))
        .min_length(Some(1))
        .max_length(Some(64))
        .examples([example])
        .into()
}

impl PartialSchema for OrderId {
    fn schema() -> RefOr<Schema> {
        id_schema(
            "An order's id: 1-64 characters of `[A-Za-z0-9_-]`, client-supplied or a server-made UUIDv7.",
            "ord-1001",
        )
    }
}
impl ToSchema for OrderId {}

impl PartialSchema for CustomerId {
    fn schema() -> RefOr<Schema> {
        id_schema("A customer's id: 1-64 characters of `[A-Za-z0-9_-]`; for a customer token, its `sub`.", "c-1")
    }
}
impl ToSchema for CustomerId {}

impl PartialSchema for Currency {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("An ISO-4217 currency code: three uppercase letters."))
            .pattern(Some("^[A-Z]{3}$"))
            .examples(["EUR"])
            .into()
    }
}
impl ToSchema for Currency {}

/// A string of 1 to `max` characters (characters, not bytes, as JSON Schema counts them).
fn text(max: usize) -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String).min_length(Some(1)).max_length(Some(max))
}

impl PartialSchema for Text {
    fn schema() -> RefOr<Schema> {
        let bounds: Vec<String> = TEXT_LIMITS.iter().map(|(field, max)| format!("{field} {max}")).collect();
        let loosest = TEXT_LIMITS.iter().map(|(_, max)| *max).max().unwrap_or(limits::CANCEL_REASON);
        text(loosest)
            .description(Some(format!("Free text of at least 1 character; at most, by field: {}.", bounds.join(", "))))
            .into()
    }
}
impl ToSchema for Text {}

impl PartialSchema for Quantity {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int32)))
            .description(Some("A line quantity."))
            .minimum(Some(1))
            .maximum(Some(limits::MAX_QUANTITY as u64))
            .into()
    }
}
impl ToSchema for Quantity {}

fn money(max: i128) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(0))
        .maximum(Some(max as u64))
}

impl PartialSchema for Money {
    fn schema() -> RefOr<Schema> {
        money(limits::MAX_AMOUNT)
            .description(Some("An amount in integer minor units (cents for EUR); never a fraction."))
            .into()
    }
}
impl ToSchema for Money {}

// ------------------------------------------------------------------------------- request body fields
// The schemas of the text and money fields of the request bodies (`http::orders`), by field, with their limits.

pub(super) fn sku() -> ObjectBuilder {
    text(limits::SKU)
}
pub(super) fn item_name() -> ObjectBuilder {
    text(limits::ITEM_NAME)
}
pub(super) fn unit_price() -> ObjectBuilder {
    money(limits::MAX_UNIT_PRICE).description(Some("The price of one unit, in integer minor units."))
}
pub(super) fn payment_id() -> ObjectBuilder {
    text(limits::PAYMENT_ID)
}
pub(super) fn carrier() -> ObjectBuilder {
    text(limits::CARRIER)
}
pub(super) fn tracking_number() -> ObjectBuilder {
    text(limits::TRACKING_NUMBER)
}
pub(super) fn reason() -> ObjectBuilder {
    text(limits::CANCEL_REASON)
}

// ------------------------------------------------------------------------------------------ parameters

/// The headers every command takes.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub struct CommandHeaders {
    /// `"<version>"` (a strong ETag) or `*`: the command runs only if the order is at that version (or
    /// exists); otherwise 412 `version_conflict` with the current `ETag`. On `POST /orders` it always fails.
    #[param(rename = "If-Match", value_type = String, required = false, example = "\"1\"")]
    pub if_match: Option<String>,
    /// 1-128 printable ASCII characters. A retry with the same key and body gets the first answer again (with
    /// `Idempotent-Replayed: true`) and appends nothing; the same key with another body is 422
    /// `idempotency_key_reused`. Scoped per token subject, method and path; kept at least 24 h.
    #[param(
        rename = "Idempotency-Key", value_type = String, required = false,
        pattern = "^[\\x20-\\x7E]{1,128}$", min_length = 1, max_length = 128
    )]
    pub idempotency_key: Option<String>,
}

/// Which model answers `GET /orders/{id}`.
#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// The read model (the default).
    Eventual,
    /// The write model: read-your-own-write.
    Strong,
}

/// The query of `GET /orders/{id}`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct OrderParams {
    #[param(inline)]
    pub consistency: Option<Consistency>,
    /// Wait (up to 2 s) for the read model to reach this version, then fall back to the write model;
    /// `X-Consistency` says which answered.
    pub min_version: Option<u64>,
}

/// Sort orders of `GET /orders`.
#[derive(ToSchema)]
pub enum SearchSort {
    #[serde(rename = "placedAt:desc")]
    PlacedAtDesc,
    #[serde(rename = "placedAt:asc")]
    PlacedAtAsc,
    #[serde(rename = "total:desc")]
    TotalDesc,
    #[serde(rename = "total:asc")]
    TotalAsc,
}

/// The query of `GET /orders`. A customer token searches only its own orders.
#[derive(IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct SearchParams {
    pub customer_id: Option<CustomerId>,
    #[param(inline)]
    pub status: Option<OrderStatus>,
    /// Full text over item names and skus: every word must match (as a prefix).
    #[param(max_length = 200)]
    pub q: Option<String>,
    /// An RFC 3339 instant or a `YYYY-MM-DD` date (its start).
    pub placed_from: Option<String>,
    /// An RFC 3339 instant or a `YYYY-MM-DD` date (its end).
    pub placed_to: Option<String>,
    /// Default `placedAt:desc`.
    #[param(inline)]
    pub sort: Option<SearchSort>,
    #[param(minimum = 1, maximum = 100, default = 20)]
    pub limit: Option<u32>,
    /// The `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

/// The query of `GET /revenue/daily`: at most 366 days, both ends included.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RevenueParams {
    /// The first day (a date in the business time zone).
    pub from: NaiveDate,
    /// The last day, not before `from`.
    pub to: NaiveDate,
    /// Only this currency; all currencies when left out.
    pub currency: Option<Currency>,
}

// --------------------------------------------------------------------------------------------- problems

/// An RFC 9457 problem document, sent as `application/problem+json` with every 4xx and 5xx status.
#[derive(ToSchema)]
pub struct Problem {
    /// `urn:orderflow:problem:<code>`.
    #[serde(rename = "type")]
    #[schema(format = "uri", example = "urn:orderflow:problem:order_not_found")]
    pub kind: String,
    /// A short, fixed summary of the problem type.
    pub title: String,
    /// The HTTP status code.
    #[schema(minimum = 400, maximum = 599)]
    pub status: u16,
    /// What went wrong with this request; never an internal cause.
    pub detail: String,
    pub code: ProblemCode,
    /// Only with `validation_failed`: every rule the request broke, so that it can be fixed in one go.
    pub errors: Option<Vec<FieldError>>,
}

/// The machine-readable problem code: one per kind of error.
pub struct ProblemCode;

impl PartialSchema for ProblemCode {
    fn schema() -> RefOr<Schema> {
        let mut codes: Vec<&str> = Vec::new();
        for code in every_error().iter().map(ApiError::code) {
            if !codes.contains(&code) {
                codes.push(code);
            }
        }
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("The machine-readable problem code: one per kind of error."))
            .enum_values(Some(codes))
            .into()
    }
}
impl ToSchema for ProblemCode {}

/// One of every error the API answers with (`ProblemCode` lists their codes; the unit tests check that each is
/// documented on some route, and that this list is complete).
pub(super) fn every_error() -> Vec<ApiError> {
    use ApiError as E;
    use OrderError as R;
    vec![
        E::InvalidJson("malformed JSON: expected value at line 1 column 1".to_owned()),
        E::Validation(vec![FieldError::new("items[0].quantity", "must be an integer from 1 to 10000")]),
        E::PayloadTooLarge(super::body::MAX_BODY_BYTES),
        E::UnsupportedMediaType,
        E::RouteNotFound,
        E::MethodNotAllowed,
        E::OrderNotFound,
        E::Unauthorized,
        E::Forbidden,
        E::VersionConflict { current: 2 },
        E::Rule(R::NotFound),
        E::Rule(R::AlreadyExists),
        E::Rule(R::AmountMismatch),
        E::Rule(R::PaymentAlreadyConfirmed),
        E::Rule(R::Cancelled),
        E::Rule(R::NotPaid),
        E::Rule(R::AlreadyShipped),
        E::Rule(R::AlreadyCancelled),
        E::WriteConflict,
        E::IdempotencyKeyReused,
        E::Unavailable,
        E::ParkedNotFound,
        E::ParkedNotFirst("parked event B waits behind A, an earlier event of the same order".to_owned()),
        E::ReplayFailed("the view rejected the event".to_owned()),
        E::ProjectionNotFound,
        E::RebuildInProgress("a rebuild of search is already running".to_owned()),
        E::RateLimited(std::time::Duration::from_secs(1)),
        E::UriTooLong(8192),
        E::RequestTimeout,
    ]
}

/// The name and meaning of a header that an error response carries.
fn header_doc(name: &header::HeaderName) -> (&'static str, &'static str) {
    match *name {
        header::ETAG => ("ETag", "The order's current version, as a strong ETag: `\"<version>\"`."),
        header::RETRY_AFTER => ("Retry-After", "Seconds to wait before retrying; the request had no effect."),
        header::WWW_AUTHENTICATE => ("WWW-Authenticate", "`Bearer`: the scheme this API authenticates with."),
        _ => ("", ""),
    }
}

/// The response for errors that share one status: their codes and details, a `Problem` schema, one example
/// per error and the headers they carry, all taken from what [`ApiError`] really answers.
pub(super) fn problem_response(errors: &[ApiError]) -> (String, Response) {
    let status = errors.first().map_or(500, |e| e.status_code().as_u16());
    debug_assert!(errors.iter().all(|e| e.status_code().as_u16() == status), "one status per response");
    let description = errors.iter().map(|e| format!("`{}`: {}", e.code(), e)).collect::<Vec<_>>().join("; ");
    let examples = errors.iter().map(|e| {
        let body = serde_json::from_str(&e.to_stored().body).ok();
        (e.code(), ExampleBuilder::new().value(body).build())
    });
    let schema = RefOr::Ref(Ref::from_schema_name(Problem::name()));
    let content = ContentBuilder::new().schema(Some(schema)).examples_from_iter(examples);
    let mut response = ResponseBuilder::new().description(description).content(PROBLEM_JSON, content.build());
    let mut seen = Vec::new();
    for error in errors {
        for (name, value) in error.error_response().headers() {
            let (canonical, meaning) = header_doc(name);
            if canonical.is_empty() || seen.contains(&canonical) {
                continue;
            }
            seen.push(canonical);
            let schema = ObjectBuilder::new().schema_type(Type::String).examples(value.to_str().ok());
            response =
                response.header(canonical, HeaderBuilder::new().schema(schema).description(Some(meaning)).build());
        }
    }
    (status.to_string(), response.build())
}

/// Problem responses for `#[utoipa::path(responses(...))]`: each type is one status and the errors that
/// share it on the routes that name it.
macro_rules! problems {
    ($($(#[$doc:meta])* $name:ident => [$($error:expr),+ $(,)?];)+) => {
        $(
            $(#[$doc])*
            pub struct $name;

            impl IntoResponses for $name {
                fn responses() -> BTreeMap<String, RefOr<Response>> {
                    let (status, response) = problem_response(&[$($error),+]);
                    BTreeMap::from([(status, response.into())])
                }
            }
        )+
    };
}

problems! {
    /// 400 `invalid_json`.
    InvalidJson => [ApiError::InvalidJson("malformed JSON: expected value at line 1 column 1".to_owned())];
    /// 401 `unauthorized`.
    Unauthorized => [ApiError::Unauthorized];
    /// 403 `forbidden`.
    Forbidden => [ApiError::Forbidden];
    /// 404 `order_not_found`.
    OrderNotFound => [ApiError::OrderNotFound];
    /// 412 `version_conflict`.
    VersionConflict => [ApiError::VersionConflict { current: 2 }];
    /// 413 `payload_too_large`.
    PayloadTooLarge => [ApiError::PayloadTooLarge(super::body::MAX_BODY_BYTES)];
    /// 415 `unsupported_media_type`.
    UnsupportedMediaType => [ApiError::UnsupportedMediaType];
    /// 422 `validation_failed`, for a query string.
    ValidationFailed => [ApiError::Validation(vec![FieldError::new("limit", "must be an integer from 1 to 100")])];
    /// 503 `unavailable`.
    Unavailable => [ApiError::Unavailable];
    /// 422 of `POST /orders`, `ship` and `cancel`.
    CommandUnprocessable => [
        ApiError::Validation(vec![FieldError::new("reason", "must be 1-500 characters")]),
        ApiError::IdempotencyKeyReused,
    ];
    /// 422 of `confirm-payment`.
    PaymentUnprocessable => [
        ApiError::Validation(vec![FieldError::new(
            "amount",
            "must be an integer from 0 to 10000000000000000 (minor units)",
        )]),
        ApiError::Rule(OrderError::AmountMismatch),
        ApiError::IdempotencyKeyReused,
    ];
    /// 409 of `POST /orders`.
    PlaceConflict => [ApiError::Rule(OrderError::AlreadyExists), ApiError::WriteConflict];
    /// 409 of `confirm-payment`.
    PaymentConflict => [
        ApiError::Rule(OrderError::PaymentAlreadyConfirmed),
        ApiError::Rule(OrderError::Cancelled),
        ApiError::WriteConflict,
    ];
    /// 409 of `ship`.
    ShipConflict => [
        ApiError::Rule(OrderError::NotPaid),
        ApiError::Rule(OrderError::Cancelled),
        ApiError::Rule(OrderError::AlreadyShipped),
        ApiError::WriteConflict,
    ];
    /// 409 of `cancel`.
    CancelConflict => [
        ApiError::Rule(OrderError::AlreadyShipped),
        ApiError::Rule(OrderError::AlreadyCancelled),
        ApiError::WriteConflict,
    ];
    /// 404 `not_found` of `/admin/parked/{id}`.
    ParkedNotFound => [ApiError::ParkedNotFound];
    /// 409 of `/admin/parked/{id}` (replay and discard).
    ParkedConflict => [
        ApiError::ParkedNotFirst("parked event B waits behind A, an earlier event of the same order".to_owned()),
        ApiError::ReplayFailed("the view rejected the event".to_owned()),
    ];
    /// 404 `not_found` of `/admin/projections/{name}/rebuild`.
    ProjectionNotFound => [ApiError::ProjectionNotFound];
    /// 409 of `/admin/projections/{name}/rebuild`.
    RebuildInProgress => [ApiError::RebuildInProgress("a rebuild of search is already running".to_owned())];
}
