//! The embedded search view: one row per order (the API document as JSON plus the columns we filter and sort
//! on) and an FTS5 index over item names and skus. Applying an event reads the stored document, folds the
//! event into it with the domain's own `Order::evolve`, and writes it back with its version: an event at or
//! below the stored version is a duplicate and is skipped.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, ToSql, params};

use super::sqlite::{Generations, SqliteRebuild, apply_batch, read_checkpoint, save_checkpoint};
use super::{ApplyReport, Rebuilder, Cursor, Projection, SearchPage, SearchQuery, SearchView, ViewError, search_terms};
use crate::domain::{Order, OrderEvent, OrderId};
use crate::sql::DbError;
use crate::store::StoredEvent;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS search_docs (
    order_id    TEXT PRIMARY KEY,
    customer_id TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    total       INTEGER NOT NULL,
    placed_at   INTEGER NOT NULL,
    version     INTEGER NOT NULL,
    doc         TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS search_docs_placed ON search_docs (placed_at, order_id);
CREATE INDEX IF NOT EXISTS search_docs_total ON search_docs (total, order_id);
CREATE INDEX IF NOT EXISTS search_docs_customer ON search_docs (customer_id, placed_at);
CREATE VIRTUAL TABLE IF NOT EXISTS search_fts USING fts5 (order_id UNINDEXED, terms, tokenize = 'unicode61');

";

const NAME: &str = "search";

pub struct SqliteSearchView {
    gens: Generations,
}

impl SqliteSearchView {
    pub fn open(dir: &Path, read_connections: usize) -> Result<Arc<Self>, DbError> {
        Ok(Arc::new(Self { gens: Generations::open(dir, "search", SCHEMA, read_connections)? }))
    }
}

fn load_doc(conn: &Connection, order_id: &str) -> Result<Option<Order>, DbError> {
    let doc: Option<String> = conn
        .prepare_cached("SELECT doc FROM search_docs WHERE order_id = ?1")?
        .query_row([order_id], |r| r.get(0))
        .optional()?;
    doc.map(|d| serde_json::from_str(&d).map_err(|e| DbError::Corrupt(e.to_string()))).transpose()
}

fn apply_one(conn: &Connection, event: &StoredEvent) -> Result<bool, ViewError> {
    let current = load_doc(conn, event.order_id.as_str())?;
    let have = current.as_ref().map_or(0, |o| o.version);
    if event.version <= have {
        return Ok(false);
    }
    let next = Order::evolve(current, &event.order_id, &event.event)
        .filter(|o| o.version == event.version)
        .ok_or_else(|| ViewError::OutOfOrder {
            order_id: event.order_id.to_string(),
            version: event.version,
            have,
        })?;
    let doc = serde_json::to_string(&next).map_err(|e| ViewError::Unavailable(e.to_string()))?;
    conn.prepare_cached(
        "INSERT INTO search_docs (order_id, customer_id, status, total, placed_at, version, doc)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (order_id) DO UPDATE SET status = excluded.status, version = excluded.version, doc = excluded.doc",
    )?
    .execute(params![
        next.order_id.as_str(),
        next.customer_id.as_str(),
        next.status.as_str(),
        next.total.minor() as i64,
        next.placed_at.timestamp_millis(),
        next.version,
        doc
    ])?;
    if let OrderEvent::OrderPlaced { items, .. } = &event.event {
        // Items never change after placing, so the text row is written once, with the version-1 event.
        let terms: Vec<&str> = items.iter().flat_map(|i| [i.name.as_str(), i.sku.as_str()]).collect();
        conn.prepare_cached("INSERT INTO search_fts (order_id, terms) VALUES (?1, ?2)")?
            .execute(params![next.order_id.as_str(), terms.join(" \n ")])?;
    }
    Ok(true)
}

#[async_trait]
impl Projection for SqliteSearchView {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn apply(&self, events: &[StoredEvent], checkpoint: Option<u64>) -> Result<ApplyReport, ViewError> {
        apply_batch(&self.gens.db().writer, NAME, events, checkpoint, apply_one).await
    }

    async fn checkpoint(&self) -> Result<u64, ViewError> {
        Ok(self.gens.db().readers.read(|conn| read_checkpoint(conn, NAME)).await?)
    }

    async fn rebuild(&self) -> Result<Box<dyn Rebuilder>, ViewError> {
        let (generation, db) = self.gens.fresh()?;
        Ok(Box::new(SqliteRebuild { gens: self.gens.clone(), generation, db, projection: NAME, apply_one }))
    }

    async fn reset_checkpoint(&self) -> Result<(), ViewError> {
        Ok(self.gens.db().writer.write(|conn| save_checkpoint(conn, NAME, 0)).await?)
    }

    async fn skip(&self, event: &StoredEvent) -> Result<(), ViewError> {
        let (id, version) = (event.order_id.to_string(), event.version);
        Ok(self
            .gens
            .db()
            .writer
            .write(move |conn| {
                conn.execute(
                    "UPDATE search_docs SET version = ?2, doc = json_set(doc, '$.version', ?2)
                     WHERE order_id = ?1 AND version < ?2",
                    params![id, version],
                )?;
                Ok(())
            })
            .await?)
    }
}

#[async_trait]
impl SearchView for SqliteSearchView {
    async fn ping(&self) -> Result<(), ViewError> {
        Ok(self.gens.db().readers.read(|conn| Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?)).await?)
    }

    async fn get(&self, order_id: &OrderId) -> Result<Option<Order>, ViewError> {
        let id = order_id.clone();
        Ok(self.gens.db().readers.read(move |conn| load_doc(conn, id.as_str())).await?)
    }

    async fn search(&self, query: &SearchQuery) -> Result<SearchPage, ViewError> {
        let query = query.clone();
        Ok(self.gens.db().readers.read(move |conn| run_search(conn, &query)).await?)
    }
}

