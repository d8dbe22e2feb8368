//! `OrderActor`: one per live order. It holds the order's state in memory and handles one command at a time
//! (`AtomicResponse`: no other message runs while a command awaits the store), so every rule is checked
//! against the latest state. The append is still conditional on the version: if another writer (a stale
//! actor, another instance) got there first, the actor reloads and decides once more. The actor is the only
//! writer of the store: a command's answer (built by the caller, see [`Answers`]) is kept under its
//! idempotency key in the same write as its events, and a refused command's answer is kept too. An actor that
//! has been idle for `idle_timeout` stops itself; its state is reloaded from the store when next needed.
//!
//! [`OrderRegistry`] (below) finds an order's live actor or starts one, and sheds load.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::clock;
use crate::domain::{Command, CustomerId, Order, OrderError, OrderId, decide};
use crate::store::{AppendError, AppendRequest, EventStore, IdempotencyRecord, StoredEvent, StoredResponse};

/// A precondition from `If-Match`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// `If-Match: *`: the order must exist.
    Exists,
    /// `If-Match: "N"`: the order must be at version N.
    Version(u64),
    /// A weak or malformed tag: never matches (If-Match uses strong comparison).
    Never,
}

/// What to keep under the request's idempotency key, filled in with the response once it is known.
#[derive(Debug, Clone)]
pub struct IdempotencyDraft {
    pub scope: String,
    pub request_hash: String,
}

impl IdempotencyDraft {
    pub fn record(&self, response: StoredResponse) -> IdempotencyRecord {
        IdempotencyRecord { scope: self.scope.clone(), request_hash: self.request_hash.clone(), response }
    }
}

/// Run one command on the order.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Executed, CommandError>")]
pub struct Execute {
    pub command: Command,
    pub precondition: Option<Precondition>,
    /// For a customer: only their own orders exist for them.
    pub visible_to: Option<CustomerId>,
    pub idempotency: Option<IdempotencyDraft>,
    /// The trace the command belongs to (its HTTP request's).
    pub trace: Option<crate::trace::TraceParent>,
    /// How the caller answers, kept under the idempotency key.
    pub answers: Answers,
}

/// The caller's answers to a command, as kept under its idempotency key: the actor writes the answer in the same
/// transaction as the events (or alone, for a refused command), so that a retry gets it back verbatim; what an
/// answer looks like (status, headers, body) is the caller's business (`http::orders`).
#[derive(Debug, Clone, Copy)]
pub struct Answers {
    /// The answer to a command that succeeded, given the order after it.
    pub success: fn(&Order) -> StoredResponse,
    /// The answer to a refused command.
    pub refusal: fn(&CommandError) -> StoredResponse,
}

/// A command that succeeded: the order after it, the caller's answer to it (as kept under the idempotency key),
/// and the events it appended (none for a repeated payment).
#[derive(Debug, Clone)]
pub struct Executed {
    pub order: Order,
    pub response: StoredResponse,
    pub appended: Vec<StoredEvent>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Rule(#[from] OrderError),
    #[error("the order is at version {current}")]
    PreconditionFailed { current: u64 },
    /// Lost the write race twice in a row.
    #[error("the order changed concurrently")]
    WriteConflict,
    #[error("the idempotency key is in use by a concurrent request")]
    IdempotencyKeyTaken,
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl CommandError {
    /// A refusal that running the command again would repeat, kept under its idempotency key: not a failing
    /// store (nothing is known), nor a key another request holds (its answer is the one to give).
    fn is_final(&self) -> bool {
        !matches!(self, Self::Unavailable(_) | Self::IdempotencyKeyTaken)
    }
}

pub struct OrderActor {
    id: OrderId,
    store: Arc<dyn EventStore>,
    registry: OrderRegistry,
    /// `None` until loaded from the store (and again after an ambiguous store failure).
    state: Option<Option<Order>>,
    snapshot_every: u64,
    idle_timeout: Duration,
    last_active: Instant,
}

impl OrderActor {
    pub fn new(
        id: OrderId,
        store: Arc<dyn EventStore>,
        registry: OrderRegistry,
        snapshot_every: u64,
        idle_timeout: Duration,
    ) -> Self {
        Self { id, store, registry, state: None, snapshot_every, idle_timeout, last_active: Instant::now() }
    }
}

impl Actor for OrderActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        crate::telemetry::live_aggregate_started();
        let check = (self.idle_timeout / 2).max(Duration::from_millis(10));
        ctx.run_interval(check, |act, ctx| {
            if act.last_active.elapsed() >= act.idle_timeout {
                ctx.stop();
            }
        });
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        crate::telemetry::live_aggregate_stopped();
        self.registry.forget(&self.id, &ctx.address());
    }
}

