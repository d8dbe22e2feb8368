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
//! **Errors.** Every failed call is one of three kinds, by Meilisearch's error `type` and code, and the projector
//! treats each differently (see [`Failure`]):
//! - the documents' fault: a document write whose task failed with an `invalid_request` error. Meilisearch fails
//!   EVERY task of a batch with the error of one bad document, so the batch is `Rejected` and the projector applies
//!   its events one at a time (retry alone, then park);
//! - Meilisearch down: `system` and `internal` errors (`no_space_left_on_device`, `io_error`, …), 5xx answers, no
//!   answer, a task still pending after a minute. Nothing is parked; the batch is retried with backoff;
//! - no retry can fix it: a refused key (401/403), the index gone after start (404 `index_not_found`), a payload
//!   over the server's limit (413 `payload_too_large`). Nothing is parked either, but the view raises an alarm:
//!   logged as an error and reported by readiness (`searchView`) with its reason until a write succeeds again. A
//!   413 first splits the batch in halves; only a single document over the limit raises the alarm.
//!
//! **API key.** `meilisearch.api_key` needs no master key: a key with the actions `search`, `documents.add`,
//! `documents.get`, `indexes.create`, `indexes.delete`, `indexes.swap`, `settings.get`, `settings.update` and
//! `tasks.get` on the indexes `<index>` and `<index>_rebuild_*` (README, "Meilisearch"). A refusal names the action
//! the call needed (the server only says the key is invalid). Readiness searches the index with the key
//! (`/health` needs none, so it would stay green with a wrong or revoked key).
//!
//! **Startup.** The index is created only when it is missing, and the settings are sent only when the index's
//! settings differ and no settings update is already enqueued or processing (an earlier start's, or another
//! instance's): then the view waits for that one. Reindexing a large index can take minutes; startup waits as long
//! as it takes and logs the task's progress every few seconds, instead of giving up and sending the settings again
//! on the next start.
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
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use meilisearch_sdk::client::{Client, SwapIndexes};
use meilisearch_sdk::documents::DocumentsQuery;
use meilisearch_sdk::errors::{Error as MeiliError, ErrorCode, ErrorType, MeilisearchError};
use meilisearch_sdk::indexes::Index;
use meilisearch_sdk::search::MatchingStrategies;
use meilisearch_sdk::settings::{FilterableAttribute, PaginationSetting, Settings, TypoToleranceSettings};
use meilisearch_sdk::tasks::{Task, TasksSearchQuery};
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
/// the slow task did apply in the meantime. (Startup waits for its index tasks without a limit.)
const TASK_TIMEOUT: Duration = Duration::from_secs(60);

/// The API-key actions the view needs, on the indexes `<index>` and `<index>_rebuild_*` (README, "Meilisearch").
pub const API_KEY_ACTIONS: [&str; 9] = [
    "search",
    "documents.add",
    "documents.get",
    "indexes.create",
    "indexes.delete",
    "indexes.swap",
    "settings.get",
    "settings.update",
    "tasks.get",
];

/// How often startup logs the progress of an index task it waits for.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

pub struct MeiliSearchView {
    client: Client,
    index: Index,
    /// Why writes fail in a way no retry fixes (see [`Failure::Loud`]); reported by readiness, cleared by the
    /// next write that succeeds.
    alarm: Mutex<Option<String>>,
}

/// Why a Meilisearch call failed, by what the projector must do about it.
#[derive(Debug)]
enum Failure {
    /// The documents' fault (a write task failed with an `invalid_request` error): retried alone, then parked.
    Event(String),
    /// Meilisearch is down or failing (`system` / `internal` errors, 5xx, no answer): retry later, park nothing.
    Down(String),
    /// No retry can fix it (a refused key, the index gone, a payload over the limit): park nothing, raise the
    /// alarm.
    Loud(String),
}

impl From<Failure> for ViewError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Event(e) => ViewError::Rejected(e),
            Failure::Down(e) | Failure::Loud(e) => ViewError::Unavailable(e),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Event(e) | Failure::Down(e) | Failure::Loud(e) => f.write_str(e),
        }
    }
}

