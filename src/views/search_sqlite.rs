//! The embedded search view: one row per order (the API document as JSON plus the columns we filter and sort
//! on) and two FTS5 indexes over item names and skus, contentless and keyed by the document's rowid: every
//! order's words (for searches across customers), and each word again as a token of its customer (for a
//! customer's own searches, which then read only that customer's matches). A text match is a list of rowids read
//! straight from an index, and a page walks a sort index and stops at its
//! limit instead of sorting every match. `estimatedTotal` counts at most [`MAX_ESTIMATED_TOTAL`] matches, as
//! the distributed profile's Meilisearch does. Applying a batch reads each order's stored document once, folds
//! the batch's events into it with the domain's own `Order::evolve`, and writes it back once with its version:
//! an event at or below the version reached is a duplicate and is skipped.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, ToSql, params};

use super::recent::RecentDocs;
use super::rules;
use super::sqlite::{BulkLoad, Generations, SqliteRebuild, apply_batch, read_checkpoint, save_checkpoint};
use super::{
    ApplyReport, Cursor, Document, Projection, Rebuilder, SearchPage, SearchQuery, SearchView, ViewError, search_terms,
};
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
CREATE INDEX IF NOT EXISTS search_docs_customer_placed ON search_docs (customer_id, placed_at, order_id);
CREATE VIRTUAL TABLE IF NOT EXISTS search_all
    USING fts5 (terms, content = '', tokenize = 'unicode61');
CREATE VIRTUAL TABLE IF NOT EXISTS search_scoped
    USING fts5 (terms, content = '', tokenize = 'unicode61');
";

const NAME: &str = super::SEARCH;

/// The secondary indexes of `search_docs`, which a rebuild creates after the fill.
const DEFERRED_INDEXES: &[&str] = &["search_docs_placed", "search_docs_total", "search_docs_customer_placed"];

pub struct SqliteSearchView {
    gens: Generations,
    recent: Arc<RecentDocs>,
}

/// Documents per generation of the recently written ones (see `recent`): two generations of ~1 KiB documents
/// hold the orders of the last few seconds of a busy service in at most ~50 MiB.
const RECENT_DOCUMENTS: usize = 25_000;

/// Most matches `estimatedTotal` counts (beyond it, it says this many): a count must not cost as much as
/// reading every match of a frequent word.
pub const MAX_ESTIMATED_TOTAL: u64 = 10_000;

/// A view written with an earlier text index (`search_fts`, keyed by order id; `search_text`; `search_words`, with
/// an owner column and five prefix indexes, which made every word of a placed order cost twelve index entries)
/// gets the current one filled from its documents, once, and the old ones dropped. The same for the customer
/// index, which now holds the whole sort key.
const MIGRATE_TEXT_INDEX: &str = "
INSERT INTO search_all (rowid, terms)
    SELECT d.rowid,
           (SELECT group_concat(json_extract(i.value, '$.name') || ' ' || json_extract(i.value, '$.sku'), ' ')
              FROM json_each(d.doc, '$.items') AS i)
      FROM search_docs AS d;
DROP TABLE IF EXISTS search_fts;
DROP TABLE IF EXISTS search_text;
DROP TABLE IF EXISTS search_words;
DROP INDEX IF EXISTS search_docs_customer;
";

impl SqliteSearchView {
    pub fn open(dir: &Path, read_connections: usize) -> Result<Arc<Self>, DbError> {
        let gens = Generations::open(dir, "search", SCHEMA, DEFERRED_INDEXES, read_connections)?;
        let view = Arc::new(Self { gens, recent: Arc::new(RecentDocs::new(RECENT_DOCUMENTS)) });
        view.gens.db().writer.write_blocking(|conn| {
            let old: bool = conn
                .prepare("SELECT 1 FROM sqlite_master WHERE name IN ('search_fts', 'search_text', 'search_words')")?
                .exists([])?;
            if old {
                tracing::info!("search view: moving the text index to its current layout (once)");
                let tx = conn.transaction()?;
                tx.execute_batch(MIGRATE_TEXT_INDEX)?;
                tx.commit()?;
            }
            let unscoped: bool = conn
                .prepare("SELECT EXISTS (SELECT 1 FROM search_docs) AND NOT EXISTS (SELECT 1 FROM search_scoped)")?
                .query_row([], |r| r.get(0))?;
            if unscoped {
                tracing::info!("search view: indexing each customer's words for customer searches (once)");
                let tx = conn.transaction()?;
                fill_scoped(&tx)?;
                tx.commit()?;
            }
            Ok(())
        })?;
        Ok(view)
    }
}

