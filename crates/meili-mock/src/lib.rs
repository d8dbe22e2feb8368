//! An in-process Meilisearch for tests: a contract mock of the Meilisearch v1 HTTP API, as much of it as the
//! search adapter (`src/views/search_meili.rs`) and meilisearch-sdk use, with the request and response
//! shapes of the real server (task objects, error objects, status codes). No Meilisearch server can be
//! installed on the CI machines; the same suites run against a real one when `MEILI_URL` is set.
//!
//! What it covers: `GET /health`, `GET /version`; indexes (`POST /indexes`, `GET /indexes`,
//! `GET|DELETE /indexes/{uid}`, `POST /swap-indexes`); settings (`GET|PATCH /indexes/{uid}/settings`);
//! documents (`POST` replace / `PUT` update / `DELETE` all of `/indexes/{uid}/documents`, `GET` list,
//! `POST .../documents/fetch` with `ids`, `filter`, `offset`, `limit`, `fields`, `GET|DELETE
//! .../documents/{id}`, `POST .../documents/delete-batch`); `POST /indexes/{uid}/search` with `q`, `filter`,
//! `sort`, `offset`, `limit`, `matchingStrategy`, `attributesToRetrieve`; tasks (`GET /tasks/{uid}`,
//! `GET /tasks` filtered by `statuses`, `types`, `indexUids`); `GET /batches/{uid}` (with `progress` while a
//! held settings update processes).
//!
//! Behaviour kept faithful where a client could get it wrong:
//! - Writes are asynchronous: they answer 202 with a summarized task (`taskUid`, `indexUid`, `status:
//!   "enqueued"`, `type`, `enqueuedAt`) and take effect a few milliseconds later, in enqueue order; until
//!   then `GET /tasks/{uid}` says `enqueued` and searches do not see them. A failed task (index already
//!   exists, missing or invalid document id, conflicting primary key) changes nothing and carries the
//!   Meilisearch error object.
//! - Errors are `{message, code, type, link}` with the real codes and statuses (`document_not_found` 404,
//!   `index_not_found` 404, `invalid_search_filter` 400 for a bad or non-filterable filter,
//!   `invalid_search_sort` 400 for a non-sortable attribute, `missing_authorization_header` 401,
//!   `invalid_api_key` 403, `missing_content_type` / `invalid_content_type` 415).
//! - Filters: the filter grammar (`=`, `!=`, `>`, `>=`, `<`, `<=`, `IN [..]`, `NOT IN`, `a TO b`, `EXISTS`,
//!   `NOT`, `AND`, `OR`, parentheses, quoted values with `\` escapes; keywords in capitals) on filterable
//!   attributes only; string values compare after Meilisearch's facet normalization (trimmed, lowercased).
//! - Search: query words are split on anything but letters and digits and lowercased; only the first ten
//!   count; every word but the last must equal a word of a searchable attribute, the last may be a prefix
//!   (not when the query ends with a separator). `matchingStrategy: "all"` needs every word; the default
//!   (`last`) also returns documents matching only the first words, as the real server does. No typo
//!   tolerance (the adapter turns it off). Sorting follows the sort rules (numbers before strings, missing
//!   values last, strings compared normalized), ties by insertion order; relevance ranking is not emulated,
//!   so a search with both `q` and `sort` is refused (501) unless `sort` is the index's first ranking rule —
//!   the real server would reorder by relevance first. `estimatedTotalHits` and paging stop at
//!   `pagination.maxTotalHits` (default 1000).
//! - With a master key (`start(Some(key))`) every route but `/health` needs `Authorization: Bearer <key>`: the
//!   master key, or an API key added with [`MeiliMock::add_key`], which is refused (403 `invalid_api_key`, "The
//!   provided API key is invalid.", as the real server says for a missing action too) unless its actions include
//!   the route's action (`search`, `documents.add`, `documents.get`, `documents.delete`, `indexes.create`,
//!   `indexes.get`, `indexes.delete`, `indexes.swap`, `settings.get`, `settings.update`, `tasks.get`, `version`;
//!   `*` and `<group>.*` too) and its indexes the route's index (`*`, a name, or a `prefix*` pattern). A document
//!   addition to a missing index creates it only if the key may `indexes.create` it; otherwise the task fails
//!   with `index_not_found`.
//! - Batches: enqueued document additions to one index are processed together, as Meilisearch's autobatcher
//!   does, and a batch that fails fails EVERY task in it with the same error.
//! - Faults on demand, for the adapter's error handling ([`MeiliMock`]): batches failing with a `system` or
//!   `internal` error ([`Fault::no_space_left_on_device`], [`Fault::io_error`], [`Fault::internal`]), a document
//!   whose batches fail with an `invalid_request` error ([`Fault::max_fields_limit_exceeded`]), requests answered
//!   with an error status (a 5xx from a proxy), a payload limit (413 `payload_too_large`), revoked keys, and a
//!   settings update that stays `processing` for a while (reindexing a large index).
//! - Outages: a mock started with [`start_pausable`] comes with a [`Pause`] switch; while paused, every request
//!   (`/health` too) waits without an answer, as a frozen server (`kill -STOP`) would, and goes on once
//!   resumed. Tasks already enqueued keep being processed.
//!
//! Left out: key management routes (`/keys`) and tenant tokens, facets, highlighting, page/hitsPerPage paging, vector search,
//! other task filters and cancellation, dumps and snapshots. A request for something unimplemented fails loudly
//! (400/501), so the adapter can never silently depend on it.

// Handlers answer errors as ready `HttpResponse`s; boxing them would only add noise to a test double whose
// error path is the rare one.
#![allow(clippy::result_large_err)]

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::{Next, from_fn};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use chrono::{SecondsFormat, Utc};
use serde_json::{Map, Value, json};

/// How long an enqueued task waits before it is processed: long enough that a client which does not wait
/// for its tasks sees stale data, short enough not to slow the suites down.
const TASK_DELAY: Duration = Duration::from_millis(3);

/// The base URL of this test process's shared mock (no master key), started on first use.
pub fn url() -> String {
    static SHARED: OnceLock<String> = OnceLock::new();
    SHARED.get_or_init(|| start(None)).clone()
}

/// Starts a new mock on 127.0.0.1 (a free port) and returns its base URL. It runs on its own thread with its
/// own actix system, so it keeps answering while a test thread blocks, and lives until the process exits.
pub fn start(master_key: Option<&str>) -> String {
    launch(master_key).url
}

/// An error object (and HTTP status) of the real server, for the mock to fail tasks or answer requests with.
#[derive(Clone, Debug)]
pub struct Fault {
    pub status: u16,
    pub code: String,
    /// The error's `type`: `invalid_request`, `internal`, `auth` or `system`.
    pub kind: String,
    pub message: String,
}

impl Fault {
    pub fn new(status: u16, code: &str, kind: &str, message: &str) -> Self {
        Self { status, code: code.to_owned(), kind: kind.to_owned(), message: message.to_owned() }
    }

    /// The disk is full (type `system`; Meilisearch answers it with 422).
    pub fn no_space_left_on_device() -> Self {
        Self::new(
            422,
            "no_space_left_on_device",
            "system",
            "There is no more space left on the device. Consider increasing the size of the disk/partition.",
        )
    }

    /// An I/O error of the database (type `system`, 422).
    pub fn io_error() -> Self {
        Self::new(422, "io_error", "system", "Input/output error (os error 5)")
    }

    /// An internal error (type `internal`, 500).
    pub fn internal() -> Self {
        Self::new(500, "internal", "internal", "An internal error has occurred. `Corrupted task queue.`.")
    }

    /// A document Meilisearch refuses (type `invalid_request`, 400).
    pub fn max_fields_limit_exceeded() -> Self {
        Self::new(
            400,
            "max_fields_limit_exceeded",
            "invalid_request",
            "A document cannot contain more than 65,535 fields.",
        )
    }

    /// What a reverse proxy answers when Meilisearch behind it is down: a status and no Meilisearch error body.
    pub fn proxy(status: u16) -> Self {
        Self::new(status, "", "", "upstream unavailable")
    }

    fn value(&self) -> Value {
        error_value(&self.code, &self.kind, &self.message)
    }

    fn response(&self) -> HttpResponse {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if self.code.is_empty() {
            HttpResponse::build(status)
                .content_type("text/html")
                .body(format!("<html><body>{}</body></html>", self.message))
        } else {
            HttpResponse::build(status).json(self.value())
        }
    }
}

/// A running mock with its switches: the pause (see [`start_pausable`]), API keys and faults.
#[derive(Clone)]
pub struct MeiliMock {
    url: String,
    pause: Pause,
    mock: Arc<Mock>,
}

impl MeiliMock {
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn pause_switch(&self) -> &Pause {
        &self.pause
    }

    /// Adds an API key (the real server's `POST /keys`, whose `key` is given here) with these actions on these
    /// indexes (names or `prefix*` patterns, `*` for all).
    pub fn add_key(&self, key: &str, actions: &[&str], indexes: &[&str]) {
        let key_spec = ApiKey {
            actions: actions.iter().map(|a| (*a).to_owned()).collect(),
            indexes: indexes.iter().map(|i| (*i).to_owned()).collect(),
        };
        self.mock.lock().keys.insert(key.to_owned(), key_spec);
    }

    /// Deletes an API key: from now on it is refused with 403 `invalid_api_key`.
    pub fn revoke_key(&self, key: &str) {
        self.mock.lock().keys.remove(key);
    }

    /// The next `batches` batches fail, every task in them with `fault`.
    pub fn fail_batches(&self, fault: Fault, batches: usize) {
        self.mock.lock().batch_fault = Some((fault, batches));
    }

    /// Every batch with a document of this id fails (every task in it) with `fault`, until
    /// [`MeiliMock::accept_document`].
    pub fn refuse_document(&self, id: &str, fault: Fault) {
        self.mock.lock().refused_documents.insert(id.to_owned(), fault);
    }

    pub fn accept_document(&self, id: &str) {
        self.mock.lock().refused_documents.remove(id);
    }

    /// The next `requests` requests (but `/health`) are answered with `fault` and do nothing.
    pub fn fail_requests(&self, fault: Fault, requests: usize) {
        self.mock.lock().request_fault = Some((fault, requests));
    }

    /// Document writes with a body above `bytes` are refused with 413 `payload_too_large`
    /// (`--http-payload-size-limit`; 100 MB by default).
    pub fn limit_payload(&self, bytes: usize) {
        self.mock.lock().payload_limit = Some(bytes);
    }

    /// From now on, a settings update stays `processing` for `hold` before it succeeds, and holds every task
    /// enqueued after it (Meilisearch processes one batch at a time): a large index being reindexed.
    pub fn hold_settings(&self, hold: Duration) {
        self.mock.lock().settings_hold = Some(hold);
    }

    /// How many tasks of this type (`settingsUpdate`, `documentAdditionOrUpdate`, …) were enqueued for `index`.
    pub fn task_count(&self, kind: &str, index: &str) -> usize {
        self.mock.lock().tasks.iter().filter(|t| t.kind == kind && t.index_uid.as_deref() == Some(index)).count()
    }
}

/// Makes a mock stop answering for a while (see [`start_pausable`]): the outage tests' stand-in for freezing
/// a real Meilisearch with `kill -STOP`.
#[derive(Clone, Default)]
pub struct Pause(Arc<AtomicBool>);

