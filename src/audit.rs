//! The audit log: every admin action (replaying or discarding a parked event, rebuilding a view, a command an
//! admin ran on another customer's order) as a structured log line (target `audit`) and a durable record,
//! readable at `GET /admin/audit`, newest first. Embedded: a SQLite file; distributed: a DynamoDB table keyed
//! by UTC day, so that reading the recent entries is a query of the last few days, not a scan.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Duration as Days, NaiveDate, Utc};
use rusqlite::params;
use serde::Serialize;

use crate::aws::{attr, error_text};
use crate::config::Synchronous;
use crate::sql::{self, DbError, ReadPool, WriteConn};

/// One admin action. Ids are UUIDv7: sorting by id is sorting by time.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    pub id: String,
    pub at: DateTime<Utc>,
    /// The token subject that did it.
    pub actor: String,
    /// `parked.replay`, `parked.discard`, `projection.rebuild`, or `order.<command>` (an admin's command on
    /// another customer's order).
    pub action: String,
    /// What it was done to: a parked event id, a projection name, an order id.
    pub target: String,
    /// `ok`, or `failed: <reason>`.
    pub outcome: String,
    /// Details of the action (the parked event's order and version, the order's customer, …).
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

impl AuditEntry {
    pub fn new(actor: &str, action: &str, target: &str, outcome: String, detail: serde_json::Value) -> Self {
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            at: Utc::now(),
            actor: actor.to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            outcome,
            detail,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("audit log unavailable: {0}")]
pub struct AuditError(String);

impl From<DbError> for AuditError {
    fn from(e: DbError) -> Self {
        Self(e.to_string())
    }
}

#[async_trait]
pub trait AuditLog: Send + Sync + 'static {
    /// Keeps an entry durably.
    async fn append(&self, entry: &AuditEntry) -> Result<(), AuditError>;
    /// Up to `limit` entries older than `before` (an entry id; none: the newest), newest first.
    async fn recent(&self, limit: usize, before: Option<&str>) -> Result<Vec<AuditEntry>, AuditError>;
}

/// Writes the log line, then the durable record. A record that cannot be written is logged as an error (the
/// action itself has already happened and is not undone); the log line still holds it.
pub async fn record(log: &dyn AuditLog, entry: AuditEntry) {
    tracing::info!(
        target: "audit",
        id = %entry.id,
        actor = %entry.actor,
        action = %entry.action,
        target_id = %entry.target,
        outcome = %entry.outcome,
        detail = %entry.detail,
        "admin action"
    );
    if let Err(e) = log.append(&entry).await {
        tracing::error!(target: "audit", id = %entry.id, error = %e, "audit record not stored");
    }
}

// ------------------------------------------------------------------------------------------------ SQLite

pub struct SqliteAuditLog {
    writer: WriteConn,
    readers: Arc<ReadPool>,
}

impl SqliteAuditLog {
    pub fn open(dir: &Path) -> Result<Arc<Self>, DbError> {
        let path = dir.join("audit.db");
        let conn = sql::open(&path, Synchronous::Full)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS audit (
                id TEXT PRIMARY KEY, at INTEGER NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
                target TEXT NOT NULL, outcome TEXT NOT NULL, detail TEXT NOT NULL
            );",
        )?;
        let readers = ReadPool::open(&path, 1)?;
        Ok(Arc::new(Self { writer: WriteConn::new(conn), readers }))
    }
}

#[async_trait]
impl AuditLog for SqliteAuditLog {
    async fn append(&self, entry: &AuditEntry) -> Result<(), AuditError> {
        let e = entry.clone();
        self.writer
            .write(move |conn| {
                conn.execute(
                    "INSERT INTO audit (id, at, actor, action, target, outcome, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![e.id, e.at.timestamp_millis(), e.actor, e.action, e.target, e.outcome, e.detail.to_string()],
                )?;
                Ok(())
            })
            .await?;
        Ok(())
    }

    async fn recent(&self, limit: usize, before: Option<&str>) -> Result<Vec<AuditEntry>, AuditError> {
        // `~` sorts after every UUID character: "no cursor" is "before everything".
        let before = before.unwrap_or("~").to_owned();
        Ok(self
            .readers
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT id, at, actor, action, target, outcome, detail FROM audit WHERE id < ?1
                     ORDER BY id DESC LIMIT ?2",
                )?;
                let rows = stmt.query_map(params![before, limit as i64], |r| {
                    Ok(AuditEntry {
                        id: r.get(0)?,
                        at: DateTime::from_timestamp_millis(r.get(1)?).unwrap_or_default(),
                        actor: r.get(2)?,
                        action: r.get(3)?,
                        target: r.get(4)?,
                        outcome: r.get(5)?,
                        detail: serde_json::from_str(&r.get::<_, String>(6)?).unwrap_or_default(),
                    })
                })?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await?)
    }
}

// ---------------------------------------------------------------------------------------------- DynamoDB

/// How far back `recent` looks in the distributed profile.
const LOOKBACK_DAYS: i64 = 90;