impl Handler<Execute> for OrderActor {
    type Result = AtomicResponse<Self, Result<Executed, CommandError>>;

    fn handle(&mut self, msg: Execute, _ctx: &mut Self::Context) -> Self::Result {
        self.last_active = Instant::now();
        let store = Arc::clone(&self.store);
        let id = self.id.clone();
        let known = self.state.clone();
        let snapshot_every = self.snapshot_every;
        let work = async move {
            let (state, result) = execute(&*store, &id, known, &msg, snapshot_every).await;
            let result = match (result, &msg.idempotency) {
                (Err(error), Some(draft)) if error.is_final() => {
                    Err(remember_refusal(&*store, &id, draft, (msg.answers.refusal)(&error), error).await)
                }
                (result, _) => result,
            };
            (state, result)
        };
        AtomicResponse::new(Box::pin(work.into_actor(self).map(|(state, result), act, _ctx| {
            act.state = state;
            act.last_active = Instant::now();
            result
        })))
    }
}

/// Loads the state unless it is known, decides, appends; once more on a lost write race. Returns the state to
/// keep and the outcome.
async fn execute(
    store: &dyn EventStore,
    id: &OrderId,
    known: Option<Option<Order>>,
    msg: &Execute,
    snapshot_every: u64,
) -> (Option<Option<Order>>, Result<Executed, CommandError>) {
    let state = match known {
        Some(state) => state,
        // A place for an order no actor holds (nearly always a fresh id) skips the load: it appends at
        // version 0, and if the order exists after all the store says conflict and the reload below
        // decides again (409 order_already_exists). With If-Match the state decides the answer, so load.
        None if optimistic_place(msg) => None,
        None => match load(store, id).await {
            Ok(state) => state,
            Err(e) => return (None, Err(e)),
        },
    };
    match attempt(store, id, state.clone(), msg, snapshot_every).await {
        Err(Attempt::Conflict) => {
            // Someone else appended: reload and decide once more against the fresh state.
            let fresh = match load(store, id).await {
                Ok(state) => state,
                Err(e) => return (None, Err(e)),
            };
            match attempt(store, id, fresh.clone(), msg, snapshot_every).await {
                Err(Attempt::Conflict) => (None, Err(CommandError::WriteConflict)),
                other => settle(fresh, other),
            }
        }
        other => settle(state, other),
    }
}

/// Keeps a refused command's answer under its key, so that a retry gets the same answer. If a concurrent
/// request with the same key got there first (this copy was refused *because* that one succeeded), the caller
/// is told so and answers with that request's record. Best effort otherwise: a retry simply runs the
/// (deterministic) checks again.
async fn remember_refusal(
    store: &dyn EventStore,
    id: &OrderId,
    draft: &IdempotencyDraft,
    answer: StoredResponse,
    error: CommandError,
) -> CommandError {
    let request = AppendRequest {
        order_id: id.clone(),
        expected_version: 0,
        events: vec![],
        snapshot: None,
        idempotency: Some(draft.record(answer)),
        traceparent: None,
    };
    match store.append(request).await {
        Ok(_) => error,
        Err(AppendError::IdempotencyKeyTaken) => CommandError::IdempotencyKeyTaken,
        Err(e) => {
            tracing::debug!(error = %e, "could not keep a refused command's idempotent response");
            error
        }
    }
}

fn optimistic_place(msg: &Execute) -> bool {
    matches!(msg.command, Command::Place { .. }) && msg.precondition.is_none()
}