impl Pause {
    /// From now on, requests wait unanswered (those in progress finish).
    pub fn pause(&self) {
        self.0.store(true, AtomicOrdering::SeqCst);
    }

    /// The waiting requests go on, and new ones are answered again.
    pub fn resume(&self) {
        self.0.store(false, AtomicOrdering::SeqCst);
    }

    pub fn is_paused(&self) -> bool {
        self.0.load(AtomicOrdering::SeqCst)
    }
}

/// Holds each request while the mock's [`Pause`] is on: the connection stays open and nothing is answered, so
/// a client sees a hung server, not a refusal (a refusal is the easy case; a hang is what needs timeouts). Then
/// answers a request with the injected fault, if there is one ([`MeiliMock::fail_requests`]).
async fn hold_while_paused(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    if let Some(pause) = req.app_data::<web::Data<Pause>>() {
        while pause.is_paused() {
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let fault = match req.app_data::<web::Data<Mock>>() {
        Some(mock) if req.path() != "/health" => mock.take_request_fault(),
        _ => None,
    };
    match fault {
        Some(fault) => Ok(req.into_response(fault.response()).map_into_right_body()),
        None => Ok(next.call(req).await?.map_into_left_body()),
    }
}

/// [`start`], with a switch that makes the mock hang (every request waits unanswered) until it is switched back.
pub fn start_pausable(master_key: Option<&str>) -> (String, Pause) {
    let mock = launch(master_key);
    (mock.url, mock.pause)
}

/// Starts a new mock (see [`start`]) and returns it with its switches.
pub fn launch(master_key: Option<&str>) -> MeiliMock {
    let pause = Pause::default();
    let switch = web::Data::new(pause.clone());
    let mock = Arc::new(Mock { master_key: master_key.map(str::to_owned), state: Mutex::new(State::default()) });
    let handle = Arc::clone(&mock);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("meili-mock".into())
        .spawn(move || {
            let system = actix_web::rt::System::new();
            system.block_on(async move {
                let data = web::Data::from(mock);
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(data.clone())
                        .app_data(switch.clone())
                        .wrap(from_fn(hold_while_paused))
                        // Meilisearch accepts payloads up to 100 MB by default.
                        .app_data(web::PayloadConfig::new(100 * 1024 * 1024))
                        .configure(routes)
                })
                .workers(2)
                .disable_signals()
                .shutdown_timeout(0)
                .bind(("127.0.0.1", 0));
                let server = match server {
                    Ok(server) => server,
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let address = server.addrs().first().map(|a| format!("http://{a}"));
                let _ = tx.send(address.ok_or_else(|| "no address bound".to_owned()));
                let _ = server.run().await;
            });
        })
        .expect("the Meilisearch mock thread starts");
    match rx.recv() {
        Ok(Ok(url)) => MeiliMock { url, pause, mock: handle },
        Ok(Err(e)) => panic!("the Meilisearch mock cannot listen: {e}"),
        Err(_) => panic!("the Meilisearch mock thread ended before listening"),
    }
}

fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health))
        .route("/version", web::get().to(version))
        .route("/tasks", web::get().to(list_tasks))
        .route("/tasks/{task_uid}", web::get().to(get_task))
        .route("/batches/{batch_uid}", web::get().to(get_batch))
        .route("/swap-indexes", web::post().to(swap_indexes))
        .route("/indexes", web::get().to(list_indexes))
        .route("/indexes", web::post().to(create_index))
        .route("/indexes/{uid}", web::get().to(get_index))
        .route("/indexes/{uid}", web::delete().to(delete_index))
        .route("/indexes/{uid}/settings", web::get().to(get_settings))
        .route("/indexes/{uid}/settings", web::patch().to(update_settings))
        .route("/indexes/{uid}/search", web::post().to(search))
        .route("/indexes/{uid}/documents", web::get().to(list_documents))
        .route("/indexes/{uid}/documents", web::post().to(replace_documents))
        .route("/indexes/{uid}/documents", web::put().to(update_documents))
        .route("/indexes/{uid}/documents", web::delete().to(clear_documents))
        .route("/indexes/{uid}/documents/fetch", web::post().to(fetch_documents))
        .route("/indexes/{uid}/documents/delete-batch", web::post().to(delete_documents))
        .route("/indexes/{uid}/documents/{id}", web::get().to(get_document))
        .route("/indexes/{uid}/documents/{id}", web::delete().to(delete_document))
        .default_service(web::to(not_found));
}

// ------------------------------------------------------------------------------------------------- state

struct Mock {
    master_key: Option<String>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    indexes: BTreeMap<String, IndexData>,
    /// Every task; a task's uid is its position.
    tasks: Vec<TaskRecord>,
    /// API keys besides the master key.
    keys: HashMap<String, ApiKey>,
    /// A fault for the next batches, and how many are left.
    batch_fault: Option<(Fault, usize)>,
    /// Documents whose batches fail, by id.
    refused_documents: HashMap<String, Fault>,
    /// A fault for the next requests, and how many are left.
    request_fault: Option<(Fault, usize)>,
    payload_limit: Option<usize>,
    settings_hold: Option<Duration>,
}

struct ApiKey {
    actions: Vec<String>,
    indexes: Vec<String>,
}

impl ApiKey {
    fn allows(&self, action: &str, indexes: &[&str]) -> bool {
        let action_ok = self.actions.iter().any(|a| {
            a == "*" || a == action || a.strip_suffix(".*").is_some_and(|group| action.split('.').next() == Some(group))
        });
        let index_ok = |index: &str| {
            self.indexes.iter().any(|p| match p.strip_suffix('*') {
                Some(prefix) => index.starts_with(prefix),
                None => p == index,
            })
        };
        action_ok && indexes.iter().all(|i| index_ok(i))
    }
}

struct IndexData {
    primary_key: Option<String>,
    created_at: String,
    updated_at: String,
    /// Documents by external id, each with the internal id Meilisearch gives it in insertion order (the
    /// order of unsorted results).
    docs: BTreeMap<String, (u64, Value)>,
    next_internal_id: u64,
    settings: IndexSettings,
}

#[derive(Clone)]
struct IndexSettings {
    searchable: Vec<String>,
    filterable: Vec<String>,
    sortable: Vec<String>,
    ranking_rules: Vec<String>,
    max_total_hits: usize,
    typo_tolerance: bool,
    /// Settings accepted and echoed back but not interpreted.
    other: Map<String, Value>,
}

impl Default for IndexSettings {
    fn default() -> Self {
        Self {
            searchable: vec!["*".into()],
            filterable: Vec::new(),
            sortable: Vec::new(),
            ranking_rules: ["words", "typo", "proximity", "attributeRank", "sort", "wordPosition", "exactness"]
                .map(String::from)
                .to_vec(),
            max_total_hits: 1000,
            typo_tolerance: true,
            other: Map::new(),
        }
    }
}

struct TaskRecord {
    uid: u32,
    index_uid: Option<String>,
    kind: &'static str,
    status: &'static str,
    details: Value,
    error: Option<Value>,
    enqueued_at: String,
    started_at: Option<String>,
    finished_at: Option<String>,
    duration: Option<String>,
    op: Option<Op>,
    /// The batch it was processed in (the uid of the batch's first task), once processing started.
    batch_uid: Option<u32>,
    /// A held settings update: processing from then until then.
    hold_until: Option<(Instant, Instant)>,
}

/// What a task does when it is processed.
enum Op {
    CreateIndex {
        primary_key: Option<String>,
    },
    DeleteIndex,
    UpdateSettings(Map<String, Value>),
    /// `create_index`: whether the key that sent it may create the index (else a missing index fails the task).
    AddDocuments {
        docs: Vec<Value>,
        primary_key: Option<String>,
        merge: bool,
        create_index: bool,
    },
    DeleteDocuments(Vec<String>),
    ClearDocuments,
    Swap(Vec<(String, String, bool)>),
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true)
}

impl Mock {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking handler must not take the whole mock down with it.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The error response for a request whose key may not do `action` on `indexes`, when a master key is set.
    fn deny(&self, req: &HttpRequest, action: &str, indexes: &[&str]) -> Option<HttpResponse> {
        let key = self.master_key.as_deref()?;
        let Some(header) = req.headers().get("authorization") else {
            return Some(error_response(
                StatusCode::UNAUTHORIZED,
                "missing_authorization_header",
                "auth",
                "The Authorization header is missing. It must use the bearer authorization method.",
            ));
        };
        let given = header.to_str().ok().and_then(|h| h.strip_prefix("Bearer ")).map(str::trim);
        let allowed = given == Some(key)
            || given.is_some_and(|g| self.lock().keys.get(g).is_some_and(|k| k.allows(action, indexes)));
        if allowed {
            None
        } else {
            Some(error_response(StatusCode::FORBIDDEN, "invalid_api_key", "auth", "The provided API key is invalid."))
        }
    }

    /// Whether the request's key may create `index` (no master key: anyone may).
    fn may_create(&self, req: &HttpRequest, index: &str) -> bool {
        self.deny(req, "indexes.create", &[index]).is_none()
    }

    /// The injected request fault, counted down.
    fn take_request_fault(&self) -> Option<Fault> {
        let mut state = self.lock();
        let (fault, left) = state.request_fault.as_mut()?;
        let fault = fault.clone();
        *left -= 1;
        if *left == 0 {
            state.request_fault = None;
        }
        Some(fault)
    }

    /// Records a task and schedules its processing; returns the 202 answer (a summarized task).
    fn enqueue(self: &Arc<Self>, index_uid: Option<&str>, kind: &'static str, details: Value, op: Op) -> HttpResponse {
        let summary = {
            let mut state = self.lock();
            let uid = state.tasks.len() as u32;
            let enqueued_at = now();
            let summary = json!({
                "taskUid": uid,
                "indexUid": index_uid,
                "status": "enqueued",
                "type": kind,
                "enqueuedAt": enqueued_at,
            });
            state.tasks.push(TaskRecord {
                uid,
                index_uid: index_uid.map(str::to_owned),
                kind,
                status: "enqueued",
                details,
                error: None,
                enqueued_at,
                started_at: None,
                finished_at: None,
                duration: None,
                op: Some(op),
                batch_uid: None,
                hold_until: None,
            });
            summary
        };
        let mock = Arc::clone(self);
        actix_web::rt::spawn(async move {
            actix_web::rt::time::sleep(TASK_DELAY).await;
            mock.process_pending();
        });
        HttpResponse::Accepted().json(summary)
    }

