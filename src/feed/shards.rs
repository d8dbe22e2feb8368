//! Reading a sharded stream in order, written once for both sharded streams the service reads: the DynamoDB
//! Streams stream of the events table (the bridge, `feed::streams`) and Kinesis Data Streams (a projector's
//! `feed::kinesis::KinesisSubscription`). The stream-specific calls sit behind [`ShardStream`]; everything else
//! is here:
//!
//! - **Checkpoints.** Each shard is read from its checkpoint (the last sequence number handled, saved in the
//!   checkpoints table under a key of the reader's choosing) or, never read, from its start. A reader moves a
//!   shard's checkpoint only with [`Shards::commit`], after the records up to it are durably handled (published
//!   by the bridge, applied by the view), so a restart repeats at most what was in flight, never skips.
//! - **Parents first.** After a split, a merge or a rollover, a child shard is read only once every parent is
//!   finished (closed and read to the end), so one key's records stay in order although the key moved shards.
//!   A parent no longer listed has left the stream (past its retention): nothing of it is left to wait for.
//! - **One reader per shard.** With several instances ([`Shards::with_leases`]), a shard is read only by the
//!   instance that holds its lease (`crate::lease`); on getting a lease (back) the checkpoint is read again, since
//!   another instance may have moved it or finished the shard.
//! - **Iterators.** A shard's iterator is kept between reads; an expired one is renewed from the checkpoint.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::Utc;
use futures_util::future::join_all;

use crate::lease::Leases;

/// A shard as the stream lists it: its id and its parents (one, or two after a merge).
pub struct Listed {
    pub id: String,
    pub parents: Vec<String>,
}

/// One page of a shard.
pub struct Page<R> {
    pub records: Vec<R>,
    /// The sequence number of the page's last record (`None`: an empty page).
    pub last_sequence: Option<String>,
    /// Where the next read continues; `None`: the shard is closed and this was its end.
    pub next: Option<String>,
}

/// Why a page could not be read.
pub enum PageError {
    /// The iterator expired: take a fresh one from the checkpoint (no backoff needed).
    Expired,
    /// The iterator can never be used again (the shard or its records are gone): a fresh one next time.
    Gone(String),
    /// Throttling, a server error, a timeout: the same iterator is good for the retry.
    Failed(String),
}

/// A read that failed; `rewind`: its iterator can never be used again (see [`Shards::rewind`]).
#[derive(Debug)]
pub struct ReadError {
    pub message: String,
    pub rewind: bool,
}

impl ReadError {
    fn keep(message: String) -> Self {
        Self { message, rewind: false }
    }
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The calls of one sharded stream.
#[async_trait]
pub trait ShardStream: Send + Sync {
    type Record: Send;

    /// Every shard the stream lists now (all pages).
    async fn list(&self) -> Result<Vec<Listed>, String>;

    /// An iterator just after `after`, or at the start of the shard; `None` when the shard is closed and
    /// nothing is left after `after`.
    async fn iterator(&self, shard: &str, after: Option<&str>) -> Result<Option<String>, String>;

