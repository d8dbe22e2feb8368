//! The data's lifecycle beyond serving: commands that copy, move or check a deployment's data, run from the
//! command line (`src/main.rs`), each in its own module: `orderflow backup` ([`backup`]), `orderflow migrate`
//! (embedded data folder → the distributed profile, [`migrate`]), `orderflow export` / `orderflow import` (the
//! event log as NDJSON CloudEvents, [`export`]). Migrate and import write through [`EventImport`]: events *as
//! they are* (ids, versions, timestamps kept), conditionally, so that running one again skips what the last run
//! wrote.
//!
//! # Reading and writing
//!
//! History moves as it was written (docs/design.md guarantee 2): events are read and written as
//! [`RawEvent`]s — each one's payload in the schema version it was written with, its id, version, timestamps
//! and trace — so a legacy event arrives on the other side as the same legacy event, byte for byte. Upcasting is
//! for readers that use events (actor load, history, the feed, rebuilds), and for `export --current-shape`.
//! Each page is grouped into runs, one per order in version order, and a page is written before the next is
//! read: an order's events reach the target in version order even when its history spans pages.
//!
//! # Verification
//!
//! A per-order digest ([`OrderDigest`]): SHA-256 over the order's events in version order, each as its version,
//! eventId, type, schema version, recording time (ms), traceparent and the stored payload. It is computed on both
//! sides from the same raw read, so two stores agree exactly when every order has the same events as written.
//!
//! # Not publishing history twice
//!
//! On the distributed profile, every item written to the events table reaches the DynamoDB Streams bridge,
//! which publishes it to Kafka / Kinesis. Migrated history was seen by no outside consumer yet on this feed, but
//! it is *history*: consumers that follow both systems, or that are pointed at the new feed, would see every old
//! event arrive as new. So, unless the command is given `--publish`, each migrated or imported item carries the
//! attribute `publish` = false (`store::dynamo::PUBLISH_ATTRIBUTE`) and the bridge skips it (its checkpoint moves
//! past it like past any other record). The alternative — migrating before the bridge's stream position is
//! taken, and starting the bridge at `LATEST` — would depend on when the service first starts and on the
//! Streams retention (24 h), and a second run or an import into a running deployment would publish again; the
//! marker says it per item, whatever the timing. Without publishing, the distributed views do not learn the
//! history from the feed: they are built from the write model by a rebuild (`orderflow rebuild search`,
//! `orderflow rebuild revenue`) before the deployment takes commands. With `--publish` the bridge publishes the
//! history like fresh events and the projectors build the views from the feed.
//!
//! Idempotency records are not events: `migrate` carries the live ones over (with their original time, so they
//! expire when they would have), `export` / `import` do not (NDJSON holds the event log only).

pub mod backup;
pub mod export;
pub mod migrate;

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest as _, Sha256};

use crate::admin_client::UsageError;
use crate::aws::Tables;
use crate::config::{Profile, Settings};
use crate::domain::OrderId;
use crate::store::dynamo::DynamoEventStore;
use crate::store::sqlite::SqliteEventStore;
use crate::store::{EventImport, RawEvent, RebuildSource};

/// Events read from a store per page.
const PAGE: usize = 1000;
/// Read connections of an embedded store opened by these commands.
const READ_CONNECTIONS: usize = 2;

/// A store of either profile, as these commands use it.
pub struct Store {
    pub events: Arc<dyn RebuildSource>,
    pub import: Arc<dyn EventImport>,
    /// What it is, for messages: the embedded data folder or the DynamoDB table.
    pub name: String,
}

impl Store {
    /// The event store of `settings`' profile. An embedded store that does not exist yet is created only when
    /// `create` (an import may start a data folder; an export of a folder that has no log is a mistake).
    pub async fn open(settings: &Settings, create: bool) -> anyhow::Result<Self> {
        match settings.profile {
            Profile::Embedded => Self::embedded(settings, &settings.data_dir, create).map(|(store, _)| store),
            Profile::Distributed => Ok(Self::distributed(settings).await?.0),
        }
    }

