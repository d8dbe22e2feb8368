//! The event codec: how an event is written (`{"type", "data"}` JSON and a schema version per event type) and the
//! one way stored events are read back. Every reader of stored events goes through [`decode`] — the SQLite and
//! DynamoDB stores (actor load, history, rebuild, the embedded log tail, the DynamoDB Streams bridge), the
//! CloudEvents decoder of the Kafka and Kinesis feeds, and anything that deserializes a [`StoredEvent`] (parked
//! events, exports) — so an event written by any earlier version of orderflow reaches all of them in today's shape.
//!
//! An event type's schema changes only by adding an upcaster to [`UPCASTERS`]: a pure function from the data of
//! version `n` to the data of version `n + 1`. The chain is applied in order from the version the event was
//! written with, so stored events are never rewritten; the version a type is written with today is one more than
//! the number of its upcasters. The compatibility policy for consumers of the feed is docs/api.md §3.
//!
//! | type | version | change |
//! |---|---|---|
//! | `OrderPlaced` | 2 | `shippingAddress` (an address object, or `null`) is always present |

use serde_json::{Map, Value};

use super::StoredEvent;
use crate::domain::OrderEvent;

/// One step of an event type's schema: turns the data of version `from` into that of version `from + 1`.
struct Upcaster {
    event: &'static str,
    from: u32,
    apply: fn(&mut Map<String, Value>),
}

/// Every schema change of every event type, oldest first per type.
const UPCASTERS: &[Upcaster] = &[Upcaster { event: "OrderPlaced", from: 1, apply: order_placed_v1_to_v2 }];

/// `OrderPlaced` v1 → v2: v1 orders had no shipping address.
fn order_placed_v1_to_v2(data: &mut Map<String, Value>) {
    data.entry("shippingAddress").or_insert(Value::Null);
}

/// A stored event that cannot be read: corrupt, of an unknown type, or written by a newer orderflow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable event: {0}")]
pub struct CodecError(pub String);

/// The schema version events of this type are written with today.
pub fn current_version(type_name: &str) -> u32 {
    1 + UPCASTERS.iter().filter(|u| u.event == type_name).count() as u32
}

/// The schema version `event` is written with.
pub fn schema_version(event: &OrderEvent) -> u32 {
    current_version(event.type_name())
}

/// The stored form of an event: `{"type": "<EventName>", "data": {…}}`.
pub fn encode(event: &OrderEvent) -> Result<String, CodecError> {
    serde_json::to_string(event).map_err(|e| CodecError(e.to_string()))
}

/// Reads a stored `{"type", "data"}` payload written with `schema_version`.
pub fn decode(payload: &str, schema_version: u32) -> Result<OrderEvent, CodecError> {
    let tagged: Map<String, Value> = serde_json::from_str(payload).map_err(|e| CodecError(e.to_string()))?;
    let type_name = tagged.get("type").and_then(Value::as_str).ok_or_else(|| CodecError("no type".into()))?;
    decode_data(type_name, schema_version, tagged.get("data").cloned().unwrap_or(Value::Null))
}

/// Reads an event's data, written with `schema_version` of its type, in today's shape.
pub fn decode_data(type_name: &str, schema_version: u32, data: Value) -> Result<OrderEvent, CodecError> {
    let current = current_version(type_name);
    if schema_version == 0 || schema_version > current {
        return Err(CodecError(format!(
            "{type_name} schema version {schema_version}: this orderflow reads versions 1 to {current}"
        )));
    }
    let Value::Object(mut data) = data else {
        return Err(CodecError(format!("the data of a {type_name} is not an object")));
    };
    for upcaster in UPCASTERS.iter().filter(|u| u.event == type_name && u.from >= schema_version) {
        (upcaster.apply)(&mut data);
    }
    let tagged =
        Value::Object(Map::from_iter([("type".to_owned(), type_name.into()), ("data".to_owned(), data.into())]));
    serde_json::from_value(tagged).map_err(|e| CodecError(format!("{type_name} v{schema_version}: {e}")))
}