    /// The records at `iterator`, at most `limit` of them.
    async fn page(&self, shard: &str, iterator: &str, limit: i32) -> Result<Page<Self::Record>, PageError>;
}

/// What a reader knows about one shard.
#[derive(Debug, Clone, Default)]
pub struct ShardState {
    pub parents: Vec<String>,
    /// The last sequence number handled and saved; `None` = start at the beginning of the shard.
    pub checkpoint: Option<String>,
    /// Where the next read continues; `None` = a fresh one from the checkpoint.
    pub iterator: Option<String>,
    /// Closed and read to the end (and handled).
    pub finished: bool,
    /// Records of the shard up to the checkpoint (for a position to show, like Kafka's committed offsets).
    pub records: u64,
    /// This instance holds the shard's lease (always, without leases).
    pub held: bool,
}

/// How a shard moves once the records of a read are handled.
#[derive(Debug, Clone)]
pub struct Advance {
    pub checkpoint: Option<String>,
    pub iterator: Option<String>,
    pub finished: bool,
    pub records: u64,
}

/// The records of one read of one shard, and how the shard moves once they are handled.
pub struct Read<R> {
    pub records: Vec<R>,
    pub advance: Advance,
}

/// Where the checkpoints live: one item per key in the checkpoints table (`id`, `sequenceNumber`,
/// `finished`, `records`, `updatedAt`).
#[derive(Clone)]
pub struct CheckpointTable {
    pub dynamo: aws_sdk_dynamodb::Client,
    pub table: String,
}

impl CheckpointTable {
    async fn load(&self, key: &str) -> Result<(Option<String>, bool, u64), String> {
        let output = self
            .dynamo
            .get_item()
            .table_name(&self.table)
            .key("id", AttributeValue::S(key.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| format!("reading the checkpoint {key} from {}: {}", self.table, crate::aws::error_text(&e)))?;
        let Some(item) = output.item() else { return Ok((None, false, 0)) };
        let sequence = match item.get("sequenceNumber") {
            Some(AttributeValue::S(s)) => Some(s.clone()),
            _ => None,
        };
        let records = match item.get("records") {
            Some(AttributeValue::N(n)) => n.parse().unwrap_or(0),
            _ => 0,
        };
        Ok((sequence, matches!(item.get("finished"), Some(AttributeValue::Bool(true))), records))
    }

    async fn save(&self, key: &str, advance: &Advance) -> Result<(), String> {
        let mut request = self
            .dynamo
            .put_item()
            .table_name(&self.table)
            .item("id", AttributeValue::S(key.to_owned()))
            .item("finished", AttributeValue::Bool(advance.finished))
            .item("records", AttributeValue::N(advance.records.to_string()))
            .item("updatedAt", AttributeValue::N(Utc::now().timestamp_millis().to_string()));
        if let Some(sequence) = &advance.checkpoint {
            request = request.item("sequenceNumber", AttributeValue::S(sequence.clone()));
        }
        request
            .send()
            .await
            .map(|_| ())
            .map_err(|e| format!("saving the checkpoint {key} in {}: {}", self.table, crate::aws::error_text(&e)))
    }
}

/// One reader's shards of one stream.
pub struct Shards {
    states: BTreeMap<String, ShardState>,
    checkpoints: CheckpointTable,
    /// The shard's checkpoint item id (and lease resource): e.g. `bridge#<shard>`.
    key: Box<dyn Fn(&str) -> String + Send + Sync>,
    leases: Option<Arc<Leases>>,
    /// When the shard list is read next; `None` = now.
    next_discovery: Option<Instant>,
    discovery_interval: Duration,
    /// For logs: whose shards these are.
    reader: String,
}

impl Shards {
    pub fn new(
        checkpoints: CheckpointTable,
        key: impl Fn(&str) -> String + Send + Sync + 'static,
        discovery_interval: Duration,
        reader: String,
    ) -> Self {
        Self {
            states: BTreeMap::new(),
            checkpoints,
            key: Box::new(key),
            leases: None,
            next_discovery: None,
            discovery_interval,
            reader,
        }
    }

    /// Several instances: a shard is read only while this instance holds its lease.
    pub fn with_leases(mut self, leases: Option<Arc<Leases>>) -> Self {
        self.leases = leases;
        self
    }

    pub fn discovery_due(&self) -> bool {
        self.next_discovery.is_none_or(|at| Instant::now() >= at)
    }

    /// Read the shard list again at the next chance (a shard finished: its children wait).
    pub fn discover_soon(&mut self) {
        self.next_discovery = None;
    }

    pub fn state(&self, id: &str) -> Option<&ShardState> {
        self.states.get(id)
    }

    pub fn states(&self) -> impl Iterator<Item = &ShardState> {
        self.states.values()
    }

    /// Drops a shard's iterator: its next read starts again from the checkpoint.
    pub fn rewind(&mut self, id: &str) {
        if let Some(state) = self.states.get_mut(id) {
            state.iterator = None;
        }
    }

    /// Keeps where a read left a shard whose records need no handling (an empty page): only its iterator moves.
    pub fn keep_iterator(&mut self, id: &str, iterator: Option<String>) {
        if let Some(state) = self.states.get_mut(id) {
            state.iterator = iterator;
        }
    }

