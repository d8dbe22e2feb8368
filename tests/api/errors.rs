//! Error handling at the HTTP boundary (docs/api.md §2 "Errors"): malformed JSON and wrong JSON types → 400,
//! rule-breaking values → 422 naming the field, oversized bodies → 413, wrong content type → 415, unknown
//! routes → 404, wrong methods → 405 — always `application/problem+json`, never a 5xx for bad input, and
//! never a trace of the refused request in the write model. Ends with a bounded, deterministic fuzz run.

use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem, new_id, order_body, spawn_app};

// ----------------------------------------------------------------------------------------------- helpers

/// POSTs raw bytes as admin with the given content type (none when `None`).
async fn post_raw(app: &TestApp, path: &str, content_type: Option<&str>, body: impl Into<reqwest::Body>) -> Response {
    let mut req = app.client.post(app.url(path)).bearer_auth(app.admin());
    if let Some(ct) = content_type {
        req = req.header("Content-Type", ct);
    }
    req.body(body).send().await.expect("request sent")
}

async fn post_json_text(app: &TestApp, path: &str, body: &str) -> Response {
    post_raw(app, path, Some("application/json"), body.to_owned()).await
}

async fn history_len(app: &TestApp, id: &str) -> usize {
    let response = app.get(&format!("/orders/{id}/history"), &app.admin()).await;
    assert_eq!(response.status(), StatusCode::OK, "history of {id}");
    let body: Value = response.json().await.expect("history json");
    body["events"].as_array().expect("events").len()
}

/// Asserts the order does not exist in the write model.
async fn assert_absent(app: &TestApp, id: &str) {
    let response = app.get(&format!("/orders/{id}?consistency=strong"), &app.admin()).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND, "order {id} should not exist");
}

/// A placed order at version 1, for the routes that act on one.
async fn placed(app: &TestApp, prefix: &str) -> String {
    let id = new_id(prefix);
    app.place(&id, "c-1", 2, 1250).await;
    id
}

fn command_paths(id: &str) -> [String; 3] {
    [format!("/orders/{id}/confirm-payment"), format!("/orders/{id}/ship"), format!("/orders/{id}/cancel")]
}

/// Asserts a 422 `validation_failed` whose `errors` name `field`.
async fn assert_invalid_field(response: Response, field: &str, case: &str) {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    assert_eq!(status.as_u16(), 422, "{case}: {text}");
    let problem: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{case}: {e}: {text}"));
    assert_eq!(problem["code"], "validation_failed", "{case}: {problem}");
    let errors = problem["errors"].as_array().unwrap_or_else(|| panic!("{case}: no errors array: {problem}"));
    assert!(
        errors.iter().all(|e| e["field"].is_string() && e["message"].is_string()),
        "{case}: errors must be [{{field, message}}]: {problem}"
    );
    assert!(errors.iter().any(|e| e["field"] == field), "{case}: expected an error on `{field}`: {problem}");
}

/// A valid place body whose JSON text has `"@@"` replaced by `raw` (for numbers JSON values cannot hold).
fn with_raw(body: &Value, raw: &str) -> String {
    body.to_string().replace("\"@@\"", raw)
}

// ---------------------------------------------------------------------------------------------------- 400

#[actix_web::test]
async fn malformed_json_is_400_invalid_json() {
    let app = spawn_app().await;
    let id = placed(&app, "malformed").await;
    let bodies = [
        "",
        "{",
        "}",
        "not json",
        "{\"orderId\": }",
        "{\"customerId\": \"c-1\",}",
        "{'customerId': 'c-1'}",
        "{\"a\":1}}",
        "{\"a\":1} {\"b\":2}",
        "{\"amount\": 01}",
        "{\"amount\": NaN}",
        "{\"amount\": 1e400}",
        "{\"reason\": \"unterminated}",
        "{\"reason\": \"\\ud800\"}",
    ];
    let mut paths = vec!["/orders".to_owned()];
    paths.extend(command_paths(&id));
    for path in &paths {
        for body in bodies {
            let response = post_json_text(&app, path, body).await;
            let problem = assert_problem(response, 400, "invalid_json").await;
            assert!(problem.get("errors").is_none_or(Value::is_array), "{problem}");
        }
    }
    // Invalid UTF-8 is malformed too.
    let response =
        post_raw(&app, "/orders", Some("application/json"), b"{\"customerId\": \"\xff\xfe\"}".to_vec()).await;
    assert_problem(response, 400, "invalid_json").await;
    assert_eq!(history_len(&app, &id).await, 1);
}