    /// Processes the enqueued tasks, oldest first and one batch at a time (Meilisearch's order): consecutive
    /// document additions to one index form one batch, any other task is a batch of its own. A failed batch
    /// fails every task in it with the same error. A held settings update stops the queue until its time is up.
    fn process_pending(self: &Arc<Self>) {
        let mut state = self.lock();
        loop {
            let Some(first) = state.tasks.iter().position(|t| matches!(t.status, "enqueued" | "processing")) else {
                return;
            };
            if state.tasks[first].kind == "settingsUpdate"
                && let Some(hold) = state.settings_hold
            {
                let task = &mut state.tasks[first];
                let until = match task.hold_until {
                    Some((_, until)) => until,
                    None => {
                        let until = Instant::now() + hold;
                        task.status = "processing";
                        task.started_at = Some(now());
                        task.batch_uid = Some(task.uid);
                        task.hold_until = Some((Instant::now(), until));
                        until
                    }
                };
                let left = until.saturating_duration_since(Instant::now());
                if !left.is_zero() {
                    let mock = Arc::clone(self);
                    actix_web::rt::spawn(async move {
                        actix_web::rt::time::sleep(left).await;
                        mock.process_pending();
                    });
                    return;
                }
            }
            let index = state.tasks[first].index_uid.clone();
            let mut batch = vec![first];
            if state.tasks[first].kind == "documentAdditionOrUpdate" {
                batch.extend(
                    state.tasks[first + 1..]
                        .iter()
                        .enumerate()
                        .take_while(|(_, t)| {
                            t.status == "enqueued" && t.kind == "documentAdditionOrUpdate" && t.index_uid == index
                        })
                        .map(|(i, _)| first + 1 + i),
                );
            }
            let fault = state.batch_fault(&batch);
            let started_at = now();
            let clock = Instant::now();
            let batch_uid = state.tasks[first].uid;
            for i in batch {
                let (index_uid, op) = (state.tasks[i].index_uid.clone(), state.tasks[i].op.take());
                let outcome = match (&fault, op) {
                    (Some(fault), _) => Err((None, fault.value())),
                    (None, Some(op)) => state.run(index_uid.as_deref().unwrap_or_default(), op),
                    (None, None) => Err((None, error_value("internal", "internal", "the task lost its operation"))),
                };
                let task = &mut state.tasks[i];
                task.started_at.get_or_insert_with(|| started_at.clone());
                task.batch_uid = Some(batch_uid);
                task.finished_at = Some(now());
                task.duration = Some(format!("PT{:.6}S", clock.elapsed().as_secs_f64()));
                match outcome {
                    Ok(details) => {
                        task.status = "succeeded";
                        if let Some(details) = details {
                            task.details = details;
                        }
                    }
                    Err((details, error)) => {
                        task.status = "failed";
                        task.error = Some(error);
                        if let Some(details) = details {
                            task.details = details;
                        }
                    }
                }
            }
        }
    }
}

/// A task's outcome: new details on success; new details and the error object on failure.
type TaskOutcome = Result<Option<Value>, (Option<Value>, Value)>;

impl State {
    /// The error a batch fails with, if it does: an injected batch fault, or a refused document in it.
    fn batch_fault(&mut self, batch: &[usize]) -> Option<Fault> {
        if let Some((fault, left)) = self.batch_fault.as_mut() {
            let fault = fault.clone();
            *left -= 1;
            if *left == 0 {
                self.batch_fault = None;
            }
            return Some(fault);
        }
        batch.iter().find_map(|&i| {
            let task = &self.tasks[i];
            let Some(Op::AddDocuments { docs, primary_key, .. }) = &task.op else { return None };
            let index_key = task.index_uid.as_ref().and_then(|uid| self.indexes.get(uid)?.primary_key.clone());
            let key = primary_key.clone().or(index_key)?;
            docs.iter().find_map(|doc| self.refused_documents.get(doc.get(&key)?.as_str()?)).cloned()
        })
    }

    fn index_or_create(&mut self, uid: &str, primary_key: Option<&str>) -> &mut IndexData {
        self.indexes.entry(uid.to_owned()).or_insert_with(|| {
            let at = now();
            IndexData {
                primary_key: primary_key.map(str::to_owned),
                created_at: at.clone(),
                updated_at: at,
                docs: BTreeMap::new(),
                next_internal_id: 0,
                settings: IndexSettings::default(),
            }
        })
    }

    fn run(&mut self, uid: &str, op: Op) -> TaskOutcome {
        match op {
            Op::CreateIndex { primary_key } => {
                if self.indexes.contains_key(uid) {
                    return Err((
                        None,
                        error_value(
                            "index_already_exists",
                            "invalid_request",
                            &format!("Index `{uid}` already exists."),
                        ),
                    ));
                }
                self.index_or_create(uid, primary_key.as_deref());
                Ok(None)
            }
            Op::DeleteIndex => match self.indexes.remove(uid) {
                Some(index) => Ok(Some(json!({"deletedDocuments": index.docs.len()}))),
                None => Err((Some(json!({"deletedDocuments": 0})), index_not_found_value(uid))),
            },
            Op::UpdateSettings(patch) => {
                let index = self.index_or_create(uid, None);
                apply_settings(&mut index.settings, &patch);
                index.updated_at = now();
                Ok(None)
            }
            Op::AddDocuments { docs, primary_key, merge, create_index } => {
                let received = docs.len();
                let failed = |error| Err((Some(json!({"receivedDocuments": received, "indexedDocuments": 0})), error));
                if !create_index && !self.indexes.contains_key(uid) {
                    return failed(index_not_found_value(uid));
                }
                let existing_key = self.indexes.get(uid).and_then(|i| i.primary_key.clone());
                let key = match (existing_key, primary_key) {
                    (Some(have), Some(asked)) if have != asked => {
                        return failed(error_value(
                            "index_primary_key_already_exists",
                            "invalid_request",
                            &format!("Index `{uid}`: Index already has a primary key: `{have}`."),
                        ));
                    }
                    (Some(have), _) => have,
                    (None, Some(asked)) => asked,
                    (None, None) => match infer_primary_key(&docs) {
                        Ok(key) => key,
                        Err(error) => return failed(error),
                    },
                };
                // Validate the whole payload first: a failed task indexes nothing.
                let mut ids = Vec::with_capacity(docs.len());
                for doc in &docs {
                    match document_id(doc, &key) {
                        Ok(id) => ids.push(id),
                        Err(error) => return failed(error),
                    }
                }
                let index = self.index_or_create(uid, Some(&key));
                index.primary_key = Some(key);
                for (id, doc) in ids.into_iter().zip(docs) {
                    match index.docs.get_mut(&id) {
                        Some((_, stored)) => {
                            if merge {
                                if let (Some(stored), Value::Object(fields)) = (stored.as_object_mut(), doc) {
                                    stored.extend(fields);
                                }
                            } else {
                                *stored = doc;
                            }
                        }
                        None => {
                            let internal = index.next_internal_id;
                            index.next_internal_id += 1;
                            index.docs.insert(id, (internal, doc));
                        }
                    }
                }
                index.updated_at = now();
                Ok(Some(json!({"receivedDocuments": received, "indexedDocuments": received})))
            }
            Op::DeleteDocuments(ids) => {
                let provided = ids.len();
                let Some(index) = self.indexes.get_mut(uid) else {
                    return Err((None, index_not_found_value(uid)));
                };
                let deleted = ids.iter().filter(|id| index.docs.remove(id.as_str()).is_some()).count();
                Ok(Some(json!({"providedIds": provided, "deletedDocuments": deleted, "originalFilter": null})))
            }
            Op::ClearDocuments => {
                let Some(index) = self.indexes.get_mut(uid) else {
                    return Err((None, index_not_found_value(uid)));
                };
                let deleted = index.docs.len();
                index.docs.clear();
                Ok(Some(json!({"deletedDocuments": deleted})))
            }
            Op::Swap(pairs) => {
                for (a, b, rename) in &pairs {
                    let missing = if !self.indexes.contains_key(a) {
                        Some(a)
                    } else if !rename && !self.indexes.contains_key(b) {
                        Some(b)
                    } else {
                        None
                    };
                    if let Some(missing) = missing {
                        return Err((None, index_not_found_value(missing)));
                    }
                    if *rename && self.indexes.contains_key(b) {
                        return Err((
                            None,
                            error_value(
                                "index_already_exists",
                                "invalid_request",
                                &format!("Index `{b}` already exists."),
                            ),
                        ));
                    }
                }
                for (a, b, rename) in pairs {
                    let first = self.indexes.remove(&a);
                    let second = self.indexes.remove(&b);
                    if let Some(first) = first {
                        self.indexes.insert(b.clone(), first);
                    }
                    if let (false, Some(second)) = (rename, second) {
                        self.indexes.insert(a, second);
                    }
                }
                Ok(None)
            }
        }
    }
}

/// Meilisearch infers the primary key when exactly one top-level attribute name ends with `id`.
fn infer_primary_key(docs: &[Value]) -> Result<String, Value> {
    let candidates: Vec<&String> = docs
        .first()
        .and_then(Value::as_object)
        .map(|doc| doc.keys().filter(|k| k.to_lowercase().ends_with("id")).collect())
        .unwrap_or_default();
    match candidates.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(error_value(
            "index_primary_key_no_candidate_found",
            "invalid_request",
            "The primary key inference failed as the engine did not find any field ending with `id` in its name. Please specify the primary key manually using the `primaryKey` query parameter.",
        )),
        _ => Err(error_value(
            "index_primary_key_multiple_candidates_found",
            "invalid_request",
            "The primary key inference failed as the engine found multiple fields ending with `id` in their names. Please specify the primary key manually using the `primaryKey` query parameter.",
        )),
    }
}

/// A document's id: a string of `[a-zA-Z0-9_-]{1,511}` or a non-negative integer, as Meilisearch allows.
fn document_id(doc: &Value, key: &str) -> Result<String, Value> {
    let Some(fields) = doc.as_object() else {
        return Err(error_value("malformed_payload", "invalid_request", "A document must be a JSON object."));
    };
    let invalid = |shown: &Value| {
        error_value(
            "invalid_document_id",
            "invalid_request",
            &format!(
                "Document identifier `{shown}` is invalid. A document identifier can be of type integer or string, only composed of alphanumeric characters (a-z A-Z 0-9), hyphens (-) and underscores (_), and can not be more than 511 bytes."
            ),
        )
    };
    match fields.get(key) {
        None => Err(error_value(
            "missing_document_id",
            "invalid_request",
            &format!("Document doesn't have a `{key}` attribute: `{doc}`."),
        )),
        Some(Value::String(id))
            if !id.is_empty()
                && id.len() <= 511
                && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') =>
        {
            Ok(id.clone())
        }
        Some(Value::Number(n)) if n.is_u64() => Ok(n.to_string()),
        Some(other) => Err(invalid(other)),
    }
}

// ------------------------------------------------------------------------------------------ errors, views

fn error_value(code: &str, kind: &str, message: &str) -> Value {
    json!({"message": message, "code": code, "type": kind, "link": format!("https://docs.meilisearch.com/errors#{code}")})
}

fn error_response(status: StatusCode, code: &str, kind: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(error_value(code, kind, message))
}

fn index_not_found_value(uid: &str) -> Value {
    error_value("index_not_found", "invalid_request", &format!("Index `{uid}` not found."))
}

fn index_not_found(uid: &str) -> HttpResponse {
    HttpResponse::NotFound().json(index_not_found_value(uid))
}

/// A `{taskUid}` / `{batchUid}` path parameter, or the 400 Meilisearch answers for one that is not a number.
fn parse_uid<T: std::str::FromStr>(raw: &str, what: &str) -> Result<T, HttpResponse> {
    raw.parse().map_err(|_| {
        bad_request(
            &format!("invalid_{what}_uid"),
            &format!("Invalid value in parameter `{what}Uid`: could not parse `{raw}` as a positive integer"),
        )
    })
}

fn bad_request(code: &str, message: &str) -> HttpResponse {
    error_response(StatusCode::BAD_REQUEST, code, "invalid_request", message)
}