/// Fills the customer-scoped words of every document (a view written before they existed).
fn fill_scoped(conn: &Connection) -> Result<(), DbError> {
    let mut insert = conn.prepare("INSERT INTO search_scoped (rowid, terms) VALUES (?1, ?2)")?;
    let mut docs = conn.prepare("SELECT rowid, doc FROM search_docs")?;
    let mut rows = docs.query([])?;
    while let Some(row) = rows.next()? {
        let (rowid, doc): (i64, String) = (row.get(0)?, row.get(1)?);
        let order: Order = serde_json::from_str(&doc).map_err(|e| DbError::Corrupt(e.to_string()))?;
        insert.execute(params![rowid, scoped_terms(order.customer_id.as_str(), &item_terms(&order.items))])?;
    }
    Ok(())
}

/// The words of an order's items (names and skus), as the text index takes them.
fn item_terms(items: &[crate::domain::LineItem]) -> String {
    let terms: Vec<&str> = items.iter().flat_map(|i| [i.name.as_str(), i.sku.as_str()]).collect();
    terms.join(" ")
}

/// Each word of `terms` as one token of its customer: `<owner token>x<word>`. The owner token is hex digits after
/// a `c`, so the `x` ends it unambiguously, and a prefix query `"<owner>x<word>"*` matches only that customer's
/// words that start with `<word>`: a customer's search reads its own matches, not every customer's.
fn scoped_terms(customer_id: &str, terms: &str) -> String {
    let owner = owner_token(customer_id);
    let mut scoped = String::with_capacity(terms.len() * 2);
    for word in terms.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
        if !scoped.is_empty() {
            scoped.push(' ');
        }
        scoped.push_str(&owner);
        scoped.push('x');
        scoped.push_str(word);
    }
    scoped
}

fn load_json(conn: &Connection, order_id: &str) -> Result<Option<String>, DbError> {
    Ok(conn
        .prepare_cached("SELECT doc FROM search_docs WHERE order_id = ?1")?
        .query_row([order_id], |r| r.get(0))
        .optional()?)
}

fn load_doc(conn: &Connection, order_id: &str) -> Result<Option<Order>, DbError> {
    let doc = load_json(conn, order_id)?;
    doc.map(|d| serde_json::from_str(&d).map_err(|e| DbError::Corrupt(e.to_string()))).transpose()
}

/// An order's document while events are applied to it: read from the view once, folded in memory, written once.
struct Folding {
    order: Option<Order>,
    /// The version the view holds (0: none).
    stored: u64,
    /// The text row to add: set by the order's `OrderPlaced` (items never change after it).
    terms: Option<String>,
}

/// Documents being folded: each order's document is read once (from the recently written ones when it is there),
/// every event folded into it by [`rules::fold_document`], and written back once with its new version. A live
/// batch is one fold; a rebuild folds many steps before it writes (and never looks at the recent documents,
/// which belong to the current view, not to the copy).
#[derive(Default)]
struct Fold {
    docs: HashMap<OrderId, Folding>,
    /// The order in which documents were first touched, so that writes (and new rowids) follow the feed.
    touched: Vec<OrderId>,
    recent: Option<Arc<RecentDocs>>,
}

impl Fold {
    fn live(recent: &Arc<RecentDocs>) -> Self {
        Self { recent: Some(Arc::clone(recent)), ..Self::default() }
    }

