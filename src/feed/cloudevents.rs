//! The public event format (docs/api.md §3): a CloudEvents 1.0 structured-mode JSON object per event, the same on
//! Kafka and Kinesis. `id` is the eventId, `subject` the orderId, `sequence` the version (a string), `type`
//! `orders.<EventName>`, `data` the event's fields. Consumers dedupe on `id` or on (`subject`, `sequence`).
//! `dataschema` names the schema of `data`: a URN per event type and schema version,
//! `urn:orderflow:schema:<EventName>:<version>`, each described in docs/asyncapi.json. Two extension attributes
//! ride along: `schemaversion` (the same version, as a number) and, when the command had one, the Distributed
//! Tracing extension's `traceparent`. Decoding reads the data through the store's codec, so a record written
//! with an older schema version reaches the projectors in today's shape.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::domain::OrderId;
use crate::store::{RawEvent, StoredEvent, codec};

pub const CONTENT_TYPE: &str = "application/cloudevents+json";
pub const SOURCE: &str = "orderflow";
const TYPE_PREFIX: &str = "orders.";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudEvent {
    pub specversion: String,
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub subject: String,
    pub time: DateTime<Utc>,
    pub datacontenttype: String,
    pub sequence: String,
    /// The schema of `data`: [`dataschema`] of the event type and schema version. Optional on reading (records
    /// written before it existed have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataschema: Option<String>,
    /// Extension attribute: the schema version of `data` (also in `dataschema`), for upcasting.
    #[serde(default = "default_schema_version")]
    pub schemaversion: u32,
    /// Extension attribute of the CloudEvents Distributed Tracing extension: the W3C trace context of the
    /// command that appended the event (also the Kafka header `traceparent`; Kinesis records have no headers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// When the write model recorded the event, where that is not `time` (an extension attribute): it makes an
    /// export lossless.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recordedat: Option<DateTime<Utc>>,
    pub data: Value,
}

fn default_schema_version() -> u32 {
    1
}

/// The `dataschema` URI of an event type's schema version, e.g. `urn:orderflow:schema:OrderPlaced:2`.
pub fn dataschema(type_name: &str, schema_version: u32) -> String {
    format!("urn:orderflow:schema:{type_name}:{schema_version}")
}

#[derive(Debug, thiserror::Error)]
#[error("not an orderflow CloudEvent: {0}")]
pub struct DecodeError(pub String);

impl CloudEvent {
    /// The event in today's shape: what the feed publishes.
    pub fn from_stored(event: &StoredEvent) -> Self {
        let version = codec::schema_version(&event.event);
        let data = match serde_json::to_value(&event.event) {
            Ok(Value::Object(mut tagged)) => tagged.remove("data").unwrap_or(Value::Null),
            _ => Value::Null,
        };
        let envelope = Envelope {
            event_id: event.event_id,
            order_id: &event.order_id,
            version: event.version,
            type_name: event.event.type_name(),
            schema_version: version,
            time: event.occurred_at(),
            recorded_at: event.recorded_at,
            traceparent: event.traceparent.as_deref(),
        };
        envelope.with(data)
    }

    /// The event exactly as stored (its schema version and data as written): what a lossless export writes.
    pub fn from_raw(event: &RawEvent) -> Result<Self, DecodeError> {
        let mut tagged: serde_json::Map<String, Value> =
            serde_json::from_str(&event.payload).map_err(|e| DecodeError(format!("stored payload: {e}")))?;
        // `time` is the domain's time of the event, as the feed has it: the decoded event knows which field.
        let time = event.decode().map_err(|e| DecodeError(e.to_string()))?.occurred_at();
        let envelope = Envelope {
            event_id: event.event_id,
            order_id: &event.order_id,
            version: event.version,
            type_name: &event.type_name,
            schema_version: event.schema_version,
            time,
            recorded_at: event.recorded_at,
            traceparent: event.traceparent.as_deref(),
        };
        Ok(envelope.with(tagged.remove("data").unwrap_or(Value::Null)))
    }

    pub fn encode(event: &StoredEvent) -> Vec<u8> {
        serde_json::to_vec(&Self::from_stored(event)).unwrap_or_default()
    }

    /// A record of the feed (or a line of an export), in today's shape.
    pub fn decode(bytes: &[u8]) -> Result<StoredEvent, DecodeError> {
        let ce: CloudEvent = serde_json::from_slice(bytes).map_err(|e| DecodeError(e.to_string()))?;
        ce.into_stored()
    }

    pub fn into_stored(self) -> Result<StoredEvent, DecodeError> {
        self.carried()?.decode().map_err(|e| DecodeError(e.to_string()))
    }

    /// The event as the record carries it (its schema version and data as they are), checked to be readable.
    pub fn into_raw(self) -> Result<RawEvent, DecodeError> {
        let raw = self.carried()?;
        // Unreadable data (a wrong shape, a version this orderflow does not know) is refused here, not later.
        raw.decode().map_err(|e| DecodeError(e.to_string()))?;
        Ok(raw)
    }

