//! `GET /openapi.json`: the OpenAPI 3.1 description of the API, generated from the code so that it cannot
//! drift. Each handler carries its own `#[utoipa::path]`; the documents it sends derive `ToSchema`; what the
//! code does not spell out as types is in `http::schemas`:
//! - the value types' schemas (ids, currency, quantity, money, text), built from the same limits that
//!   `domain::values` enforces;
//! - the schemas of the request bodies' text and money fields (the bodies themselves are the DTOs of
//!   `http::orders`, described by their derive);
//! - schema-only parameters: the handlers parse query strings by hand (that is how docs/api.md's 400 vs 422
//!   split works), so these structs exist only to be described;
//! - the problem responses, built from the real [`ApiError`]s: status, `code`, headers and examples are what
//!   `error.rs` answers, and a unit test fails if an `ApiError` is documented nowhere;
//! - the bearer JWT scheme, which every route needs except `/metrics`, `/health/*`, this document and
//!   `/asyncapi.json`.

use std::sync::LazyLock;

use actix_web::HttpResponse;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{HeaderBuilder, Ref, RefOr};
use utoipa::{Modify, OpenApi};

use super::error::ApiError;
use super::schemas::{Problem, ProblemCode, problem_response};
use super::{admin, asyncapi, ops, orders, revenue};
use crate::domain::FieldError;

/// The whole document. Paths are listed here once; everything else comes from the handlers' attributes.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "orderflow",
        description = "Orders with CQRS and event sourcing: commands are strongly consistent, queries read \
            eventually consistent views (see `consistency` and `minVersion` for read-your-writes).\n\n\
            Errors are RFC 9457 `application/problem+json` documents (`Problem`). Malformed JSON or a wrong JSON \
            type is 400 `invalid_json`; a well-typed value that breaks a rule is 422 `validation_failed` with \
            `errors`. Authentication and authorization are decided before any validation. An unknown route is \
            404 `not_found`, a known route with another method 405 `method_not_allowed` (with `Allow`).\n\n\
            Every route needs `Authorization: Bearer <JWT>` (HS256 with claims `sub`, `role` = `customer` | \
            `admin`, `exp`; or RS256 / ES256 from the configured JWKS) except `/metrics`, `/health/*`, \
            `/openapi.json` and `/asyncapi.json` (the AsyncAPI 3.0 document of the Kafka / Kinesis event feed). A customer sees and commands \
            only its own orders (someone else's is 404); `/revenue` and `/admin` are admin-only."
    ),
    paths(
        orders::place,
        orders::confirm_payment,
        orders::ship,
        orders::cancel,
        orders::get,
        orders::history,
        orders::search,
        revenue::daily,
        ops::metrics,
        ops::live,
        ops::ready,
        admin::projections,
        admin::parked,
        admin::replay,
        admin::discard,
        admin::rebuild,
        admin::audit_log,
        document,
        asyncapi::document,
    ),
    components(schemas(Problem, ProblemCode, FieldError)),
    modifiers(&NoLicense, &Security, &RouteProblems, &RateLimits),
    security(("bearerAuth" = [])),
    tags(
        (name = "orders", description = "Commands (write model) and queries (read model) on orders"),
        (name = "revenue", description = "The daily revenue view (admin only)"),
        (name = "admin", description = "Projections and their operations (admin only)"),
        (name = "operations", description = "Metrics, health, this document and the event feed's; no token needed"),
    )
)]
pub struct ApiDoc;

/// The document, as served.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

static DOCUMENT: LazyLock<String> =
    LazyLock::new(|| openapi().to_json().expect("the OpenAPI document is plain data and always serializes"));

/// `GET /openapi.json`.
#[utoipa::path(
    get, path = "/openapi.json", tag = "operations", operation_id = "openApiDocument",
    summary = "This OpenAPI 3.1 document",
    security(()),
    responses((status = 200, description = "The OpenAPI document", body = Object, content_type = "application/json")),
)]
pub async fn document() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(DOCUMENT.as_str())
}

// --------------------------------------------------------------------------------------------- modifiers

/// Cargo.toml names no license, which utoipa would write as `{"name": ""}`: leave the field out instead.
struct NoLicense;

impl Modify for NoLicense {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        doc.info.license = doc.info.license.take().filter(|license| !license.name.is_empty());
    }
}

