//! `GET /openapi.json` (docs/api.md §2): served without a token; describes every route of `routes()` with exactly
//! the methods, the authentication and the problem responses the service really has; passes a real OpenAPI 3.1
//! validator (`openapi-spec-validator`); and the service's real responses match the schemas it documents.

use std::collections::BTreeSet;

use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, eventually, new_id, order_body, spawn_app};

const METHODS: [Method; 5] = [Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE];

/// Routes that need no token (docs/api.md §2).
const PUBLIC: [&str; 5] = ["/metrics", "/health/live", "/health/ready", "/openapi.json", "/asyncapi.json"];

async fn document(app: &TestApp) -> Value {
    let response = app.client.get(app.url("/openapi.json")).send().await.expect("request sent");
    assert_eq!(response.status(), StatusCode::OK, "served without a token");
    assert_eq!(content_type(&response), "application/json");
    response.json().await.expect("the document is JSON")
}

fn content_type(response: &Response) -> String {
    response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
}

/// The paths `api_routes()` serves, read from its source: every `"/…"` literal in the function.
fn routed_paths() -> BTreeSet<String> {
    let source = include_str!("../../src/http/mod.rs");
    let start = source.find("fn api_routes(").expect("api_routes() in src/http/mod.rs");
    let body = &source[start..];
    let body = &body[..body.find("\n}\n").unwrap_or(body.len())];
    body.split('"').skip(1).step_by(2).filter(|s| s.starts_with('/')).map(str::to_owned).collect()
}

/// A concrete path for a template: `{id}` and `{name}` filled in.
fn concrete(template: &str) -> String {
    template.replace("{id}", "probe-1").replace("{name}", "search")
}

fn operations(doc: &Value) -> Vec<(String, Method, &Value)> {
    let mut all = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("an HTTP method");
            all.push((path.clone(), method, operation));
        }
    }
    all
}

/// A response, with a `$ref` to `components.responses` followed.
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value["$ref"].as_str() {
        Some(reference) => {
            let pointer = reference.strip_prefix('#').expect("a local $ref");
            doc.pointer(pointer).unwrap_or_else(|| panic!("{reference} resolves"))
        }
        None => value,
    }
}