impl Failure {
    /// A failed call: `action` is the API-key action it needs, `uid` the index it works on.
    fn of(e: &MeiliError, action: &str, uid: &str) -> Self {
        match e {
            MeiliError::Meilisearch(e) => Self::answered(e, action, uid),
            MeiliError::MeilisearchCommunication(c) if c.status_code == 413 => Self::too_large(&c.to_string()),
            MeiliError::MeilisearchCommunication(c) if matches!(c.status_code, 401 | 403) => {
                Self::key_refused(action, uid, &c.to_string())
            }
            other => Failure::Down(format!("meilisearch: {other}")),
        }
    }

    /// An error object Meilisearch answered a request with.
    fn answered(e: &MeilisearchError, action: &str, uid: &str) -> Self {
        match (&e.error_code, e.error_type) {
            (ErrorCode::PayloadTooLarge, _) => Self::too_large(&e.to_string()),
            (ErrorCode::IndexNotFound, _) => Self::index_gone(uid),
            (_, ErrorType::Auth) | (ErrorCode::InvalidApiKey | ErrorCode::MissingAuthorizationHeader, _) => {
                Self::key_refused(action, uid, &e.to_string())
            }
            _ => Failure::Down(format!("meilisearch: {e}")),
        }
    }

    /// The error a write task failed with (the same for every task of its batch).
    fn task(e: &MeilisearchError, action: &str, uid: &str) -> Self {
        match (&e.error_code, e.error_type) {
            (ErrorCode::IndexNotFound, _) => Self::index_gone(uid),
            (_, ErrorType::Auth) => Self::key_refused(action, uid, &e.to_string()),
            (_, ErrorType::InvalidRequest) => Failure::Event(format!("meilisearch refused the documents: {e}")),
            // `internal`, and `system` (which the SDK knows as `unknown`): the server's trouble, not the data's.
            _ => Failure::Down(format!("meilisearch failed the write: {e}")),
        }
    }

    fn key_refused(action: &str, uid: &str, e: &str) -> Self {
        Failure::Loud(format!(
            "meilisearch refused meilisearch.api_key: it is wrong or revoked, or lacks the action `{action}` on the \
             index `{uid}` ({e})"
        ))
    }

    fn index_gone(uid: &str) -> Self {
        Failure::Loud(format!(
            "meilisearch index `{uid}` not found: it was deleted after startup; restart to create it, then rebuild \
             the search view (`orderflow rebuild search`)"
        ))
    }

