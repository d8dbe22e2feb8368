//! `OrderRegistry`: finds the live actor of an order or starts one. It is a sharded map rather than an actor
//! of its own so that looking up an order never queues behind other orders. It also does the load shedding:
//! an order with `mailbox_capacity` commands already queued answers 503 instead of queueing more.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;

use super::order::{CommandError, Execute, Executed, OrderActor};
use crate::domain::OrderId;
use crate::store::EventStore;

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