#[actix_web::test]
async fn the_document_is_served_without_a_token_and_describes_every_route() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "{}", doc["openapi"]);
    assert_eq!(doc["info"]["title"], "orderflow");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));

    // Every route of routes() is documented, and nothing else is.
    let routed = routed_paths();
    assert!(routed.contains("/orders/{id}/confirm-payment") && routed.contains("/openapi.json"), "{routed:?}");
    let documented: BTreeSet<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    let missing: Vec<_> = routed.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&routed).collect();
    assert!(extra.is_empty(), "documented paths that routes() does not serve: {extra:?}");

    // Each path documents exactly the methods the service answers (others are 405), and each operation says
    // truthfully whether it needs a token.
    for path in &documented {
        let item = &doc["paths"][path];
        for method in METHODS {
            let key = method.as_str().to_lowercase();
            let response = app.request(method.clone(), &concrete(path), None, None, &[]).await;
            let status = response.status();
            assert_ne!(status, StatusCode::NOT_FOUND, "{method} {path} is not routed at all");
            let answered = status != StatusCode::METHOD_NOT_ALLOWED;
            assert_eq!(item.get(&key).is_some(), answered, "{method} {path}: documented vs answered ({status})");
            if answered {
                let public = PUBLIC.contains(&path.as_str());
                assert_eq!(status == StatusCode::UNAUTHORIZED, !public, "{method} {path} without a token: {status}");
            }
        }
    }

    // The bearer JWT scheme, required everywhere except the public routes, which say so with `security: []`.
    let scheme = &doc["components"]["securitySchemes"]["bearerAuth"];
    assert_eq!(
        (&scheme["type"], &scheme["scheme"], &scheme["bearerFormat"]),
        (&json!("http"), &json!("bearer"), &json!("JWT"))
    );
    assert_eq!(doc["security"], json!([{"bearerAuth": []}]));
    for (path, method, operation) in operations(&doc) {
        match operation.get("security") {
            Some(security) if PUBLIC.contains(&path.as_str()) => assert_eq!(security, &json!([]), "{method} {path}"),
            None => assert!(!PUBLIC.contains(&path.as_str()), "{method} {path} should say `security: []`"),
            Some(security) => assert!(security.to_string().contains("bearerAuth"), "{method} {path}: {security}"),
        }
    }

    // Every 4xx/5xx response is a problem document; the one exception is readiness, whose 503 is its report.
    let problem = json!({"$ref": "#/components/schemas/Problem"});
    let mut responses: Vec<(String, u16, &Value)> = Vec::new();
    for (path, method, operation) in operations(&doc) {
        for (status, response) in operation["responses"].as_object().expect("responses") {
            let name = format!("{method} {path} {status}");
            responses.push((name, status.parse().expect("a status code"), resolve(&doc, response)));
        }
    }
    for (name, response) in doc["components"]["responses"].as_object().expect("components.responses") {
        responses.push((format!("components.responses.{name}"), 400, response));
    }
    let mut problems = 0;
    for (name, status, response) in responses {
        if status < 400 || name == "GET /health/ready 503" {
            continue;
        }
        problems += 1;
        let content = response["content"].as_object().expect("error content");
        assert_eq!(content.keys().collect::<Vec<_>>(), ["application/problem+json"], "{name}");
        assert_eq!(content["application/problem+json"]["schema"], problem, "{name}");
    }
    assert!(problems > 40, "{problems} problem responses");
    let schema = &doc["components"]["schemas"]["Problem"];
    assert_eq!(schema["required"], json!(["type", "title", "status", "detail", "code"]));
    assert_eq!(schema["properties"]["errors"]["items"]["$ref"], "#/components/schemas/FieldError");

    // The headers of docs/api.md §2.
    for (path, method, operation) in operations(&doc) {
        let parameters: Vec<&Value> =
            operation["parameters"].as_array().map(|p| p.iter().collect()).unwrap_or_default();
        let header_param = |name: &str| parameters.iter().any(|p| p["in"] == "header" && p["name"] == name);
        if method == Method::POST && path.starts_with("/orders") {
            assert!(header_param("If-Match") && header_param("Idempotency-Key"), "{method} {path}");
            let ok = if path == "/orders" { "201" } else { "200" };
            let headers = &operation["responses"][ok]["headers"];
            assert!(headers["ETag"].is_object() && headers["Idempotent-Replayed"].is_object(), "{method} {path}");
            assert_eq!(headers["Location"].is_object(), path == "/orders", "{method} {path}");
            assert!(operation["responses"]["412"]["headers"]["ETag"].is_object(), "{method} {path}");
        }
        if let Some(unavailable) = operation["responses"].get("503").filter(|_| path != "/health/ready") {
            assert!(unavailable["headers"]["Retry-After"].is_object(), "{method} {path}");
        }
    }
    let get_order = &doc["paths"]["/orders/{id}"]["get"]["responses"]["200"]["headers"];
    assert!(get_order["ETag"].is_object() && get_order["X-Consistency"].is_object());

    // Last, so that everything documented is checked first.
    assert!(missing.is_empty(), "routes without `#[utoipa::path]` (or not listed in ApiDoc's paths): {missing:?}");
}

#[actix_web::test]
async fn the_document_passes_openapi_spec_validator() {
    let Ok(python) = std::env::var("OPENAPI_VALIDATOR_PYTHON") else {
        println!(
            "skipped: OPENAPI_VALIDATOR_PYTHON is not set (scripts/test.sh sets it; scripts/services.sh installs it)"
        );
        return;
    };
    let app = spawn_app().await;
    let doc = document(&app).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let validate = |doc: &Value, name: &str| {
        let file = dir.path().join(name);
        std::fs::write(&file, doc.to_string()).expect("document written");
        let output = std::process::Command::new(&python)
            .args(["-m", "openapi_spec_validator"])
            .arg(&file)
            .output()
            .unwrap_or_else(|e| panic!("running {python}: {e}"));
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        (output.status.success(), text)
    };
    let (valid, report) = validate(&doc, "openapi.json");
    assert!(valid, "openapi-spec-validator rejects the document:\n{report}");
    assert!(report.contains("OK"), "{report}");

    // The validator is not a rubber stamp: a response without its required `description` fails.
    let mut broken = doc.clone();
    broken["paths"]["/orders"]["post"]["responses"]["201"].as_object_mut().expect("201").remove("description");
    let (valid, report) = validate(&broken, "broken.json");
    assert!(!valid, "a response without a description should not validate:\n{report}");
}