fn not_implemented(what: &str) -> HttpResponse {
    error_response(
        StatusCode::NOT_IMPLEMENTED,
        "mock_not_implemented",
        "internal",
        &format!("The Meilisearch contract mock does not implement {what}."),
    )
}

fn task_view(task: &TaskRecord) -> Value {
    json!({
        "uid": task.uid,
        "batchUid": task.batch_uid,
        "indexUid": task.index_uid,
        "status": task.status,
        "type": task.kind,
        "canceledBy": null,
        "details": task.details,
        "error": task.error,
        "duration": task.duration,
        "enqueuedAt": task.enqueued_at,
        "startedAt": task.started_at,
        "finishedAt": task.finished_at,
    })
}

fn index_view(uid: &str, index: &IndexData) -> Value {
    json!({"uid": uid, "primaryKey": index.primary_key, "createdAt": index.created_at, "updatedAt": index.updated_at})
}

fn settings_view(settings: &IndexSettings) -> Value {
    let mut view = json!({
        "displayedAttributes": ["*"],
        "searchableAttributes": settings.searchable,
        "filterableAttributes": settings.filterable,
        // A set on the real server: sorted.
        "sortableAttributes": settings.sortable.iter().collect::<std::collections::BTreeSet<_>>(),
        "rankingRules": settings.ranking_rules,
        "stopWords": [],
        "nonSeparatorTokens": [],
        "separatorTokens": [],
        "dictionary": [],
        "synonyms": {},
        "distinctAttribute": null,
        "proximityPrecision": "byWord",
        "typoTolerance": {
            "enabled": settings.typo_tolerance,
            "minWordSizeForTypos": {"oneTypo": 5, "twoTypos": 9},
            "disableOnWords": [],
            "disableOnAttributes": [],
        },
        "faceting": {"maxValuesPerFacet": 100, "sortFacetValuesBy": {"*": "alpha"}},
        "pagination": {"maxTotalHits": settings.max_total_hits},
        "searchCutoffMs": null,
        "facetSearch": true,
        "prefixSearch": "indexingTime",
    });
    if let Some(view) = view.as_object_mut() {
        for (k, v) in &settings.other {
            view.insert(k.clone(), v.clone());
        }
    }
    view
}

/// Keeps only `fields` (top-level names; `*` is all) of a document.
fn project(doc: &Value, fields: Option<&[String]>) -> Value {
    match (fields, doc.as_object()) {
        (Some(fields), Some(map)) if !fields.iter().any(|f| f == "*") => {
            Value::Object(map.iter().filter(|(k, _)| fields.contains(k)).map(|(k, v)| (k.clone(), v.clone())).collect())
        }
        _ => doc.clone(),
    }
}

// ---------------------------------------------------------------------------------------------- requests

/// The JSON body of a request, with Meilisearch's content-type and payload errors.
fn json_body(req: &HttpRequest, body: &[u8], malformed_code: &str) -> Result<Value, HttpResponse> {
    let content_type = req.headers().get("content-type").and_then(|v| v.to_str().ok());
    match content_type {
        None => {
            return Err(error_response(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "missing_content_type",
                "invalid_request",
                "A Content-Type header is missing. Accepted values for the Content-Type header are: `application/json`",
            ));
        }
        Some(ct) if !ct.trim_start().to_ascii_lowercase().starts_with("application/json") => {
            return Err(error_response(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid_content_type",
                "invalid_request",
                &format!(
                    "The Content-Type `{ct}` is invalid. Accepted values for the Content-Type header are: `application/json`"
                ),
            ));
        }
        Some(_) => {}
    }
    serde_json::from_slice(body)
        .map_err(|e| bad_request(malformed_code, &format!("The json payload provided is malformed. `{e}`.")))
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    error_response(
        StatusCode::NOT_FOUND,
        "not_found",
        "invalid_request",
        &format!("The Meilisearch contract mock has no route {} {}.", req.method(), req.path()),
    )
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "available"}))
}

async fn version(req: HttpRequest, mock: web::Data<Mock>) -> HttpResponse {
    if let Some(denied) = mock.deny(&req, "version", &[]) {
        return denied;
    }
    HttpResponse::Ok().json(json!({"commitSha": "contract-mock", "commitDate": "unknown", "pkgVersion": "1.50.0"}))
}

async fn get_task(req: HttpRequest, mock: web::Data<Mock>, path: web::Path<String>) -> HttpResponse {
    if let Some(denied) = mock.deny(&req, "tasks.get", &[]) {
        return denied;
    }
    let uid = match parse_uid::<usize>(&path.into_inner(), "task") {
        Ok(uid) => uid,
        Err(refused) => return refused,
    };
    let state = mock.lock();
    match state.tasks.get(uid) {
        Some(task) => HttpResponse::Ok().json(task_view(task)),
        None => error_response(
            StatusCode::NOT_FOUND,
            "task_not_found",
            "invalid_request",
            &format!("Task `{uid}` not found."),
        ),
    }
}

/// `GET /batches/{uid}`: the batch a task was processed in (here: named after its first task), with the
/// `progress` of one still processing (a held settings update: the share of its hold that has passed).
async fn get_batch(req: HttpRequest, mock: web::Data<Mock>, path: web::Path<String>) -> HttpResponse {
    if let Some(denied) = mock.deny(&req, "tasks.get", &[]) {
        return denied;
    }
    let uid = match parse_uid::<u32>(&path.into_inner(), "batch") {
        Ok(uid) => uid,
        Err(refused) => return refused,
    };
    let state = mock.lock();
    let tasks: Vec<&TaskRecord> = state.tasks.iter().filter(|t| t.batch_uid == Some(uid)).collect();
    let Some(first) = tasks.first() else {
        return error_response(
            StatusCode::NOT_FOUND,
            "batch_not_found",
            "invalid_request",
            &format!("Batch `{uid}` not found."),
        );
    };
    let progress = first.hold_until.filter(|_| first.status == "processing").map(|(from, until)| {
        let whole = until.saturating_duration_since(from).as_secs_f64().max(f64::EPSILON);
        let share = (from.elapsed().as_secs_f64() / whole).min(1.0);
        let total = 1000;
        let finished = (share * f64::from(total)) as u32;
        json!({
            "steps": [
                {"currentStep": "processing tasks", "finished": 0, "total": 2},
                {"currentStep": "indexing", "finished": 2, "total": 3},
                {"currentStep": "reindexing documents", "finished": finished, "total": total},
            ],
            "percentage": (share * 100.0 * 10.0).round() / 10.0,
        })
    });
    let mut statuses: BTreeMap<&str, usize> = BTreeMap::new();
    let mut types: BTreeMap<&str, usize> = BTreeMap::new();
    for task in &tasks {
        *statuses.entry(task.status).or_default() += 1;
        *types.entry(task.kind).or_default() += 1;
    }
    HttpResponse::Ok().json(json!({
        "uid": uid,
        "progress": progress,
        "details": {},
        "stats": {"totalNbTasks": tasks.len(), "status": statuses, "types": types, "indexUids": {}},
        "duration": first.duration,
        "startedAt": first.started_at,
        "finishedAt": first.finished_at,
    }))
}

async fn list_tasks(req: HttpRequest, mock: web::Data<Mock>) -> HttpResponse {
    if let Some(denied) = mock.deny(&req, "tasks.get", &[]) {
        return denied;
    }
    let query = web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .unwrap_or_default();
    // The filters `statuses`, `types` and `indexUids`: comma-separated, any of them matches.
    let matches = |name: &str, value: Option<&str>| {
        query.get(name).is_none_or(|list| list.split(',').any(|v| v == "*" || Some(v.trim()) == value))
    };
    let state = mock.lock();
    let results: Vec<Value> = state
        .tasks
        .iter()
        .rev()
        .filter(|t| {
            matches("statuses", Some(t.status))
                && matches("types", Some(t.kind))
                && matches("indexUids", t.index_uid.as_deref())
        })
        .map(task_view)
        .collect();
    let total = results.len();
    HttpResponse::Ok().json(json!({"results": results, "total": total, "limit": total.max(20), "from": state.tasks.len().checked_sub(1), "next": null}))
}

async fn list_indexes(req: HttpRequest, mock: web::Data<Mock>) -> HttpResponse {
    if let Some(denied) = mock.deny(&req, "indexes.get", &[]) {
        return denied;
    }
    let state = mock.lock();
    let results: Vec<Value> = state.indexes.iter().map(|(uid, index)| index_view(uid, index)).collect();
    let total = results.len();
    HttpResponse::Ok().json(json!({"results": results, "offset": 0, "limit": total.max(20), "total": total}))
}