#[actix_web::test]
async fn wrong_json_types_are_400_invalid_json() {
    let app = spawn_app().await;
    let id = placed(&app, "types").await;
    let base = order_body(&new_id("types-new"), "c-1", 1, 100);
    let place_cases: Vec<(&str, Value)> = vec![
        ("quantity as a string", json!("2")),
        ("quantity as a fraction", json!(1.5)),
        ("quantity as a bool", json!(true)),
        ("unitPrice as a string", json!("100")),
        ("unitPrice as a fraction", json!(12.5)),
        ("unitPrice as an array", json!([100])),
    ];
    for (case, value) in place_cases {
        let mut body = base.clone();
        let field = if case.starts_with("quantity") { "quantity" } else { "unitPrice" };
        body["items"][0][field] = value;
        let response = app.post("/orders", &app.admin(), &body).await;
        let status = response.status();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{case}");
        assert_problem(response, 400, "invalid_json").await;
    }
    let mut others: Vec<Value> = vec![];
    for (field, value) in [
        ("orderId", json!(42)),
        ("orderId", json!(true)),
        ("customerId", json!(7)),
        ("customerId", json!({"id": "c-1"})),
        ("currency", json!(978)),
        ("currency", json!(["EUR"])),
        ("items", json!({"sku": "S"})),
        ("items", json!("MUG-1")),
        ("items", json!(["MUG-1"])),
        ("items", json!([[1, 2]])),
    ] {
        let mut body = base.clone();
        body[field] = value;
        others.push(body);
    }
    for (field, value) in [("sku", json!(1)), ("name", json!([])), ("name", json!(false))] {
        let mut body = base.clone();
        body["items"][0][field] = value;
        others.push(body);
    }
    for body in &others {
        assert_problem(app.post("/orders", &app.admin(), body).await, 400, "invalid_json").await;
    }
    assert_absent(&app, base["orderId"].as_str().unwrap()).await;

    let [pay, ship, cancel] = command_paths(&id);
    let command_cases = [
        (&pay, json!({"paymentId": "p", "amount": "2500"})),
        (&pay, json!({"paymentId": "p", "amount": 2500.5})),
        (&pay, json!({"paymentId": "p", "amount": [2500]})),
        (&pay, json!({"paymentId": 1, "amount": 2500})),
        (&ship, json!({"carrier": 1, "trackingNumber": "T"})),
        (&ship, json!({"carrier": "DHL", "trackingNumber": {}})),
        (&cancel, json!({"reason": false})),
        (&cancel, json!({"reason": ["a"]})),
    ];
    for (path, body) in &command_cases {
        assert_problem(app.post(path, &app.admin(), body).await, 400, "invalid_json").await;
    }
    assert_eq!(history_len(&app, &id).await, 1);
}

#[actix_web::test]
async fn a_body_that_is_not_an_object_is_400_invalid_json() {
    let app = spawn_app().await;
    let id = placed(&app, "nonobject").await;
    let mut paths = vec!["/orders".to_owned()];
    paths.extend(command_paths(&id));
    for path in &paths {
        for body in ["[]", "[{\"reason\": \"x\"}]", "1", "\"text\"", "null", "true"] {
            assert_problem(post_json_text(&app, path, body).await, 400, "invalid_json").await;
        }
    }
    assert_eq!(history_len(&app, &id).await, 1);
}

// ---------------------------------------------------------------------------------------------------- 422