// ------------------------------------------------------------------------------- responses vs. schemas

/// Asserts that a real response is documented for the operation (status, media type, headers) and that its body
/// matches the documented schema; returns the body.
async fn conforms(doc: &Value, method: Method, template: &str, response: Response) -> Value {
    let status = response.status().as_u16().to_string();
    let operation = &doc["paths"][template][method.as_str().to_lowercase()];
    assert!(operation.is_object(), "{method} {template} is not documented");
    let documented = operation["responses"].get(&status).map(|r| resolve(doc, r));
    let documented = documented.unwrap_or_else(|| panic!("{method} {template} answered {status}, not documented"));
    conforms_to(doc, documented, &format!("{method} {template} {status}"), response).await
}

async fn conforms_to(doc: &Value, documented: &Value, name: &str, response: Response) -> Value {
    for (header, _) in documented["headers"].as_object().into_iter().flatten() {
        // `Idempotent-Replayed` comes only with replays.
        if header != "Idempotent-Replayed" {
            assert!(response.headers().contains_key(header.as_str()), "{name}: documented header {header} missing");
        }
    }
    let actual = content_type(&response);
    let media = documented["content"].as_object().expect("documented content");
    let essence = |t: &str| t.split(';').next().unwrap_or("").trim().to_owned();
    let (media_type, entry) = media
        .iter()
        .find(|(t, _)| **t == actual || essence(t) == essence(&actual))
        .unwrap_or_else(|| panic!("{name}: content type {actual} is not documented ({:?})", media.keys()));
    let text = response.text().await.expect("body");
    if !media_type.ends_with("json") {
        return Value::String(text);
    }
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: not JSON ({e}): {text}"));
    let mut errors = Vec::new();
    Schemas { doc }.check(&entry["schema"], &body, "$", false, &mut errors);
    assert!(errors.is_empty(), "{name}: the body does not match its schema:\n{}\n{body:#}", errors.join("\n"));
    body
}

/// A small JSON Schema (2020-12 subset) checker for the schemas utoipa writes: `$ref`, `type`, `enum`,
/// `properties`/`required`, `additionalProperties`, `items`, `allOf`/`oneOf`/`anyOf`, numeric and length
/// bounds. `format` and `pattern` are not checked. Objects are closed: a property the schema does not name
/// is an error, so that an undocumented field in a response shows up.
struct Schemas<'a> {
    doc: &'a Value,
}