    /// Takes in the shard list: forgets shards that left, refreshes whether others' shards are finished, and
    /// loads the checkpoints of new ones, all before adding any (a child is never seen without its parents).
    pub async fn update(&mut self, listed: Vec<Listed>) -> Result<(), String> {
        let still: HashSet<&str> = listed.iter().map(|l| l.id.as_str()).collect();
        let reader = &self.reader;
        self.states.retain(|id, state| {
            let keep = still.contains(id.as_str());
            if !keep && !state.finished && state.held {
                tracing::error!(
                    reader, shard = %id, checkpoint = ?state.checkpoint,
                    "shard left the stream before it was read to the end; its remaining records expired"
                );
            }
            keep
        });
        let others: Vec<String> =
            self.states.iter().filter(|(_, s)| !s.held && !s.finished).map(|(id, _)| id.clone()).collect();
        for id in others {
            let finished = self.checkpoints.load(&(self.key)(&id)).await?.1;
            if let Some(state) = self.states.get_mut(&id) {
                state.finished = finished;
            }
        }
        let mut found = Vec::new();
        for Listed { id, parents } in listed {
            if self.states.contains_key(&id) {
                continue;
            }
            let (checkpoint, finished, records) = self.checkpoints.load(&(self.key)(&id)).await?;
            let held = self.leases.is_none();
            found.push((id, ShardState { parents, checkpoint, iterator: None, finished, records, held }));
        }
        for (id, state) in found {
            tracing::debug!(
                reader = %self.reader, shard = %id, parents = ?state.parents, checkpoint = ?state.checkpoint,
                finished = state.finished, "shard discovered"
            );
            self.states.insert(id, state);
        }
        self.next_discovery = Some(Instant::now() + self.discovery_interval);
        Ok(())
    }

    /// The shards this instance may read now: not finished, every listed parent finished, and (with leases) the
    /// lease held — taken, renewed or, when another instance holds it, left alone.
    pub async fn readable(&mut self) -> Result<Vec<String>, String> {
        let candidates: Vec<String> = self
            .states
            .iter()
            .filter(|(_, state)| {
                !state.finished && state.parents.iter().all(|p| self.states.get(p).is_none_or(|parent| parent.finished))
            })
            .map(|(id, _)| id.clone())
            .collect();
        let Some(leases) = self.leases.clone() else { return Ok(candidates) };
        let mut mine = Vec::new();
        for id in candidates {
            let key = (self.key)(&id);
            let held = leases.hold(&key).await.map_err(|e| format!("lease of shard {id}: {e}"))?;
            let was = self.states.get(&id).is_some_and(|s| s.held);
            if held && !was {
                let (checkpoint, finished, records) = self.checkpoints.load(&key).await?;
                tracing::info!(reader = %self.reader, shard = %id, ?checkpoint, finished, owner = leases.owner(),
                    "reading shard (lease held)");
                if let Some(state) = self.states.get_mut(&id) {
                    let parents = std::mem::take(&mut state.parents);
                    *state = ShardState { parents, checkpoint, iterator: None, finished, records, held: true };
                }
            } else if !held && was {
                tracing::info!(reader = %self.reader, shard = %id, "shard's lease is another instance's; not reading it");
                if let Some(state) = self.states.get_mut(&id) {
                    state.held = false;
                    state.iterator = None;
                }
            }
            if held && self.states.get(&id).is_some_and(|s| !s.finished) {
                mine.push(id);
            }
        }
        Ok(mine)
    }

