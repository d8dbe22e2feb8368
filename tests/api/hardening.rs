//! The edge, hardened (issue "Security at the edge"): hostile headers and tokens never get a 5xx nor see a
//! secret; over-long request targets get 414; slow clients are cut off; no token or secret reaches a log
//! line; CORS is off unless configured; HTTPS when a certificate is configured.

use std::io::Write;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{SECRET, assert_problem, new_id, order_body, spawn_app, spawn_app_with, until_closed};

/// Authorization values a fuzzer would try: garbage, huge, unicode, half-JWTs, every `alg` trick.
fn hostile_authorizations() -> Vec<String> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let claims = b64.encode(json!({"sub": "admin", "role": "admin", "exp": 4_102_444_800u64}).to_string());
    let mut values: Vec<String> = [
        "",
        " ",
        "Bearer",
        "Bearer ",
        "Bearer  ",
        "bearer x",
        "Basic YWRtaW46YWRtaW4=",
        "Bearer ...",
        "Bearer a.b.c.d.e",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    for alg in ["none", "None", "NONE", "HS512", "RS256", "ES256", "EdDSA", "", "HS256\u{0}"] {
        let header = b64.encode(json!({"alg": alg, "typ": "JWT", "kid": "../../../../etc/passwd"}).to_string());
        values.push(format!("Bearer {header}.{claims}."));
        values.push(format!("Bearer {header}.{claims}.{}", b64.encode(SECRET)));
    }
    values.push(format!("Bearer {}", "A".repeat(20_000)));
    values.push(format!("Bearer {}.{}.{}", "e".repeat(3000), "f".repeat(3000), "g".repeat(3000)));
    values.push("Bearer ëÿ.☃.💥".to_owned());
    values.push(format!("Bearer {}", b64.encode([0xff_u8, 0xfe, 0, 1, 2, 0x80])));
    values.push(format!("Bearer {}.{}.sig", b64.encode("{not json"), claims));
    values.push(format!(
        "Bearer {}.{}.sig",
        b64.encode(r#"{"alg":"HS256"}"#),
        b64.encode(r#"{"sub":12,"role":["admin"],"exp":"x"}"#)
    ));
    values
}

#[actix_web::test]
async fn hostile_headers_and_tokens_never_get_a_5xx_nor_see_a_secret() {
    let app = spawn_app().await;
    let id = new_id("hostile");
    app.place(&id, "c-h", 1, 100).await;
    for value in hostile_authorizations() {
        for (method, path) in [
            (Method::GET, format!("/orders/{id}")),
            (Method::POST, "/orders".to_owned()),
            (Method::GET, "/admin/parked".to_owned()),
        ] {
            let mut request = app.client.request(method.clone(), app.url(&path));
            // Values reqwest refuses to send (control characters) are not a server test.
            if let Ok(header) = reqwest::header::HeaderValue::from_str(&value) {
                request = request.header("authorization", header);
            }
            let response = request.json(&order_body(&new_id("h"), "c-h", 1, 1)).send().await.expect("answered");
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            assert!(status.is_client_error(), "{method} {path} with {:.60}: {status}", value);
            assert!(!body.contains(SECRET) && !body.contains("test-secret"), "{body}");
        }
    }
    // Unicode, control-ish and huge values in the other headers the API reads.
    for (name, value) in [
        ("if-match", "\"\u{2603}\"".to_owned()),
        ("if-match", "9".repeat(5000)),
        ("idempotency-key", "k".repeat(10_000)),
        ("idempotency-key", "ключ".to_owned()),
        ("content-type", "application/json; charset=\u{1F4A5}".to_owned()),
    ] {
        let response = app
            .client
            .post(app.url(&format!("/orders/{id}/cancel")))
            .header("authorization", format!("Bearer {}", app.admin()))
            .header(name, value.as_bytes())
            .header("content-type", "application/json")
            .body(r#"{"reason":"x"}"#)
            .send()
            .await
            .expect("answered");
        assert!(response.status().as_u16() < 500, "{name}: {}", response.status());
    }
}

#[actix_web::test]
async fn an_over_long_request_target_is_414_problem_json() {
    let app = spawn_app_with(&[("ORDERFLOW__SERVER__MAX_URI_BYTES", "1024")]).await;
    let response = app.get(&format!("/orders?q={}", "a".repeat(2000)), &app.admin()).await;
    assert_problem(response, 414, "uri_too_long").await;
    assert_eq!(app.get(&format!("/orders?q={}", "a".repeat(100)), &app.admin()).await.status(), StatusCode::OK);
}

#[actix_web::test]
async fn a_client_that_never_finishes_its_request_head_is_cut_off() {
    let app = spawn_app_with(&[("ORDERFLOW__SERVER__REQUEST_TIMEOUT_MS", "300")]).await;
    // The server answers 408 and closes; a read that times out instead would be the failure.
    let answer = until_closed(&app.address, |stream| {
        stream.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n").expect("write");
    })
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
}

#[actix_web::test]
async fn cors_is_off_unless_origins_are_configured() {
    let preflight = |app: &crate::helpers::TestApp| {
        app.client
            .request(Method::OPTIONS, app.url("/orders"))
            .header("origin", "https://shop.example")
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization, content-type")
            .send()
    };
    let closed = spawn_app().await;
    let response = preflight(&closed).await.expect("answered");
    assert!(response.headers().get("access-control-allow-origin").is_none());
    let get = closed.client.get(closed.url("/health/live")).header("origin", "https://shop.example").send().await;
    assert!(get.expect("answered").headers().get("access-control-allow-origin").is_none());

    let open =
        spawn_app_with(&[("ORDERFLOW__SERVER__CORS_ALLOWED_ORIGINS", "https://shop.example,https://admin.example")])
            .await;
    let response = preflight(&open).await.expect("answered");
    assert!(response.status().is_success(), "{}", response.status());
    let allowed = response.headers().get("access-control-allow-origin").and_then(|v| v.to_str().ok());
    assert_eq!(allowed, Some("https://shop.example"));
    let other = open
        .client
        .request(Method::OPTIONS, open.url("/orders"))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .expect("answered");
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

#[actix_web::test]
async fn https_when_a_certificate_is_configured() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls");
    let (cert, key) = (format!("{fixtures}/cert.pem"), format!("{fixtures}/key.pem"));
    let app =
        spawn_app_with(&[("ORDERFLOW__SERVER__TLS_CERT", cert.as_str()), ("ORDERFLOW__SERVER__TLS_KEY", key.as_str())])
            .await;
    let pem = std::fs::read(format!("{fixtures}/ca.pem")).expect("the test CA");
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("pem"))
        .build()
        .expect("client");
    let url = app.address.replacen("http://", "https://", 1);
    let live = client.get(format!("{url}/health/live")).send().await.expect("https answers");
    assert_eq!(live.status(), StatusCode::OK);
    let id = new_id("tls");
    let placed = client
        .post(format!("{url}/orders"))
        .bearer_auth(app.admin())
        .json(&order_body(&id, "c-tls", 1, 100))
        .send()
        .await
        .expect("https answers");
    assert_eq!(placed.status(), StatusCode::CREATED);
    // Plain HTTP on the TLS port gets no API answer.
    let plain = app.client.get(app.url("/health/live")).send().await;
    assert!(plain.map(|r| r.status() != StatusCode::OK).unwrap_or(true));
}

#[test]
fn logs_never_carry_a_token_or_the_secret() {
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join("stderr.log");
    let mut process = crate::helpers::spawn_process_with(
        dir.path(),
        &[("ORDERFLOW__LOG__LEVEL", "debug"), ("ORDERFLOW__LOG__FORMAT", "json")],
        std::fs::File::create(&log).expect("log file"),
    );
    let settings =
        orderflow::config::Settings::load_with(None, crate::helpers::test_env(dir.path(), &[])).expect("settings");
    let auth = orderflow::auth::Authenticator::new(&settings.auth, SECRET);
    let admin = auth.mint("admin", orderflow::auth::Role::Admin, 600).expect("token");
    let forged = format!("{}.forged", &admin[..admin.rfind('.').unwrap_or(0)]);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let url = |p: &str| format!("{}{p}", process.address);
        let id = new_id("logs");
        let placed = client.post(url("/orders")).bearer_auth(&admin).json(&order_body(&id, "c-l", 1, 100)).send().await;
        assert_eq!(placed.expect("answered").status(), StatusCode::CREATED);
        for token in [forged.as_str(), "garbage", SECRET] {
            let refused = client.get(url(&format!("/orders/{id}"))).bearer_auth(token).send().await;
            assert_eq!(refused.expect("answered").status(), StatusCode::UNAUTHORIZED);
        }
        let replay = client.post(url("/admin/parked/nope/replay")).bearer_auth(&admin).send().await;
        assert_eq!(replay.expect("answered").status(), StatusCode::NOT_FOUND);
    });
    process.stop();
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(text.contains("request refused"), "debug logging was on: {text}");
    let signature = &admin[admin.rfind('.').map_or(0, |i| i + 1)..];
    for secret in [SECRET, admin.as_str(), signature, forged.as_str()] {
        assert!(!text.contains(secret), "a log line carries {secret:.20}…");
    }
}