impl<'a> Schemas<'a> {
    fn resolve(&self, schema: &'a Value) -> &'a Value {
        if schema.get("$ref").is_some() { self.resolve(resolve(self.doc, schema)) } else { schema }
    }

    /// Every property name the schema (with its compositions) defines; `None` if it names none.
    fn known_properties(&self, schema: &'a Value) -> Option<BTreeSet<String>> {
        let schema = self.resolve(schema);
        let mut known: Option<BTreeSet<String>> = schema["properties"].as_object().map(|p| p.keys().cloned().collect());
        for key in ["allOf", "oneOf", "anyOf"] {
            for branch in schema[key].as_array().into_iter().flatten() {
                if let Some(more) = self.known_properties(branch) {
                    known.get_or_insert_with(BTreeSet::new).extend(more);
                }
            }
        }
        known
    }

    fn check(&self, schema: &'a Value, value: &Value, at: &str, keys_checked: bool, errors: &mut Vec<String>) {
        let schema = self.resolve(schema);
        let mut keys_checked = keys_checked;
        if let (false, Some(object)) = (keys_checked, value.as_object()) {
            if schema.get("additionalProperties").is_none()
                && let Some(known) = self.known_properties(schema)
            {
                for key in object.keys().filter(|k| !known.contains(*k)) {
                    errors.push(format!("{at}.{key}: not in the schema"));
                }
            }
            keys_checked = true;
        }
        for branch in schema["allOf"].as_array().into_iter().flatten() {
            self.check(branch, value, at, keys_checked, errors);
        }
        for (key, exactly_one) in [("oneOf", true), ("anyOf", false)] {
            if let Some(branches) = schema[key].as_array() {
                let matching = branches
                    .iter()
                    .filter(|branch| {
                        let mut branch_errors = Vec::new();
                        self.check(branch, value, at, keys_checked, &mut branch_errors);
                        branch_errors.is_empty()
                    })
                    .count();
                if matching == 0 || (exactly_one && matching > 1) {
                    errors.push(format!("{at}: {matching} of the {key} branches match {value}"));
                }
            }
        }
        if let Some(types) = schema.get("type") {
            let types: Vec<&str> = match types {
                Value::String(t) => vec![t.as_str()],
                Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                _ => vec![],
            };
            let is = |t: &str| match t {
                "null" => value.is_null(),
                "boolean" => value.is_boolean(),
                "string" => value.is_string(),
                "array" => value.is_array(),
                "object" => value.is_object(),
                "number" => value.is_number(),
                "integer" => value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|f| f.fract() == 0.0),
                _ => false,
            };
            if !types.iter().any(|t| is(t)) {
                errors.push(format!("{at}: {value} is not of type {types:?}"));
                return;
            }
        }
        if let Some(allowed) = schema["enum"].as_array()
            && !allowed.contains(value)
        {
            errors.push(format!("{at}: {value} is not one of {allowed:?}"));
        }
        if let Some(n) = value.as_f64() {
            if schema["minimum"].as_f64().is_some_and(|min| n < min) {
                errors.push(format!("{at}: {n} is below {}", schema["minimum"]));
            }
            if schema["maximum"].as_f64().is_some_and(|max| n > max) {
                errors.push(format!("{at}: {n} is above {}", schema["maximum"]));
            }
        }
        if let Some(s) = value.as_str() {
            let n = s.chars().count() as u64;
            if schema["minLength"].as_u64().is_some_and(|min| n < min)
                || schema["maxLength"].as_u64().is_some_and(|max| n > max)
            {
                errors.push(format!("{at}: length {n} is out of bounds"));
            }
        }
        if let Some(object) = value.as_object() {
            for required in schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                if !object.contains_key(required) {
                    errors.push(format!("{at}.{required}: required but missing"));
                }
            }
            for (key, item) in object {
                let path = format!("{at}.{key}");
                match (schema["properties"].get(key), schema.get("additionalProperties")) {
                    (Some(property), _) => self.check(property, item, &path, false, errors),
                    (None, Some(additional)) if additional.is_object() => {
                        self.check(additional, item, &path, false, errors)
                    }
                    _ => {}
                }
            }
        }
        if let Some(items) = value.as_array() {
            let count = items.len() as u64;
            if schema["minItems"].as_u64().is_some_and(|min| count < min)
                || schema["maxItems"].as_u64().is_some_and(|max| count > max)
            {
                errors.push(format!("{at}: {count} items is out of bounds"));
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    self.check(item_schema, item, &format!("{at}[{i}]"), false, errors);
                }
            }
        }
    }
}

/// A request that should be refused: method, path template, path, token, body, `If-Match`, status, code.
type Refusal<'a> = (Method, &'a str, String, Option<&'a str>, Option<Value>, Option<&'a str>, u16, &'a str);