/// The bearer JWT scheme. Routes open to all say `security(())`, which utoipa writes as `[{}]` ("anonymous
/// allowed"); this writes them as `[]`, the plain OpenAPI form of "no authentication".
struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("JWT")
            .description(Some(
                "HS256 JWT with claims `sub`, `role` (`customer` | `admin`) and `exp` (60 s of leeway); with \
                 `auth.jwks` configured, also RS256 / ES256 tokens of an identity provider, the role and customer id \
                 taken from configurable claims. Missing, invalid or expired: 401 `unauthorized`.",
            ))
            .build();
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearerAuth", SecurityScheme::Http(scheme));
        let open = Some(vec![utoipa::openapi::security::SecurityRequirement::default()]);
        for item in doc.paths.paths.values_mut() {
            let operations = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
            for operation in operations.into_iter().flatten() {
                if operation.security == open {
                    operation.security = Some(vec![]);
                }
            }
        }
    }
}

/// The problems of the router itself, on no route in particular: `components.responses`.
struct RouteProblems;

impl Modify for RouteProblems {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        let (_, not_found) = problem_response(&[ApiError::RouteNotFound]);
        let (_, mut not_allowed) = problem_response(&[ApiError::MethodNotAllowed]);
        let allow = ObjectBuilder::new().schema_type(Type::String).examples(["GET, POST"]);
        not_allowed.headers.insert(
            "Allow".to_owned(),
            HeaderBuilder::new().schema(allow).description(Some("The methods the route allows.")).build(),
        );
        let (_, uri_too_long) = problem_response(&[ApiError::UriTooLong(8192)]);
        components.responses.insert("RouteNotFound".to_owned(), not_found.into());
        components.responses.insert("MethodNotAllowed".to_owned(), not_allowed.into());
        components.responses.insert("UriTooLong".to_owned(), uri_too_long.into());
        let (_, request_timeout) = problem_response(&[ApiError::RequestTimeout]);
        components.responses.insert("RequestTimeout".to_owned(), request_timeout.into());
    }
}

/// 429 `rate_limited` on every route that takes a token (when `rate_limit.enabled`): one shared response in
/// `components.responses`, referenced from each of them. Runs after [`Security`], which marks open routes `[]`.
struct RateLimits;

