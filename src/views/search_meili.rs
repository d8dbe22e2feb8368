//! The distributed search view: one Meilisearch document per order, kept by the search projector and queried
//! by `GET /orders`. It has the embedded view's semantics (`search_sqlite.rs`), built from what Meilisearch
//! already does, not from home-made indexing.
//!
//! **Documents.** A document is the order's API document (the `Order` JSON, primary key `orderId`) plus two
//! fields for filtering and sorting that are dropped again when an `Order` is read back: `placedAtMs`
//! (`placedAt` as epoch milliseconds; Meilisearch filters and sorts numbers, not RFC 3339 text) and
//! `customerKey`. Meilisearch lowercases string facet values before it compares them, so a filter on
//! `customerId` would treat `Bob` and `bob` as one customer and let one see the other's orders; `customerKey`
//! is the id with every uppercase letter written as `.` + its lowercase (`Bob` → `.bob`; `.` is not an id
//! character), a spelling that survives lowercasing and stays one-to-one.
//!
//! **Applying.** A batch reads the current documents of its orders in one fetch (`ids`), folds the events in
//! memory with `rules::fold_document` (the domain's `Order::evolve`; events at or below a document's version
//! are skipped, so redelivery never regresses a document, and a gap fails the whole batch with `OutOfOrder`),
//! and writes the changed documents with ONE replace call. Writes are asynchronous tasks in Meilisearch:
//! `apply` waits until the task has succeeded, because the caller commits its Kafka offsets as soon as `apply`
//! returns. The version inside the document is the dedupe record, so no checkpoint is stored here (Kafka's
//! committed offsets are the position). Meilisearch has no conditional write: the single writer per order is
//! Kafka's partition owner. During a rebalance an old and a new owner may briefly both write an order, and a
//! late write of the old one can leave a document behind; `repair` rewrites such a document from the order's
//! history (`projection::reconcile`, ADR 007).
//!
//! **Searching.** Filters are built from quoted, escaped values (never raw input). `q` is reduced to the same
//! words as the embedded view (letters and digits, lowercased) and sent with `matchingStrategy: all`, so
//! every word must match. Index settings make the answers line up with the embedded view: typo tolerance
//! off, `sort` as the first ranking rule (so the requested order is the order, not relevance), and the order
//! id as the tie-break of every sort. Known differences, by Meilisearch's design: only the LAST query word
//! matches as a prefix (earlier words must be whole words; the embedded view prefix-matches every word), a
//! query counts only its first ten words, and `total` sorts as a 64-bit float (amounts above 2^53 minor
//! units may tie). Pages are offsets (`Cursor::Offset`): Meilisearch has no keyset paging, and
//! `pagination.maxTotalHits` bounds how deep paging goes and what `estimatedTotal` can say. An order placed
//! while a client pages can shift later pages by one (offsets are not stable under inserts; keyset cursors
//! would be, but Meilisearch has no "search after").
//!
//! **Rebuild.** A rebuild creates a fresh index `<index>_rebuild_<epoch ms>` with the same settings and fills it
//! through this very view's `apply` (a second `MeiliSearchView` on the fresh index), while queries keep going to
//! the live index. `finish` swaps the two with `POST /swap-indexes`, which Meilisearch does atomically (documents,
//! settings and task history change names together), so a query sees either the old index or the whole new one;
//! the fresh name then holds the old documents and is deleted. This instance's projector is paused during the
//! rebuild; what other instances wrote to the replaced index is reconciled after the swap (ADR 007).
//!
//! Needs Meilisearch ≥ 1.14 (documents fetch by `ids`); written against 1.50.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use meilisearch_sdk::client::{Client, SwapIndexes};
use meilisearch_sdk::documents::DocumentsQuery;
use meilisearch_sdk::errors::{Error as MeiliError, ErrorCode};
use meilisearch_sdk::indexes::Index;
use meilisearch_sdk::search::MatchingStrategies;
use meilisearch_sdk::settings::{PaginationSetting, Settings, TypoToleranceSettings};
use meilisearch_sdk::task_info::TaskInfo;
use meilisearch_sdk::tasks::Task;
use serde::Serialize;