#[actix_web::test]
async fn rule_breaking_place_values_are_422_naming_the_field() {
    let app = spawn_app().await;
    let long = |n: usize| "a".repeat(n);
    // (case, field in the body to set (a JSON pointer), value, expected error field)
    let cases: Vec<(&str, &str, Value, &str)> = vec![
        ("empty orderId", "/orderId", json!(""), "orderId"),
        ("65-char orderId", "/orderId", json!(long(65)), "orderId"),
        ("orderId with a space", "/orderId", json!("order 1"), "orderId"),
        ("orderId with a slash", "/orderId", json!("a/b"), "orderId"),
        ("orderId non-ASCII", "/orderId", json!("ördér"), "orderId"),
        ("empty customerId", "/customerId", json!(""), "customerId"),
        ("65-char customerId", "/customerId", json!(long(65)), "customerId"),
        ("customerId with a space", "/customerId", json!("c 1"), "customerId"),
        ("lowercase currency", "/currency", json!("eur"), "currency"),
        ("4-letter currency", "/currency", json!("EURO"), "currency"),
        ("2-letter currency", "/currency", json!("EU"), "currency"),
        ("empty currency", "/currency", json!(""), "currency"),
        ("currency with a digit", "/currency", json!("E1R"), "currency"),
        ("no items", "/items", json!([]), "items"),
        ("empty sku", "/items/0/sku", json!(""), "items[0].sku"),
        ("65-char sku", "/items/0/sku", json!(long(65)), "items[0].sku"),
        ("empty name", "/items/0/name", json!(""), "items[0].name"),
        ("201-char name", "/items/0/name", json!(long(201)), "items[0].name"),
        ("quantity 0", "/items/0/quantity", json!(0), "items[0].quantity"),
        ("quantity 10001", "/items/0/quantity", json!(10_001), "items[0].quantity"),
        ("quantity -1", "/items/0/quantity", json!(-1), "items[0].quantity"),
        ("quantity u64::MAX", "/items/0/quantity", json!(u64::MAX), "items[0].quantity"),
        ("quantity i64::MIN", "/items/0/quantity", json!(i64::MIN), "items[0].quantity"),
        ("unitPrice -1", "/items/0/unitPrice", json!(-1), "items[0].unitPrice"),
        ("unitPrice 10^10+1", "/items/0/unitPrice", json!(10_000_000_001_u64), "items[0].unitPrice"),
        ("unitPrice u64::MAX", "/items/0/unitPrice", json!(u64::MAX), "items[0].unitPrice"),
        ("bad second line", "/items/1/quantity", json!(0), "items[1].quantity"),
    ];
    for (case, pointer, value, field) in cases {
        let id = new_id("rule");
        let mut body = json!({
            "orderId": id,
            "customerId": "c-1",
            "currency": "EUR",
            "items": [
                {"sku": "MUG-1", "name": "Blue mug", "quantity": 1, "unitPrice": 100},
                {"sku": "TEA-1", "name": "Green tea", "quantity": 2, "unitPrice": 300}
            ]
        });
        *body.pointer_mut(pointer).unwrap_or_else(|| panic!("{case}: no {pointer}")) = value;
        let response = app.post("/orders", &app.admin(), &body).await;
        assert_invalid_field(response, field, case).await;
        if !pointer.starts_with("/orderId") {
            assert_absent(&app, &id).await;
        }
    }
}

#[actix_web::test]
async fn huge_integers_are_422_not_400() {
    let app = spawn_app().await;
    for (line_field, raw) in [
        ("quantity", "123456789012345678901234567890"),
        ("quantity", "-123456789012345678901234567890"),
        ("unitPrice", "123456789012345678901234567890"),
        ("unitPrice", "-123456789012345678901234567890"),
        ("unitPrice", "100000000000000000000"),
    ] {
        let id = new_id("huge");
        let mut body = order_body(&id, "c-1", 1, 100);
        body["items"][0][line_field] = json!("@@");
        let response = post_json_text(&app, "/orders", &with_raw(&body, raw)).await;
        assert_invalid_field(response, &format!("items[0].{line_field}"), &format!("{line_field} = {raw}")).await;
        assert_absent(&app, &id).await;
    }
    let id = placed(&app, "huge-pay").await;
    for raw in ["123456789012345678901234567890", "-1", "-123456789012345678901234567890"] {
        let text = format!("{{\"paymentId\": \"p\", \"amount\": {raw}}}");
        let response = post_json_text(&app, &format!("/orders/{id}/confirm-payment"), &text).await;
        assert_invalid_field(response, "amount", &format!("amount = {raw}")).await;
    }
    assert_eq!(history_len(&app, &id).await, 1);
}

#[actix_web::test]
async fn too_many_items_is_422_on_items() {
    let app = spawn_app().await;
    let id = new_id("many");
    let line = json!({"sku": "S", "name": "N", "quantity": 1, "unitPrice": 1});
    let body = json!({"orderId": id, "customerId": "c-1", "currency": "EUR", "items": vec![line.clone(); 101]});
    assert_invalid_field(app.post("/orders", &app.admin(), &body).await, "items", "101 items").await;
    assert_absent(&app, &id).await;
    // 100 is the most, and fine.
    let body = json!({"orderId": id, "customerId": "c-1", "currency": "EUR", "items": vec![line; 100]});
    let response = app.post("/orders", &app.admin(), &body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.json::<Value>().await.unwrap()["total"], 100);
}

