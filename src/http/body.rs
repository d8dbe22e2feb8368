//! Reading request bodies at the boundary: content type (415), size (413), JSON syntax and JSON types (400),
//! then the route's request type (`typed`), which its conversion turns into a command (422). Keeping the steps apart is
//! what lets docs/api.md tell a malformed body from a well-formed one that breaks a rule.

use actix_web::HttpRequest;
use actix_web::http::header;
use actix_web::web;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::error::ApiError;

/// Bodies larger than this are refused with 413 (docs/api.md §2).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// `application/json` or any `application/*+json`, with or without parameters.
pub fn require_json(req: &HttpRequest) -> Result<(), ApiError> {
    let Some(value) = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return Err(ApiError::UnsupportedMediaType);
    };
    let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let ok = essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"));
    if ok { Ok(()) } else { Err(ApiError::UnsupportedMediaType) }
}

/// Reads the body, refusing it as soon as it grows past [`MAX_BODY_BYTES`], and with 408 (closing the
/// connection) when it has not all arrived within `server.body_timeout_ms`: a client that stops sending
/// would otherwise hold its connection, and a worker's share of them, for ever.
pub async fn read_limited(req: &HttpRequest, payload: web::Payload) -> Result<web::Bytes, ApiError> {
    let declared =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
        return Err(ApiError::PayloadTooLarge(MAX_BODY_BYTES));
    }
    let timeout = req.app_data::<web::Data<super::AppState>>().map_or(DEFAULT_BODY_TIMEOUT, |s| s.body_timeout);
    tokio::time::timeout(timeout, read_all(payload)).await.map_err(|_| ApiError::RequestTimeout)?
}

/// Used when the application state is missing (never in the service).
const DEFAULT_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

async fn read_all(mut payload: web::Payload) -> Result<web::Bytes, ApiError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| ApiError::InvalidJson("the request body could not be read".into()))?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(ApiError::PayloadTooLarge(MAX_BODY_BYTES));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Parses the body as JSON; it must be an object.
pub fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| ApiError::InvalidJson(format!("malformed JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::InvalidJson("the body must be a JSON object".into()));
    }
    Ok(value)
}

/// A stable hash of a JSON document (object keys are sorted), to recognise a retried request.
pub fn request_hash(value: &Value) -> String {
    let canonical = serde_json::to_vec(value).unwrap_or_default();
    Sha256::digest(&canonical).iter().map(|b| format!("{b:02x}")).collect()
}

/// The body as the route's request type (a DTO of `http::orders`). A JSON type the DTO does not take (a string
/// where a number belongs) is a 400 naming the field; the rules on the values are the DTO's conversion into a
/// command (422).
pub fn typed<T: DeserializeOwned>(json: &Value) -> Result<T, ApiError> {
    // The path tracker costs on every field, so it runs only to name the field of a body already refused.
    T::deserialize(json).map_err(|_| match serde_path_to_error::deserialize::<_, T>(json) {
        Err(e) => {
            let path = e.path().to_string();
            ApiError::InvalidJson(format!("`{path}`: {}", e.into_inner()))
        }
        Ok(_) => ApiError::InvalidJson("the body does not match the request's type".to_owned()),
    })
}

/// An integer as a request carries it. JSON has one number type, so `100`, `100.0` and `1e2` are all the integer
/// 100; a fraction or a non-number is a 400. An integer beyond any range comes back saturated, so that the range
/// check of the value it becomes reports it as a 422 like any other out-of-range value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Integer(pub i128);

impl<'de> Deserialize<'de> for Integer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Integer;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an integer")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Integer, E> {
                Ok(Integer(i128::from(v)))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Integer, E> {
                Ok(Integer(i128::from(v)))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Integer, E> {
                if v.is_finite() && v.fract() == 0.0 {
                    // `as` saturates at the i128 bounds.
                    Ok(Integer(v as i128))
                } else {
                    Err(E::invalid_type(serde::de::Unexpected::Float(v), &self))
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, serde::Deserialize)]
    struct Probe {
        n: Option<Integer>,
        s: Option<String>,
        lines: Option<Vec<Probe>>,
    }

    #[test]
    fn wrong_types_are_400_naming_the_field_and_null_is_absent() {
        let ok: Probe = typed(&json!({"n": 5, "s": null})).unwrap();
        assert_eq!((ok.n, ok.s, ok.lines.is_none()), (Some(Integer(5)), None, true));
        let ApiError::InvalidJson(message) = typed::<Probe>(&json!({"lines": [{"n": 1}, {"n": "2"}]})).unwrap_err()
        else {
            panic!("a wrong type is a 400")
        };
        assert!(message.starts_with("`lines[1].n`"), "{message}");
        assert!(matches!(typed::<Probe>(&json!({"s": 1})), Err(ApiError::InvalidJson(_))));
    }

    #[test]
    fn integers_are_whole_numbers_of_any_spelling() {
        let int = |v: Value| typed::<Probe>(&json!({ "n": v })).map(|p| p.n);
        assert_eq!(int(json!(-3)).unwrap(), Some(Integer(-3)));
        assert_eq!(int(json!(u64::MAX)).unwrap(), Some(Integer(i128::from(u64::MAX))));
        assert_eq!(int(json!(100.0)).unwrap(), Some(Integer(100)));
        assert_eq!(int(json!(1e30)).unwrap(), Some(Integer(1e30 as i128)));
        for bad in [json!(1.5), json!("1"), json!(true), json!([1])] {
            assert!(matches!(int(bad.clone()), Err(ApiError::InvalidJson(_))), "{bad}");
        }
    }

    #[test]
    fn huge_integer_literals_are_out_of_range_not_malformed() {
        let v = parse_json(br#"{"n": 123456789012345678901234567890}"#).unwrap();
        let n = typed::<Probe>(&v).unwrap().n.unwrap();
        assert!(n.0 > i128::from(u64::MAX));
    }

    #[test]
    fn body_must_be_an_object() {
        assert!(parse_json(b"[1]").is_err());
        assert!(parse_json(b"{").is_err());
        assert!(parse_json(b"").is_err());
    }

    #[test]
    fn request_hash_ignores_key_order() {
        let a = parse_json(br#"{"a":1,"b":2}"#).unwrap();
        let b = parse_json(br#"{ "b":2, "a":1 }"#).unwrap();
        assert_eq!(request_hash(&a), request_hash(&b));
    }
}