use super::rules;
use super::{
    ApplyReport, Cursor, Projection, Rebuilder, SearchPage, SearchQuery, SearchView, SortOrder, ViewError, search_terms,
};
use crate::config::MeiliSettings;
use crate::domain::{Order, OrderId};
use crate::store::StoredEvent;

const NAME: &str = super::SEARCH;
const PRIMARY_KEY: &str = "orderId";

/// How deep offset paging can go (and the largest `estimatedTotal`). Meilisearch's default is 1000; deeper
/// pages cost more per query, so this stays a bounded, documented limit.
const MAX_TOTAL_HITS: usize = 10_000;

/// One HTTP call to Meilisearch. The SDK's HTTP client has no timeout of its own; a hung server must turn into
/// a retryable failure, not a stuck projector or request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a write waits for its task. Past this the batch fails and is retried; the retry skips whatever
/// the slow task did apply in the meantime.
const TASK_TIMEOUT: Duration = Duration::from_secs(60);

pub struct MeiliSearchView {
    client: Client,
    index: Index,
}

/// The stored document: the order plus the fields that exist only to filter and sort on.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Doc<'a> {
    #[serde(flatten)]
    order: &'a Order,
    placed_at_ms: i64,
    customer_key: String,
}

impl<'a> Doc<'a> {
    fn new(order: &'a Order) -> Self {
        Self {
            order,
            placed_at_ms: order.placed_at.timestamp_millis(),
            customer_key: customer_key(order.customer_id.as_str()),
        }
    }
}

impl MeiliSearchView {
    /// Connects, creates the index (primary key `orderId`) if it is missing and applies the index settings,
    /// waiting for both tasks, so the view is queryable when this returns. Safe to run from several instances
    /// at once: a lost creation race ("already exists") is success.
    pub async fn open(settings: &MeiliSettings) -> anyhow::Result<Arc<Self>> {
        // The SDK builds its `Authorization` header with `unwrap`: a key it cannot put in a header would panic.
        anyhow::ensure!(
            settings.api_key.chars().all(|c| c.is_ascii_graphic()),
            "meilisearch.api_key must be printable ASCII without spaces"
        );
        let key = (!settings.api_key.is_empty()).then(|| settings.api_key.clone());
        // The SDK appends `/indexes/...` to the host as is; a trailing slash would make `//indexes`.
        let client = Client::new(settings.url.trim_end_matches('/'), key)?;
        let view = Self { index: client.index(&settings.index), client };
        view.create(true).await?;
        Ok(Arc::new(view))
    }

    /// Creates this view's index (primary key `orderId`) and applies the index settings, waiting for both tasks.
    async fn create(&self, existing_ok: bool) -> Result<(), ViewError> {
        self.create_index(existing_ok).await?;
        self.apply_settings().await
    }

    /// Creates the index, waiting for the task. One that already exists is fine when `existing_ok`, and an
    /// error otherwise (a rebuild must start from an empty index that is its own).
    async fn create_index(&self, existing_ok: bool) -> Result<(), ViewError> {
        let uid = &self.index.uid;
        match self.wait(timed(self.client.create_index(uid, Some(PRIMARY_KEY))).await?).await? {
            Task::Succeeded { .. } => Ok(()),
            Task::Failed { content } if existing_ok && content.error.error_code == ErrorCode::IndexAlreadyExists => {
                Ok(())
            }
            Task::Failed { content } => Err(refused("creation", uid, &content.error)),
            other => Err(refused("creation", uid, &format!("ended as {other:?}"))),
        }
    }