#[actix_web::test]
async fn missing_required_fields_are_422_naming_them() {
    let app = spawn_app().await;
    let id = new_id("missing");
    let full = order_body(&id, "c-1", 1, 100);
    for field in ["customerId", "currency", "items"] {
        let mut body = full.clone();
        body.as_object_mut().unwrap().remove(field);
        assert_invalid_field(app.post("/orders", &app.admin(), &body).await, field, &format!("without {field}")).await;
    }
    for field in ["sku", "name", "quantity", "unitPrice"] {
        let mut body = full.clone();
        body["items"][0].as_object_mut().unwrap().remove(field);
        let expected = format!("items[0].{field}");
        assert_invalid_field(app.post("/orders", &app.admin(), &body).await, &expected, &format!("without {expected}"))
            .await;
    }
    assert_absent(&app, &id).await;
    // `{}` names every required field at once.
    let response = app.post("/orders", &app.admin(), &json!({})).await;
    let problem: Value = response.json().await.unwrap();
    let fields: Vec<&str> = problem["errors"].as_array().unwrap().iter().filter_map(|e| e["field"].as_str()).collect();
    for field in ["customerId", "currency", "items"] {
        assert!(fields.contains(&field), "{field} missing from {problem}");
    }
}

#[actix_web::test]
async fn rule_breaking_command_values_are_422_naming_the_field() {
    let app = spawn_app().await;
    let id = placed(&app, "cmd-rules").await;
    let [pay, ship, cancel] = command_paths(&id);
    let cases = [
        (&pay, json!({"paymentId": "", "amount": 2500}), "paymentId"),
        (&pay, json!({"amount": 2500}), "paymentId"),
        (&pay, json!({"paymentId": "p"}), "amount"),
        (&pay, json!({"paymentId": "p", "amount": -1}), "amount"),
        (&pay, json!({"paymentId": "p", "amount": i64::MIN}), "amount"),
        (&ship, json!({"carrier": "", "trackingNumber": "T"}), "carrier"),
        (&ship, json!({"trackingNumber": "T"}), "carrier"),
        (&ship, json!({"carrier": "DHL", "trackingNumber": ""}), "trackingNumber"),
        (&ship, json!({"carrier": "DHL"}), "trackingNumber"),
        (&cancel, json!({"reason": ""}), "reason"),
        (&cancel, json!({}), "reason"),
    ];
    for (path, body, field) in &cases {
        assert_invalid_field(app.post(path, &app.admin(), body).await, field, &format!("{path} {body}")).await;
    }
    assert_eq!(history_len(&app, &id).await, 1);
}

#[actix_web::test]
async fn boundary_values_are_accepted_and_the_largest_total_is_exact() {
    let app = spawn_app().await;
    // 100 lines × 10 000 × 10^10 = 10^16 minor units: integer all the way.
    let id = "o".repeat(64);
    let line = |i: usize| json!({"sku": format!("{i:0>64}"), "name": "n".repeat(200), "quantity": 10_000, "unitPrice": 10_000_000_000_u64});
    let body = json!({
        "orderId": id,
        "customerId": "c".repeat(64),
        "currency": "JPY",
        "items": (0..100).map(line).collect::<Vec<_>>()
    });
    let response = app.post("/orders", &app.admin(), &body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let doc: Value = response.json().await.unwrap();
    assert_eq!(doc["total"], json!(10_000_000_000_000_000_u64));
    assert_eq!(doc["items"], body["items"]);
    let paid = app.pay(&id, &"p".repeat(64), 10_000_000_000_000_000).await;
    assert_eq!(paid.status(), StatusCode::OK);
    // Smallest values: quantity 1, unit price 0, 1-char strings.
    let small = json!({"orderId": "x", "customerId": "y", "currency": "XXX", "items": [{"sku": "s", "name": "n", "quantity": 1, "unitPrice": 0}]});
    let response = app.post("/orders", &app.admin(), &small).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.json::<Value>().await.unwrap()["total"], 0);
}

#[actix_web::test]
async fn unicode_text_is_accepted_and_counted_in_characters() {
    let app = spawn_app().await;
    for (case, name, sku) in [
        ("200 euro signs", "€".repeat(200), "ß".repeat(64)),
        ("200 crabs", "🦀".repeat(200), "🦀".repeat(64)),
        ("mixed scripts", "Tasse — 杯子 — كوب — чашка ☕".to_owned(), "ЧАШКА-1".to_owned()),
    ] {
        let id = new_id("unicode");
        let mut body = order_body(&id, "c-1", 1, 100);
        body["items"][0]["name"] = json!(name);
        body["items"][0]["sku"] = json!(sku);
        let response = app.post("/orders", &app.admin(), &body).await;
        assert_eq!(response.status(), StatusCode::CREATED, "{case}");
        let doc: Value = app.get(&format!("/orders/{id}?consistency=strong"), &app.admin()).await.json().await.unwrap();
        assert_eq!(doc["items"][0]["name"], json!(name), "{case}");
        assert_eq!(doc["items"][0]["sku"], json!(sku), "{case}");
    }
    // One character too many is still too many, however few bytes are left to the limit.
    let id = new_id("unicode-long");
    let mut body = order_body(&id, "c-1", 1, 100);
    body["items"][0]["name"] = json!("🦀".repeat(201));
    assert_invalid_field(app.post("/orders", &app.admin(), &body).await, "items[0].name", "201 crabs").await;
    assert_absent(&app, &id).await;

    // Unicode in command text too.
    let id = placed(&app, "unicode-cancel").await;
    let response =
        app.post(&format!("/orders/{id}/cancel"), &app.admin(), &json!({"reason": "zu teuer — 太贵了 💸"})).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().await.unwrap()["cancelReason"], "zu teuer — 太贵了 💸");
}