/// The state to keep after an attempt: the new state on success, the old one on a rule error, and
/// "unknown, reload next time" when the store failed (the write may or may not have happened).
fn settle(
    before: Option<Order>,
    result: Result<(Option<Order>, Executed), Attempt>,
) -> (Option<Option<Order>>, Result<Executed, CommandError>) {
    match result {
        Ok((after, executed)) => (Some(after), Ok(executed)),
        Err(Attempt::Failed(e @ CommandError::Unavailable(_))) => (None, Err(e)),
        Err(Attempt::Failed(e)) => (Some(before), Err(e)),
        Err(Attempt::Conflict) => (None, Err(CommandError::WriteConflict)),
    }
}

enum Attempt {
    Conflict,
    Failed(CommandError),
}

impl From<CommandError> for Attempt {
    fn from(e: CommandError) -> Self {
        Attempt::Failed(e)
    }
}

impl From<OrderError> for Attempt {
    fn from(e: OrderError) -> Self {
        Attempt::Failed(CommandError::Rule(e))
    }
}

async fn load(store: &dyn EventStore, id: &OrderId) -> Result<Option<Order>, CommandError> {
    let stream = store.load(id).await.map_err(|e| CommandError::Unavailable(e.0))?;
    Ok(stream.fold(id))
}

/// Checks visibility, the precondition and the rules, then appends. Pure decisions, one store call.
async fn attempt(
    store: &dyn EventStore,
    id: &OrderId,
    state: Option<Order>,
    msg: &Execute,
    snapshot_every: u64,
) -> Result<(Option<Order>, Executed), Attempt> {
    let is_place = matches!(msg.command, Command::Place { .. });
    // Someone else's order does not exist for a customer (but an id in use still cannot be placed again).
    let foreign = matches!((&msg.visible_to, &state), (Some(customer), Some(order)) if &order.customer_id != customer);
    let state = if foreign && !is_place { None } else { state };
    // If-Match on an order that does not exist fails too (RFC 9110 §13.1.1); for commands other than
    // place, "not found" is the better answer and `decide` gives it. The precondition is checked against
    // the order as the caller may see it: someone else's order answers exactly like a missing one (412 with
    // ETag "0"), so neither its existence nor its version leaks.
    if let Some(precondition) = msg.precondition {
        let seen = if foreign { None } else { state.as_ref() };
        let current = seen.map_or(0, |o| o.version);
        let holds = match (precondition, seen) {
            (_, None) => !is_place,
            (Precondition::Exists, Some(_)) => true,
            (Precondition::Version(v), Some(_)) => v == current,
            (Precondition::Never, Some(_)) => false,
        };
        if !holds {
            return Err(CommandError::PreconditionFailed { current }.into());
        }
    }
    let events = decide(state.as_ref(), &msg.command, clock::now())?;
    let after = Order::fold(state.clone(), id, &events).ok_or(OrderError::NotFound)?;
    let response = (msg.answers.success)(&after);
    if events.is_empty() && msg.idempotency.is_none() {
        return Ok((Some(after.clone()), Executed { order: after, response, appended: vec![] }));
    }
    let before = state.as_ref().map_or(0, |o| o.version);
    let snapshot = crosses_snapshot(before, after.version, snapshot_every).then(|| after.clone());
    let request = AppendRequest {
        order_id: id.clone(),
        expected_version: before,
        events,
        snapshot,
        idempotency: msg.idempotency.as_ref().map(|d| d.record(response.clone())),
        traceparent: msg.trace.map(|t| t.child().to_string()),
    };
    match store.append(request).await {
        Ok(appended) => Ok((Some(after.clone()), Executed { order: after, response, appended })),
        Err(AppendError::Conflict) => Err(Attempt::Conflict),
        Err(AppendError::IdempotencyKeyTaken) => Err(CommandError::IdempotencyKeyTaken.into()),
        Err(AppendError::Unavailable(e)) => Err(CommandError::Unavailable(e).into()),
    }
}

/// True when going from version `before` to `after` passes a multiple of `every`.
fn crosses_snapshot(before: u64, after: u64, every: u64) -> bool {
    every > 0 && after / every > before / every
}

