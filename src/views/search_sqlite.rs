//! The embedded search view: one row per order (the API document as JSON plus the columns we filter and sort
//! on) and an FTS5 index over item names and skus, contentless and keyed by the document's rowid, so a text
//! match is a list of rowids read straight from the index, and a search walks the sort index and stops at its
//! page instead of sorting every match. `estimatedTotal` counts at most [`MAX_ESTIMATED_TOTAL`] matches, as
//! the distributed profile's Meilisearch does. Applying an event reads the stored document, folds the
//! event into it with the domain's own `Order::evolve`, and writes it back with its version: an event at or
//! below the stored version is a duplicate and is skipped.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, ToSql, params};

use super::sqlite::{Generations, SqliteRebuild, apply_batch, read_checkpoint, save_checkpoint};
use super::{ApplyReport, Cursor, Projection, Rebuilder, SearchPage, SearchQuery, SearchView, ViewError, search_terms};
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
CREATE VIRTUAL TABLE IF NOT EXISTS search_text USING fts5 (terms, content = '', tokenize = 'unicode61', prefix = '2 3');

";

const NAME: &str = "search";

pub struct SqliteSearchView {
    gens: Generations,
}

/// Most matches `estimatedTotal` counts (beyond it, it says this many): a count must not cost as much as
/// reading every match of a frequent word.
pub const MAX_ESTIMATED_TOTAL: u64 = 10_000;

/// A view written before the text index was keyed by rowid (table `search_fts`) gets the new index filled from
/// its documents, once, and the old one dropped.
const MIGRATE_TEXT_INDEX: &str = "
INSERT INTO search_text (rowid, terms)
    SELECT d.rowid,
           (SELECT group_concat(json_extract(i.value, '$.name') || ' ' || json_extract(i.value, '$.sku'), ' ')
              FROM json_each(d.doc, '$.items') AS i)
      FROM search_docs AS d;
DROP TABLE search_fts;
";

impl SqliteSearchView {
    pub fn open(dir: &Path, read_connections: usize) -> Result<Arc<Self>, DbError> {
        let gens = Generations::open(dir, "search", SCHEMA, read_connections)?;
        let view = Arc::new(Self { gens });
        view.gens.db().writer.write_blocking(|conn| {
            let old: bool = conn.prepare("SELECT 1 FROM sqlite_master WHERE name = 'search_fts'")?.exists([])?;
            if old {
                tracing::info!("search view: moving the text index to rowid keys (once)");
                let tx = conn.transaction()?;
                tx.execute_batch(MIGRATE_TEXT_INDEX)?;
                tx.commit()?;
            }
            Ok(())
        })?;
        Ok(view)
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
        .ok_or_else(|| ViewError::OutOfOrder { order_id: event.order_id.to_string(), version: event.version, have })?;
    let doc = serde_json::to_string(&next).map_err(|e| ViewError::Unavailable(e.to_string()))?;
    let rowid: i64 = conn
        .prepare_cached(
            "INSERT INTO search_docs (order_id, customer_id, status, total, placed_at, version, doc)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (order_id) DO UPDATE SET status = excluded.status, version = excluded.version, doc = excluded.doc
             RETURNING rowid",
        )?
        .query_row(params![
        next.order_id.as_str(),
        next.customer_id.as_str(),
        next.status.as_str(),
        next.total.minor() as i64,
        next.placed_at.timestamp_millis(),
            next.version,
            doc
        ], |r| r.get(0))?;
    if let OrderEvent::OrderPlaced { items, .. } = &event.event {
        // Items never change after placing, so the text row is written once, with the version-1 event.
        let terms: Vec<&str> = items.iter().flat_map(|i| [i.name.as_str(), i.sku.as_str()]).collect();
        conn.prepare_cached("INSERT INTO search_text (rowid, terms) VALUES (?1, ?2)")?
            .execute(params![rowid, terms.join(" ")])?;
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
            filters.push(format!("rowid IN (SELECT rowid FROM search_text WHERE search_text MATCH ?{})", args.len()));
        }
    }
    let count_where = if filters.is_empty() { String::new() } else { format!("WHERE {}", filters.join(" AND ")) };
    let count_args: Vec<&dyn ToSql> = args.iter().map(|a| a.as_ref()).collect();
    let estimated_total: u64 = conn
        .prepare_cached(&format!(
            "SELECT COUNT(*) FROM (SELECT 1 FROM search_docs {count_where} LIMIT {MAX_ESTIMATED_TOTAL})"
        ))?
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::views::SortOrder;

    fn query(text: &str) -> SearchQuery {
        SearchQuery {
            customer_id: None,
            status: None,
            text: Some(text.to_owned()),
            placed_from: None,
            placed_to: None,
            sort: SortOrder::PlacedAtDesc,
            limit: 20,
            cursor: None,
        }
    }

    /// A view file of the previous layout (text index `search_fts` keyed by order id) opens with its text index
    /// moved to rowid keys: the same words still find the same orders, new orders are indexed the new way.
    #[tokio::test]
    async fn a_view_of_the_old_layout_is_migrated_on_open() {
        let dir = tempfile::tempdir().expect("dir");
        let old = crate::sql::open(&dir.path().join("search.db"), crate::config::Synchronous::Normal).expect("db");
        let doc = serde_json::json!({
            "orderId": "o-old", "customerId": "c-1", "status": "placed", "currency": "EUR",
            "items": [{"sku": "MUG-7", "name": "Blue mug", "quantity": 1, "unitPrice": 900}],
            "total": 900, "version": 1, "placedAt": "2026-11-01T10:00:00Z"
        });
        old.execute_batch(
            "CREATE TABLE search_docs (order_id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, status TEXT NOT NULL,
                 total INTEGER NOT NULL, placed_at INTEGER NOT NULL, version INTEGER NOT NULL, doc TEXT NOT NULL);
             CREATE VIRTUAL TABLE search_fts USING fts5 (order_id UNINDEXED, terms, tokenize = 'unicode61');",
        )
        .expect("old schema");
        old.execute(
            "INSERT INTO search_docs VALUES ('o-old', 'c-1', 'placed', 900, 1761991200000, 1, ?1)",
            [doc.to_string()],
        )
        .expect("old doc");
        old.execute("INSERT INTO search_fts (order_id, terms) VALUES ('o-old', 'Blue mug \n MUG-7')", []).expect("old");
        drop(old);

        let view = SqliteSearchView::open(dir.path(), 1).expect("opens and migrates");
        for words in ["blue", "mu", "mug-7"] {
            let page = view.search(&query(words)).await.expect("search");
            let ids: Vec<&str> = page.orders.iter().map(|o| o.order_id.as_str()).collect();
            assert_eq!(ids, ["o-old"], "{words}");
            assert_eq!(page.estimated_total, 1);
        }
        assert!(view.search(&query("red")).await.expect("search").orders.is_empty());
        drop(view);
        // Opening again does not migrate twice (the old table is gone).
        let again = SqliteSearchView::open(dir.path(), 1).expect("opens");
        assert_eq!(again.search(&query("blue")).await.expect("search").orders.len(), 1);
    }
}