fn valid_index_uid(uid: &str) -> bool {
    !uid.is_empty() && uid.len() <= 400 && uid.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn invalid_index_uid(uid: &str) -> HttpResponse {
    bad_request(
        "invalid_index_uid",
        &format!(
            "`{uid}` is not a valid index uid. Index uid can be an integer or a string containing only alphanumeric characters, hyphens (-) and underscores (_), and can not be more than 512 bytes."
        ),
    )
}

async fn create_index(req: HttpRequest, mock: web::Data<Mock>, body: web::Bytes) -> HttpResponse {
    // The key's action first (401/403 before any body error); its indexes once the body names them.
    if let Some(denied) = mock.deny(&req, "indexes.create", &[]) {
        return denied;
    }
    let body = match json_body(&req, &body, "bad_request") {
        Ok(body) => body,
        Err(response) => return response,
    };
    let Some(uid) = body.get("uid").and_then(Value::as_str).map(str::to_owned) else {
        return bad_request("missing_index_uid", "Missing field `uid`");
    };
    if let Some(denied) = mock.deny(&req, "indexes.create", &[&uid]) {
        return denied;
    }
    if !valid_index_uid(&uid) {
        return invalid_index_uid(&uid);
    }
    let primary_key = match body.get("primaryKey") {
        None | Some(Value::Null) => None,
        Some(Value::String(key)) => Some(key.clone()),
        Some(_) => {
            return bad_request("invalid_index_primary_key", "Invalid value type at `.primaryKey`: expected a string");
        }
    };
    mock.enqueue(Some(&uid), "indexCreation", json!({"primaryKey": primary_key}), Op::CreateIndex { primary_key })
}

async fn get_index(req: HttpRequest, mock: web::Data<Mock>, path: web::Path<String>) -> HttpResponse {
    let uid = path.into_inner();
    if let Some(denied) = mock.deny(&req, "indexes.get", &[&uid]) {
        return denied;
    }
    let state = mock.lock();
    match state.indexes.get(&uid) {
        Some(index) => HttpResponse::Ok().json(index_view(&uid, index)),
        None => index_not_found(&uid),
    }
}

async fn delete_index(req: HttpRequest, mock: web::Data<Mock>, path: web::Path<String>) -> HttpResponse {
    let uid = path.into_inner();
    if let Some(denied) = mock.deny(&req, "indexes.delete", &[&uid]) {
        return denied;
    }
    mock.enqueue(Some(&uid), "indexDeletion", json!({"deletedDocuments": null}), Op::DeleteIndex)
}

async fn swap_indexes(req: HttpRequest, mock: web::Data<Mock>, body: web::Bytes) -> HttpResponse {
    // The key's action first (401/403 before any body error); its indexes once the body names them.
    if let Some(denied) = mock.deny(&req, "indexes.swap", &[]) {
        return denied;
    }
    let body = match json_body(&req, &body, "bad_request") {
        Ok(body) => body,
        Err(response) => return response,
    };
    let Some(entries) = body.as_array() else {
        return bad_request("bad_request", "Invalid value type: expected an array");
    };
    let mut pairs = Vec::new();
    for entry in entries {
        let names: Vec<&str> = entry
            .get("indexes")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let [a, b] = names.as_slice() else {
            return bad_request(
                "invalid_swap_indexes",
                "Two indexes must be given for each swap. The list `[...]` contains 0 indexes.",
            );
        };
        let rename = entry.get("rename").and_then(Value::as_bool).unwrap_or(false);
        pairs.push(((*a).to_owned(), (*b).to_owned(), rename));
    }
    let names: Vec<&str> = pairs.iter().flat_map(|(a, b, _)| [a.as_str(), b.as_str()]).collect();
    if let Some(denied) = mock.deny(&req, "indexes.swap", &names) {
        return denied;
    }
    let swaps: Vec<Value> = pairs.iter().map(|(a, b, rename)| json!({"indexes": [a, b], "rename": rename})).collect();
    mock.enqueue(None, "indexSwap", json!({"swaps": swaps}), Op::Swap(pairs))
}

async fn get_settings(req: HttpRequest, mock: web::Data<Mock>, path: web::Path<String>) -> HttpResponse {
    let uid = path.into_inner();
    if let Some(denied) = mock.deny(&req, "settings.get", &[&uid]) {
        return denied;
    }
    let state = mock.lock();
    match state.indexes.get(&uid) {
        Some(index) => HttpResponse::Ok().json(settings_view(&index.settings)),
        None => index_not_found(&uid),
    }
}

const SETTINGS_FIELDS: &[&str] = &[
    "displayedAttributes",
    "searchableAttributes",
    "filterableAttributes",
    "sortableAttributes",
    "rankingRules",
    "stopWords",
    "nonSeparatorTokens",
    "separatorTokens",
    "dictionary",
    "synonyms",
    "distinctAttribute",
    "proximityPrecision",
    "typoTolerance",
    "faceting",
    "pagination",
    "embedders",
    "searchCutoffMs",
    "localizedAttributes",
    "facetSearch",
    "prefixSearch",
];

const RANKING_RULES: &[&str] =
    &["words", "typo", "proximity", "attribute", "attributeRank", "wordPosition", "sort", "exactness"];

/// Checks a settings patch the way Meilisearch does before enqueueing it (400 on a bad one).
fn validate_settings(patch: &Map<String, Value>) -> Result<(), HttpResponse> {
    for (field, value) in patch {
        if !SETTINGS_FIELDS.contains(&field.as_str()) {
            return Err(bad_request(
                "bad_request",
                &format!("Unknown field `{field}`: expected one of {SETTINGS_FIELDS:?}"),
            ));
        }
        let strings_or_null = |code: &str| match value {
            Value::Null => Ok(()),
            Value::Array(items) if items.iter().all(Value::is_string) => Ok(()),
            _ => Err(bad_request(code, &format!("Invalid value type at `.{field}`: expected an array of strings"))),
        };
        match field.as_str() {
            "searchableAttributes" => strings_or_null("invalid_settings_searchable_attributes")?,
            "sortableAttributes" => strings_or_null("invalid_settings_sortable_attributes")?,
            "filterableAttributes" => match value {
                Value::Null => {}
                Value::Array(items) if items.iter().all(|i| i.is_string() || i.get("attributePatterns").is_some()) => {}
                _ => {
                    return Err(bad_request(
                        "invalid_settings_filterable_attributes",
                        "Invalid value type at `.filterableAttributes`",
                    ));
                }
            },
            "rankingRules" => {
                strings_or_null("invalid_settings_ranking_rules")?;
                for rule in value.as_array().into_iter().flatten().filter_map(Value::as_str) {
                    let custom = rule
                        .rsplit_once(':')
                        .is_some_and(|(attr, dir)| !attr.is_empty() && matches!(dir, "asc" | "desc"));
                    if !custom && !RANKING_RULES.contains(&rule) {
                        return Err(bad_request(
                            "invalid_settings_ranking_rules",
                            &format!(
                                "Invalid value at `.rankingRules[..]`: `{rule}` ranking rule is invalid. Valid ranking rules are {RANKING_RULES:?} or `attribute:asc|desc`."
                            ),
                        ));
                    }
                }
            }
            "pagination" => match value {
                Value::Null => {}
                Value::Object(p) if p.get("maxTotalHits").is_none_or(|m| m.is_u64() || m.is_null()) => {}
                _ => {
                    return Err(bad_request(
                        "invalid_settings_pagination",
                        "Invalid value type at `.pagination.maxTotalHits`: expected a positive integer",
                    ));
                }
            },
            "typoTolerance" => match value {
                Value::Null => {}
                Value::Object(t) if t.get("enabled").is_none_or(|e| e.is_boolean() || e.is_null()) => {}
                _ => {
                    return Err(bad_request(
                        "invalid_settings_typo_tolerance",
                        "Invalid value type at `.typoTolerance.enabled`: expected a boolean",
                    ));
                }
            },
            _ => {}
        }
    }
    Ok(())
}

/// Applies a validated patch (`null` resets a setting to its default).
fn apply_settings(settings: &mut IndexSettings, patch: &Map<String, Value>) {
    let defaults = IndexSettings::default();
    let strings = |value: &Value| -> Vec<String> {
        value.as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_owned).collect()
    };
    for (field, value) in patch {
        match field.as_str() {
            "searchableAttributes" => {
                settings.searchable = if value.is_null() { defaults.searchable.clone() } else { strings(value) };
            }
            "sortableAttributes" => settings.sortable = strings(value),
            "filterableAttributes" => {
                settings.filterable = value
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|item| match item {
                        Value::String(s) => vec![s.clone()],
                        other => strings(other.get("attributePatterns").unwrap_or(&Value::Null)),
                    })
                    .collect();
            }
            "rankingRules" => {
                settings.ranking_rules = if value.is_null() { defaults.ranking_rules.clone() } else { strings(value) };
            }
            "pagination" => {
                settings.max_total_hits = value
                    .get("maxTotalHits")
                    .and_then(Value::as_u64)
                    .map_or(defaults.max_total_hits, |n| usize::try_from(n).unwrap_or(usize::MAX));
            }
            "typoTolerance" => {
                settings.typo_tolerance =
                    value.get("enabled").and_then(Value::as_bool).unwrap_or(defaults.typo_tolerance);
            }
            other => {
                settings.other.insert(other.to_owned(), value.clone());
            }
        }
    }
}

async fn update_settings(
    req: HttpRequest,
    mock: web::Data<Mock>,
    path: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let uid = path.into_inner();
    if let Some(denied) = mock.deny(&req, "settings.update", &[&uid]) {
        return denied;
    }
    if !valid_index_uid(&uid) {
        return invalid_index_uid(&uid);
    }
    let patch = match json_body(&req, &body, "bad_request") {
        Ok(Value::Object(patch)) => patch,
        Ok(_) => return bad_request("bad_request", "Invalid value type: expected an object"),
        Err(response) => return response,
    };
    if let Err(response) = validate_settings(&patch) {
        return response;
    }
    mock.enqueue(Some(&uid), "settingsUpdate", Value::Object(patch.clone()), Op::UpdateSettings(patch))
}

async fn write_documents(
    req: HttpRequest,
    mock: web::Data<Mock>,
    uid: String,
    body: web::Bytes,
    merge: bool,
) -> HttpResponse {
    if let Some(denied) = mock.deny(&req, "documents.add", &[&uid]) {
        return denied;
    }
    if !valid_index_uid(&uid) {
        return invalid_index_uid(&uid);
    }
    let limit = mock.lock().payload_limit;
    if let Some(limit) = limit.filter(|limit| body.len() > *limit) {
        return error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "invalid_request",
            &format!("The provided payload reached the size limit. The maximum accepted payload size is {limit} B."),
        );
    }
    let create_index = mock.may_create(&req, &uid);
    let docs = match json_body(&req, &body, "malformed_payload") {
        Ok(Value::Array(docs)) => docs,
        Ok(doc @ Value::Object(_)) => vec![doc],
        Ok(_) => {
            return bad_request(
                "malformed_payload",
                "The json payload provided is malformed. `expected a JSON object or an array of objects`.",
            );
        }
        Err(response) => return response,
    };
    let query = web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .unwrap_or_default();
    let primary_key = query.get("primaryKey").cloned();
    let details = json!({"receivedDocuments": docs.len(), "indexedDocuments": null});
    mock.enqueue(
        Some(&uid),
        "documentAdditionOrUpdate",
        details,
        Op::AddDocuments { docs, primary_key, merge, create_index },
    )
}

async fn replace_documents(
    req: HttpRequest,
    mock: web::Data<Mock>,
    path: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    write_documents(req, mock, path.into_inner(), body, false).await
}

async fn update_documents(
    req: HttpRequest,
    mock: web::Data<Mock>,
    path: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    write_documents(req, mock, path.into_inner(), body, true).await
}

async fn clear_documents(req: HttpRequest, mock: web::Data<Mock>, path: web::Path<String>) -> HttpResponse {
    let uid = path.into_inner();
    if let Some(denied) = mock.deny(&req, "documents.delete", &[&uid]) {
        return denied;
    }
    mock.enqueue(Some(&uid), "documentDeletion", json!({"deletedDocuments": null}), Op::ClearDocuments)
}

async fn delete_documents(
    req: HttpRequest,
    mock: web::Data<Mock>,
    path: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let uid = path.into_inner();
    if let Some(denied) = mock.deny(&req, "documents.delete", &[&uid]) {
        return denied;
    }
    let ids: Vec<String> = match json_body(&req, &body, "bad_request") {
        Ok(Value::Array(ids)) => ids
            .into_iter()
            .map(|id| match id {
                Value::String(s) => s,
                other => other.to_string(),
            })
            .collect(),
        Ok(_) => return bad_request("bad_request", "Invalid value type: expected an array of document ids"),
        Err(response) => return response,
    };
    let details = json!({"providedIds": ids.len(), "deletedDocuments": null, "originalFilter": null});
    mock.enqueue(Some(&uid), "documentDeletion", details, Op::DeleteDocuments(ids))
}

async fn delete_document(req: HttpRequest, mock: web::Data<Mock>, path: web::Path<(String, String)>) -> HttpResponse {
    let (uid, id) = path.into_inner();
    if let Some(denied) = mock.deny(&req, "documents.delete", &[&uid]) {
        return denied;
    }
    let details = json!({"providedIds": 1, "deletedDocuments": null, "originalFilter": null});
    mock.enqueue(Some(&uid), "documentDeletion", details, Op::DeleteDocuments(vec![id]))
}

async fn get_document(req: HttpRequest, mock: web::Data<Mock>, path: web::Path<(String, String)>) -> HttpResponse {
    let (uid, id) = path.into_inner();
    if let Some(denied) = mock.deny(&req, "documents.get", &[&uid]) {
        return denied;
    }
    let query = web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .unwrap_or_default();
    let fields: Option<Vec<String>> = query.get("fields").map(|f| f.split(',').map(|s| s.trim().to_owned()).collect());
    let state = mock.lock();
    let Some(index) = state.indexes.get(&uid) else {
        return index_not_found(&uid);
    };
    match index.docs.get(&id) {
        Some((_, doc)) => HttpResponse::Ok().json(project(doc, fields.as_deref())),
        None => error_response(
            StatusCode::NOT_FOUND,
            "document_not_found",
            "invalid_request",
            &format!("Document `{id}` not found."),
        ),
    }
}

