//! Authentication and authorization (docs/api.md §2 "Auth"): HS256 bearer tokens, 401 for anything but a valid
//! one, customers limited to their own orders (someone else's is 404, never 403), admin-only `/revenue` and
//! `/admin`, open `/metrics` and `/health/*`, and auth decided before any validation.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{SECRET, TestApp, assert_problem, eventually, new_id, order_body, spawn_app};

// ----------------------------------------------------------------------------------------------- helpers

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// An HS256 token with these claims, signed with `secret`.
fn sign(secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret.as_bytes()))
        .expect("token")
}

/// Authorization header values that must all be refused with 401.
fn bad_authorizations() -> Vec<(&'static str, Option<String>)> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let unsigned = format!(
        "{}.{}.",
        b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(json!({"sub": "admin", "role": "admin", "exp": now() + 3600}).to_string())
    );
    let valid_admin = sign(SECRET, &json!({"sub": "admin", "role": "admin", "exp": now() + 3600}));
    let tampered = {
        // Same header and signature, another payload: the signature no longer matches.
        let parts: Vec<&str> = valid_admin.split('.').collect();
        let payload = b64.encode(json!({"sub": "admin", "role": "admin", "exp": now() + 7200}).to_string());
        format!("{}.{payload}.{}", parts[0], parts[2])
    };
    vec![
        ("no token", None),
        ("empty bearer", Some("Bearer ".to_owned())),
        ("garbage", Some("Bearer garbage".to_owned())),
        ("three garbage parts", Some("Bearer aaa.bbb.ccc".to_owned())),
        ("basic auth", Some("Basic YWRtaW46YWRtaW4=".to_owned())),
        ("token without scheme", Some(valid_admin.clone())),
        (
            "expired an hour ago",
            Some(format!("Bearer {}", sign(SECRET, &json!({"sub": "admin", "role": "admin", "exp": now() - 3600})))),
        ),
        (
            "expired beyond the leeway",
            Some(format!("Bearer {}", sign(SECRET, &json!({"sub": "admin", "role": "admin", "exp": now() - 120})))),
        ),
        (
            "another secret",
            Some(format!(
                "Bearer {}",
                sign(
                    "another-secret-entirely-0123456789abcdef",
                    &json!({"sub": "admin", "role": "admin", "exp": now() + 3600})
                )
            )),
        ),
        ("alg none", Some(format!("Bearer {unsigned}"))),
        ("tampered payload", Some(format!("Bearer {tampered}"))),
        ("no exp", Some(format!("Bearer {}", sign(SECRET, &json!({"sub": "admin", "role": "admin"}))))),
        ("no sub", Some(format!("Bearer {}", sign(SECRET, &json!({"role": "admin", "exp": now() + 3600}))))),
        (
            "unknown role",
            Some(format!("Bearer {}", sign(SECRET, &json!({"sub": "root", "role": "root", "exp": now() + 3600})))),
        ),
        ("no role", Some(format!("Bearer {}", sign(SECRET, &json!({"sub": "admin", "exp": now() + 3600}))))),
    ]
}

async fn send(app: &TestApp, method: Method, path: &str, authorization: Option<&str>, body: Option<&str>) -> Response {
    let mut req = app.client.request(method, app.url(path));
    if let Some(value) = authorization {
        req = req.header("Authorization", value);
    }
    if let Some(body) = body {
        req = req.header("Content-Type", "application/json").body(body.to_owned());
    }
    req.send().await.expect("request sent")
}

async fn status_of(response: Response) -> (StatusCode, String) {
    let status = response.status();
    (status, response.text().await.unwrap_or_default())
}

async fn history_len(app: &TestApp, id: &str) -> usize {
    let response = app.get(&format!("/orders/{id}/history"), &app.admin()).await;
    assert_eq!(response.status(), StatusCode::OK, "history of {id}");
    let body: Value = response.json().await.expect("history json");
    body["events"].as_array().expect("events").len()
}

async fn assert_absent(app: &TestApp, id: &str) {
    let response = app.get(&format!("/orders/{id}?consistency=strong"), &app.admin()).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND, "order {id} should not exist");
}