// ------------------------------------------------------------------------------------------ the registry

/// [`OrderRegistry`] finds the live actor of an order or starts one. It is a sharded map rather than an actor
/// of its own so that looking up an order never queues behind other orders. It also does the load shedding:
/// an order with `mailbox_capacity` commands already queued answers 503 instead of queueing more.
const SHARDS: usize = 64;

#[derive(Clone)]
struct Entry {
    addr: Addr<OrderActor>,
    queued: Arc<AtomicUsize>,
}

struct Inner {
    shards: Vec<Mutex<HashMap<OrderId, Entry>>>,
    store: Arc<dyn EventStore>,
    mailbox_capacity: usize,
    snapshot_every: u64,
    idle_timeout: Duration,
}

#[derive(Clone)]
pub struct OrderRegistry(Arc<Inner>);

impl OrderRegistry {
    pub fn new(
        store: Arc<dyn EventStore>,
        mailbox_capacity: usize,
        snapshot_every: u64,
        idle_timeout: Duration,
    ) -> Self {
        let shards = (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect();
        Self(Arc::new(Inner { shards, store, mailbox_capacity, snapshot_every, idle_timeout }))
    }

    fn shard(&self, id: &OrderId) -> std::sync::MutexGuard<'_, HashMap<OrderId, Entry>> {
        let mut h = DefaultHasher::new();
        id.hash(&mut h);
        let shard = &self.0.shards[(h.finish() as usize) % SHARDS];
        shard.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The order's actor, started on the current arbiter if it is not live.
    fn entry(&self, id: &OrderId) -> Entry {
        let mut shard = self.shard(id);
        if let Some(entry) = shard.get(id).filter(|e| e.addr.connected()) {
            return entry.clone();
        }
        let actor = OrderActor::new(
            id.clone(),
            Arc::clone(&self.0.store),
            self.clone(),
            self.0.snapshot_every,
            self.0.idle_timeout,
        );
        let capacity = self.0.mailbox_capacity;
        let addr = OrderActor::create(|ctx| {
            // Our own counter sheds load first; the mailbox itself never needs to refuse a message.
            ctx.set_mailbox_capacity(capacity + 1);
            actor
        });
        let entry = Entry { addr, queued: Arc::new(AtomicUsize::new(0)) };
        shard.insert(id.clone(), entry.clone());
        entry
    }

    /// Removes the order's entry if it still points at `addr` (called by a stopping actor).
    pub fn forget(&self, id: &OrderId, addr: &Addr<OrderActor>) {
        let mut shard = self.shard(id);
        if shard.get(id).is_some_and(|e| &e.addr == addr) {
            shard.remove(id);
        }
    }

    /// Runs a command on the order's actor. A command sent to an actor that was just passivating never ran;
    /// it is sent again to a fresh actor.
    pub async fn execute(&self, id: &OrderId, msg: Execute) -> Result<Executed, CommandError> {
        for _ in 0..3 {
            let entry = self.entry(id);
            if entry.queued.fetch_add(1, Ordering::AcqRel) >= self.0.mailbox_capacity {
                entry.queued.fetch_sub(1, Ordering::AcqRel);
                return Err(CommandError::Unavailable("too many commands queued for this order".into()));
            }
            let result = entry.addr.send(msg.clone()).await;
            entry.queued.fetch_sub(1, Ordering::AcqRel);
            match result {
                Ok(outcome) => return outcome,
                Err(_) => self.forget(id, &entry.addr),
            }
        }
        Err(CommandError::Unavailable("order actor unavailable".into()))
    }

    /// Order actors currently in memory.
    pub fn live(&self) -> usize {
        self.0.shards.iter().map(|s| s.lock().map(|m| m.len()).unwrap_or(0)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::crosses_snapshot;

    #[test]
    fn snapshots_every_n_events() {
        assert!(!crosses_snapshot(0, 1, 0));
        assert!(!crosses_snapshot(0, 1, 3));
        assert!(crosses_snapshot(2, 3, 3));
        assert!(crosses_snapshot(2, 4, 3));
        assert!(!crosses_snapshot(3, 4, 3));
    }
}