/// `POST .../documents/fetch` and `GET .../documents`: `{results, offset, limit, total}`.
fn browse(
    index: &IndexData,
    ids: Option<&[String]>,
    filter: Option<&Value>,
    fields: Option<&[String]>,
    offset: usize,
    limit: usize,
) -> Result<Value, HttpResponse> {
    let filter = match filter {
        Some(filter) => compile_filter(filter, &index.settings.filterable)
            .map_err(|message| bad_request("invalid_document_filter", &message))?,
        None => None,
    };
    let mut docs: Vec<&(u64, Value)> = match ids {
        Some(ids) => ids.iter().filter_map(|id| index.docs.get(id)).collect(),
        None => index.docs.values().collect(),
    };
    docs.sort_by_key(|(internal, _)| *internal);
    docs.dedup_by_key(|(internal, _)| *internal);
    let matching: Vec<&Value> =
        docs.into_iter().map(|(_, doc)| doc).filter(|doc| filter.as_ref().is_none_or(|f| f.matches(doc))).collect();
    let total = matching.len();
    let results: Vec<Value> = matching.into_iter().skip(offset).take(limit).map(|doc| project(doc, fields)).collect();
    Ok(json!({"results": results, "offset": offset, "limit": limit, "total": total}))
}

fn usize_field(body: &Value, field: &str, default: usize) -> Result<usize, HttpResponse> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v.as_u64().map(|n| usize::try_from(n).unwrap_or(usize::MAX)).ok_or_else(|| {
            bad_request(
                &format!("invalid_document_{}", field.to_lowercase()),
                &format!("Invalid value type at `.{field}`: expected a positive integer"),
            )
        }),
    }
}

fn string_list(value: Option<&Value>) -> Option<Vec<String>> {
    value.and_then(Value::as_array).map(|a| {
        a.iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect()
    })
}

async fn fetch_documents(
    req: HttpRequest,
    mock: web::Data<Mock>,
    path: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let uid = path.into_inner();
    if let Some(denied) = mock.deny(&req, "documents.get", &[&uid]) {
        return denied;
    }
    let body = match json_body(&req, &body, "bad_request") {
        Ok(body @ Value::Object(_)) => body,
        Ok(_) => return bad_request("bad_request", "Invalid value type: expected an object"),
        Err(response) => return response,
    };
    const KNOWN: &[&str] = &["offset", "limit", "fields", "filter", "ids", "retrieveVectors", "sort"];
    if let Some(unknown) = body.as_object().and_then(|b| b.keys().find(|k| !KNOWN.contains(&k.as_str()))) {
        return bad_request("bad_request", &format!("Unknown field `{unknown}`: expected one of {KNOWN:?}"));
    }
    if body.get("sort").is_some_and(|s| !s.is_null()) {
        return not_implemented("sorted document fetches");
    }
    let (offset, limit) = match (usize_field(&body, "offset", 0), usize_field(&body, "limit", 20)) {
        (Ok(offset), Ok(limit)) => (offset, limit),
        (Err(response), _) | (_, Err(response)) => return response,
    };
    let ids = string_list(body.get("ids"));
    let fields = string_list(body.get("fields"));
    let state = mock.lock();
    let Some(index) = state.indexes.get(&uid) else {
        return index_not_found(&uid);
    };
    let filter = body.get("filter").filter(|f| !f.is_null());
    match browse(index, ids.as_deref(), filter, fields.as_deref(), offset, limit) {
        Ok(page) => HttpResponse::Ok().json(page),
        Err(response) => response,
    }
}

async fn list_documents(req: HttpRequest, mock: web::Data<Mock>, path: web::Path<String>) -> HttpResponse {
    let uid = path.into_inner();
    if let Some(denied) = mock.deny(&req, "documents.get", &[&uid]) {
        return denied;
    }
    let query = web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .unwrap_or_default();
    let number = |name: &str, default: usize| query.get(name).map_or(Some(default), |v| v.parse().ok());
    let (Some(offset), Some(limit)) = (number("offset", 0), number("limit", 20)) else {
        return bad_request(
            "invalid_document_offset",
            "Invalid value in parameter `offset` or `limit`: expected a positive integer",
        );
    };
    let list = |name: &str| query.get(name).map(|v| v.split(',').map(|s| s.trim().to_owned()).collect::<Vec<_>>());
    let (ids, fields) = (list("ids"), list("fields"));
    let filter = query.get("filter").map(|f| Value::String(f.clone()));
    let state = mock.lock();
    let Some(index) = state.indexes.get(&uid) else {
        return index_not_found(&uid);
    };
    match browse(index, ids.as_deref(), filter.as_ref(), fields.as_deref(), offset, limit) {
        Ok(page) => HttpResponse::Ok().json(page),
        Err(response) => response,
    }
}

// ------------------------------------------------------------------------------------------------ search

/// Search parameters the mock evaluates.
const SEARCH_IMPLEMENTED: &[&str] =
    &["q", "offset", "limit", "filter", "sort", "matchingStrategy", "attributesToRetrieve"];

/// Real search parameters the mock does not evaluate: refused when given a value.
const SEARCH_KNOWN: &[&str] = &[
    "page",
    "hitsPerPage",
    "facets",
    "attributesToSearchOn",
    "attributesToCrop",
    "cropLength",
    "cropMarker",
    "attributesToHighlight",
    "highlightPreTag",
    "highlightPostTag",
    "showMatchesPosition",
    "showRankingScore",
    "showRankingScoreDetails",
    "showPerformanceDetails",
    "distinct",
    "rankingScoreThreshold",
    "locales",
    "hybrid",
    "vector",
    "media",
    "retrieveVectors",
    "exhaustiveFacetCount",
];

/// Meilisearch counts only the first ten words of a query.
const MAX_QUERY_WORDS: usize = 10;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Strategy {
    All,
    Last,
    Frequency,
}

/// Words as Meilisearch's tokenizer gives them for our data: runs of letters and digits, lowercased.
fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase)
}

/// The words of a document's searchable attributes.
fn document_words(doc: &Value, searchable: &[String]) -> HashSet<String> {
    let mut leaves = Vec::new();
    for attribute in searchable {
        if attribute == "*" {
            collect_leaves(doc, &mut leaves);
        } else {
            values_at(doc, attribute, &mut leaves);
        }
    }
    let mut out = HashSet::new();
    for leaf in leaves {
        match leaf {
            Value::String(s) => out.extend(words(s)),
            Value::Number(n) => out.extend(words(&n.to_string())),
            _ => {}
        }
    }
    out
}

fn collect_leaves<'a>(value: &'a Value, out: &mut Vec<&'a Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| collect_leaves(v, out)),
        Value::Object(map) => map.values().for_each(|v| collect_leaves(v, out)),
        leaf => out.push(leaf),
    }
}

/// Every value at a dotted path, looking through arrays at every level (as Meilisearch flattens documents).
fn values_at<'a>(value: &'a Value, path: &str, out: &mut Vec<&'a Value>) {
    fn walk<'a>(value: &'a Value, parts: &[&str], out: &mut Vec<&'a Value>) {
        match (value, parts.split_first()) {
            (Value::Array(items), _) => items.iter().for_each(|item| walk(item, parts, out)),
            (_, None) => out.push(value),
            (Value::Object(map), Some((first, rest))) => {
                if let Some(child) = map.get(*first) {
                    walk(child, rest, out);
                }
            }
            _ => {}
        }
    }
    let parts: Vec<&str> = path.split('.').collect();
    walk(value, &parts, out);
}