    fn embedded(
        settings: &Settings,
        dir: &std::path::Path,
        create: bool,
    ) -> anyhow::Result<(Self, Arc<SqliteEventStore>)> {
        if create {
            crate::files::private_dir(dir).with_context(|| format!("cannot create data_dir {}", dir.display()))?;
        } else if !dir.join("events.db").is_file() {
            return Err(UsageError(format!(
                "no embedded event store in {} (no events.db there): give the data folder the service ran with",
                dir.display()
            ))
            .into());
        }
        let store = SqliteEventStore::open(dir, &settings.store, READ_CONNECTIONS)
            .with_context(|| format!("opening the event store in {}", dir.display()))?;
        let name = format!("{}", dir.join("events.db").display());
        Ok((Self { events: store.clone(), import: store.clone(), name }, store))
    }

    async fn distributed(settings: &Settings) -> anyhow::Result<(Self, Arc<DynamoEventStore>)> {
        let sdk = crate::aws::sdk_config(&settings.aws).await;
        let dynamo = crate::aws::dynamo_client(&sdk, &settings.dynamodb);
        let tables = Tables::new(&settings.dynamodb.table_prefix);
        let name = format!("DynamoDB table {}", tables.events);
        let store = DynamoEventStore::open(dynamo, tables, &settings.store, settings.dynamodb.create_tables)
            .await
            .context("opening the DynamoDB event store")?;
        Ok((Self { events: store.clone(), import: store.clone(), name }, store))
    }

    /// True when the store holds no event.
    pub async fn is_empty(&self) -> anyhow::Result<bool> {
        Ok(self.import.read_raw(None, 1).await?.events.is_empty())
    }
}

/// One order's events, in version order, as runs for [`EventImport::import`]: a page's events grouped by order,
/// each order's in the order they came (version order), orders in the order they first appear.
pub fn runs(events: Vec<RawEvent>) -> Vec<Vec<RawEvent>> {
    let mut index: HashMap<OrderId, usize> = HashMap::new();
    let mut runs: Vec<Vec<RawEvent>> = Vec::new();
    for event in events {
        match index.get(&event.order_id) {
            Some(&i) => runs[i].push(event),
            None => {
                index.insert(event.order_id.clone(), runs.len());
                runs.push(vec![event]);
            }
        }
    }
    runs
}

/// The digest of one order's history (see the module doc), and its number of events.
#[derive(Clone, Default)]
pub struct OrderDigest {
    hasher: Sha256,
    pub events: u64,
    /// The last version added: a history read out of version order is a difference too.
    last_version: u64,
    out_of_order: bool,
}

impl OrderDigest {
    pub fn add(&mut self, event: &RawEvent) {
        let line = format!(
            "{}\n{}\n{}\n{}\n{}\n{}\n{}\n",
            event.version,
            event.event_id,
            event.type_name,
            event.schema_version,
            event.recorded_at.timestamp_millis(),
            event.traceparent.as_deref().unwrap_or(""),
            event.payload
        );
        self.hasher.update(line.as_bytes());
        self.out_of_order |= event.version != self.last_version + 1;
        self.last_version = event.version;
        self.events += 1;
    }

    /// The hex digest; a history that was not 1, 2, 3, … gets a mark no complete history can have.
    pub fn finish(self) -> String {
        let hex: String = self.hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
        if self.out_of_order { format!("{hex} (versions not 1..{})", self.last_version) } else { hex }
    }
}

/// Every order's digest and event count, reading the whole store page by page.
pub async fn digest_all(
    source: &dyn EventImport,
    progress: &mut Progress,
) -> anyhow::Result<BTreeMap<String, (u64, String)>> {
    let mut digests: HashMap<OrderId, OrderDigest> = HashMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let chunk = source.read_raw(cursor.as_deref(), PAGE).await?;
        progress.add(chunk.events.len() as u64);
        for event in &chunk.events {
            digests.entry(event.order_id.clone()).or_default().add(event);
        }
        match chunk.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    progress.finish();
    Ok(digests.into_iter().map(|(id, d)| (id.as_str().to_owned(), (d.events, d.finish()))).collect())
}

/// Progress of a long command on stderr: a bar (events/s, ETA) at a terminal, a plain line every second
/// otherwise (a log, a CI job), so that a redirected stderr is not filled with control sequences.
pub struct Progress {
    bar: Option<ProgressBar>,
    label: &'static str,
    total: u64,
    done: u64,
    started: Instant,
    last_line: Instant,
}