    fn add(&mut self, conn: &Connection, events: &[StoredEvent]) -> Result<ApplyReport, ViewError> {
        let mut report = ApplyReport::default();
        for event in events {
            let doc = match self.docs.entry(event.order_id.clone()) {
                Entry::Occupied(doc) => doc.into_mut(),
                Entry::Vacant(slot) => {
                    let order = match self.recent.as_ref().and_then(|r| r.get(&event.order_id)) {
                        Some(recent) => Some(recent.order.clone()),
                        None => load_doc(conn, event.order_id.as_str())?,
                    };
                    let stored = order.as_ref().map_or(0, |o| o.version);
                    self.touched.push(event.order_id.clone());
                    slot.insert(Folding { order, stored, terms: None })
                }
            };
            if !rules::fold_document(&mut doc.order, event)? {
                report.skipped += 1;
                continue;
            }
            if let OrderEvent::OrderPlaced { items, .. } = &event.event {
                doc.terms = Some(item_terms(items));
            }
            report.applied += 1;
        }
        Ok(report)
    }

    fn len(&self) -> usize {
        self.touched.len()
    }

    /// Writes every document that moved, empties the fold, and returns the documents written.
    fn write(&mut self, conn: &Connection) -> Result<Vec<Arc<Document>>, ViewError> {
        // Documents first, text rows after: a write to a table while the text index holds pending terms in this
        // transaction makes FTS5 flush them (its xSavepoint), which would cut one tiny segment per document.
        let mut text_rows = Vec::new();
        let mut written = Vec::new();
        for id in self.touched.drain(..) {
            let Some(Folding { order: Some(order), stored, terms }) = self.docs.remove(&id) else { continue };
            if order.version > stored {
                let doc = Document::new(order)?;
                let rowid = write_doc(conn, &doc)?;
                if let Some(terms) = terms {
                    text_rows.push((rowid, terms, doc.order.customer_id.as_str().to_owned()));
                }
                written.push(Arc::new(doc));
            }
        }
        let mut insert = conn.prepare_cached("INSERT INTO search_all (rowid, terms) VALUES (?1, ?2)")?;
        let mut scoped = conn.prepare_cached("INSERT INTO search_scoped (rowid, terms) VALUES (?1, ?2)")?;
        for (rowid, terms, customer) in text_rows {
            scoped.execute(params![rowid, scoped_terms(&customer, &terms)])?;
            insert.execute(params![rowid, terms])?;
        }
        Ok(written)
    }
}

impl BulkLoad for Fold {
    fn add(&mut self, conn: &Connection, events: &[StoredEvent]) -> Result<bool, ViewError> {
        Fold::add(self, conn, events)?;
        Ok(self.len() >= REBUILD_FOLD_DOCS)
    }

    fn write(&mut self, conn: &Connection) -> Result<(), ViewError> {
        Fold::write(self, conn).map(drop)
    }
}

/// Documents a rebuild folds in memory before it writes them (a few KiB each at most).
const REBUILD_FOLD_DOCS: usize = 50_000;

/// Writes the document with its version; returns its rowid (the text index's key).
fn write_doc(conn: &Connection, doc: &Document) -> Result<i64, ViewError> {
    let (order, json) =
        (&doc.order, std::str::from_utf8(&doc.json).map_err(|e| ViewError::Unavailable(e.to_string()))?);
    let rowid: i64 = conn
        .prepare_cached(
            "INSERT INTO search_docs (order_id, customer_id, status, total, placed_at, version, doc)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (order_id) DO UPDATE SET status = excluded.status, version = excluded.version, doc = excluded.doc
             RETURNING rowid",
        )?
        .query_row(
            params![
                order.order_id.as_str(),
                order.customer_id.as_str(),
                order.status.as_str(),
                order.total.minor() as i64,
                order.placed_at.timestamp_millis(),
                order.version,
                json
            ],
            |r| r.get(0),
        )?;
    Ok(rowid)
}