    /// Reads one page of shard `id` (nothing moves yet: see [`Self::commit`]). `None` when its iterator had
    /// expired (the next read takes a fresh one). A closed shard with nothing left reads as an empty, finished
    /// page.
    pub async fn read<S: ShardStream>(
        &self,
        stream: &S,
        id: &str,
        limit: i32,
    ) -> Result<Option<Read<S::Record>>, ReadError> {
        let Some(state) = self.states.get(id) else { return Ok(None) };
        let iterator = match &state.iterator {
            Some(iterator) => iterator.clone(),
            None => match stream.iterator(id, state.checkpoint.as_deref()).await.map_err(ReadError::keep)? {
                Some(iterator) => iterator,
                None => {
                    let advance = Advance {
                        checkpoint: state.checkpoint.clone(),
                        iterator: None,
                        finished: true,
                        records: state.records,
                    };
                    return Ok(Some(Read { records: Vec::new(), advance }));
                }
            },
        };
        let page = match stream.page(id, &iterator, limit).await {
            Ok(page) => page,
            Err(PageError::Expired) => {
                tracing::debug!(reader = %self.reader, shard = %id, "shard iterator expired; renewing from the checkpoint");
                return Ok(None);
            }
            Err(PageError::Gone(message)) => return Err(ReadError { message, rewind: true }),
            Err(PageError::Failed(message)) => return Err(ReadError::keep(message)),
        };
        let count = page.records.len() as u64;
        let advance = Advance {
            checkpoint: page.last_sequence.or_else(|| state.checkpoint.clone()),
            finished: page.next.is_none(),
            iterator: page.next,
            records: state.records + count,
        };
        Ok(Some(Read { records: page.records, advance }))
    }

    /// Saves every advance that moves a checkpoint, then applies them all.
    pub async fn commit(&mut self, advances: &BTreeMap<String, Advance>) -> Result<(), String> {
        let saves: Vec<(String, &Advance)> = advances
            .iter()
            .filter(|(id, advance)| {
                self.states
                    .get(*id)
                    .is_none_or(|s| s.checkpoint != advance.checkpoint || s.finished != advance.finished)
            })
            .map(|(id, advance)| ((self.key)(id), advance))
            .collect();
        let checkpoints = &self.checkpoints;
        let results = join_all(saves.iter().map(|(key, advance)| checkpoints.save(key, advance))).await;
        results.into_iter().collect::<Result<Vec<()>, _>>()?;
        for (id, advance) in advances {
            if let Some(state) = self.states.get_mut(id) {
                state.checkpoint = advance.checkpoint.clone();
                state.iterator = advance.iterator.clone();
                state.finished = advance.finished;
                state.records = advance.records;
                if advance.finished {
                    tracing::info!(reader = %self.reader, shard = %id, checkpoint = ?state.checkpoint, "shard finished");
                    // Its children may now be read.
                    self.next_discovery = None;
                }
            }
        }
        Ok(())
    }

    /// Every shard back to its start, durably (a restart during a replay goes on replaying).
    pub async fn rewind_all(&mut self) -> Result<usize, String> {
        let reset = Advance { checkpoint: None, iterator: None, finished: false, records: 0 };
        let keys: Vec<String> = self.states.keys().map(|id| (self.key)(id)).collect();
        join_all(keys.iter().map(|key| self.checkpoints.save(key, &reset)))
            .await
            .into_iter()
            .collect::<Result<Vec<()>, _>>()?;
        let held = self.leases.is_none();
        for state in self.states.values_mut() {
            *state = ShardState { parents: std::mem::take(&mut state.parents), held, ..ShardState::default() };
        }
        Ok(keys.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shards(states: &[(&str, &[&str], bool)]) -> Shards {
        let config = aws_sdk_dynamodb::Config::builder().behavior_version_latest().build();
        let table = CheckpointTable { dynamo: aws_sdk_dynamodb::Client::from_conf(config), table: "t".into() };
        let mut shards = Shards::new(table, |s| s.to_owned(), Duration::from_secs(10), "test".into());
        for (id, parents, finished) in states {
            let parents = parents.iter().map(|p| (*p).to_owned()).collect();
            shards.states.insert(
                (*id).to_owned(),
                ShardState { parents, finished: *finished, held: true, ..Default::default() },
            );
        }
        shards
    }

    #[actix_web::test]
    async fn a_child_waits_until_every_parent_is_finished_or_gone() {
        // A merge: the child waits for both parents; a parent no longer listed is nothing to wait for.
        let mut s =
            shards(&[("a", &[], false), ("b", &[], true), ("child", &["a", "b"], false), ("orphan", &["gone"], false)]);
        assert_eq!(s.readable().await.expect("readable"), vec!["a", "orphan"]);
        s.states.get_mut("a").expect("a").finished = true;
        assert_eq!(s.readable().await.expect("readable"), vec!["child", "orphan"]);
    }
}