/// Builds one parameterised query: filters, optional FTS match, keyset cursor, sort, limit + 1 (to know
/// whether there is a next page), and a count with the same filters (without the cursor).
fn run_search(conn: &Connection, q: &SearchQuery) -> Result<SearchPage, DbError> {
    let mut filters: Vec<String> = Vec::new();
    let mut args: Vec<Box<dyn ToSql>> = Vec::new();
    if let Some(customer) = &q.customer_id {
        args.push(Box::new(customer.as_str().to_owned()));
        filters.push(format!("customer_id = ?{}", args.len()));
    }
    if let Some(status) = q.status {
        args.push(Box::new(status.as_str()));
        filters.push(format!("status = ?{}", args.len()));
    }
    if let Some(from) = q.placed_from {
        args.push(Box::new(from.timestamp_millis()));
        filters.push(format!("placed_at >= ?{}", args.len()));
    }
    if let Some(to) = q.placed_to {
        args.push(Box::new(to.timestamp_millis()));
        filters.push(format!("placed_at <= ?{}", args.len()));
    }
    if let Some(text) = &q.text {
        let terms = search_terms(text);
        if terms.is_empty() {
            filters.push("0".into());
        } else {
            // Each word quoted (so no FTS syntax gets through) and matched as a prefix; all must match.
            let expr = terms.iter().map(|t| format!("\"{t}\"*")).collect::<Vec<_>>().join(" ");
            args.push(Box::new(expr));
            filters.push(format!(
                "order_id IN (SELECT order_id FROM search_fts WHERE search_fts MATCH ?{})",
                args.len()
            ));
        }
    }
    let count_where = if filters.is_empty() { String::new() } else { format!("WHERE {}", filters.join(" AND ")) };
    let count_args: Vec<&dyn ToSql> = args.iter().map(|a| a.as_ref()).collect();
    let estimated_total: u64 = conn
        .prepare_cached(&format!("SELECT COUNT(*) FROM search_docs {count_where}"))?
        .query_row(count_args.as_slice(), |r| r.get(0))?;

    let (column, dir, cmp) = match q.sort {
        super::SortOrder::PlacedAtDesc => ("placed_at", "DESC", "<"),
        super::SortOrder::PlacedAtAsc => ("placed_at", "ASC", ">"),
        super::SortOrder::TotalDesc => ("total", "DESC", "<"),
        super::SortOrder::TotalAsc => ("total", "ASC", ">"),
    };
    match &q.cursor {
        Some(Cursor::After { key, order_id }) => {
            args.push(Box::new(*key));
            let k = args.len();
            args.push(Box::new(order_id.clone()));
            filters.push(format!("({column}, order_id) {cmp} (?{k}, ?{})", args.len()));
        }
        // Not a cursor this adapter hands out (e.g. from a Meilisearch deployment): start over.
        Some(Cursor::Offset(_)) | None => {}
    }
    let page_where = if filters.is_empty() { String::new() } else { format!("WHERE {}", filters.join(" AND ")) };
    args.push(Box::new(q.limit as i64 + 1));
    let sql = format!(
        "SELECT doc FROM search_docs {page_where} ORDER BY {column} {dir}, order_id {dir} LIMIT ?{}",
        args.len()
    );
    let page_args: Vec<&dyn ToSql> = args.iter().map(|a| a.as_ref()).collect();
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut orders = stmt
        .query_map(page_args.as_slice(), |r| r.get::<_, String>(0))?
        .map(|doc| serde_json::from_str::<Order>(&doc?).map_err(|e| DbError::Corrupt(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let next_cursor = if orders.len() > q.limit {
        orders.truncate(q.limit);
        orders.last().map(|o| Cursor::After { key: q.sort.key(o), order_id: o.order_id.to_string() }.encode())
    } else {
        None
    };
    Ok(SearchPage { orders, next_cursor, estimated_total })
}