// ---------------------------------------------------------------------------------------------- 413 / 415

#[actix_web::test]
async fn a_body_over_64_kib_is_413_payload_too_large() {
    let app = spawn_app().await;
    const LIMIT: usize = 64 * 1024;
    let padded = |id: &str, len: usize| {
        let text = order_body(id, "c-1", 1, 100).to_string();
        let mut text = text.strip_suffix('}').unwrap().to_owned();
        text.push_str(&" ".repeat(len - text.len() - 1));
        text.push('}');
        assert_eq!(text.len(), len);
        text
    };
    let id = new_id("big");
    assert_problem(post_json_text(&app, "/orders", &padded(&id, LIMIT + 1)).await, 413, "payload_too_large").await;
    assert_absent(&app, &id).await;
    // Well over the limit, too.
    let huge = json!({"orderId": id, "customerId": "c-1", "currency": "EUR",
        "items": [{"sku": "S", "name": "N", "quantity": 1, "unitPrice": 1, "pad": "x".repeat(200 * 1024)}]});
    assert_problem(app.post("/orders", &app.admin(), &huge).await, 413, "payload_too_large").await;
    assert_absent(&app, &id).await;
    // Exactly 64 KiB is within the limit.
    let response = post_json_text(&app, "/orders", &padded(&id, LIMIT)).await;
    assert_eq!(response.status(), StatusCode::CREATED);

    let reason = "r".repeat(LIMIT);
    let response = app.post(&format!("/orders/{id}/cancel"), &app.admin(), &json!({"reason": reason})).await;
    assert_problem(response, 413, "payload_too_large").await;
    assert_eq!(history_len(&app, &id).await, 1);
}

/// Sends `POST /orders` with a chunked body (no Content-Length) over a raw connection; returns the status line.
async fn post_chunked(app: &TestApp, body: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = app.address.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.expect("connect");
    let head = format!(
        "POST /orders HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        app.admin()
    );
    let mut request = head.into_bytes();
    for chunk in body.chunks(4096) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    // The server may answer (and stop reading) before the whole body is sent.
    let _ = stream.write_all(&request).await;
    let mut response = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => response.extend_from_slice(&buf[..n]),
            }
        }
    });
    read.await.expect("a response within 10 s");
    let text = String::from_utf8_lossy(&response).into_owned();
    text.lines().next().unwrap_or("").to_owned()
}

#[actix_web::test]
async fn a_chunked_body_over_64_kib_is_413_too() {
    let app = spawn_app().await;
    let id = new_id("chunked");
    let mut body = order_body(&id, "c-1", 1, 100);
    body["items"][0]["name"] = json!("n".repeat(150));
    // Within the limit, chunked works like any body.
    let status = post_chunked(&app, body.to_string().as_bytes()).await;
    assert!(status.starts_with("HTTP/1.1 201"), "{status}");
    // Over it, without a Content-Length to refuse early, the body is cut off at 64 KiB.
    let big = new_id("chunked-big");
    let mut text = order_body(&big, "c-1", 1, 100).to_string();
    text.insert_str(1, &" ".repeat(70 * 1024));
    let status = post_chunked(&app, text.as_bytes()).await;
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");
    assert_absent(&app, &big).await;
}