    /// The event as the record carries it, not yet decoded.
    fn carried(self) -> Result<RawEvent, DecodeError> {
        if self.specversion != "1.0" || self.source != SOURCE {
            return Err(DecodeError(format!("specversion {} source {}", self.specversion, self.source)));
        }
        let name = self.kind.strip_prefix(TYPE_PREFIX).ok_or_else(|| DecodeError(format!("type {}", self.kind)))?;
        let tagged = serde_json::json!({"type": name, "data": self.data});
        Ok(RawEvent {
            event_id: Uuid::parse_str(&self.id).map_err(|e| DecodeError(e.to_string()))?,
            order_id: OrderId::parse("subject", &self.subject).map_err(|e| DecodeError(e.message))?,
            version: self.sequence.parse().map_err(|_| DecodeError(format!("sequence {}", self.sequence)))?,
            position: 0,
            type_name: name.to_owned(),
            schema_version: self.schemaversion,
            recorded_at: self.recordedat.unwrap_or(self.time),
            traceparent: self.traceparent.as_deref().and_then(crate::trace::TraceParent::parse).map(|t| t.to_string()),
            payload: tagged.to_string(),
        })
    }
}

/// Every attribute of a record but its data.
struct Envelope<'a> {
    event_id: Uuid,
    order_id: &'a OrderId,
    version: u64,
    type_name: &'a str,
    schema_version: u32,
    time: DateTime<Utc>,
    recorded_at: DateTime<Utc>,
    traceparent: Option<&'a str>,
}

impl Envelope<'_> {
    fn with(self, data: Value) -> CloudEvent {
        CloudEvent {
            specversion: "1.0".into(),
            id: self.event_id.to_string(),
            source: SOURCE.into(),
            kind: format!("{TYPE_PREFIX}{}", self.type_name),
            subject: self.order_id.to_string(),
            time: self.time,
            datacontenttype: "application/json".into(),
            sequence: self.version.to_string(),
            dataschema: Some(dataschema(self.type_name, self.schema_version)),
            schemaversion: self.schema_version,
            traceparent: self.traceparent.map(str::to_owned),
            recordedat: (self.recorded_at != self.time).then_some(self.recorded_at),
            data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Money, OrderEvent, Text};
    use serde_json::json;

    #[test]
    fn round_trips_and_has_the_documented_fields() {
        let stored = StoredEvent {
            event_id: Uuid::now_v7(),
            order_id: OrderId::parse("o", "o-1").unwrap(),
            version: 2,
            position: 0,
            schema_version: 1,
            recorded_at: DateTime::from_timestamp_millis(1_700_000_000_123).unwrap(),
            traceparent: None,
            event: OrderEvent::PaymentConfirmed {
                payment_id: Text::parse("p", "pay-1", 10).unwrap(),
                amount: Money::from_minor(2500),
                paid_at: DateTime::from_timestamp_millis(1_700_000_000_123).unwrap(),
            },
        };
        let json: Value = serde_json::from_slice(&CloudEvent::encode(&stored)).unwrap();
        assert_eq!(json["specversion"], "1.0");
        assert_eq!(json["type"], "orders.PaymentConfirmed");
        assert_eq!(json["subject"], "o-1");
        assert_eq!(json["sequence"], "2");
        assert_eq!(json["source"], "orderflow");
        assert_eq!(json["datacontenttype"], "application/json");
        assert_eq!(json["data"]["paymentId"], "pay-1");
        assert_eq!(json["data"]["amount"], 2500);
        assert_eq!(json["id"], stored.event_id.to_string());
        assert_eq!(
            (json["dataschema"].as_str(), &json["schemaversion"]),
            (Some("urn:orderflow:schema:PaymentConfirmed:1"), &json!(1))
        );
        let back = CloudEvent::decode(json.to_string().as_bytes()).unwrap();
        assert_eq!(back.event, stored.event);
        assert_eq!((back.version, back.event_id), (2, stored.event_id));
    }

    #[test]
    fn a_record_of_schema_version_1_reaches_consumers_in_todays_shape() {
        // An `OrderPlaced` record as orderflow published it before schema version 2: no dataschema, no address.
        let v1 = json!({"specversion": "1.0", "id": "0190f5c2-7d3e-7a51-9c1e-3f2b8d4a6e01", "source": "orderflow",
            "type": "orders.OrderPlaced", "subject": "o-1", "time": "2026-12-06T05:13:06.271Z",
            "datacontenttype": "application/json", "sequence": "1", "schemaversion": 1,
            "data": {"customerId": "c-1", "currency": "EUR", "items": [], "total": 0, "placedAt": "2026-12-06T05:13:06.271Z"}});
        let stored = CloudEvent::decode(v1.to_string().as_bytes()).unwrap();
        assert_eq!(stored.schema_version, 2);
        let again: Value = serde_json::from_slice(&CloudEvent::encode(&stored)).unwrap();
        assert_eq!(again["dataschema"], "urn:orderflow:schema:OrderPlaced:2");
        assert_eq!(again["data"]["shippingAddress"], Value::Null);
        // A version this orderflow does not know is refused, not misread.
        let mut future = v1.clone();
        future["schemaversion"] = json!(3);
        assert!(CloudEvent::decode(future.to_string().as_bytes()).is_err());
    }

    #[test]
    fn foreign_records_are_refused() {
        assert!(CloudEvent::decode(b"{}").is_err());
        assert!(CloudEvent::decode(b"not json").is_err());
    }
}