/// A [`StoredEvent`] as its JSON form holds it, before its data is upcast; `StoredEvent` deserializes through
/// this, so every serde reader of stored events gets today's shape too.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawStoredEvent {
    event_id: uuid::Uuid,
    order_id: crate::domain::OrderId,
    version: u64,
    #[serde(default)]
    position: u64,
    #[serde(default = "first_version")]
    schema_version: u32,
    recorded_at: chrono::DateTime<chrono::Utc>,
    #[serde(default)]
    traceparent: Option<String>,
    #[serde(rename = "type")]
    kind: String,
    data: Value,
}

fn first_version() -> u32 {
    1
}

impl TryFrom<RawStoredEvent> for StoredEvent {
    type Error = CodecError;

    fn try_from(raw: RawStoredEvent) -> Result<Self, CodecError> {
        let event = decode_data(&raw.kind, raw.schema_version, raw.data)?;
        Ok(StoredEvent {
            event_id: raw.event_id,
            order_id: raw.order_id,
            version: raw.version,
            position: raw.position,
            schema_version: schema_version(&event),
            recorded_at: raw.recorded_at,
            traceparent: raw.traceparent,
            event,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// An `OrderPlaced` payload exactly as orderflow wrote it before schema version 2 (no `shippingAddress`).
    const PLACED_V1: &str = r#"{"type":"OrderPlaced","data":{"customerId":"alice","currency":"EUR","items":[{"sku":"MUG-01","name":"Blue ceramic mug","quantity":2,"unitPrice":1250}],"total":2500,"placedAt":"2026-12-06T05:13:06.271Z"}}"#;

    #[test]
    fn a_v1_order_placed_reads_as_v2_without_an_address_and_writes_as_v2() {
        let event = decode(PLACED_V1, 1).unwrap();
        let OrderEvent::OrderPlaced { shipping_address, total, .. } = &event else { panic!("{event:?}") };
        assert_eq!((shipping_address, total.minor()), (&None, 2500));
        assert_eq!(schema_version(&event), 2);
        let written: Value = serde_json::from_str(&encode(&event).unwrap()).unwrap();
        assert_eq!(written["data"]["shippingAddress"], Value::Null, "v2 always has the key: {written}");
        assert_eq!(decode(&encode(&event).unwrap(), 2).unwrap(), event);
    }

    #[test]
    fn a_v2_address_is_kept_and_other_types_are_still_v1() {
        let mut v2: Value = serde_json::from_str(PLACED_V1).unwrap();
        v2["data"]["shippingAddress"] =
            json!({"name": "Alice", "line1": "1 Main St", "postalCode": "10115", "city": "Berlin", "country": "DE"});
        let event = decode(&v2.to_string(), 2).unwrap();
        let OrderEvent::OrderPlaced { shipping_address: Some(address), .. } = &event else { panic!("{event:?}") };
        assert_eq!(address.city.as_str(), "Berlin");
        let paid =
            r#"{"type":"PaymentConfirmed","data":{"paymentId":"p","amount":1,"paidAt":"2026-12-06T05:13:06.271Z"}}"#;
        assert_eq!(schema_version(&decode(paid, 1).unwrap()), 1);
        assert_eq!(current_version("OrderShipped"), 1);
    }

    #[test]
    fn versions_from_the_future_and_foreign_shapes_are_refused() {
        assert!(decode(PLACED_V1, 3).unwrap_err().0.contains("versions 1 to 2"));
        assert!(decode(PLACED_V1, 0).is_err());
        assert!(decode(r#"{"type":"OrderLost","data":{}}"#, 1).is_err());
        assert!(decode(r#"{"type":"OrderPlaced","data":[]}"#, 1).is_err());
        assert!(decode("not json", 1).is_err());
    }

    #[test]
    fn a_stored_event_deserialized_from_json_is_upcast() {
        let mut json: Value = serde_json::from_str(PLACED_V1).unwrap();
        let extra = json!({"eventId": "0190f5c2-7d3e-7a51-9c1e-3f2b8d4a6e01", "orderId": "o-1", "version": 1,
            "position": 4, "schemaVersion": 1, "recordedAt": "2026-12-06T05:13:06.271Z"});
        json.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let stored: StoredEvent = serde_json::from_value(json).unwrap();
        assert_eq!((stored.schema_version, stored.position), (2, 4));
        let back: StoredEvent = serde_json::from_value(serde_json::to_value(&stored).unwrap()).unwrap();
        assert_eq!(back, stored);
    }
}