#[async_trait]
impl Projection for SqliteSearchView {
    fn name(&self) -> &'static str {
        NAME
    }

    /// One fold, written at once with the checkpoint in one transaction; the documents it wrote are then the
    /// recent ones.
    async fn apply(&self, events: &[StoredEvent], checkpoint: Option<u64>) -> Result<ApplyReport, ViewError> {
        let (fold_with, keep) = (Arc::clone(&self.recent), Arc::clone(&self.recent));
        let fold = move |conn: &Connection, events: &[StoredEvent]| {
            let mut fold = Fold::live(&fold_with);
            let report = fold.add(conn, events)?;
            Ok((report, fold.write(conn)?))
        };
        apply_batch(&self.gens.db().writer, NAME, events, checkpoint, fold, move |docs| keep.put(docs)).await
    }

    async fn checkpoint(&self) -> Result<u64, ViewError> {
        Ok(self.gens.db().readers.read(|conn| read_checkpoint(conn, NAME)).await?)
    }

    async fn rebuild(&self) -> Result<Box<dyn Rebuilder>, ViewError> {
        let copy = SqliteRebuild::new(&self.gens, NAME, Box::<Fold>::default())?;
        Ok(Box::new(SearchRebuild { copy, recent: Arc::clone(&self.recent) }))
    }

    async fn reset_checkpoint(&self) -> Result<(), ViewError> {
        Ok(self.gens.db().writer.write(|conn| save_checkpoint(conn, NAME, 0)).await?)
    }

    async fn skip(&self, event: &StoredEvent) -> Result<(), ViewError> {
        let (id, version) = (event.order_id.to_string(), event.version);
        let (order_id, recent) = (event.order_id.clone(), Arc::clone(&self.recent));
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
                recent.remove(&order_id);
                Ok(())
            })
            .await?)
    }
}

/// A rebuild of the search view; once the copy is swapped in, the recent documents (of the old view) go.
struct SearchRebuild {
    copy: SqliteRebuild,
    recent: Arc<RecentDocs>,
}

#[async_trait]
impl Rebuilder for SearchRebuild {
    async fn apply(&mut self, events: Arc<[StoredEvent]>, checkpoint: Option<u64>) -> Result<(), ViewError> {
        self.copy.apply(events, checkpoint).await
    }

    async fn finish(self: Box<Self>) -> Result<(), ViewError> {
        let Self { copy, recent } = *self;
        let swapped = Box::new(copy).finish().await;
        recent.clear();
        swapped
    }

    async fn abort(self: Box<Self>) {
        Box::new(self.copy).abort().await;
    }
}

#[async_trait]
impl SearchView for SqliteSearchView {
    async fn ping(&self) -> Result<(), ViewError> {
        Ok(self.gens.db().readers.read(|conn| Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?)).await?)
    }

    async fn get(&self, order_id: &OrderId) -> Result<Option<Order>, ViewError> {
        Ok(self.document(order_id).await?.map(|doc| doc.order.clone()))
    }

    /// The recently written document when there is one, else the view file's (read and kept as stored).
    async fn document(&self, order_id: &OrderId) -> Result<Option<Arc<Document>>, ViewError> {
        if let Some(doc) = self.recent.get(order_id) {
            return Ok(Some(doc));
        }
        let id = order_id.clone();
        let json = self.gens.db().readers.read(move |conn| load_json(conn, id.as_str())).await?;
        json.map(|text| Document::from_json(text).map(Arc::new).map_err(|e| ViewError::Unavailable(e.to_string())))
            .transpose()
    }

    async fn search(&self, query: &SearchQuery) -> Result<SearchPage, ViewError> {
        let query = query.clone();
        Ok(self.gens.db().readers.read(move |conn| run_search(conn, &query)).await?)
    }
}

/// A customer as the text index spells it, the prefix of its scoped tokens (see `scoped_terms`): the id's bytes in
/// hex after a `c`, so that any id is a single word to the tokenizer (the same as SQLite's
/// `'c' || hex(customer_id)`, lower-cased as it indexes).
fn owner_token(customer_id: &str) -> String {
    use std::fmt::Write;
    customer_id.bytes().fold(String::from("c"), |mut token, b| {
        let _ = write!(token, "{b:02x}");
        token
    })
}