#[actix_web::test]
async fn a_missing_or_wrong_content_type_is_415() {
    let app = spawn_app().await;
    let existing = placed(&app, "ctype").await;
    let id = new_id("ctype-new");
    let place = order_body(&id, "c-1", 1, 100).to_string();
    let bad_types = [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("application/xml"),
        Some("multipart/form-data; boundary=x"),
        Some("json"),
    ];
    for content_type in bad_types {
        let response = post_raw(&app, "/orders", content_type, place.clone()).await;
        assert_problem(response, 415, "unsupported_media_type").await;
        let response = post_raw(&app, &format!("/orders/{existing}/cancel"), content_type, "{\"reason\":\"x\"}").await;
        assert_problem(response, 415, "unsupported_media_type").await;
    }
    assert_absent(&app, &id).await;
    assert_eq!(history_len(&app, &existing).await, 1);
    // Parameters and case do not matter.
    let response = post_raw(&app, "/orders", Some("Application/JSON; charset=utf-8"), place).await;
    assert_eq!(response.status(), StatusCode::CREATED);
}

// ---------------------------------------------------------------------------------------------- 404 / 405

#[actix_web::test]
async fn an_unknown_route_is_404_not_found() {
    let app = spawn_app().await;
    let id = placed(&app, "routes").await;
    let admin = app.admin();
    for (method, path) in [
        (Method::GET, "/".to_owned()),
        (Method::GET, "/nope".to_owned()),
        (Method::GET, "/order".to_owned()),
        (Method::GET, format!("/orders/{id}/nope")),
        (Method::POST, format!("/orders/{id}/refund")),
        (Method::GET, format!("/orders/{id}/history/1")),
        (Method::DELETE, "/v2/orders".to_owned()),
        (Method::GET, "/revenue".to_owned()),
    ] {
        let response = app.request(method.clone(), &path, Some(&admin), Some(&json!({})), &[]).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{method} {path}");
        assert_problem(response, 404, "not_found").await;
    }
}