impl Modify for RateLimits {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let (status, response) = problem_response(&[ApiError::RateLimited(std::time::Duration::from_secs(1))]);
        doc.components.get_or_insert_with(Default::default).responses.insert("RateLimited".to_owned(), response.into());
        for item in doc.paths.paths.values_mut() {
            let operations = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
            for operation in operations.into_iter().flatten() {
                if operation.security.as_ref().is_some_and(Vec::is_empty) {
                    continue;
                }
                let reference = Ref::new("#/components/responses/RateLimited");
                operation.responses.responses.insert(status.clone(), RefOr::Ref(reference));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::ResponseError;

    use crate::domain::values::limits;
    use crate::domain::{OrderError, OrderId};
    use crate::http::error::PROBLEM_JSON;
    use crate::http::schemas::every_error;
    use crate::views::SortOrder;

    fn json() -> serde_json::Value {
        serde_json::from_str(&DOCUMENT).unwrap()
    }

    /// Exhaustive on purpose: a new error variant fails to compile here, as a reminder to add it to
    /// `every_error` (and so to `ProblemCode`) and to document it on its routes.
    fn variant(error: &ApiError) -> &'static str {
        use ApiError as E;
        use OrderError as R;
        match error {
            E::InvalidJson(_) => "InvalidJson",
            E::Validation(_) => "Validation",
            E::PayloadTooLarge(_) => "PayloadTooLarge",
            E::UnsupportedMediaType => "UnsupportedMediaType",
            E::RouteNotFound => "RouteNotFound",
            E::MethodNotAllowed => "MethodNotAllowed",
            E::OrderNotFound => "OrderNotFound",
            E::Unauthorized => "Unauthorized",
            E::Forbidden => "Forbidden",
            E::VersionConflict { .. } => "VersionConflict",
            E::Rule(R::NotFound) => "Rule(NotFound)",
            E::Rule(R::AlreadyExists) => "Rule(AlreadyExists)",
            E::Rule(R::AmountMismatch) => "Rule(AmountMismatch)",
            E::Rule(R::PaymentAlreadyConfirmed) => "Rule(PaymentAlreadyConfirmed)",
            E::Rule(R::Cancelled) => "Rule(Cancelled)",
            E::Rule(R::NotPaid) => "Rule(NotPaid)",
            E::Rule(R::AlreadyShipped) => "Rule(AlreadyShipped)",
            E::Rule(R::AlreadyCancelled) => "Rule(AlreadyCancelled)",
            E::WriteConflict => "WriteConflict",
            E::IdempotencyKeyReused => "IdempotencyKeyReused",
            E::Unavailable => "Unavailable",
            E::ParkedNotFound => "ParkedNotFound",
            E::ParkedNotFirst(_) => "ParkedNotFirst",
            E::ReplayFailed(_) => "ReplayFailed",
            E::ProjectionNotFound => "ProjectionNotFound",
            E::RebuildInProgress(_) => "RebuildInProgress",
            E::RateLimited(_) => "RateLimited",
            E::UriTooLong(_) => "UriTooLong",
            E::RequestTimeout => "RequestTimeout",
        }
    }

    #[test]
    fn every_error_is_listed_and_documented_on_a_route() {
        let doc = json();
        // (status, code) of every problem example on a route.
        let mut documented = Vec::new();
        for item in doc["paths"].as_object().unwrap().values() {
            for operation in item.as_object().unwrap().values() {
                for (status, response) in operation["responses"].as_object().unwrap() {
                    let reference = response["$ref"].as_str().and_then(|r| r.strip_prefix('#'));
                    let response = reference.and_then(|r| doc.pointer(r)).unwrap_or(response);
                    if let Some(examples) = response["content"][PROBLEM_JSON]["examples"].as_object() {
                        documented.extend(examples.keys().map(|code| (status.clone(), code.clone())));
                    }
                }
            }
        }
        let errors = every_error();
        let variants: Vec<&str> = errors.iter().map(variant).collect();
        assert!(
            variants.iter().enumerate().all(|(i, v)| !variants[..i].contains(v)),
            "each variant once: {variants:?}"
        );
        let undocumented: Vec<String> = errors
            .iter()
            .filter(|e| {
                !matches!(
                    e,
                    ApiError::RouteNotFound
                        | ApiError::MethodNotAllowed
                        | ApiError::UriTooLong(_)
                        | ApiError::RequestTimeout
                )
            })
            .map(|e| (e.status_code().as_str().to_owned(), e.code().to_owned()))
            .filter(|key| !documented.contains(key))
            .map(|(status, code)| format!("{status} {code}"))
            .collect();
        assert!(
            undocumented.is_empty(),
            "errors no route documents (name their `problems!` type in the routes' `#[utoipa::path(responses(..))]`): \
             {undocumented:?}"
        );
    }

    #[test]
    fn documented_sorts_are_the_ones_the_search_accepts() {
        let doc = json();
        let parameters = doc["paths"]["/orders"]["get"]["parameters"].as_array().unwrap();
        let sort = parameters.iter().find(|p| p["name"] == "sort").unwrap();
        let sorts = sort["schema"]["enum"].as_array().unwrap();
        assert_eq!(sorts.len(), 4);
        for sort in sorts {
            assert!(SortOrder::parse(sort.as_str().unwrap()).is_some(), "{sort}");
        }
    }

    #[test]
    fn value_schemas_carry_the_domain_limits() {
        let doc = json();
        let schemas = &doc["components"]["schemas"];
        assert_eq!(schemas["Quantity"]["maximum"], 10_000);
        assert_eq!(schemas["PlaceOrderLine"]["properties"]["unitPrice"]["maximum"], 10_000_000_000_u64);
        assert_eq!(schemas["Money"]["maximum"], 10_000_000_000_000_000_u64);
        assert_eq!(schemas["PlaceOrderRequest"]["properties"]["items"]["maxItems"], limits::MAX_ITEMS);
        assert_eq!(schemas["PlaceOrderLine"]["properties"]["sku"]["maxLength"], 64);
        assert_eq!(schemas["CancelRequest"]["properties"]["reason"]["maxLength"], 500);
        // The shipping address (OrderPlaced schema version 2): optional in the command, shown in the order.
        let address = &schemas["PlaceOrderRequest"]["properties"]["shippingAddress"];
        assert!(address.to_string().contains("#/components/schemas/ShippingAddress"), "{address}");
        assert!(!schemas["PlaceOrderRequest"]["required"].as_array().unwrap().contains(&"shippingAddress".into()));
        assert_eq!(schemas["ShippingAddress"]["properties"]["country"]["pattern"], "^[A-Z]{2}$");
        let address = &schemas["ShippingAddress"]["properties"];
        for (field, max) in [
            ("name", limits::ADDRESS_NAME),
            ("line1", limits::ADDRESS_LINE),
            ("postalCode", limits::POSTAL_CODE),
            ("city", limits::CITY),
        ] {
            assert_eq!(address[field]["maxLength"], max, "{field}");
        }
        assert!(schemas["Order"]["properties"]["shippingAddress"].is_object());
        // The id pattern and length agree with the parser.
        let id = "a".repeat(64);
        assert!(OrderId::parse("id", &id).is_ok() && OrderId::parse("id", &format!("{id}a")).is_err());
        assert_eq!(schemas["OrderId"]["maxLength"], 64);
    }
}