/// Does the document hold the query's words (`terms`; the last one as a prefix when `prefix_last`)?
fn text_matches(doc_words: &HashSet<String>, terms: &[String], prefix_last: bool, strategy: Strategy) -> bool {
    let matches = |i: usize, n: usize| {
        let term = &terms[i];
        if prefix_last && i + 1 == terms.len() && n == terms.len() {
            doc_words.iter().any(|w| w.starts_with(term.as_str()))
        } else {
            doc_words.contains(term)
        }
    };
    match strategy {
        Strategy::All => (0..terms.len()).all(|i| matches(i, terms.len())),
        // `last` drops words from the end until documents match: a document matching the first k words is
        // a hit for some k ≥ 1.
        Strategy::Last => (1..=terms.len()).any(|k| (0..k).all(|i| matches(i, k))),
        Strategy::Frequency => (0..terms.len()).any(|i| matches(i, terms.len())),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum SortKey {
    Number(f64),
    Text(String),
    Missing,
}

fn sort_key(doc: &Value, attribute: &str) -> SortKey {
    let mut found = Vec::new();
    values_at(doc, attribute, &mut found);
    match found.first() {
        Some(Value::Number(n)) => n.as_f64().map_or(SortKey::Missing, SortKey::Number),
        Some(Value::String(s)) => SortKey::Text(normalize(s)),
        Some(Value::Bool(b)) => SortKey::Text(b.to_string()),
        _ => SortKey::Missing,
    }
}

/// Numbers before strings, missing values last whatever the direction.
fn compare_keys(a: &SortKey, b: &SortKey, descending: bool) -> Ordering {
    let ordered = match (a, b) {
        (SortKey::Missing, SortKey::Missing) => return Ordering::Equal,
        (SortKey::Missing, _) => return Ordering::Greater,
        (_, SortKey::Missing) => return Ordering::Less,
        (SortKey::Number(x), SortKey::Number(y)) => x.partial_cmp(y).unwrap_or(Ordering::Equal),
        (SortKey::Text(x), SortKey::Text(y)) => x.cmp(y),
        (SortKey::Number(_), SortKey::Text(_)) => Ordering::Less,
        (SortKey::Text(_), SortKey::Number(_)) => Ordering::Greater,
    };
    if descending { ordered.reverse() } else { ordered }
}

fn covers(patterns: &[String], attribute: &str) -> bool {
    patterns.iter().any(|p| {
        p == "*"
            || p == attribute
            || attribute.strip_prefix(p.as_str()).is_some_and(|rest| rest.starts_with('.'))
            || p.strip_suffix('*').is_some_and(|prefix| attribute.starts_with(prefix))
    })
}

fn run_search(index: &IndexData, body: &Map<String, Value>) -> Result<Value, HttpResponse> {
    for (key, value) in body {
        if SEARCH_IMPLEMENTED.contains(&key.as_str()) {
            continue;
        }
        if !SEARCH_KNOWN.contains(&key.as_str()) {
            return Err(bad_request(
                "bad_request",
                &format!("Unknown field `{key}`: expected one of {SEARCH_IMPLEMENTED:?} or {SEARCH_KNOWN:?}"),
            ));
        }
        if !value.is_null() {
            return Err(not_implemented(&format!("the search parameter `{key}`")));
        }
    }
    let query = match body.get("q") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(q)) => q.clone(),
        Some(_) => return Err(bad_request("invalid_search_q", "Invalid value type at `.q`: expected a string")),
    };
    let number = |field: &str, code: &str, default: usize| match body.get(field) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v.as_u64().map(|n| usize::try_from(n).unwrap_or(usize::MAX)).ok_or_else(|| {
            bad_request(code, &format!("Invalid value type at `.{field}`: expected a positive integer"))
        }),
    };
    let offset = number("offset", "invalid_search_offset", 0)?;
    let limit = number("limit", "invalid_search_limit", 20)?;
    let strategy = match body.get("matchingStrategy").and_then(Value::as_str) {
        None => Strategy::Last,
        Some("last") => Strategy::Last,
        Some("all") => Strategy::All,
        Some("frequency") => Strategy::Frequency,
        Some(other) => {
            return Err(bad_request(
                "invalid_search_matching_strategy",
                &format!("Unknown value `{other}` at `.matchingStrategy`: expected one of `last`, `all`, `frequency`"),
            ));
        }
    };
    let filter = match body.get("filter").filter(|f| !f.is_null()) {
        Some(filter) => {
            compile_filter(filter, &index.settings.filterable).map_err(|m| bad_request("invalid_search_filter", &m))?
        }
        None => None,
    };
    let mut sort_rules = Vec::new();
    if let Some(sort) = body.get("sort").filter(|s| !s.is_null()) {
        let Some(rules) = sort.as_array() else {
            return Err(bad_request("invalid_search_sort", "Invalid value type at `.sort`: expected an array"));
        };
        for rule in rules {
            let text = rule.as_str().unwrap_or_default();
            let Some((attribute, direction @ ("asc" | "desc"))) = text.rsplit_once(':') else {
                return Err(bad_request(
                    "invalid_search_sort",
                    &format!(
                        "Invalid syntax for the sort parameter: expected expression ending by `:asc` or `:desc`, found `{text}`."
                    ),
                ));
            };
            if !covers(&index.settings.sortable, attribute) {
                return Err(bad_request(
                    "invalid_search_sort",
                    &format!(
                        "Attribute `{attribute}` is not sortable. Available sortable attributes are: `{}`.",
                        index.settings.sortable.join(", ")
                    ),
                ));
            }
            sort_rules.push((attribute.to_owned(), direction == "desc"));
        }
    }
    let fields = string_list(body.get("attributesToRetrieve"));

    let mut terms: Vec<String> = words(&query).collect();
    terms.truncate(MAX_QUERY_WORDS);
    if !terms.is_empty()
        && !sort_rules.is_empty()
        && index.settings.ranking_rules.first().map(String::as_str) != Some("sort")
    {
        return Err(not_implemented("relevance ranking before `sort` (make `sort` the first ranking rule)"));
    }
    // A query that ends with a separator asks for whole words only.
    let prefix_last = query.chars().last().is_some_and(char::is_alphanumeric);

    let mut candidates: Vec<&(u64, Value)> = index.docs.values().collect();
    candidates.sort_by_key(|(internal, _)| *internal);
    let mut hits: Vec<&Value> = candidates
        .into_iter()
        .map(|(_, doc)| doc)
        .filter(|doc| filter.as_ref().is_none_or(|f| f.matches(doc)))
        .filter(|doc| {
            terms.is_empty()
                || text_matches(&document_words(doc, &index.settings.searchable), &terms, prefix_last, strategy)
        })
        .collect();
    if !sort_rules.is_empty() {
        // A stable sort: equal keys keep insertion order.
        hits.sort_by(|a, b| {
            sort_rules
                .iter()
                .map(|(attribute, descending)| {
                    compare_keys(&sort_key(a, attribute), &sort_key(b, attribute), *descending)
                })
                .find(|o| o.is_ne())
                .unwrap_or(Ordering::Equal)
        });
    }
    let reachable = hits.len().min(index.settings.max_total_hits);
    let start = offset.min(reachable);
    let end = offset.saturating_add(limit).min(reachable);
    let page: Vec<Value> = hits[start..end].iter().map(|doc| project(doc, fields.as_deref())).collect();
    Ok(json!({
        "hits": page,
        "query": query,
        "processingTimeMs": 0,
        "limit": limit,
        "offset": offset,
        "estimatedTotalHits": reachable,
    }))
}

async fn search(req: HttpRequest, mock: web::Data<Mock>, path: web::Path<String>, body: web::Bytes) -> HttpResponse {
    let uid = path.into_inner();
    if let Some(denied) = mock.deny(&req, "search", &[&uid]) {
        return denied;
    }
    let body = match json_body(&req, &body, "bad_request") {
        Ok(Value::Object(body)) => body,
        Ok(_) => return bad_request("bad_request", "Invalid value type: expected an object"),
        Err(response) => return response,
    };
    let state = mock.lock();
    let Some(index) = state.indexes.get(&uid) else {
        return index_not_found(&uid);
    };
    match run_search(index, &body) {
        Ok(answer) => HttpResponse::Ok().json(answer),
        Err(response) => response,
    }
}

// ------------------------------------------------------------------------------------------------ filter

/// A parsed filter expression.
#[derive(Debug, Clone, PartialEq)]
enum Filter {
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
    Compare { attribute: String, op: &'static str, value: String },
    In { attribute: String, values: Vec<String> },
    Range { attribute: String, from: String, to: String },
    Exists(String),
}

/// Meilisearch's facet normalization (the real one also applies Unicode compatibility decomposition).
fn normalize(s: &str) -> String {
    s.trim().to_lowercase()
}

fn value_equals(value: &Value, wanted: &str) -> bool {
    match value {
        Value::String(s) => normalize(s) == normalize(wanted),
        Value::Number(n) => wanted.trim().parse::<f64>().ok().is_some_and(|w| n.as_f64() == Some(w)),
        Value::Bool(b) => normalize(wanted) == b.to_string(),
        _ => false,
    }
}

fn value_compare(value: &Value, bound: &str) -> Option<Ordering> {
    match (value, bound.trim().parse::<f64>()) {
        (Value::Number(n), Ok(bound)) => n.as_f64()?.partial_cmp(&bound),
        (Value::String(s), Err(_)) => Some(normalize(s).cmp(&normalize(bound))),
        _ => None,
    }
}

impl Filter {
    fn matches(&self, doc: &Value) -> bool {
        let values = |attribute: &str| {
            let mut out = Vec::new();
            values_at(doc, attribute, &mut out);
            out
        };
        match self {
            Filter::And(items) => items.iter().all(|f| f.matches(doc)),
            Filter::Or(items) => items.iter().any(|f| f.matches(doc)),
            Filter::Not(inner) => !inner.matches(doc),
            Filter::Compare { attribute, op, value } => {
                let found = values(attribute);
                match *op {
                    "=" => found.iter().any(|v| value_equals(v, value)),
                    // `!=` also selects documents without the attribute.
                    "!=" => !found.iter().any(|v| value_equals(v, value)),
                    op => found.iter().filter_map(|v| value_compare(v, value)).any(|o| match op {
                        ">" => o.is_gt(),
                        ">=" => o.is_ge(),
                        "<" => o.is_lt(),
                        _ => o.is_le(),
                    }),
                }
            }
            Filter::In { attribute, values: wanted } => {
                values(attribute).iter().any(|v| wanted.iter().any(|w| value_equals(v, w)))
            }
            Filter::Range { attribute, from, to } => values(attribute).iter().any(|v| {
                value_compare(v, from).is_some_and(Ordering::is_ge) && value_compare(v, to).is_some_and(Ordering::is_le)
            }),
            Filter::Exists(attribute) => !values(attribute).is_empty(),
        }
    }

    fn attributes<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Filter::And(items) | Filter::Or(items) => items.iter().for_each(|f| f.attributes(out)),
            Filter::Not(inner) => inner.attributes(out),
            Filter::Compare { attribute, .. }
            | Filter::In { attribute, .. }
            | Filter::Range { attribute, .. }
            | Filter::Exists(attribute) => out.push(attribute),
        }
    }
}