/// Builds one parameterised query: filters, optional FTS match, keyset cursor, sort, limit + 1 (to know
/// whether there is a next page), and a count with the same filters (without the cursor).
fn run_search(conn: &Connection, q: &SearchQuery) -> Result<SearchPage, DbError> {
    let mut filters: Vec<String> = Vec::new();
    let mut text_matches = String::new();
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
            // Each word quoted (so no FTS syntax gets through: a term is letters and digits only) and matched as a
            // prefix; all must match. A customer's search matches that customer's own words (see
            // `scoped_terms`), so the index yields only its matches (the `customer_id` filter above stays the
            // exact check); anyone else's searches every order's words.
            let (table, expr) = match &q.customer_id {
                Some(customer) => {
                    let owner = owner_token(customer.as_str());
                    let words = terms.iter().map(|t| format!("\"{owner}x{t}\"*"));
                    ("search_scoped", words.collect::<Vec<_>>().join(" AND "))
                }
                None => {
                    ("search_all", terms.iter().map(|t| format!("terms:\"{t}\"*")).collect::<Vec<_>>().join(" AND "))
                }
            };
            args.push(Box::new(expr));
            // The matches are read from the index once, for both the count and the page.
            text_matches =
                format!("WITH m AS MATERIALIZED (SELECT rowid AS r FROM {table} WHERE {table} MATCH ?{}) ", args.len());
            filters.push("rowid IN m".into());
        }
    }
    // With no filter but the words and the customer, the matches are exactly the documents to count (the owner
    // token is in the match, every document has one text row): count them without visiting the documents.
    let counted = match (text_matches.is_empty(), q.status, q.placed_from, q.placed_to) {
        (false, None, None, None) => "SELECT 1 FROM m".to_owned(),
        _ if filters.is_empty() => "SELECT 1 FROM search_docs".to_owned(),
        _ => format!("SELECT 1 FROM search_docs WHERE {}", filters.join(" AND ")),
    };

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
    // One statement: the count (one row, always) joined with the page (none or more rows), in page order.
    let sql = format!(
        "{text_matches}SELECT t.n, p.doc FROM
             (SELECT COUNT(*) AS n FROM ({counted} LIMIT {MAX_ESTIMATED_TOTAL})) AS t
             LEFT JOIN (SELECT doc, {column} AS k, order_id FROM search_docs {page_where}
                        ORDER BY {column} {dir}, order_id {dir} LIMIT ?{}) AS p ON 1
         ORDER BY p.k {dir}, p.order_id {dir}",
        args.len()
    );
    let page_args: Vec<&dyn ToSql> = args.iter().map(|a| a.as_ref()).collect();
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut estimated_total = 0;
    let mut orders = Vec::with_capacity(q.limit + 1);
    let mut rows = stmt.query(page_args.as_slice())?;
    while let Some(row) = rows.next()? {
        estimated_total = row.get(0)?;
        if let Some(doc) = row.get::<_, Option<String>>(1)? {
            orders.push(serde_json::from_str::<Order>(&doc).map_err(|e| DbError::Corrupt(e.to_string()))?);
        }
    }
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
    use crate::domain::CustomerId;
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

    fn for_customer(text: &str, customer: &str) -> SearchQuery {
        SearchQuery { customer_id: Some(CustomerId::parse("customerId", customer).expect("id")), ..query(text) }
    }

    /// View files of the previous layouts (text index `search_fts` keyed by order id; `search_text` keyed by rowid
    /// without the owner) open with the text index moved to the current one: the same words still find the same
    /// orders, for everyone and for their customer only, and opening again does not migrate twice.
    #[tokio::test]
    async fn views_of_older_layouts_are_migrated_on_open() {
        let old_layouts = [
            "CREATE VIRTUAL TABLE search_fts USING fts5 (order_id UNINDEXED, terms, tokenize = 'unicode61');
             INSERT INTO search_fts (order_id, terms) VALUES ('o-old', 'Blue mug  MUG-7');",
            "CREATE INDEX search_docs_customer ON search_docs (customer_id, placed_at);
             CREATE VIRTUAL TABLE search_text USING fts5 (terms, content = '', tokenize = 'unicode61', prefix = '2 3');
             INSERT INTO search_text (rowid, terms) SELECT rowid, 'Blue mug MUG-7' FROM search_docs;",
            "CREATE INDEX search_docs_customer_placed ON search_docs (customer_id, placed_at, order_id);
             CREATE VIRTUAL TABLE search_words
                 USING fts5 (terms, owner, content = '', tokenize = 'unicode61', prefix = '2 3 4 5 6');
             INSERT INTO search_words (rowid, terms, owner) SELECT rowid, 'Blue mug MUG-7', 'c632d31' FROM search_docs;",
        ];
        for layout in old_layouts {
            let dir = tempfile::tempdir().expect("dir");
            let path = dir.path().join("search.db");
            let old = crate::sql::open(&path, crate::config::Synchronous::Normal).expect("db");
            let doc = serde_json::json!({
                "orderId": "o-old", "customerId": "c-1", "status": "placed", "currency": "EUR",
                "items": [{"sku": "MUG-7", "name": "Blue mug", "quantity": 1, "unitPrice": 900}],
                "total": 900, "version": 1, "placedAt": "2026-11-01T10:00:00Z"
            });
            old.execute_batch(
                "CREATE TABLE search_docs (order_id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, status TEXT NOT NULL,
                     total INTEGER NOT NULL, placed_at INTEGER NOT NULL, version INTEGER NOT NULL, doc TEXT NOT NULL);",
            )
            .expect("old schema");
            old.execute(
                "INSERT INTO search_docs VALUES ('o-old', 'c-1', 'placed', 900, 1761991200000, 1, ?1)",
                [doc.to_string()],
            )
            .expect("old doc");
            old.execute_batch(layout).expect("old text index");
            drop(old);

            let view = SqliteSearchView::open(dir.path(), 1).expect("opens and migrates");
            for words in ["blue", "mu", "mug-7"] {
                for q in [query(words), for_customer(words, "c-1")] {
                    let page = view.search(&q).await.expect("search");
                    let ids: Vec<&str> = page.orders.iter().map(|o| o.order_id.as_str()).collect();
                    assert_eq!(ids, ["o-old"], "{words} {q:?}");
                    assert_eq!(page.estimated_total, 1);
                }
            }
            assert!(view.search(&query("red")).await.expect("search").orders.is_empty());
            assert!(view.search(&for_customer("blue", "c-2")).await.expect("search").orders.is_empty());
            drop(view);
            let conn = crate::sql::open(&path, crate::config::Synchronous::Normal).expect("db");
            let left: i64 = conn
                .query_row(
                    "SELECT COUNT(*) FROM sqlite_master
                     WHERE name IN ('search_fts', 'search_text', 'search_words', 'search_docs_customer')",
                    [],
                    |r| r.get(0),
                )
                .expect("schema");
            assert_eq!(left, 0, "the old tables and index are gone");
            drop(conn);
            let again = SqliteSearchView::open(dir.path(), 1).expect("opens");
            assert_eq!(again.search(&query("blue")).await.expect("search").orders.len(), 1);
        }
    }

    /// The owner token is one word to the tokenizer whatever the id, and the same as SQLite's hex().
    #[test]
    fn owner_tokens_are_single_words() {
        assert_eq!(owner_token("c-1"), "c632d31");
        assert_eq!(search_terms(&owner_token("Zoë.ü/7")), vec![owner_token("Zoë.ü/7")]);
        let conn = Connection::open_in_memory().expect("db");
        let hex: String = conn.query_row("SELECT lower('c' || hex('Zoë.ü/7'))", [], |r| r.get(0)).expect("hex");
        assert_eq!(hex, owner_token("Zoë.ü/7"));
    }
}
