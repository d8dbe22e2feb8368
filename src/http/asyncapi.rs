//! `GET /asyncapi.json`: the AsyncAPI 3.0 description of the event feed (docs/api.md §3), for the Kafka and
//! Kinesis consumers who are users too. Unlike `/openapi.json` it is not generated: the feed's format is a
//! few types (`feed::cloudevents`, `domain::OrderEvent`) that serde writes, and a hand-written document reads
//! better for consumers. It lives in `docs/asyncapi.json` and is compiled in; the unit tests below keep its data
//! schemas in step with the domain's events, and `tests/api/asyncapi.rs` parses it with the AsyncAPI project's
//! parser and checks real events against it.

use actix_web::HttpResponse;

/// The document, as served: `docs/asyncapi.json`.
pub const DOCUMENT: &str = include_str!("../../docs/asyncapi.json");

/// `GET /asyncapi.json`.
#[utoipa::path(
    get, path = "/asyncapi.json", tag = "operations", operation_id = "asyncApiDocument",
    summary = "The AsyncAPI 3.0 document of the event feed (Kafka topic, Kinesis stream, CloudEvents)",
    security(()),
    responses((status = 200, description = "The AsyncAPI document", body = Object, content_type = "application/json")),
)]
pub async fn document() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(DOCUMENT)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;
    use utoipa::PartialSchema;

    use super::*;
    use crate::domain::OrderEvent;

    fn doc() -> Value {
        serde_json::from_str(DOCUMENT).expect("docs/asyncapi.json is JSON")
    }

    fn names(value: &Value) -> BTreeSet<String> {
        value.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default()
    }

    fn strings(value: &Value) -> BTreeSet<String> {
        value.as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_owned).collect()
    }

    /// Each event type of the domain with its data schema, as serde writes it (from the derived schema of
    /// [`OrderEvent`], `{type, data}`, so a new variant or field shows up here without touching this test).
    fn domain_events() -> Vec<(String, Value)> {
        let schema = serde_json::to_value(OrderEvent::schema()).expect("schema");
        let branches = schema["oneOf"].as_array().expect("OrderEvent is a oneOf of its variants");
        branches
            .iter()
            .map(|branch| {
                let name = branch["properties"]["type"]["enum"][0].as_str().expect("the variant's type name");
                (name.to_owned(), branch["properties"]["data"].clone())
            })
            .collect()
    }

    #[actix_web::test]
    async fn the_served_document_is_the_file() {
        let response = document().await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("application/json"));
        let body = actix_web::body::to_bytes(response.into_body()).await.expect("body");
        let file = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/asyncapi.json"))
            .expect("docs/asyncapi.json");
        assert_eq!(std::str::from_utf8(&body).expect("UTF-8"), file);
    }

    #[test]
    fn the_document_describes_every_event_type_with_the_domains_fields() {
        let doc = doc();
        assert_eq!(doc["asyncapi"], "3.0.0");
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
        let events = domain_events();
        assert_eq!(events.len(), 4, "{events:?}");
        let types: BTreeSet<String> = events.iter().map(|(name, _)| format!("orders.{name}")).collect();
        assert_eq!(strings(&doc["components"]["schemas"]["CloudEvent"]["properties"]["type"]["enum"]), types);
        for channel in doc["channels"].as_object().expect("channels").values() {
            let messages = names(&channel["messages"]);
            assert_eq!(messages, events.iter().map(|(name, _)| name.clone()).collect(), "{}", channel["address"]);
        }
        for (name, data) in &events {
            let message = &doc["components"]["messages"][name];
            assert_eq!(message["name"], format!("orders.{name}"));
            let data_schema = &doc["components"]["schemas"][format!("{name}Data")];
            assert_eq!(names(&data_schema["properties"]), names(&data["properties"]), "{name}: data fields");
            assert_eq!(strings(&data_schema["required"]), strings(&data["required"]), "{name}: required fields");
            assert_eq!(data_schema["additionalProperties"], false, "{name}");
        }
    }

    #[test]
    fn the_envelope_names_every_attribute_a_cloud_event_has() {
        use crate::feed::cloudevents::CloudEvent;
        let event = CloudEvent {
            specversion: "1.0".into(),
            id: uuid::Uuid::now_v7().to_string(),
            source: "orderflow".into(),
            kind: "orders.OrderShipped".into(),
            subject: "o-1".into(),
            time: chrono::Utc::now(),
            datacontenttype: "application/json".into(),
            sequence: "3".into(),
            dataschema: Some("urn:orderflow:schema:OrderShipped:1".into()),
            schemaversion: 1,
            traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
            recordedat: Some(chrono::Utc::now()),
            data: Value::Null,
        };
        let attributes = names(&serde_json::to_value(&event).expect("serializes"));
        let envelope = &doc()["components"]["schemas"]["CloudEvent"];
        assert_eq!(names(&envelope["properties"]), attributes);
        // `dataschema` is always written, but records published before it existed have none; `recordedat` only
        // where it is not `time`.
        let optional = BTreeSet::from(["traceparent".to_owned(), "dataschema".to_owned(), "recordedat".to_owned()]);
        assert_eq!(strings(&envelope["required"]), &attributes - &optional);
    }
}