/// A `filter` parameter (a string, or an array of strings and arrays: AND of the outer, OR of the inner),
/// parsed and checked against the filterable attributes. `None` for an empty filter.
fn compile_filter(filter: &Value, filterable: &[String]) -> Result<Option<Filter>, String> {
    let parse_one = |value: &Value| -> Result<Filter, String> {
        match value {
            Value::String(text) => parse_filter(text),
            Value::Array(inner) => inner
                .iter()
                .map(|v| {
                    v.as_str()
                        .ok_or_else(|| "Invalid value type: nested filter arrays must hold strings".to_owned())
                        .and_then(parse_filter)
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Filter::Or),
            _ => Err("Invalid value type: expected a string or an array".to_owned()),
        }
    };
    let parsed = match filter {
        Value::String(text) if text.trim().is_empty() => return Ok(None),
        Value::String(_) => parse_one(filter)?,
        Value::Array(items) => Filter::And(items.iter().map(parse_one).collect::<Result<_, _>>()?),
        _ => return Err("Invalid value type at `.filter`: expected a string or an array".to_owned()),
    };
    let mut used = Vec::new();
    parsed.attributes(&mut used);
    if let Some(attribute) = used.into_iter().find(|a| !covers(filterable, a)) {
        return Err(format!(
            "Attribute `{attribute}` is not filterable. Available filterable attributes are: `{}`.",
            filterable.join(", ")
        ));
    }
    Ok(Some(parsed))
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Open,
    Close,
    OpenBracket,
    CloseBracket,
    Comma,
    Op(&'static str),
    Word(String),
    Quoted(String),
}

const KEYWORDS: &[&str] = &["AND", "OR", "NOT", "IN", "TO", "EXISTS"];

fn lex(input: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = input.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        let next = chars.get(i + 1).copied();
        i += 1;
        match c {
            c if c.is_whitespace() => {}
            '(' => tokens.push(Token::Open),
            ')' => tokens.push(Token::Close),
            '[' => tokens.push(Token::OpenBracket),
            ']' => tokens.push(Token::CloseBracket),
            ',' => tokens.push(Token::Comma),
            '=' => tokens.push(Token::Op("=")),
            '!' if next == Some('=') => {
                tokens.push(Token::Op("!="));
                i += 1;
            }
            '>' | '<' => {
                let op = match (c, next == Some('=')) {
                    ('>', true) => ">=",
                    ('>', false) => ">",
                    ('<', true) => "<=",
                    _ => "<",
                };
                if next == Some('=') {
                    i += 1;
                }
                tokens.push(Token::Op(op));
            }
            '"' | '\'' => {
                let mut text = String::new();
                loop {
                    match chars.get(i).copied() {
                        None => return Err(format!("Expression `{input}` is missing a closing quote `{c}`.")),
                        Some('\\') => match chars.get(i + 1).copied() {
                            Some(escaped) => {
                                text.push(escaped);
                                i += 2;
                            }
                            None => return Err(format!("Expression `{input}` ends with a lone `\\`.")),
                        },
                        Some(q) if q == c => {
                            i += 1;
                            break;
                        }
                        Some(other) => {
                            text.push(other);
                            i += 1;
                        }
                    }
                }
                tokens.push(Token::Quoted(text));
            }
            '!' => return Err(format!("Unexpected `!` in `{input}`.")),
            first => {
                let mut word = String::from(first);
                while let Some(&c) = chars.get(i) {
                    if c.is_whitespace() || "()[],=!<>\"'".contains(c) {
                        break;
                    }
                    word.push(c);
                    i += 1;
                }
                tokens.push(Token::Word(word));
            }
        }
    }
    Ok(tokens)
}

/// Parses the filter grammar: `OR` binds loosest, then `AND`, then `NOT`.
fn parse_filter(input: &str) -> Result<Filter, String> {
    let tokens = lex(input)?;
    if tokens.is_empty() {
        return Ok(Filter::And(Vec::new()));
    }
    let mut parser = Parser { tokens, pos: 0, input };
    let filter = parser.or()?;
    match parser.tokens.get(parser.pos) {
        None => Ok(filter),
        Some(token) => Err(format!("Found unexpected characters at the end of the filter: {token:?} in `{input}`.")),
    }
}

struct Parser<'a> {
    tokens: Vec<Token>,
    pos: usize,
    input: &'a str,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn eat(&mut self, token: &Token) -> bool {
        if self.peek() == Some(token) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// Keywords are written in capitals, as in Meilisearch's filter syntax.
    fn keyword(&mut self, keyword: &str) -> bool {
        if matches!(self.peek(), Some(Token::Word(w)) if w == keyword) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn error(&self, expected: &str) -> String {
        match self.peek() {
            Some(found) => format!("Was expecting {expected} but found {found:?} in `{}`.", self.input),
            None => format!("Was expecting {expected} at the end of `{}`.", self.input),
        }
    }

    fn or(&mut self) -> Result<Filter, String> {
        let mut items = vec![self.and()?];
        while self.keyword("OR") {
            items.push(self.and()?);
        }
        Ok(if items.len() == 1 { items.remove(0) } else { Filter::Or(items) })
    }

    fn and(&mut self) -> Result<Filter, String> {
        let mut items = vec![self.not()?];
        while self.keyword("AND") {
            items.push(self.not()?);
        }
        Ok(if items.len() == 1 { items.remove(0) } else { Filter::And(items) })
    }

    fn not(&mut self) -> Result<Filter, String> {
        if self.keyword("NOT") { Ok(Filter::Not(Box::new(self.not()?))) } else { self.primary() }
    }

    fn primary(&mut self) -> Result<Filter, String> {
        if self.eat(&Token::Open) {
            let inner = self.or()?;
            if !self.eat(&Token::Close) {
                return Err(self.error("a closing `)`"));
            }
            return Ok(inner);
        }
        self.condition()
    }

    /// A word or a quoted string that is not a keyword.
    fn value(&mut self, what: &str) -> Result<String, String> {
        match self.peek() {
            Some(Token::Quoted(text)) => {
                let text = text.clone();
                self.pos += 1;
                Ok(text)
            }
            Some(Token::Word(word)) if !KEYWORDS.contains(&word.as_str()) => {
                let word = word.clone();
                self.pos += 1;
                Ok(word)
            }
            _ => Err(self.error(what)),
        }
    }

    fn condition(&mut self) -> Result<Filter, String> {
        let attribute = self.value("an attribute")?;
        if let Some(Token::Op(op)) = self.peek() {
            let op = *op;
            self.pos += 1;
            let value = self.value("a value")?;
            return Ok(Filter::Compare { attribute, op, value });
        }
        if self.keyword("IN") {
            return Ok(Filter::In { attribute, values: self.list()? });
        }
        if self.keyword("EXISTS") {
            return Ok(Filter::Exists(attribute));
        }
        if self.keyword("NOT") {
            if self.keyword("IN") {
                return Ok(Filter::Not(Box::new(Filter::In { attribute, values: self.list()? })));
            }
            if self.keyword("EXISTS") {
                return Ok(Filter::Not(Box::new(Filter::Exists(attribute))));
            }
            return Err(self.error("`IN` or `EXISTS` after `NOT`"));
        }
        let from = self.value("an operator (`=`, `!=`, `>`, `>=`, `<`, `<=`, `IN`, `TO`, `EXISTS`)")?;
        if !self.keyword("TO") {
            return Err(self.error("`TO`"));
        }
        let to = self.value("a value")?;
        Ok(Filter::Range { attribute, from, to })
    }

    fn list(&mut self) -> Result<Vec<String>, String> {
        if !self.eat(&Token::OpenBracket) {
            return Err(self.error("`[`"));
        }
        let mut values = Vec::new();
        if self.eat(&Token::CloseBracket) {
            return Ok(values);
        }
        loop {
            values.push(self.value("a value")?);
            if self.eat(&Token::Comma) {
                // A trailing comma is allowed.
                if self.eat(&Token::CloseBracket) {
                    return Ok(values);
                }
                continue;
            }
            if self.eat(&Token::CloseBracket) {
                return Ok(values);
            }
            return Err(self.error("`,` or `]`"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmp(attribute: &str, op: &'static str, value: &str) -> Filter {
        Filter::Compare { attribute: attribute.into(), op, value: value.into() }
    }

    #[test]
    fn parses_the_adapter_grammar() {
        assert_eq!(
            parse_filter(r#"customerKey = ".bob" AND status = "paid" AND placedAtMs >= 10 AND placedAtMs <= 20"#),
            Ok(Filter::And(vec![
                cmp("customerKey", "=", ".bob"),
                cmp("status", "=", "paid"),
                cmp("placedAtMs", ">=", "10"),
                cmp("placedAtMs", "<=", "20"),
            ]))
        );
        assert_eq!(
            parse_filter(r#"orderId IN ["a", 'b',c,]"#),
            Ok(Filter::In { attribute: "orderId".into(), values: vec!["a".into(), "b".into(), "c".into()] })
        );
        assert_eq!(parse_filter("x IN []"), Ok(Filter::In { attribute: "x".into(), values: vec![] }));
    }

    #[test]
    fn and_binds_tighter_than_or_and_parentheses_group() {
        let (a, b, c) = (cmp("a", "=", "1"), cmp("b", "=", "2"), cmp("c", "=", "3"));
        assert_eq!(
            parse_filter("a = 1 OR b = 2 AND c = 3"),
            Ok(Filter::Or(vec![a.clone(), Filter::And(vec![b.clone(), c.clone()])]))
        );
        assert_eq!(
            parse_filter("(a = 1 OR b = 2) AND c = 3"),
            Ok(Filter::And(vec![Filter::Or(vec![a.clone(), b.clone()]), c.clone()]))
        );
        assert_eq!(parse_filter("NOT a = 1 AND b = 2"), Ok(Filter::And(vec![Filter::Not(Box::new(a)), b])));
    }

    #[test]
    fn parses_the_other_operators() {
        assert_eq!(parse_filter("a != x"), Ok(cmp("a", "!=", "x")));
        assert_eq!(parse_filter("a>1"), Ok(cmp("a", ">", "1")));
        assert_eq!(parse_filter("a<-1.5"), Ok(cmp("a", "<", "-1.5")));
        assert_eq!(
            parse_filter("a 1 TO 5"),
            Ok(Filter::Range { attribute: "a".into(), from: "1".into(), to: "5".into() })
        );
        assert_eq!(parse_filter("a EXISTS"), Ok(Filter::Exists("a".into())));
        assert_eq!(parse_filter("a NOT EXISTS"), Ok(Filter::Not(Box::new(Filter::Exists("a".into())))));
        assert_eq!(
            parse_filter("a NOT IN [1]"),
            Ok(Filter::Not(Box::new(Filter::In { attribute: "a".into(), values: vec!["1".into()] })))
        );
        assert_eq!(parse_filter("items.sku = 'X-1'"), Ok(cmp("items.sku", "=", "X-1")));
    }

    #[test]
    fn quoted_values_unescape_and_cannot_break_out() {
        assert_eq!(parse_filter(r#"a = "say \"hi\" \\ OR b = 1""#), Ok(cmp("a", "=", r#"say "hi" \ OR b = 1"#)));
        assert_eq!(parse_filter(r"a = 'it\'s'"), Ok(cmp("a", "=", "it's")));
    }

    #[test]
    fn rejects_malformed_filters() {
        for bad in [
            "a =",
            "= 1",
            "a = 1 AND",
            "a = 1 OR OR b = 2",
            "(a = 1",
            "a = 1)",
            "a IN [1, 2",
            "a IN 1",
            r#"a = "open"#,
            "a 1 5",
            "a NOT 1",
            "a ! 1",
            "a = 1 b = 2",
            "a = AND",
        ] {
            assert!(parse_filter(bad).is_err(), "`{bad}` must not parse: {:?}", parse_filter(bad));
        }
        // Keywords are capitals: a lowercase `and` is a value, so this is malformed.
        assert!(parse_filter("a = 1 and b = 2").is_err());
    }

    #[test]
    fn evaluates_like_meilisearch() {
        let doc = json!({"customerKey": ".bob", "status": "Paid", "n": 15, "items": [{"sku": "A-1"}, {"sku": "B-2"}]});
        let check = |filter: &str| parse_filter(filter).map(|f| f.matches(&doc));
        assert_eq!(check(r#"customerKey = ".bob""#), Ok(true));
        assert_eq!(check(r#"customerKey = "bob""#), Ok(false));
        assert_eq!(check("status = paid"), Ok(true), "string values compare normalized");
        assert_eq!(check("n >= 15 AND n <= 15"), Ok(true));
        assert_eq!(check("n > 15"), Ok(false));
        assert_eq!(check("n 10 TO 20"), Ok(true));
        assert_eq!(check("n = 15.0"), Ok(true));
        assert_eq!(check("items.sku = b-2"), Ok(true), "arrays of objects are looked through");
        assert_eq!(check("items.sku IN [c-3, a-1]"), Ok(true));
        assert_eq!(check("missing != 1"), Ok(true), "`!=` selects documents without the attribute");
        assert_eq!(check("missing EXISTS"), Ok(false));
        assert_eq!(check("NOT (status = paid OR n < 0)"), Ok(false));
    }

    #[test]
    fn filters_only_filterable_attributes() {
        let filterable = vec!["status".to_owned(), "items".to_owned()];
        assert!(compile_filter(&json!("status = paid AND items.sku = x"), &filterable).is_ok());
        let error = compile_filter(&json!("total > 1"), &filterable).err().unwrap_or_default();
        assert!(error.contains("`total` is not filterable"), "{error}");
        assert_eq!(compile_filter(&json!(""), &filterable), Ok(None));
        let array = compile_filter(&json!(["status = a", ["status = b", "status = c"]]), &filterable);
        assert!(matches!(array, Ok(Some(Filter::And(ref items))) if items.len() == 2), "{array:?}");
    }

    #[test]
    fn last_query_word_matches_as_a_prefix_only() {
        let doc: HashSet<String> = ["blue", "ceramic", "mug"].map(String::from).into();
        let terms = |q: &str| words(q).collect::<Vec<_>>();
        assert!(text_matches(&doc, &terms("blue mu"), true, Strategy::All));
        assert!(!text_matches(&doc, &terms("blu mug"), true, Strategy::All), "earlier words are whole words");
        assert!(!text_matches(&doc, &terms("blue mu"), false, Strategy::All), "no prefix after a trailing separator");
        assert!(!text_matches(&doc, &terms("mug zebra"), true, Strategy::All));
        assert!(text_matches(&doc, &terms("mug zebra"), true, Strategy::Last), "`last` drops trailing words");
        assert!(!text_matches(&doc, &terms("zebra mug"), true, Strategy::Last));
    }
}