#[actix_web::test]
async fn real_responses_match_the_documented_schemas() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let admin = app.admin();
    let id = new_id("oas");

    // Commands, a replay, and the order's documents.
    let key = [("Idempotency-Key", "oas-key-1")];
    let body = order_body(&id, "c-1", 2, 1250);
    let placed = app.request(Method::POST, "/orders", Some(&admin), Some(&body), &key).await;
    assert_eq!(conforms(&doc, Method::POST, "/orders", placed).await["version"], 1);
    let replayed = app.request(Method::POST, "/orders", Some(&admin), Some(&body), &key).await;
    assert_eq!(replayed.headers()["idempotent-replayed"], "true");
    conforms(&doc, Method::POST, "/orders", replayed).await;
    let paid = app.pay(&id, "pay-1", 2500).await;
    conforms(&doc, Method::POST, "/orders/{id}/confirm-payment", paid).await;
    let shipped = conforms(&doc, Method::POST, "/orders/{id}/ship", app.ship(&id).await).await;
    assert_eq!(shipped["status"], "shipped");
    let strong = app.get(&format!("/orders/{id}?consistency=strong"), &admin).await;
    conforms(&doc, Method::GET, "/orders/{id}", strong).await;
    app.projected(&id, 3).await;
    conforms(&doc, Method::GET, "/orders/{id}", app.get(&format!("/orders/{id}"), &admin).await).await;
    let history = app.get(&format!("/orders/{id}/history"), &admin).await;
    let history = conforms(&doc, Method::GET, "/orders/{id}/history", history).await;
    assert_eq!(history["events"].as_array().map(Vec::len), Some(3));
    let hits = conforms(&doc, Method::GET, "/orders", app.get("/orders?q=mug&limit=1", &admin).await).await;
    assert_eq!(hits["orders"][0]["orderId"], json!(id));
    let today = chrono::Utc::now().date_naive();
    let revenue_path = format!("/revenue/daily?from={today}&to={today}");
    let revenue = eventually(|| async {
        let body = conforms(&doc, Method::GET, "/revenue/daily", app.get(&revenue_path, &admin).await).await;
        body["days"].as_array().is_some_and(|days| !days.is_empty()).then_some(body)
    })
    .await;
    assert_eq!(revenue["days"][0]["paidOrders"], 1);

    // Operations.
    for path in PUBLIC {
        conforms(&doc, Method::GET, path, app.request(Method::GET, path, None, None, &[]).await).await;
    }
    let projections =
        conforms(&doc, Method::GET, "/admin/projections", app.get("/admin/projections", &admin).await).await;
    assert!(projections.as_array().is_some_and(|p| !p.is_empty()));

    // Problems: each status is documented for its route, and each body is a `Problem` with a documented code.
    let codes = doc["components"]["schemas"]["ProblemCode"]["enum"].as_array().expect("codes").clone();
    let customer = app.customer("c-1");
    let (other, fresh) = (new_id("oas-other"), new_id("oas-fresh"));
    app.place(&fresh, "c-1", 1, 100).await;
    let too_large = json!({"customerId": "c-1", "currency": "EUR", "items": [], "pad": "x".repeat(70 * 1024)});
    let (ship, cancel) = (json!({"carrier": "DHL", "trackingNumber": "T"}), json!({"reason": "r"}));
    let (someone_elses, duplicate, bad_line) =
        (order_body(&other, "c-2", 1, 1), order_body(&id, "c-1", 1, 1), order_body(&other, "c-1", 0, 100));
    let short_payment = json!({"paymentId": "p", "amount": 99});
    let (order, fresh_order) = (format!("/orders/{id}"), format!("/orders/{fresh}"));
    let (admin, customer) = (Some(admin.as_str()), Some(customer.as_str()));
    #[rustfmt::skip]
    let cases: Vec<Refusal> = vec![
        (Method::GET, "/orders/{id}", order.clone(), None, None, None, 401, "unauthorized"),
        (Method::POST, "/orders", "/orders".into(), customer, Some(someone_elses), None, 403, "forbidden"),
        (Method::POST, "/orders/{id}/ship", format!("/orders/{other}/ship"), admin, Some(ship), None, 404, "order_not_found"),
        (Method::POST, "/orders", "/orders".into(), admin, Some(duplicate), None, 409, "order_already_exists"),
        (Method::POST, "/orders/{id}/cancel", format!("{order}/cancel"), admin, Some(cancel.clone()), None, 409,
            "order_already_shipped"),
        (Method::POST, "/orders/{id}/cancel", format!("{fresh_order}/cancel"), admin, Some(cancel), Some("\"9\""), 412,
            "version_conflict"),
        (Method::POST, "/orders", "/orders".into(), admin, Some(too_large), None, 413, "payload_too_large"),
        (Method::POST, "/orders", "/orders".into(), admin, Some(bad_line), None, 422, "validation_failed"),
        (Method::POST, "/orders/{id}/confirm-payment", format!("{fresh_order}/confirm-payment"), admin, Some(short_payment),
            None, 422, "amount_mismatch"),
        (Method::GET, "/orders", "/orders?limit=0".into(), admin, None, None, 422, "validation_failed"),
        (Method::GET, "/revenue/daily", revenue_path.clone(), customer, None, None, 403, "forbidden"),
        (Method::GET, "/revenue/daily", "/revenue/daily?from=2026-01-01".into(), admin, None, None, 422, "validation_failed"),
        (Method::GET, "/admin/projections", "/admin/projections".into(), customer, None, None, 403, "forbidden"),
    ];
    for (method, template, path, token, body, if_match, status, code) in cases {
        let headers: Vec<(&str, &str)> = if_match.map(|tag| ("If-Match", tag)).into_iter().collect();
        let response = app.request(method.clone(), &path, token, body.as_ref(), &headers).await;
        assert_eq!(response.status().as_u16(), status, "{method} {path}");
        let problem = conforms(&doc, method, template, response).await;
        assert_eq!(problem["code"], code, "{path}");
        assert!(codes.contains(&problem["code"]), "{code} is not in ProblemCode");
    }
    // Malformed JSON and a wrong content type, which `request` does not send.
    for (content_type, body, code) in
        [("application/json", "{", "invalid_json"), ("text/plain", "{}", "unsupported_media_type")]
    {
        let request =
            app.client.post(app.url("/orders")).bearer_auth(admin.unwrap()).header("Content-Type", content_type);
        let response = request.body(body).send().await.expect("request sent");
        assert_eq!(conforms(&doc, Method::POST, "/orders", response).await["code"], code);
    }
    // The router's own problems, documented once in `components.responses`.
    let unknown = app.request(Method::GET, "/no/such/route", admin, None, &[]).await;
    let body = conforms_to(&doc, &doc["components"]["responses"]["RouteNotFound"], "unknown route", unknown).await;
    assert_eq!(body["code"], "not_found");
    let not_allowed = app.request(Method::PUT, "/orders", admin, None, &[]).await;
    let body = conforms_to(&doc, &doc["components"]["responses"]["MethodNotAllowed"], "PUT /orders", not_allowed).await;
    assert_eq!(body["code"], "method_not_allowed");
}

