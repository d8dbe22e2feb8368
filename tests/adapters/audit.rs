//! The audit log's two adapters (SQLite, DynamoDB Local) keep the same entries in the same order: newest
//! first, paged by an entry id, with every field as written.

use std::sync::Arc;

use orderflow::audit::{AuditEntry, AuditLog, DynamoAuditLog, SqliteAuditLog};

use crate::support::dynamo;

async fn conformance(log: Arc<dyn AuditLog>) {
    let mut written = Vec::new();
    for i in 0..7 {
        let detail = serde_json::json!({"orderId": format!("o-{i}"), "version": i});
        let entry = AuditEntry::new("ops", "parked.discard", &format!("p-{i}"), "ok".into(), detail);
        log.append(&entry).await.expect("append");
        written.push(entry);
    }
    let newest = log.recent(3, None).await.expect("recent");
    let expected: Vec<AuditEntry> = written.iter().rev().take(3).cloned().collect();
    // Timestamps are kept to the millisecond.
    let ms =
        |e: &AuditEntry| (e.id.clone(), e.at.timestamp_millis(), e.actor.clone(), e.target.clone(), e.detail.clone());
    assert_eq!(newest.iter().map(ms).collect::<Vec<_>>(), expected.iter().map(ms).collect::<Vec<_>>());
    let rest = log.recent(10, Some(&newest[2].id)).await.expect("older");
    assert_eq!(rest.iter().map(|e| e.target.as_str()).collect::<Vec<_>>(), ["p-3", "p-2", "p-1", "p-0"]);
    assert!(log.recent(10, Some(&written[0].id)).await.expect("oldest").is_empty());
}

#[tokio::test]
async fn sqlite_audit_log_conforms() {
    let dir = tempfile::tempdir().expect("dir");
    conformance(SqliteAuditLog::open(dir.path()).expect("open")).await;
}

#[tokio::test]
async fn dynamo_audit_log_conforms() {
    let Some((client, tables)) = dynamo().await else { return };
    let specs: Vec<_> = tables.write_model_specs().into_iter().filter(|s| s.name == tables.audit).collect();
    orderflow::aws::ensure_tables(&client, &specs).await.expect("audit table");
    conformance(DynamoAuditLog::new(client, tables.audit.clone())).await;
}