const LINE_EVERY: Duration = Duration::from_secs(1);

impl Progress {
    pub fn new(label: &'static str, total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            // An import does not know its length: a counter instead of a bar.
            let (template, bar) = if total > 0 {
                ("{msg} [{bar:40}] {pos}/{len} events ({per_sec}, eta {eta})", ProgressBar::new(total))
            } else {
                ("{msg} {pos} events ({per_sec})", ProgressBar::new_spinner())
            };
            let style = ProgressStyle::with_template(template)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
            bar.with_style(style).with_message(label)
        });
        let now = Instant::now();
        Self { bar, label, total, done: 0, started: now, last_line: now }
    }

    pub fn add(&mut self, events: u64) {
        self.done += events;
        if let Some(bar) = &self.bar {
            bar.inc(events);
        } else if self.last_line.elapsed() >= LINE_EVERY {
            self.last_line = Instant::now();
            eprintln!("{}", self.line());
        }
    }

    fn line(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = self.done as f64 / secs;
        let left = self.total.saturating_sub(self.done) as f64 / rate.max(0.001);
        if self.total > 0 {
            format!("{}: {}/{} events ({rate:.0}/s, eta {left:.0}s)", self.label, self.done, self.total)
        } else {
            format!("{}: {} events ({rate:.0}/s)", self.label, self.done)
        }
    }

    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        eprintln!("{}: {} events in {:.1}s", self.label, self.done, self.started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;
    use uuid::Uuid;

    use super::*;
    use crate::domain::{Money, OrderEvent, Text};
    use crate::store::StoredEvent;

    fn event(order: &str, version: u64) -> RawEvent {
        let stored = StoredEvent {
            event_id: Uuid::now_v7(),
            order_id: OrderId::parse("o", order).unwrap(),
            version,
            position: 0,
            schema_version: 1,
            recorded_at: DateTime::from_timestamp_millis(1_700_000_000_000).unwrap(),
            traceparent: None,
            event: OrderEvent::PaymentConfirmed {
                payment_id: Text::parse("p", "pay-1", 10).unwrap(),
                amount: Money::from_minor(100),
                paid_at: DateTime::from_timestamp_millis(1_700_000_000_000).unwrap(),
            },
        };
        RawEvent::encode(&stored).unwrap()
    }

    #[test]
    fn a_page_in_log_order_becomes_one_run_per_order_in_version_order() {
        let page = vec![event("a", 1), event("b", 1), event("a", 2), event("c", 1), event("b", 2)];
        let runs = runs(page);
        let shape: Vec<Vec<(String, u64)>> =
            runs.iter().map(|r| r.iter().map(|e| (e.order_id.to_string(), e.version)).collect()).collect();
        let pairs = |v: &[(&str, u64)]| v.iter().map(|(o, n)| (o.to_string(), *n)).collect::<Vec<_>>();
        assert_eq!(shape, vec![pairs(&[("a", 1), ("a", 2)]), pairs(&[("b", 1), ("b", 2)]), pairs(&[("c", 1)])]);
    }

    #[test]
    fn the_digest_changes_with_any_part_of_an_event_and_marks_gaps() {
        let history = [event("a", 1), event("a", 2)];
        let digest = |events: &[RawEvent]| {
            let mut d = OrderDigest::default();
            events.iter().for_each(|e| d.add(e));
            d.finish()
        };
        let same = digest(&history);
        assert_eq!(digest(&history), same);
        let mut other_id = history.clone();
        other_id[1].event_id = Uuid::now_v7();
        let mut other_time = history.clone();
        other_time[1].recorded_at = DateTime::from_timestamp_millis(1_700_000_000_001).unwrap();
        let mut other_trace = history.clone();
        other_trace[0].traceparent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
        // The same data in another schema version is another event as written.
        let mut other_shape = history.clone();
        other_shape[0].schema_version = 2;
        for changed in [other_id, other_time, other_trace, other_shape] {
            assert_ne!(digest(&changed), same);
        }
        // The log position is not part of it (it differs between stores).
        let mut moved = history.clone();
        moved[0].position = 42;
        assert_eq!(digest(&moved), same);
        assert!(digest(&history[1..]).contains("versions not 1..2"));
    }
}
