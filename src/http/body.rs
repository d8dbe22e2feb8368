//! Reading request bodies at the boundary: content type (415), size (413), JSON syntax and JSON types (400),
//! then typed field access that the route parsers turn into domain values (422). Keeping the steps apart is
//! what lets docs/api.md tell a malformed body from a well-formed one that breaks a rule.

use actix_web::HttpRequest;
use actix_web::http::header;
use actix_web::web;
use futures_util::StreamExt;
use serde_json::{Map, Value};
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

/// A JSON object read from a request, with typed accessors that name the field in their errors.
pub struct JsonObject<'a> {
    map: &'a Map<String, Value>,
    prefix: String,
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

fn wrong_type(field: &str, expected: &str) -> ApiError {
    ApiError::InvalidJson(format!("`{field}` must be {expected}"))
}

impl<'a> JsonObject<'a> {
    pub fn new(value: &'a Value) -> Result<Self, ApiError> {
        Self::nested(value, String::new())
    }

    fn nested(value: &'a Value, prefix: String) -> Result<Self, ApiError> {
        match value {
            Value::Object(map) => Ok(Self { map, prefix }),
            _ => Err(wrong_type(prefix.trim_end_matches('.'), "an object")),
        }
    }

    /// The full name of a field, for error messages (`items[2].quantity`).
    pub fn path(&self, field: &str) -> String {
        format!("{}{field}", self.prefix)
    }

    fn get(&self, field: &str) -> Option<&'a Value> {
        self.map.get(field).filter(|v| !v.is_null())
    }

    /// A string field; absent or null is `None`, any other type is a 400.
    pub fn opt_str(&self, field: &str) -> Result<Option<&'a str>, ApiError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(wrong_type(&self.path(field), "a string")),
        }
    }

    /// An integer field. JSON has one number type, so `100`, `100.0` and `1e2` are all the integer 100; a
    /// fraction or a non-number is a 400. An integer beyond any range comes back saturated, so that the range
    /// check reports it as a 422 like any other out-of-range value.
    pub fn opt_int(&self, field: &str) -> Result<Option<i128>, ApiError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Number(n)) => {
                if let Some(i) = n.as_i64() {
                    Ok(Some(i128::from(i)))
                } else if let Some(u) = n.as_u64() {
                    Ok(Some(i128::from(u)))
                } else {
                    match n.as_f64() {
                        // `as` saturates at the i128 bounds.
                        Some(f) if f.is_finite() && f.fract() == 0.0 => Ok(Some(f as i128)),
                        _ => Err(wrong_type(&self.path(field), "an integer")),
                    }
                }
            }
            Some(_) => Err(wrong_type(&self.path(field), "an integer")),
        }
    }

    /// An array of objects.
    pub fn opt_objects(&self, field: &str) -> Result<Option<Vec<JsonObject<'a>>>, ApiError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| JsonObject::nested(item, format!("{}[{i}].", self.path(field))))
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(wrong_type(&self.path(field), "an array")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn types_are_400_and_absence_is_none() {
        let v = json!({"s": "x", "n": 5, "f": 1.5, "big": 1e30, "neg": -3, "nul": null, "arr": [{"a": 1}]});
        let o = JsonObject::new(&v).unwrap();
        assert_eq!(o.opt_str("s").unwrap(), Some("x"));
        assert_eq!(o.opt_str("nul").unwrap(), None);
        assert_eq!(o.opt_str("missing").unwrap(), None);
        assert!(matches!(o.opt_str("n"), Err(ApiError::InvalidJson(_))));
        assert_eq!(o.opt_int("n").unwrap(), Some(5));
        assert_eq!(o.opt_int("neg").unwrap(), Some(-3));
        assert!(matches!(o.opt_int("f"), Err(ApiError::InvalidJson(_))));
        assert_eq!(o.opt_int("big").unwrap(), Some(1e30 as i128));
        let whole = json!({"a": 100.0, "b": 1e2});
        let w = JsonObject::new(&whole).unwrap();
        assert_eq!((w.opt_int("a").unwrap(), w.opt_int("b").unwrap()), (Some(100), Some(100)));
        let items = o.opt_objects("arr").unwrap().unwrap();
        assert_eq!(items[0].path("a"), "arr[0].a");
    }

    #[test]
    fn huge_integer_literals_are_out_of_range_not_malformed() {
        let v = parse_json(br#"{"n": 123456789012345678901234567890}"#).unwrap();
        let n = JsonObject::new(&v).unwrap().opt_int("n").unwrap().unwrap();
        assert!(n > i128::from(u64::MAX));
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