    fn too_large(e: &str) -> Self {
        Failure::Loud(format!(
            "one document is larger than meilisearch accepts; raise its --http-payload-size-limit ({e})"
        ))
    }
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
    /// Connects and makes the index ready (see the module doc, "Startup"): creates it (primary key `orderId`) if
    /// it is missing and brings its settings up to date, waiting as long as that takes, so the view is queryable
    /// when this returns; then checks that the key may read documents and search. Safe to run from several
    /// instances at once: a lost creation race ("already exists") is success, and settings under way are
    /// waited for, not sent again. A refusal names the API-key action the call needed.
    pub async fn open(settings: &MeiliSettings) -> anyhow::Result<Arc<Self>> {
        // The SDK builds its `Authorization` header with `unwrap`: a key it cannot put in a header would panic.
        anyhow::ensure!(
            settings.api_key.chars().all(|c| c.is_ascii_graphic()),
            "meilisearch.api_key must be printable ASCII without spaces"
        );
        let key = (!settings.api_key.is_empty()).then(|| settings.api_key.clone());
        // The SDK appends `/indexes/...` to the host as is; a trailing slash would make `//indexes`.
        let client = Client::new(settings.url.trim_end_matches('/'), key)?;
        let view = Self::on(client, &settings.index);
        view.prepare().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        // What the projector and the queries need besides: refused now, the error names the action.
        view.current(&[]).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        view.probe().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Arc::new(view))
    }

    fn on(client: Client, uid: &str) -> Self {
        Self { index: client.index(uid), client, alarm: Mutex::new(None) }
    }

    /// Runs one SDK call under [`REQUEST_TIMEOUT`]; `action` is the API-key action it needs (for the message of
    /// a refusal).
    async fn call<T>(&self, action: &str, call: impl Future<Output = Result<T, MeiliError>>) -> Result<T, Failure> {
        match tokio::time::timeout(REQUEST_TIMEOUT, call).await {
            Ok(result) => result.map_err(|e| Failure::of(&e, action, &self.index.uid)),
            Err(_) => Err(Failure::Down(format!("meilisearch: no answer within {REQUEST_TIMEOUT:?}"))),
        }
    }

    /// An authenticated search of the index that asks for no hits: the key works and the index is there.
    async fn probe(&self) -> Result<(), Failure> {
        let mut probe = self.index.search();
        probe.with_limit(0);
        self.call("search", probe.execute::<serde_json::Value>()).await.map(|_| ())
    }

    /// Makes the index ready for the view: creates it when it is missing, and brings its settings up to date
    /// without sending them twice (see the module doc, "Startup").
    async fn prepare(&self) -> Result<(), Failure> {
        let uid = self.index.uid.as_str();
        // Each round either finds the settings applied, waits for an update already under way (another
        // instance's, or a previous start's) or sends them; a handful of rounds is plenty.
        for _ in 0..5 {
            let current = match tokio::time::timeout(REQUEST_TIMEOUT, self.index.get_settings()).await {
                Ok(Ok(current)) => current,
                Ok(Err(MeiliError::Meilisearch(e))) if e.error_code == ErrorCode::IndexNotFound => {
                    self.create_index(true, Some(PROGRESS_EVERY)).await?;
                    continue;
                }
                Ok(Err(e)) => return Err(Failure::of(&e, "settings.get", uid)),
                Err(_) => return Err(Failure::Down(format!("meilisearch: no answer within {REQUEST_TIMEOUT:?}"))),
            };
            if settings_applied(&current) {
                return Ok(());
            }
            let mut pending = TasksSearchQuery::new(&self.client);
            pending
                .with_index_uids([uid])
                .with_types(["settingsUpdate"])
                .with_statuses(["enqueued", "processing"])
                .with_limit(1);
            let pending = self.call("tasks.get", pending.execute()).await?;
            // Newest first: once the newest is done, so are the ones before it.
            if let Some(task) = pending.results.first() {
                tracing::info!(index = %uid, task = task.get_uid(),
                    "meilisearch is already applying index settings; waiting for them instead of sending them again");
                self.wait_for(task, Some(PROGRESS_EVERY)).await?;
                continue;
            }
            tracing::info!(index = %uid, "sending the search index settings to meilisearch");
            let sent = self.call("settings.update", self.index.set_settings(&index_settings())).await?;
            return match self.wait_for(&sent, Some(PROGRESS_EVERY)).await? {
                Task::Succeeded { .. } => Ok(()),
                Task::Failed { content } => {
                    Err(Failure::Loud(format!("meilisearch refused the settings of index `{uid}`: {}", content.error)))
                }
                other => Err(Failure::Down(format!("meilisearch settings task ended as {other:?}"))),
            };
        }
        Err(Failure::Down(format!("the settings of meilisearch index `{uid}` keep changing under this instance")))
    }

    /// Creates the index, waiting for the task (`progress`: without a limit, logging; else up to
    /// [`TASK_TIMEOUT`]). One that already exists is fine when `existing_ok`, and an error otherwise (a rebuild
    /// must start from an empty index that is its own).
    async fn create_index(&self, existing_ok: bool, progress: Option<Duration>) -> Result<(), Failure> {
        let uid = &self.index.uid;
        let task = self.call("indexes.create", self.client.create_index(uid, Some(PRIMARY_KEY))).await?;
        match self.wait_for(&task, progress).await? {
            Task::Succeeded { .. } => Ok(()),
            Task::Failed { content } if existing_ok && content.error.error_code == ErrorCode::IndexAlreadyExists => {
                Ok(())
            }
            Task::Failed { content } => Err(Failure::Loud(format!("creation of index `{uid}`: {}", content.error))),
            other => Err(Failure::Down(format!("creation of index `{uid}` ended as {other:?}"))),
        }
    }

    /// Applies [`index_settings`] to a fresh index, waiting up to [`TASK_TIMEOUT`].
    async fn apply_settings(&self) -> Result<(), Failure> {
        let uid = &self.index.uid;
        let task = self.call("settings.update", self.index.set_settings(&index_settings())).await?;
        match self.wait_for(&task, None).await? {
            Task::Succeeded { .. } => Ok(()),
            Task::Failed { content } => Err(Failure::Loud(format!("settings of index `{uid}`: {}", content.error))),
            other => Err(Failure::Down(format!("settings of index `{uid}` ended as {other:?}"))),
        }
    }

    /// Deletes this view's index and waits for it; best effort (logged), for an index nothing queries.
    async fn delete(&self) {
        let uid = &self.index.uid;
        let deleted = async {
            let task = self.call("indexes.delete", self.client.delete_index(uid)).await?;
            self.wait_for(&task, None).await
        };
        match deleted.await {
            Ok(Task::Succeeded { .. }) => {}
            Ok(other) => tracing::warn!(index = %uid, outcome = ?other, "could not delete a meilisearch index"),
            Err(e) => tracing::warn!(index = %uid, error = %e, "could not delete a meilisearch index"),
        }
    }

    /// Polls a task until it has succeeded or failed (Meilisearch processes writes asynchronously). Backs off
    /// from 5 ms to 50 ms: most tasks finish within a few milliseconds. With `progress`, waits as long as it
    /// takes and logs the task's state that often (startup on a large index being reindexed); without, gives
    /// up after [`TASK_TIMEOUT`] (the caller retries).
    async fn wait_for(&self, task: impl AsRef<u32>, progress: Option<Duration>) -> Result<Task, Failure> {
        let uid = *task.as_ref();
        let started = tokio::time::Instant::now();
        let mut logged = started;
        let mut pause = Duration::from_millis(5);
        let most = if progress.is_some() { Duration::from_secs(1) } else { Duration::from_millis(50) };
        loop {
            let task = self.call("tasks.get", self.client.get_task(TaskUid(uid))).await?;
            if !task.is_pending() {
                return Ok(task);
            }
            match progress {
                Some(every) if logged.elapsed() >= every => {
                    logged = tokio::time::Instant::now();
                    let (state, progress) = match task {
                        Task::Processing { .. } => ("processing", self.progress(uid).await),
                        _ => ("enqueued", None),
                    };
                    tracing::info!(index = %self.index.uid, task = uid, state, progress = progress.as_deref(),
                        waited_secs = started.elapsed().as_secs(), "waiting for a meilisearch index task");
                }
                Some(_) => {}
                None if started.elapsed() + pause > TASK_TIMEOUT => {
                    return Err(Failure::Down(format!("meilisearch task {uid} still pending after {TASK_TIMEOUT:?}")));
                }
                None => {}
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(most);
        }
    }

    /// What Meilisearch says of the progress of the batch that processes a task (`GET /tasks/{uid}` for its
    /// `batchUid`, then `GET /batches/{batchUid}`: the percentage and the current steps), when it says it. The
    /// SDK models neither field, so these two calls are plain HTTP; only for the log, so any failure is `None`.
    async fn progress(&self, task: u32) -> Option<String> {
        let http = reqwest::Client::new();
        let get = |path: String| {
            let url = format!("{}{path}", self.client.get_host());
            let http = &http;
            async move {
                let mut request = http.get(url).timeout(REQUEST_TIMEOUT);
                if let Some(key) = self.client.get_api_key() {
                    request = request.bearer_auth(key);
                }
                request.send().await.ok()?.error_for_status().ok()?.json::<serde_json::Value>().await.ok()
            }
        };
        let batch = get(format!("/tasks/{task}")).await?.get("batchUid")?.as_u64()?;
        let batch = get(format!("/batches/{batch}")).await?;
        let progress = batch.get("progress")?;
        let percentage = progress.get("percentage")?.as_f64()?;
        let steps: Vec<String> = progress
            .get("steps")?
            .as_array()?
            .iter()
            .filter_map(|step| {
                Some(format!("{} {}/{}", step.get("currentStep")?.as_str()?, step.get("finished")?, step.get("total")?))
            })
            .collect();
        Some(format!("{percentage:.1}% ({})", steps.join(" > ")))
    }

    /// Writes documents (replacing whole ones) and waits until Meilisearch has applied them. A batch over the
    /// server's payload limit is written in halves.
    async fn replace(&self, docs: &[Doc<'_>]) -> Result<(), Failure> {
        const ACTION: &str = "documents.add";
        let uid = self.index.uid.as_str();
        let sent = match tokio::time::timeout(REQUEST_TIMEOUT, self.index.add_or_replace(docs, Some(PRIMARY_KEY))).await
        {
            Ok(Ok(sent)) => sent,
            Ok(Err(e)) => {
                let failure = Failure::of(&e, ACTION, uid);
                if docs.len() > 1 && is_too_large(&e) {
                    let (first, second) = docs.split_at(docs.len() / 2);
                    tracing::debug!(index = %uid, documents = docs.len(), "meilisearch: payload too large; splitting");
                    Box::pin(self.replace(first)).await?;
                    return Box::pin(self.replace(second)).await;
                }
                return Err(failure);
            }
            Err(_) => return Err(Failure::Down(format!("meilisearch: no answer within {REQUEST_TIMEOUT:?}"))),
        };
        match self.wait_for(&sent, None).await? {
            Task::Succeeded { .. } => Ok(()),
            Task::Failed { content } => {
                let failure = Failure::task(&content.error, ACTION, uid);
                tracing::warn!(index = %uid, error = %content.error, "meilisearch failed a document batch");
                Err(failure)
            }
            other => Err(Failure::Down(format!("meilisearch task ended as {other:?}"))),
        }
    }

    /// The current documents of these orders (those that exist). A fetch by ids answers 200 with what it
    /// found: a missing document is no error (and no SDK warning in the log).
    async fn current(&self, ids: &[&str]) -> Result<HashMap<String, Order>, Failure> {
        let mut query = DocumentsQuery::new(&self.index);
        query.with_ids(ids.iter().copied()).with_limit(ids.len().max(1));
        let found = self.call("documents.get", query.execute::<Order>()).await?;
        Ok(found.results.into_iter().map(|o| (o.order_id.as_str().to_owned(), o)).collect())
    }

    /// A write-side failure for the projector; one no retry fixes raises the alarm (logged once per reason).
    fn raise<T>(&self, result: Result<T, Failure>) -> Result<T, ViewError> {
        if let Err(Failure::Loud(reason)) = &result {
            let mut alarm = self.alarm.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if alarm.as_deref() != Some(reason.as_str()) {
                tracing::error!(index = %self.index.uid, reason = %reason, "the search view cannot write to meilisearch");
                *alarm = Some(reason.clone());
            }
        }
        result.map_err(ViewError::from)
    }

    /// A write went through: whatever the alarm said is over.
    fn clear_alarm(&self) {
        let mut alarm = self.alarm.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(reason) = alarm.take() {
            tracing::info!(index = %self.index.uid, was = %reason, "the search view writes to meilisearch again");
        }
    }
}

/// A task's uid, as the SDK's `get_task` takes it.
struct TaskUid(u32);

impl AsRef<u32> for TaskUid {
    fn as_ref(&self) -> &u32 {
        &self.0
    }
}

/// Whether Meilisearch (or a proxy before it) refused a request as too large.
fn is_too_large(e: &MeiliError) -> bool {
    match e {
        MeiliError::Meilisearch(e) => e.error_code == ErrorCode::PayloadTooLarge,
        MeiliError::MeilisearchCommunication(c) => c.status_code == 413,
        _ => false,
    }
}

/// Whether an index's settings are [`index_settings`] already (attribute sets compared as sets: Meilisearch
/// answers some of them sorted).
fn settings_applied(current: &Settings) -> bool {
    let wanted = index_settings();
    let set = |v: &Option<Vec<String>>| v.as_ref().map(|v| v.iter().cloned().collect::<BTreeSet<_>>());
    let filterable = |s: &Settings| {
        s.filterable_attributes.as_ref().map(|attributes| {
            attributes
                .iter()
                .map(|a| match a {
                    FilterableAttribute::Attribute(name) => Some(name.clone()),
                    FilterableAttribute::Settings(_) => None,
                })
                .collect::<Option<BTreeSet<_>>>()
        })
    };
    filterable(current) == filterable(&wanted)
        && set(&current.sortable_attributes) == set(&wanted.sortable_attributes)
        && current.searchable_attributes == wanted.searchable_attributes
        && current.ranking_rules == wanted.ranking_rules
        && current.typo_tolerance.as_ref().and_then(|t| t.enabled) == Some(false)
        && current.pagination == wanted.pagination
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
        let found = self.raise(self.current(&ids).await)?;
        let mut docs: HashMap<String, Option<Order>> = found.into_iter().map(|(id, order)| (id, Some(order))).collect();
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
        self.raise(self.replace(&batch).await)?;
        self.clear_alarm();
        Ok(report)
    }

    async fn skip(&self, event: &StoredEvent) -> Result<(), ViewError> {
        let id = event.order_id.as_str();
        let Some(mut doc) = self.raise(self.current(&[id]).await)?.remove(id) else { return Ok(()) };
        if doc.version < event.version {
            doc.version = event.version;
            self.raise(self.replace(&[Doc::new(&doc)]).await)?;
            self.clear_alarm();
        }
        Ok(())
    }

    /// Meilisearch has no conditional write, so a document can go stale (a late write of a partition's previous
    /// owner, a write to the index a rebuild swapped out): rewritten from the whole history, then read back.
    async fn repair(&self, history: &[StoredEvent]) -> Result<Option<u64>, ViewError> {
        let Some(id) = history.first().map(|e| e.order_id.as_str()) else { return Ok(None) };
        // Most orders a rebuild reconciles are current: a read, no write.
        let latest = history.last().map_or(0, |e| e.version);
        if let Some(current) = self.current(&[id]).await?.remove(id).filter(|o| o.version >= latest) {
            return Ok(Some(current.version));
        }
        let mut order = None;
        for event in history {
            rules::fold_document(&mut order, event)?;
        }
        if let Some(order) = &order {
            self.replace(&[Doc::new(order)]).await?;
        }
        Ok(Some(self.current(&[id]).await?.remove(id).map_or(0, |o| o.version)))
    }

    fn repairs(&self) -> bool {
        true
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
        let fresh = Self::on(self.client.clone(), &uid);
        // A failed creation made nothing of ours to clean up (an index already there is not ours to delete).
        fresh.create_index(false, None).await?;
        if let Err(e) = fresh.apply_settings().await {
            fresh.delete().await;
            return Err(e.into());
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
        let swapped = async {
            let task = fresh.call("indexes.swap", fresh.client.swap_indexes([&swap])).await?;
            fresh.wait_for(&task, None).await
        };
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
            Err(e) => Err(e.into()),
        }
    }

    async fn abort(self: Box<Self>) {
        self.fresh.delete().await;
    }
}

#[async_trait]
impl SearchView for MeiliSearchView {
    /// An authenticated search of the index (`/health` needs no key): a wrong or revoked key, or the index
    /// gone, fails it with the reason; so does the alarm of a write that no retry fixes.
    async fn ping(&self) -> Result<(), ViewError> {
        self.probe().await?;
        match self.alarm.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone() {
            Some(reason) => Err(ViewError::Unavailable(reason)),
            None => Ok(()),
        }
    }

    /// Fetched by id (`documents/fetch`), not `GET /documents/{id}`: a document not there yet (a `minVersion`
    /// poll) is an empty answer, not a 404 the SDK would log as a warning.
    async fn get(&self, order_id: &OrderId) -> Result<Option<Order>, ViewError> {
        let id = order_id.as_str();
        Ok(self.current(&[id]).await?.remove(id))
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
        let results = self.call("search", request.execute::<Order>()).await?;
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