#[actix_web::test]
async fn a_wrong_method_on_a_known_route_is_405_problem_json() {
    let app = spawn_app().await;
    let id = placed(&app, "methods").await;
    for (method, path) in wrong_methods(&id) {
        let response = app.request(method.clone(), &path, Some(&app.admin()), Some(&json!({})), &[]).await;
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        let content_type =
            response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        assert_eq!(content_type, "application/problem+json", "{method} {path}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["status"], 405, "{problem}");
        assert!(
            problem["code"].is_string() && problem["title"].is_string() && problem["type"].is_string(),
            "{problem}"
        );
    }
    assert_eq!(history_len(&app, &id).await, 1);
}

/// RFC 9110 §15.5.6: a 405 response MUST carry `Allow` with the methods the resource supports.
#[actix_web::test]
async fn a_405_names_the_allowed_methods() {
    let app = spawn_app().await;
    let id = placed(&app, "allow").await;
    for (method, path) in wrong_methods(&id) {
        let response = app.request(method.clone(), &path, Some(&app.admin()), None, &[]).await;
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        let allow = response.headers().get("allow").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let expected = if path.ends_with("/confirm-payment") || path.ends_with("/ship") || path.ends_with("/cancel") {
            "POST"
        } else {
            "GET"
        };
        assert!(allow.contains(expected), "{method} {path}: Allow is {allow:?}, expected it to list {expected}");
    }
}

fn wrong_methods(id: &str) -> Vec<(Method, String)> {
    vec![
        (Method::DELETE, "/orders".to_owned()),
        (Method::PUT, "/orders".to_owned()),
        (Method::PUT, format!("/orders/{id}")),
        (Method::DELETE, format!("/orders/{id}")),
        (Method::POST, format!("/orders/{id}")),
        (Method::GET, format!("/orders/{id}/ship")),
        (Method::PATCH, format!("/orders/{id}/cancel")),
        (Method::GET, format!("/orders/{id}/confirm-payment")),
        (Method::POST, format!("/orders/{id}/history")),
        (Method::POST, "/metrics".to_owned()),
        (Method::POST, "/revenue/daily".to_owned()),
    ]
}

// --------------------------------------------------------------------------------------- nothing left behind

#[actix_web::test]
async fn invalid_requests_leave_nothing_behind() {
    let app = spawn_app().await;
    let id = placed(&app, "clean").await;
    let new = new_id("clean-new");
    let [pay, ship, cancel] = command_paths(&id);
    // One of each kind of refusal, on every command route.
    for path in [&pay, &ship, &cancel] {
        assert_eq!(post_json_text(&app, path, "{").await.status(), StatusCode::BAD_REQUEST);
        assert_eq!(post_raw(&app, path, Some("text/plain"), "{}").await.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(app.post(path, &app.admin(), &json!({})).await.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let big = json!({"reason": "x".repeat(70_000), "carrier": "x", "paymentId": "x"});
        assert_eq!(app.post(path, &app.admin(), &big).await.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
    let mut bad_place = order_body(&new, "c-1", 0, 100);
    assert_eq!(app.post("/orders", &app.admin(), &bad_place).await.status(), StatusCode::UNPROCESSABLE_ENTITY);
    bad_place["items"][0]["quantity"] = json!("1");
    assert_eq!(app.post("/orders", &app.admin(), &bad_place).await.status(), StatusCode::BAD_REQUEST);

    assert_absent(&app, &new).await;
    assert_problem(app.get(&format!("/orders/{new}/history"), &app.admin()).await, 404, "order_not_found").await;
    assert_eq!(history_len(&app, &id).await, 1);
    let doc: Value = app.get(&format!("/orders/{id}?consistency=strong"), &app.admin()).await.json().await.unwrap();
    assert_eq!((doc["status"].clone(), doc["version"].clone()), (json!("placed"), json!(1)));
    // The order still takes valid commands.
    assert_eq!(app.pay(&id, "pay-1", 2500).await.status(), StatusCode::OK);
}

// ---------------------------------------------------------------------------------------------------- fuzz

/// xorshift64*: small, deterministic, good enough to shake a parser.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let len = self.below(max + 1);
        (0..len).map(|_| self.next() as u8).collect()
    }

    /// A string mixing ASCII, multi-byte characters, controls and JSON-significant characters.
    fn string(&mut self) -> String {
        const PIECES: &[&str] = &[
            "a",
            "Z",
            "0",
            "-",
            "_",
            " ",
            "\"",
            "\\",
            "/",
            "\n",
            "\t",
            "\u{0}",
            "\u{1f}",
            "é",
            "€",
            "🦀",
            "\u{202e}",
            "\u{feff}",
            "中",
            "{",
            "}",
            "[",
            "]",
            ":",
            ",",
            "%00",
            "<script>",
            "' OR 1=1 --",
            "\u{10ffff}",
        ];
        let len = match self.below(10) {
            0 => 0,
            1 => 200 + self.below(100),
            _ => self.below(20),
        };
        (0..len).map(|_| *self.pick(PIECES)).collect()
    }

    /// Raw JSON text for a number, including ones no JSON number type holds.
    fn number(&mut self) -> String {
        match self.below(10) {
            0 => "123456789012345678901234567890".to_owned(),
            1 => "-123456789012345678901234567890".to_owned(),
            2 => format!("{}.{}", self.below(1000), self.below(1000)),
            3 => format!("{}e{}", self.below(10), self.below(40)),
            4 => "-0".to_owned(),
            5 => (self.next() as i64).to_string(),
            6 => self.next().to_string(),
            7 => "1e-7".to_owned(),
            _ => self.below(20_000).to_string(),
        }
    }

    /// Raw JSON text of an arbitrary value, nested at most `depth` deep.
    fn value(&mut self, depth: usize) -> String {
        let choice = if depth == 0 { self.below(5) } else { self.below(7) };
        match choice {
            0 => "null".to_owned(),
            1 => self.pick(&["true", "false"]).to_string(),
            2 | 3 => self.number(),
            4 => serde_json::to_string(&self.string()).unwrap(),
            5 => {
                let n = self.below(4);
                let items: Vec<String> = (0..n).map(|_| self.value(depth - 1)).collect();
                format!("[{}]", items.join(","))
            }
            _ => {
                let n = self.below(4);
                let fields: Vec<String> = (0..n)
                    .map(|_| format!("{}:{}", serde_json::to_string(&self.string()).unwrap(), self.value(depth - 1)))
                    .collect();
                format!("{{{}}}", fields.join(","))
            }
        }
    }

    /// A field's value: usually plausible, sometimes anything.
    fn field(&mut self, plausible: &str) -> Option<String> {
        match self.below(12) {
            0 => None,
            1 | 2 => Some(self.value(2)),
            _ => Some(plausible.to_owned()),
        }
    }

    /// An object with the route's fields, each present, missing, plausible or random.
    fn shaped(&mut self, fields: &[(&str, String)]) -> String {
        let mut parts: Vec<String> = fields
            .iter()
            .filter_map(|(name, plausible)| self.field(plausible).map(|v| format!("\"{name}\":{v}")))
            .collect();
        if self.chance(4) {
            parts.push(format!("{}:{}", serde_json::to_string(&self.string()).unwrap(), self.value(2)));
        }
        format!("{{{}}}", parts.join(","))
    }

    fn line(&mut self) -> String {
        let quantity = if self.chance(4) { self.number() } else { (1 + self.below(10_000)).to_string() };
        let unit_price = if self.chance(4) { self.number() } else { self.below(1_000_000).to_string() };
        let fields = [
            ("sku", "\"SKU-1\"".to_owned()),
            ("name", "\"Mug\"".to_owned()),
            ("quantity", quantity),
            ("unitPrice", unit_price),
        ];
        self.shaped(&fields)
    }

    fn body(&mut self, route: usize) -> Vec<u8> {
        match self.below(12) {
            0 => self.bytes(300),
            1 => {
                // Deep nesting of arrays or objects, closed or not.
                let depth = 1 + self.below(3000);
                let (open, close) = if self.chance(2) { ("[", "]") } else { ("{\"a\":", "}") };
                let mut text = open.repeat(depth);
                if self.chance(2) {
                    text.push_str(&close.repeat(depth));
                }
                text.into_bytes()
            }
            2 => self.value(4).into_bytes(),
            3 => {
                // A valid prefix, cut short.
                let text = self.shaped_for(route);
                let cut = self.below(text.len() + 1);
                text.as_bytes()[..cut].to_vec()
            }
            _ => self.shaped_for(route).into_bytes(),
        }
    }

    fn shaped_for(&mut self, route: usize) -> String {
        match route {
            0 => {
                let lines = match self.below(8) {
                    0 => 0,
                    1 => 101,
                    _ => 1 + self.below(3),
                };
                let items: Vec<String> = (0..lines).map(|_| self.line()).collect();
                let fields = [
                    ("orderId", format!("\"fz-{}\"", self.next())),
                    ("customerId", "\"c-1\"".to_owned()),
                    ("currency", "\"EUR\"".to_owned()),
                    ("items", format!("[{}]", items.join(","))),
                ];
                self.shaped(&fields)
            }
            1 => {
                let amount = if self.chance(3) { self.number() } else { "2500".to_owned() };
                self.shaped(&[("paymentId", "\"pay-1\"".to_owned()), ("amount", amount)])
            }
            2 => self.shaped(&[("carrier", "\"DHL\"".to_owned()), ("trackingNumber", "\"TN\"".to_owned())]),
            _ => self.shaped(&[("reason", "\"because\"".to_owned())]),
        }
    }
}

#[actix_web::test]
async fn fuzzed_bodies_never_cause_a_server_error() {
    const ROUNDS: usize = 300;
    let app = spawn_app().await;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(placed(&app, "fuzz").await);
    }
    let admin = app.admin();
    let customer = app.customer("c-1");
    let content_types = ["application/json", "application/json; charset=utf-8", "application/problem+json"];
    let mut seen = std::collections::BTreeMap::<u16, usize>::new();
    for round in 0..ROUNDS {
        for route in 0..4 {
            let body = rng.body(route);
            let id = rng.pick(&ids).clone();
            let path = match route {
                0 => "/orders".to_owned(),
                1 => format!("/orders/{id}/confirm-payment"),
                2 => format!("/orders/{id}/ship"),
                _ => format!("/orders/{id}/cancel"),
            };
            let token = if rng.chance(4) { &customer } else { &admin };
            let content_type = *rng.pick(&content_types);
            let response = app
                .client
                .post(app.url(&path))
                .bearer_auth(token)
                .header("Content-Type", content_type)
                .body(body.clone())
                .send()
                .await
                .expect("request sent");
            let status = response.status().as_u16();
            *seen.entry(status).or_default() += 1;
            let response_type =
                response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
            let text = response.text().await.unwrap_or_default();
            let shown = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
            assert!(status < 500, "round {round}: POST {path} answered {status} to {shown:?}: {text}");
            if status >= 400 {
                assert_eq!(response_type, "application/problem+json", "round {round}: POST {path} {status}: {text}");
                let problem: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
                assert_eq!(problem["status"], status, "{problem}");
                assert!(problem["code"].is_string(), "{problem}");
                let lower = text.to_lowercase();
                assert!(
                    !lower.contains("panicked") && !lower.contains("backtrace") && !lower.contains("src/"),
                    "{text}"
                );
            }
        }
    }
    eprintln!("fuzz statuses: {seen:?}");
    // Most bodies are bad, some were good: both kinds of answer were exercised.
    assert!(seen.keys().any(|s| *s == 400), "{seen:?}");
    assert!(seen.keys().any(|s| *s == 422), "{seen:?}");
    assert!(seen.keys().any(|s| (200..300).contains(s)), "{seen:?}");
    // And the service is still healthy afterwards.
    let id = new_id("after-fuzz");
    app.place(&id, "c-1", 1, 1).await;
    let response = app.get("/health/live", &admin).await;
    assert_eq!(response.status(), StatusCode::OK);
}