    /// Applies [`index_settings`], waiting for the task.
    async fn apply_settings(&self) -> Result<(), ViewError> {
        let uid = &self.index.uid;
        match self.wait(timed(self.index.set_settings(&index_settings())).await?).await? {
            Task::Succeeded { .. } => Ok(()),
            Task::Failed { content } => Err(refused("settings", uid, &content.error)),
            other => Err(refused("settings", uid, &format!("ended as {other:?}"))),
        }
    }

    /// Deletes this view's index and waits for it; best effort (logged), for an index nothing queries.
    async fn delete(&self) {
        let uid = &self.index.uid;
        let deleted = async { self.wait(timed(self.client.delete_index(uid)).await?).await };
        match deleted.await {
            Ok(Task::Succeeded { .. }) => {}
            Ok(other) => tracing::warn!(index = %uid, outcome = ?other, "could not delete a meilisearch index"),
            Err(e) => tracing::warn!(index = %uid, error = %e, "could not delete a meilisearch index"),
        }
    }

    /// Polls a task until it has succeeded or failed (Meilisearch processes writes asynchronously). Backs off
    /// from 5 ms to 50 ms: most tasks finish within a few milliseconds.
    async fn wait(&self, info: TaskInfo) -> Result<Task, ViewError> {
        let deadline = tokio::time::Instant::now() + TASK_TIMEOUT;
        let mut pause = Duration::from_millis(5);
        loop {
            let task = timed(self.client.get_task(&info)).await?;
            if !task.is_pending() {
                return Ok(task);
            }
            if tokio::time::Instant::now() + pause > deadline {
                return Err(ViewError::Unavailable(format!(
                    "meilisearch task {} still pending after {TASK_TIMEOUT:?}",
                    info.get_task_uid()
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// Writes documents (replacing whole ones) and waits until Meilisearch has applied them. A failed task
    /// means Meilisearch refused these documents: retrying as they are would fail again.
    async fn replace(&self, docs: &[Doc<'_>]) -> Result<(), ViewError> {
        match self.wait(timed(self.index.add_or_replace(docs, Some(PRIMARY_KEY))).await?).await? {
            Task::Succeeded { .. } => Ok(()),
            Task::Failed { content } => {
                tracing::warn!(error = %content.error, "meilisearch rejected a document batch");
                Err(ViewError::Rejected(format!("meilisearch: {}", content.error)))
            }
            other => Err(ViewError::Unavailable(format!("meilisearch task ended as {other:?}"))),
        }
    }

    /// The current documents of these orders (those that exist).
    async fn current(&self, ids: &[&str]) -> Result<HashMap<String, Order>, ViewError> {
        let mut query = DocumentsQuery::new(&self.index);
        query.with_ids(ids.iter().copied()).with_limit(ids.len());
        let found = timed(query.execute::<Order>()).await?;
        Ok(found.results.into_iter().map(|o| (o.order_id.as_str().to_owned(), o)).collect())
    }
}

/// The index settings this view relies on (see the module doc for why each is there).
fn index_settings() -> Settings {
    Settings::new()
        .with_filterable_attributes(["customerKey", "status", "placedAtMs"])
        .with_sortable_attributes(["placedAtMs", "total", "orderId"])
        .with_searchable_attributes(["items.name", "items.sku"])
        .with_ranking_rules(["sort", "words", "typo", "proximity", "attribute", "exactness"])
        .with_typo_tolerance(TypoToleranceSettings { enabled: Some(false), ..TypoToleranceSettings::default() })
        .with_pagination(PaginationSetting { max_total_hits: MAX_TOTAL_HITS })
}

/// A customer id spelled so that Meilisearch's lowercasing of facet values cannot merge two customers:
/// each uppercase letter becomes `.` + the letter in lowercase.
fn customer_key(customer_id: &str) -> String {
    let mut key = String::with_capacity(customer_id.len() + 4);
    for c in customer_id.chars() {
        if c.is_ascii_uppercase() {
            key.push('.');
            key.push(c.to_ascii_lowercase());
        } else {
            key.push(c);
        }
    }
    key
}

/// A filter string literal: double-quoted, with `\` and `"` escaped the way Meilisearch's filter parser
/// unescapes them, so no value can end the literal or add an operator.
fn quoted(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// The filter expression of a query (`None` when nothing is filtered).
fn filter_expression(query: &SearchQuery) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(customer) = &query.customer_id {
        parts.push(format!("customerKey = {}", quoted(&customer_key(customer.as_str()))));
    }
    if let Some(status) = query.status {
        parts.push(format!("status = {}", quoted(status.as_str())));
    }
    if let Some(from) = query.placed_from {
        parts.push(format!("placedAtMs >= {}", from.timestamp_millis()));
    }
    if let Some(to) = query.placed_to {
        parts.push(format!("placedAtMs <= {}", to.timestamp_millis()));
    }
    (!parts.is_empty()).then(|| parts.join(" AND "))
}

/// Sort rules: the sort's key, then the order id in the same direction (a total order, so offset pages
/// neither repeat nor skip hits between equal keys).
fn sort_rules(sort: SortOrder) -> [&'static str; 2] {
    match sort {
        SortOrder::PlacedAtDesc => ["placedAtMs:desc", "orderId:desc"],
        SortOrder::PlacedAtAsc => ["placedAtMs:asc", "orderId:asc"],
        SortOrder::TotalDesc => ["total:desc", "orderId:desc"],
        SortOrder::TotalAsc => ["total:asc", "orderId:asc"],
    }
}

/// Meilisearch refused (or did not finish) an index task.
fn refused(what: &str, uid: &str, e: &dyn Display) -> ViewError {
    ViewError::Unavailable(format!("{what} of index `{uid}`: {e}"))
}

fn unavailable(e: impl Display) -> ViewError {
    ViewError::Unavailable(format!("meilisearch: {e}"))
}

/// Runs one SDK call under [`REQUEST_TIMEOUT`], mapping every failure to `Unavailable`.
async fn timed<T>(call: impl Future<Output = Result<T, MeiliError>>) -> Result<T, ViewError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, call).await {
        Ok(result) => result.map_err(unavailable),
        Err(_) => Err(ViewError::Unavailable(format!("meilisearch: no answer within {REQUEST_TIMEOUT:?}"))),
    }
}

#[async_trait]
impl Projection for MeiliSearchView {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn apply(&self, events: &[StoredEvent], _checkpoint: Option<u64>) -> Result<ApplyReport, ViewError> {
        let mut report = ApplyReport::default();
        if events.is_empty() {
            return Ok(report);
        }
        let mut ids: Vec<&str> = events.iter().map(|e| e.order_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut docs: HashMap<String, Option<Order>> =
            self.current(&ids).await?.into_iter().map(|(id, order)| (id, Some(order))).collect();
        // Orders changed by this batch; all of them go out in one write.
        let mut changed: BTreeSet<&str> = BTreeSet::new();
        for event in events {
            let id = event.order_id.as_str();
            if rules::fold_document(docs.entry(id.to_owned()).or_default(), event)? {
                changed.insert(id);
                report.applied += 1;
            } else {
                report.skipped += 1;
            }
        }
        if changed.is_empty() {
            return Ok(report);
        }
        let batch: Vec<Doc<'_>> = changed.iter().filter_map(|id| docs.get(*id)?.as_ref()).map(Doc::new).collect();
        self.replace(&batch).await?;
        Ok(report)
    }

    async fn skip(&self, event: &StoredEvent) -> Result<(), ViewError> {
        let id = event.order_id.as_str();
        let Some(mut doc) = self.current(&[id]).await?.remove(id) else { return Ok(()) };
        if doc.version < event.version {
            doc.version = event.version;
            self.replace(&[Doc::new(&doc)]).await?;
        }
        Ok(())
    }

    /// Meilisearch has no conditional write, so a document can go stale (a late write of a partition's previous
    /// owner, a write to the index a rebuild swapped out): rewritten from the whole history, then read back.
    async fn repair(&self, history: &[StoredEvent]) -> Result<Option<u64>, ViewError> {
        let Some(id) = history.first().map(|e| e.order_id.as_str()) else { return Ok(None) };
        let mut order = None;
        for event in history {
            rules::fold_document(&mut order, event)?;
        }
        if let Some(order) = &order {
            self.replace(&[Doc::new(order)]).await?;
        }
        Ok(Some(self.current(&[id]).await?.remove(id).map_or(0, |o| o.version)))
    }

    /// Kafka's committed offsets hold the position of the distributed feed.
    async fn checkpoint(&self) -> Result<u64, ViewError> {
        Ok(0)
    }

    async fn reset_checkpoint(&self) -> Result<(), ViewError> {
        Ok(())
    }

    async fn rebuild(&self) -> Result<Box<dyn Rebuilder>, ViewError> {
        let live = self.index.uid.clone();
        let uid = format!("{live}_rebuild_{}", chrono::Utc::now().timestamp_millis());
        let fresh = Self { index: self.client.index(&uid), client: self.client.clone() };
        // A failed creation made nothing of ours to clean up (an index already there is not ours to delete).
        fresh.create_index(false).await?;
        if let Err(e) = fresh.apply_settings().await {
            fresh.delete().await;
            return Err(e);
        }
        tracing::info!(index = %live, fresh = %uid, "rebuilding the search view into a fresh index");
        Ok(Box::new(MeiliRebuild { fresh, live }))
    }
}

/// A rebuild of the search view: fills a fresh index, then swaps it with the live one.
struct MeiliRebuild {
    /// The same view on the fresh index, so a rebuild applies events exactly as the projector does.
    fresh: MeiliSearchView,
    /// The uid of the live index, which queries use.
    live: String,
}

#[async_trait]
impl Rebuilder for MeiliRebuild {
    async fn apply(&mut self, events: Arc<[StoredEvent]>, _checkpoint: Option<u64>) -> Result<(), ViewError> {
        self.fresh.apply(&events, None).await.map(|_| ())
    }

    async fn finish(self: Box<Self>) -> Result<(), ViewError> {
        let fresh = &self.fresh;
        let swap = SwapIndexes { indexes: (self.live.clone(), fresh.index.uid.clone()), rename: None };
        let swapped = async { fresh.wait(timed(fresh.client.swap_indexes([&swap])).await?).await };
        match swapped.await {
            Ok(Task::Succeeded { .. }) => {
                tracing::info!(index = %self.live, "swapped the rebuilt search index in");
                // The fresh uid now names the old documents.
                fresh.delete().await;
                Ok(())
            }
            // Refused: nothing changed, the live index is as it was.
            Ok(Task::Failed { content }) => {
                fresh.delete().await;
                Err(ViewError::Unavailable(format!("meilisearch refused the index swap: {}", content.error)))
            }
            // Not known whether the swap happened (a timeout, a lost answer): deleting the fresh uid now could
            // delete the new live documents, so it is left for an operator.
            Ok(other) => Err(ViewError::Unavailable(format!("meilisearch index swap ended as {other:?}"))),
            Err(e) => Err(e),
        }
    }

    async fn abort(self: Box<Self>) {
        self.fresh.delete().await;
    }
}

#[async_trait]
impl SearchView for MeiliSearchView {
    async fn ping(&self) -> Result<(), ViewError> {
        timed(self.client.health()).await.map(|_| ())
    }

    async fn get(&self, order_id: &OrderId) -> Result<Option<Order>, ViewError> {
        let call = self.index.get_document::<Order>(order_id.as_str());
        match tokio::time::timeout(REQUEST_TIMEOUT, call).await {
            Ok(Ok(order)) => Ok(Some(order)),
            Ok(Err(MeiliError::Meilisearch(e))) if e.error_code == ErrorCode::DocumentNotFound => Ok(None),
            Ok(Err(e)) => Err(unavailable(e)),
            Err(_) => Err(ViewError::Unavailable(format!("meilisearch: no answer within {REQUEST_TIMEOUT:?}"))),
        }
    }

    async fn search(&self, query: &SearchQuery) -> Result<SearchPage, ViewError> {
        // Empty or blank text is no text filter; text without a word of two letters or digits has no word that
        // could match (see `search_terms`), so nothing matches (as in the embedded view). Meilisearch would answer the latter with
        // everything (a placeholder search), so it is answered here.
        let text = match query.text.as_deref().filter(|t| !t.trim().is_empty()) {
            None => None,
            Some(text) => {
                let terms = search_terms(text);
                if terms.is_empty() {
                    return Ok(SearchPage { orders: Vec::new(), next_cursor: None, estimated_total: 0 });
                }
                Some(terms.join(" "))
            }
        };
        let filter = filter_expression(query);
        let sort = sort_rules(query.sort);
        let offset = match &query.cursor {
            // Meilisearch returns nothing past `maxTotalHits`; a larger (hand-made) offset means the same.
            Some(Cursor::Offset(n)) => usize::try_from(*n).unwrap_or(usize::MAX).min(MAX_TOTAL_HITS),
            // Not a cursor this adapter hands out (e.g. from an embedded deployment): start over.
            Some(Cursor::After { .. }) | None => 0,
        };
        let mut request = self.index.search();
        request
            .with_sort(&sort)
            .with_offset(offset)
            .with_limit(query.limit.saturating_add(1))
            .with_matching_strategy(MatchingStrategies::ALL);
        if let Some(text) = &text {
            request.with_query(text);
        }
        if let Some(filter) = &filter {
            request.with_filter(filter);
        }
        let results = timed(request.execute::<Order>()).await?;
        let mut orders: Vec<Order> = results.hits.into_iter().map(|hit| hit.result).collect();
        let next_cursor = if orders.len() > query.limit {
            orders.truncate(query.limit);
            (!orders.is_empty()).then(|| Cursor::Offset(offset.saturating_add(orders.len()) as u64).encode())
        } else {
            None
        };
        let estimated_total = results.estimated_total_hits.unwrap_or(offset.saturating_add(orders.len())) as u64;
        Ok(SearchPage { orders, next_cursor, estimated_total })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{CustomerId, OrderStatus};

    #[test]
    fn customer_keys_survive_lowercasing_and_stay_distinct() {
        assert_eq!(customer_key("c-a_1"), "c-a_1");
        assert_eq!(customer_key("Bob"), ".bob");
        let keys = ["bob", "Bob", "BOB", "bOb"].map(customer_key);
        for (i, a) in keys.iter().enumerate() {
            assert_eq!(a, &a.to_lowercase(), "already lowercase: {a}");
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn filter_values_are_quoted_and_escaped() {
        assert_eq!(quoted("plain"), "\"plain\"");
        assert_eq!(quoted("a\"b\\c"), "\"a\\\"b\\\\c\"");
        let query = SearchQuery {
            customer_id: Some(CustomerId::parse("c", "Cust-1").expect("id")),
            status: Some(OrderStatus::Paid),
            placed_from: chrono::DateTime::from_timestamp_millis(1_000),
            placed_to: chrono::DateTime::from_timestamp_millis(2_000),
            ..SearchQuery::default()
        };
        assert_eq!(
            filter_expression(&query).as_deref(),
            Some("customerKey = \".cust-1\" AND status = \"paid\" AND placedAtMs >= 1000 AND placedAtMs <= 2000")
        );
        assert_eq!(filter_expression(&SearchQuery::default()), None);
    }
}