/// The order ids of a `GET /orders…` page.
async fn listed(app: &TestApp, path: &str, token: &str) -> Vec<String> {
    let response = app.get(path, token).await;
    assert_eq!(response.status(), StatusCode::OK, "GET {path}");
    let page: Value = response.json().await.unwrap();
    let mut ids: Vec<String> =
        page["orders"].as_array().expect("orders").iter().map(|o| o["orderId"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    ids
}

fn sorted(ids: &[&String]) -> Vec<String> {
    let mut ids: Vec<String> = ids.iter().map(|s| (*s).clone()).collect();
    ids.sort();
    ids
}

// ---------------------------------------------------------------------------------------------------- 401

#[actix_web::test]
async fn every_protected_route_refuses_a_missing_or_invalid_token_with_401() {
    let app = spawn_app().await;
    let id = new_id("auth");
    app.place(&id, "c-1", 1, 100).await;
    let today = chrono::Utc::now().date_naive();
    let fresh = new_id("auth-new");
    let place = order_body(&fresh, "c-1", 1, 100).to_string();
    let routes: Vec<(Method, String, Option<String>)> = vec![
        (Method::POST, "/orders".to_owned(), Some(place)),
        (Method::GET, "/orders".to_owned(), None),
        (Method::GET, format!("/orders/{id}"), None),
        (Method::GET, format!("/orders/{id}?consistency=strong"), None),
        (Method::GET, format!("/orders/{id}/history"), None),
        (
            Method::POST,
            format!("/orders/{id}/confirm-payment"),
            Some(json!({"paymentId": "p", "amount": 100}).to_string()),
        ),
        (
            Method::POST,
            format!("/orders/{id}/ship"),
            Some(json!({"carrier": "DHL", "trackingNumber": "T"}).to_string()),
        ),
        (Method::POST, format!("/orders/{id}/cancel"), Some(json!({"reason": "r"}).to_string())),
        (Method::GET, format!("/revenue/daily?from={today}&to={today}"), None),
        (Method::GET, "/admin/projections".to_owned(), None),
    ];
    for (case, authorization) in bad_authorizations() {
        for (method, path, body) in &routes {
            let response = send(&app, method.clone(), path, authorization.as_deref(), body.as_deref()).await;
            let www_authenticate = response.headers().get("www-authenticate").is_some();
            let (status, text) = status_of(response).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{case}: {method} {path}: {text}");
            let problem: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(problem["code"], "unauthorized", "{case}: {method} {path}: {problem}");
            assert!(www_authenticate, "{case}: {method} {path}: a 401 carries WWW-Authenticate");
        }
    }
    assert_absent(&app, &fresh).await;
    assert_eq!(history_len(&app, &id).await, 1);
    // The valid token next to them works (so the 401s above are about the tokens).
    assert_eq!(app.get(&format!("/orders/{id}?consistency=strong"), &app.admin()).await.status(), StatusCode::OK);
}

#[actix_web::test]
async fn the_problem_for_401_is_problem_json() {
    let app = spawn_app().await;
    assert_problem(send(&app, Method::GET, "/orders", None, None).await, 401, "unauthorized").await;
    let expired = sign(SECRET, &json!({"sub": "c-1", "role": "customer", "exp": now() - 3600}));
    let response = send(&app, Method::GET, "/orders", Some(&format!("Bearer {expired}")), None).await;
    let problem = assert_problem(response, 401, "unauthorized").await;
    // No internals: the detail does not say which check failed or echo the token.
    assert!(!problem.to_string().contains(&expired), "{problem}");
}

#[actix_web::test]
async fn a_token_minted_by_hand_with_the_right_secret_is_accepted() {
    let app = spawn_app().await;
    let token = sign(SECRET, &json!({"sub": "c-9", "role": "customer", "exp": now() + 600}));
    let body = json!({"currency": "EUR", "items": [{"sku": "S", "name": "N", "quantity": 1, "unitPrice": 1}]});
    let response = app.post("/orders", &token, &body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.json::<Value>().await.unwrap()["customerId"], "c-9");
}

#[actix_web::test]
async fn authentication_comes_before_any_validation() {
    let app = spawn_app().await;
    let id = new_id("authfirst");
    app.place(&id, "c-1", 1, 100).await;
    let expired = format!("Bearer {}", sign(SECRET, &json!({"sub": "admin", "role": "admin", "exp": now() - 3600})));
    for authorization in [None, Some("Bearer garbage"), Some(expired.as_str())] {
        for path in ["/orders".to_owned(), format!("/orders/{id}/cancel")] {
            // Malformed JSON.
            let response = send(&app, Method::POST, &path, authorization, Some("{")).await;
            assert_problem(response, 401, "unauthorized").await;
            // Rule-breaking values.
            let response = send(&app, Method::POST, &path, authorization, Some(r#"{"reason": "", "items": []}"#)).await;
            assert_problem(response, 401, "unauthorized").await;
            // Wrong content type.
            let mut req = app.client.post(app.url(&path)).header("Content-Type", "text/plain").body("x");
            if let Some(a) = authorization {
                req = req.header("Authorization", a);
            }
            assert_problem(req.send().await.unwrap(), 401, "unauthorized").await;
        }
        // Bad query parameters on queries.
        let response = send(&app, Method::GET, "/orders?limit=0&sort=nope", authorization, None).await;
        assert_problem(response, 401, "unauthorized").await;
        let response = send(&app, Method::GET, "/revenue/daily?from=bad", authorization, None).await;
        assert_problem(response, 401, "unauthorized").await;
    }
    assert_eq!(history_len(&app, &id).await, 1);
}

// ---------------------------------------------------------------------------------------------- customers

#[actix_web::test]
async fn a_customer_places_orders_for_itself() {
    let app = spawn_app().await;
    let token = app.customer("c-1");
    // customerId left out: it is the token's subject.
    let id = new_id("self");
    let body =
        json!({"orderId": id, "currency": "EUR", "items": [{"sku": "S", "name": "N", "quantity": 2, "unitPrice": 50}]});
    let response = app.post("/orders", &token, &body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let doc: Value = response.json().await.unwrap();
    assert_eq!(doc["customerId"], "c-1");
    assert_eq!(doc["total"], 100);
    // customerId equal to the subject.
    let id2 = new_id("self2");
    let response = app.post("/orders", &token, &order_body(&id2, "c-1", 1, 10)).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.json::<Value>().await.unwrap()["customerId"], "c-1");
    // No orderId either: generated.
    let response = app.post("/orders", &token, &json!({"currency": "EUR", "items": body["items"]})).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let doc: Value = response.json().await.unwrap();
    assert_eq!(doc["customerId"], "c-1");
    assert!(doc["orderId"].is_string());
}

#[actix_web::test]
async fn a_customer_placing_for_someone_else_is_403_even_with_an_invalid_body() {
    let app = spawn_app().await;
    let token = app.customer("c-1");
    let id = new_id("other");
    assert_problem(app.post("/orders", &token, &order_body(&id, "c-2", 1, 10)).await, 403, "forbidden").await;
    assert_absent(&app, &id).await;
    // Authorization before validation: the same 403 however wrong the rest of the body is.
    let invalid_bodies = [
        json!({"orderId": id, "customerId": "c-2", "currency": "eur", "items": []}),
        json!({"orderId": "bad id!", "customerId": "c-2", "currency": "EUR", "items": [{"sku": "", "name": "", "quantity": 0, "unitPrice": -1}]}),
        json!({"customerId": "c-2"}),
        json!({"orderId": id, "customerId": "not a valid id at all", "currency": "EUR", "items": []}),
    ];
    for body in &invalid_bodies {
        assert_problem(app.post("/orders", &token, body).await, 403, "forbidden").await;
    }
    assert_absent(&app, &id).await;
    // The admin may place for anyone.
    let response = app.post("/orders", &app.admin(), &order_body(&id, "c-2", 1, 10)).await;
    assert_eq!(response.status(), StatusCode::CREATED);
}

#[actix_web::test]
async fn a_customer_sees_only_its_own_orders() {
    let app = spawn_app().await;
    let (mine, theirs) = (new_id("mine"), new_id("theirs"));
    app.place(&mine, "c-1", 1, 100).await;
    app.place(&theirs, "c-2", 1, 100).await;
    // Both are in the read model, so a 404 below is about visibility, not lag.
    app.projected(&mine, 1).await;
    app.projected(&theirs, 1).await;
    let token = app.customer("c-1");

    for suffix in ["", "?consistency=strong", "?minVersion=1", "/history"] {
        let response = app.get(&format!("/orders/{mine}{suffix}"), &token).await;
        assert_eq!(response.status(), StatusCode::OK, "own order {suffix}");
        let response = app.get(&format!("/orders/{theirs}{suffix}"), &token).await;
        assert_problem(response, 404, "order_not_found").await;
    }
    // Someone else's order and a missing one are indistinguishable.
    let missing = app.get(&format!("/orders/{}", new_id("missing")), &token).await;
    let missing = assert_problem(missing, 404, "order_not_found").await;
    let hidden = assert_problem(app.get(&format!("/orders/{theirs}"), &token).await, 404, "order_not_found").await;
    assert_eq!(missing["title"], hidden["title"]);
    assert_eq!(missing["detail"], hidden["detail"]);

    // The other customer sees theirs and not mine.
    let other = app.customer("c-2");
    assert_eq!(app.get(&format!("/orders/{theirs}"), &other).await.status(), StatusCode::OK);
    assert_problem(app.get(&format!("/orders/{mine}/history"), &other).await, 404, "order_not_found").await;
}

#[actix_web::test]
async fn a_customer_commands_only_its_own_orders() {
    let app = spawn_app().await;
    let (mine, theirs) = (new_id("mine"), new_id("theirs"));
    app.place(&mine, "c-1", 1, 100).await;
    app.place(&theirs, "c-2", 1, 100).await;
    let token = app.customer("c-1");
    let commands = [
        ("confirm-payment", json!({"paymentId": "p", "amount": 100})),
        ("ship", json!({"carrier": "DHL", "trackingNumber": "T"})),
        ("cancel", json!({"reason": "r"})),
    ];
    for (command, body) in &commands {
        let path = format!("/orders/{theirs}/{command}");
        assert_problem(app.post(&path, &token, body).await, 404, "order_not_found").await;
        // Not a 412 either: a version check must not reveal the order.
        let response = app.request(Method::POST, &path, Some(&token), Some(body), &[("If-Match", "\"7\"")]).await;
        assert_problem(response, 404, "order_not_found").await;
        let response = app.request(Method::POST, &path, Some(&token), Some(body), &[("If-Match", "*")]).await;
        assert_problem(response, 404, "order_not_found").await;
    }
    assert_eq!(history_len(&app, &theirs).await, 1);

    // Its own order it may pay and cancel.
    let paid =
        app.post(&format!("/orders/{mine}/confirm-payment"), &token, &json!({"paymentId": "p", "amount": 100})).await;
    assert_eq!(paid.status(), StatusCode::OK);
    let cancelled = app.post(&format!("/orders/{mine}/cancel"), &token, &json!({"reason": "r"})).await;
    assert_eq!(cancelled.status(), StatusCode::OK);
    assert_eq!(cancelled.json::<Value>().await.unwrap()["refund"], 100);
    assert_eq!(history_len(&app, &mine).await, 3);
}

#[actix_web::test]
async fn a_customer_lists_only_its_own_orders() {
    let app = spawn_app().await;
    let (a1, a2, b) = (new_id("a1"), new_id("a2"), new_id("b"));
    app.place(&a1, "c-1", 1, 100).await;
    app.place(&a2, "c-1", 2, 100).await;
    app.place(&b, "c-2", 1, 100).await;
    for id in [&a1, &a2, &b] {
        app.projected(id, 1).await;
    }
    let admin = app.admin();
    // The admin sees all three once the view has them all.
    let all = eventually(|| async {
        let ids = listed(&app, "/orders", &admin).await;
        (ids.len() == 3).then_some(ids)
    })
    .await;
    assert_eq!(all, sorted(&[&a1, &a2, &b]));
    assert_eq!(listed(&app, "/orders?customerId=c-2", &admin).await, vec![b.clone()]);

    let token = app.customer("c-1");
    assert_eq!(listed(&app, "/orders", &token).await, sorted(&[&a1, &a2]));
    assert_eq!(listed(&app, "/orders?customerId=c-1", &token).await, sorted(&[&a1, &a2]));
    // Asking for someone else's orders never shows them.
    for query in ["/orders?customerId=c-2", "/orders?customerId=c-2&status=placed", "/orders?q=mug&customerId=c-2"] {
        let ids = listed(&app, query, &token).await;
        assert!(!ids.contains(&b), "{query} showed c-2's order to c-1: {ids:?}");
    }
    let ids = listed(&app, "/orders?q=mug", &token).await;
    assert_eq!(ids, sorted(&[&a1, &a2]), "full-text search is limited to the customer's orders too");
}

#[actix_web::test]
async fn revenue_and_admin_routes_are_403_for_customers() {
    let app = spawn_app().await;
    let token = app.customer("c-1");
    let today = chrono::Utc::now().date_naive();
    for path in [
        format!("/revenue/daily?from={today}&to={today}"),
        format!("/revenue/daily?from={today}&to={today}&currency=EUR"),
        // Authorization before validation: bad parameters are still a 403.
        "/revenue/daily?from=yesterday".to_owned(),
        "/revenue/daily".to_owned(),
        "/admin/projections".to_owned(),
    ] {
        assert_problem(app.get(&path, &token).await, 403, "forbidden").await;
    }
    // The admin gets them.
    let admin = app.admin();
    assert_eq!(app.get(&format!("/revenue/daily?from={today}&to={today}"), &admin).await.status(), StatusCode::OK);
    let response = app.get("/admin/projections", &admin).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.json::<Value>().await.unwrap().is_array());
}

#[actix_web::test]
async fn the_admin_sees_and_commands_every_order() {
    let app = spawn_app().await;
    let (a, b) = (new_id("adm-a"), new_id("adm-b"));
    // Placed by their customers.
    for (id, customer) in [(&a, "c-1"), (&b, "c-2")] {
        let response = app.post("/orders", &app.customer(customer), &order_body(id, customer, 1, 100)).await;
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    let admin = app.admin();
    for id in [&a, &b] {
        assert_eq!(app.get(&format!("/orders/{id}?consistency=strong"), &admin).await.status(), StatusCode::OK);
        assert_eq!(app.get(&format!("/orders/{id}/history"), &admin).await.status(), StatusCode::OK);
        assert_eq!(app.projected(id, 1).await["orderId"], json!(id));
        assert_eq!(app.pay(id, "p", 100).await.status(), StatusCode::OK);
        assert_eq!(app.ship(id).await.status(), StatusCode::OK);
    }
    // And its commands show up for the owner.
    let doc: Value =
        app.get(&format!("/orders/{a}?consistency=strong"), &app.customer("c-1")).await.json().await.unwrap();
    assert_eq!(doc["status"], "shipped");
}

// ------------------------------------------------------------------------------------------- open routes

#[actix_web::test]
async fn metrics_and_health_need_no_token() {
    let app = spawn_app().await;
    let response = send(&app, Method::GET, "/metrics", None, None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");

    let response = send(&app, Method::GET, "/health/live", None, None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert!(body["status"].is_string() && body["checks"].is_object(), "{body}");

    let body = eventually(|| async {
        let response = send(&app, Method::GET, "/health/ready", None, None).await;
        if response.status() != StatusCode::OK {
            return None;
        }
        response.json::<Value>().await.ok()
    })
    .await;
    assert!(body["status"].is_string() && body["checks"].is_object(), "{body}");

    // A bad token does not matter there either.
    for path in ["/metrics", "/health/live", "/health/ready"] {
        let response = send(&app, Method::GET, path, Some("Bearer garbage"), None).await;
        assert_ne!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
}

// ------------------------------------------------------------------ tokens of an identity provider (JWKS)

const JWKS_FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwks");

fn jwks_token(alg: Algorithm, kid: &str, key_file: &str, claims: &Value) -> String {
    let pem = std::fs::read(format!("{JWKS_FIXTURES}/{key_file}")).expect("fixture key");
    let key = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
        Algorithm::HS256 => Ok(EncodingKey::from_secret(&pem)),
        _ => EncodingKey::from_rsa_pem(&pem),
    }
    .expect("key");
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &key).expect("token")
}

/// A Cognito-shaped setup: keys from a JWKS file, the role from `cognito:groups`, `iss` and `aud` checked.
#[actix_web::test]
async fn identity_provider_tokens_are_accepted_with_the_role_from_a_configured_claim() {
    let dir = tempfile::tempdir().expect("dir");
    let jwks = dir.path().join("jwks.json");
    std::fs::copy(format!("{JWKS_FIXTURES}/jwks.json"), &jwks).expect("copy");
    let jwks = jwks.display().to_string();
    let app = crate::helpers::spawn_app_with(&[
        ("ORDERFLOW__AUTH__JWKS", jwks.as_str()),
        ("ORDERFLOW__AUTH__ISSUER", "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_TEST"),
        ("ORDERFLOW__AUTH__AUDIENCE", "orderflow-client"),
        ("ORDERFLOW__AUTH__ROLE_CLAIM", "cognito:groups"),
    ])
    .await;
    let claims = |sub: &str, groups: &[&str]| {
        json!({
            "sub": sub, "cognito:groups": groups, "exp": now() + 600,
            "iss": "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_TEST", "aud": "orderflow-client",
        })
    };
    let admin = jwks_token(Algorithm::RS256, "rsa-1", "rsa1.pem", &claims("ops-1", &["admin"]));
    let customer = jwks_token(Algorithm::ES256, "ec-1", "ec1.pem", &claims("c-idp", &[]));

    assert_eq!(app.get("/admin/projections", &admin).await.status(), StatusCode::OK);
    assert_eq!(app.get("/admin/projections", &customer).await.status(), StatusCode::FORBIDDEN);
    let id = new_id("idp");
    let placed = app.post("/orders", &customer, &order_body(&id, "c-idp", 1, 500)).await;
    assert_eq!(placed.status(), StatusCode::CREATED, "the customer id is the token's sub");
    let other = app.post("/orders", &customer, &order_body(&new_id("idp"), "c-other", 1, 500)).await;
    assert_problem(other, 403, "forbidden").await;
    // HS256 tokens of the configured secret still work beside the identity provider's.
    assert_eq!(app.get(&format!("/orders/{id}?consistency=strong"), &app.admin()).await.status(), StatusCode::OK);

    let refused = [
        jwks_token(Algorithm::RS256, "rsa-9", "rsa1.pem", &claims("ops-1", &["admin"])),
        jwks_token(Algorithm::RS256, "rsa-1", "rsa2.pem", &claims("ops-1", &["admin"])),
        jwks_token(Algorithm::HS256, "rsa-1", "rsa1.pub.pem", &claims("ops-1", &["admin"])),
        jwks_token(
            Algorithm::RS256,
            "rsa-1",
            "rsa1.pem",
            &json!({"sub": "ops-1", "cognito:groups": ["admin"], "exp": now() + 600, "aud": "orderflow-client", "iss": "https://elsewhere"}),
        ),
        jwks_token(
            Algorithm::RS256,
            "rsa-1",
            "rsa1.pem",
            &json!({"sub": "ops-1", "cognito:groups": ["admin"], "exp": now() - 300, "aud": "orderflow-client", "iss": "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_TEST"}),
        ),
    ];
    for token in refused {
        assert_problem(app.get("/admin/projections", &token).await, 401, "unauthorized").await;
    }
}

// ---------------------------------------------------------------------------------------------- rate limits

#[actix_web::test]
async fn a_subject_past_its_rate_limit_gets_429_and_others_are_unaffected() {
    let app = crate::helpers::spawn_app_with(&[
        ("ORDERFLOW__RATE_LIMIT__ENABLED", "true"),
        ("ORDERFLOW__RATE_LIMIT__QUERIES__PER_SECOND", "1"),
        ("ORDERFLOW__RATE_LIMIT__QUERIES__BURST", "3"),
        ("ORDERFLOW__RATE_LIMIT__ANONYMOUS__PER_SECOND", "1"),
        ("ORDERFLOW__RATE_LIMIT__ANONYMOUS__BURST", "2"),
    ])
    .await;
    let noisy = app.customer("c-noisy");
    let calm = app.customer("c-calm");
    for _ in 0..3 {
        assert_eq!(app.get("/orders?limit=1", &noisy).await.status(), StatusCode::OK);
    }
    let limited = app.get("/orders?limit=1", &noisy).await;
    let retry_after = limited.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
    assert_problem(limited, 429, "rate_limited").await;
    let secs: u64 = retry_after.as_deref().and_then(|v| v.parse().ok()).expect("Retry-After in seconds");
    assert!((1..=2).contains(&secs), "{secs}");
    // Another subject has its own bucket; the noisy one's commands have theirs too.
    assert_eq!(app.get("/orders?limit=1", &calm).await.status(), StatusCode::OK);
    let id = new_id("rl");
    assert_eq!(app.post("/orders", &noisy, &order_body(&id, "c-noisy", 1, 10)).await.status(), StatusCode::CREATED);

    // Without a valid token the client's address is the key: guessing tokens is limited too.
    for _ in 0..2 {
        assert_problem(app.get("/orders", "garbage").await, 401, "unauthorized").await;
    }
    assert_problem(app.get("/orders", "garbage").await, 429, "rate_limited").await;
    // Open routes are never limited.
    for _ in 0..5 {
        assert_eq!(app.request(Method::GET, "/health/live", None, None, &[]).await.status(), StatusCode::OK);
    }
    let metrics = app.request(Method::GET, "/metrics", None, None, &[]).await.text().await.unwrap_or_default();
    let counted = |class: &str| {
        metrics.lines().any(|l| l.starts_with(&format!("orderflow_http_rate_limited_total{{class=\"{class}\"}} ")))
    };
    assert!(counted("queries") && counted("anonymous"), "{metrics}");
}
