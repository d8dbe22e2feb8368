//! Parked (poison) events: an event a projection could not apply after its retries, kept durably with the
//! error, the attempts and the time, and the events of the same order that arrived after it ("parked behind",
//! so an order's events are never applied out of order). Other orders keep flowing. An admin replays or
//! discards them (`/admin/parked`). Embedded: a SQLite file; distributed: a DynamoDB table.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use rusqlite::params;
use serde::Serialize;

use super::ViewError;
use crate::aws::{attr, error_text};
use crate::config::Synchronous;
use crate::sql::{self, DbError, ReadPool, WriteConn};
use crate::store::StoredEvent;

/// One parked event. Ids are UUIDv7, so sorting by id is sorting by parking time.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParkedEvent {
    pub id: String,
    pub projection: String,
    pub event: StoredEvent,
    pub error: String,
    pub attempts: u32,
    pub parked_at: DateTime<Utc>,
}

impl ParkedEvent {
    pub fn new(projection: &str, event: StoredEvent, error: String, attempts: u32) -> Self {
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            projection: projection.to_owned(),
            event,
            error,
            attempts,
            parked_at: Utc::now(),
        }
    }
}

#[async_trait]
pub trait ParkedStore: Send + Sync + 'static {
    /// Keeps (or, same id, updates) a parked event durably.
    async fn park(&self, parked: &ParkedEvent) -> Result<(), ViewError>;
    /// Every parked event, oldest first.
    async fn list(&self) -> Result<Vec<ParkedEvent>, ViewError>;
    /// Removes one; false if it was not there.
    async fn remove(&self, id: &str) -> Result<bool, ViewError>;
}

fn encode(parked: &ParkedEvent) -> Result<String, ViewError> {
    serde_json::to_string(&parked.event).map_err(|e| ViewError::Unavailable(e.to_string()))
}

fn decode_event(json: &str) -> Result<StoredEvent, String> {
    serde_json::from_str(json).map_err(|e| format!("parked event unreadable: {e}"))
}

// ------------------------------------------------------------------------------------------------ SQLite

pub struct SqliteParkedStore {
    writer: WriteConn,
    readers: Arc<ReadPool>,
}

impl SqliteParkedStore {
    pub fn open(dir: &Path) -> Result<Arc<Self>, DbError> {
        let path = dir.join("parked.db");
        let conn = sql::open(&path, Synchronous::Full)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS parked (
                id TEXT PRIMARY KEY, projection TEXT NOT NULL, event TEXT NOT NULL, error TEXT NOT NULL,
                attempts INTEGER NOT NULL, parked_at INTEGER NOT NULL
            );",
        )?;
        let readers = ReadPool::open(&path, 1)?;
        Ok(Arc::new(Self { writer: WriteConn::new(conn), readers }))
    }
}

#[async_trait]
impl ParkedStore for SqliteParkedStore {
    async fn park(&self, parked: &ParkedEvent) -> Result<(), ViewError> {
        let (event, p) = (encode(parked)?, parked.clone());
        Ok(self
            .writer
            .write(move |conn| {
                conn.execute(
                    "INSERT INTO parked (id, projection, event, error, attempts, parked_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (id) DO UPDATE SET error = excluded.error, attempts = excluded.attempts",
                    params![p.id, p.projection, event, p.error, p.attempts, p.parked_at.timestamp_millis()],
                )?;
                Ok(())
            })
            .await?)
    }

    async fn list(&self) -> Result<Vec<ParkedEvent>, ViewError> {
        Ok(self
            .readers
            .read(|conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT id, projection, event, error, attempts, parked_at FROM parked ORDER BY id",
                )?;
                let rows = stmt.query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get(1)?,
                        r.get::<_, String>(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get::<_, i64>(5)?,
                    ))
                })?;
                rows.map(|row| {
                    let (id, projection, event, error, attempts, at) = row?;
                    Ok(ParkedEvent {
                        id,
                        projection,
                        event: decode_event(&event).map_err(DbError::Corrupt)?,
                        error,
                        attempts,
                        parked_at: DateTime::from_timestamp_millis(at).unwrap_or_default(),
                    })
                })
                .collect()
            })
            .await?)
    }

    async fn remove(&self, id: &str) -> Result<bool, ViewError> {
        let id = id.to_owned();
        Ok(self.writer.write(move |conn| Ok(conn.execute("DELETE FROM parked WHERE id = ?1", [id])? > 0)).await?)
    }
}

// ---------------------------------------------------------------------------------------------- DynamoDB

/// Item: id S (key), projection S, event S (StoredEvent JSON), error S, attempts N, parkedAt N (epoch ms).
pub struct DynamoParkedStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoParkedStore {
    pub fn new(client: aws_sdk_dynamodb::Client, table: String) -> Arc<Self> {
        Arc::new(Self { client, table })
    }
}

fn unavailable(what: &str, e: &(dyn std::error::Error + 'static)) -> ViewError {
    ViewError::Unavailable(format!("{what}: {}", error_text(e)))
}

fn from_item(item: &HashMap<String, AttributeValue>) -> Result<ParkedEvent, String> {
    Ok(ParkedEvent {
        id: attr::s(item, "id")?.to_owned(),
        projection: attr::s(item, "projection")?.to_owned(),
        event: decode_event(attr::s(item, "event")?)?,
        error: attr::s(item, "error")?.to_owned(),
        attempts: attr::n(item, "attempts")?,
        parked_at: DateTime::from_timestamp_millis(attr::n(item, "parkedAt")?).unwrap_or_default(),
    })
}

#[async_trait]
impl ParkedStore for DynamoParkedStore {
    async fn park(&self, parked: &ParkedEvent) -> Result<(), ViewError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("id", attr::string(&parked.id))
            .item("projection", attr::string(&parked.projection))
            .item("event", attr::string(encode(parked)?))
            .item("error", attr::string(&parked.error))
            .item("attempts", attr::num(parked.attempts))
            .item("parkedAt", attr::num(parked.parked_at.timestamp_millis()))
            .send()
            .await
            .map_err(|e| unavailable("park", &e))?;
        Ok(())
    }

    async fn list(&self) -> Result<Vec<ParkedEvent>, ViewError> {
        let mut parked = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| unavailable("list parked", &e))?;
            for item in page.items() {
                parked.push(from_item(item).map_err(ViewError::Unavailable)?);
            }
            start = page.last_evaluated_key().cloned();
            if start.is_none() {
                break;
            }
        }
        parked.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(parked)
    }

    async fn remove(&self, id: &str) -> Result<bool, ViewError> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("id", attr::string(id))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| unavailable("remove parked", &e))?;
        Ok(out.attributes().is_some())
    }
}