/// Item: day S (hash, `YYYY-MM-DD` UTC), id S (range), at N (epoch ms), actor S, action S, target S,
/// outcome S, detail S (JSON).
pub struct DynamoAuditLog {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoAuditLog {
    pub fn new(client: aws_sdk_dynamodb::Client, table: String) -> Arc<Self> {
        Arc::new(Self { client, table })
    }
}

fn from_item(item: &HashMap<String, AttributeValue>) -> Result<AuditEntry, String> {
    Ok(AuditEntry {
        id: attr::s(item, "id")?.to_owned(),
        at: DateTime::from_timestamp_millis(attr::n(item, "at")?).unwrap_or_default(),
        actor: attr::s(item, "actor")?.to_owned(),
        action: attr::s(item, "action")?.to_owned(),
        target: attr::s(item, "target")?.to_owned(),
        outcome: attr::s(item, "outcome")?.to_owned(),
        detail: serde_json::from_str(attr::s(item, "detail")?).unwrap_or_default(),
    })
}

/// The UTC day of a UUIDv7 id (its first 48 bits are epoch milliseconds).
fn day_of(id: &str) -> Option<chrono::NaiveDate> {
    let uuid = uuid::Uuid::parse_str(id).ok()?;
    let (secs, nanos) = uuid.get_timestamp()?.to_unix();
    Some(DateTime::from_timestamp(i64::try_from(secs).ok()?, nanos)?.date_naive())
}

#[async_trait]
impl AuditLog for DynamoAuditLog {
    async fn append(&self, entry: &AuditEntry) -> Result<(), AuditError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("day", attr::string(entry.at.date_naive().to_string()))
            .item("id", attr::string(&entry.id))
            .item("at", attr::num(entry.at.timestamp_millis()))
            .item("actor", attr::string(&entry.actor))
            .item("action", attr::string(&entry.action))
            .item("target", attr::string(&entry.target))
            .item("outcome", attr::string(&entry.outcome))
            .item("detail", attr::string(entry.detail.to_string()))
            .send()
            .await
            .map_err(|e| AuditError(error_text(&e)))?;
        Ok(())
    }

    /// The days are read newest first, [`DAYS_AT_ONCE`] of them at a time (a quiet log would otherwise cost
    /// one round trip per day of the look-back, one after the other), each up to `limit` entries; reading stops
    /// once `limit` entries are in.
    async fn recent(&self, limit: usize, before: Option<&str>) -> Result<Vec<AuditEntry>, AuditError> {
        use futures_util::StreamExt as _;
        let today = Utc::now().date_naive();
        let newest = before.and_then(day_of).map_or(today, |d| d.min(today));
        let oldest = today - Days::days(LOOKBACK_DAYS);
        let days = (0..).map_while(|back| newest.checked_sub_signed(Days::days(back)).filter(|d| *d >= oldest));
        let mut reads = futures_util::stream::iter(days.map(|day| self.day(day, limit, before))).buffered(DAYS_AT_ONCE);
        let mut entries = Vec::new();
        while entries.len() < limit
            && let Some(day) = reads.next().await
        {
            entries.extend(day?);
        }
        entries.truncate(limit);
        Ok(entries)
    }
}

/// Days of the audit log read at once (see `DynamoAuditLog::recent`).
const DAYS_AT_ONCE: usize = 16;

impl DynamoAuditLog {
    /// Up to `limit` entries of one day, newest first, older than `before`.
    async fn day(&self, day: NaiveDate, limit: usize, before: Option<&str>) -> Result<Vec<AuditEntry>, AuditError> {
        let mut entries = Vec::new();
        let mut start = None;
        loop {
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .scan_index_forward(false)
                .expression_attribute_values(":day", attr::string(day.to_string()))
                .limit(i32::try_from(limit - entries.len()).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start);
            query = match before {
                Some(id) => query
                    .key_condition_expression("#day = :day AND id < :before")
                    .expression_attribute_values(":before", attr::string(id)),
                None => query.key_condition_expression("#day = :day"),
            };
            let page =
                query.expression_attribute_names("#day", "day").send().await.map_err(|e| AuditError(error_text(&e)))?;
            for item in page.items() {
                entries.push(from_item(item).map_err(AuditError)?);
            }
            start = page.last_evaluated_key().cloned();
            if start.is_none() || entries.len() >= limit {
                return Ok(entries);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sqlite_log_keeps_entries_newest_first_with_a_cursor() {
        let dir = tempfile::tempdir().expect("dir");
        let log = SqliteAuditLog::open(dir.path()).expect("open");
        let mut ids = Vec::new();
        for i in 0..5 {
            let entry =
                AuditEntry::new("ops", "parked.replay", &format!("p-{i}"), "ok".into(), serde_json::json!({"i": i}));
            ids.push(entry.id.clone());
            record(log.as_ref(), entry).await;
        }
        let newest = log.recent(3, None).await.expect("recent");
        assert_eq!(newest.iter().map(|e| e.target.as_str()).collect::<Vec<_>>(), ["p-4", "p-3", "p-2"]);
        assert_eq!(newest[0].detail["i"], 4);
        let older = log.recent(3, Some(&newest[2].id)).await.expect("older");
        assert_eq!(older.iter().map(|e| e.target.as_str()).collect::<Vec<_>>(), ["p-1", "p-0"]);
        // Durable: a reopened log has them all.
        drop(log);
        let reopened = SqliteAuditLog::open(dir.path()).expect("reopen");
        assert_eq!(reopened.recent(10, None).await.expect("recent").len(), 5);
    }

    #[test]
    fn a_uuid_v7_names_its_day() {
        let entry = AuditEntry::new("a", "b", "c", "ok".into(), serde_json::Value::Null);
        assert_eq!(day_of(&entry.id), Some(entry.at.date_naive()));
        assert_eq!(day_of("not-a-uuid"), None);
    }
}