/// The hand-written checker above catches what it claims to: undocumented fields, wrong types, missing required
/// fields, bounds, and a value that matches no branch of a `oneOf`.
#[test]
fn the_schema_checker_catches_mismatches() {
    let doc: Value = serde_json::from_str(&orderflow::http::openapi::openapi().to_json().unwrap()).unwrap();
    let order = json!({
        "orderId": "o-1", "customerId": "c-1", "status": "placed", "currency": "EUR", "total": 2500, "version": 1,
        "placedAt": "2026-01-01T00:00:00Z",
        "items": [{"sku": "MUG-1", "name": "Mug", "quantity": 2, "unitPrice": 1250}],
    });
    let errors_for = |schema: &str, value: &Value| {
        let mut errors = Vec::new();
        Schemas { doc: &doc }.check(
            &json!({"$ref": format!("#/components/schemas/{schema}")}),
            value,
            "$",
            false,
            &mut errors,
        );
        errors
    };
    assert_eq!(errors_for("Order", &order), Vec::<String>::new());
    let broken = |change: &dyn Fn(&mut Value)| {
        let mut value = order.clone();
        change(&mut value);
        value
    };
    for (what, value) in [
        ("an undocumented field", broken(&|o| o["internal"] = json!(true))),
        ("a string total", broken(&|o| o["total"] = json!("2500"))),
        ("a fraction", broken(&|o| o["version"] = json!(1.5))),
        ("no orderId", broken(&|o| drop(o.as_object_mut().unwrap().remove("orderId")))),
        ("an unknown status", broken(&|o| o["status"] = json!("lost"))),
        ("quantity 0", broken(&|o| o["items"][0]["quantity"] = json!(0))),
        ("an empty sku", broken(&|o| o["items"][0]["sku"] = json!(""))),
        ("a numeric carrier", broken(&|o| o["carrier"] = json!(7))),
    ] {
        assert!(!errors_for("Order", &value).is_empty(), "{what} went unnoticed");
    }
    let event = json!({
        "eventId": "0190a0a0-0000-7000-8000-000000000000", "version": 1, "occurredAt": "2026-01-01T00:00:00Z",
        "type": "OrderShipped", "data": {"carrier": "DHL", "trackingNumber": "T", "shippedAt": "2026-01-01T00:00:00Z"},
    });
    assert_eq!(errors_for("HistoryEvent", &event), Vec::<String>::new());
    let mut wrong_data = event.clone();
    wrong_data["type"] = json!("OrderPlaced");
    assert!(!errors_for("HistoryEvent", &wrong_data).is_empty(), "data of another event type went unnoticed");
    let mut extra = event;
    extra["extra"] = json!(1);
    assert!(!errors_for("HistoryEvent", &extra).is_empty(), "an undocumented field next to a flattened event");
}
