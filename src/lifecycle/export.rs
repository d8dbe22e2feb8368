//! `orderflow export [FILE]` / `orderflow import [FILE]`: the event log as NDJSON, one CloudEvent per line in
//! exactly the envelope of the event feed (`feed::cloudevents`, docs/api.md §3), so a file holds what a feed
//! consumer would have received, and anything that reads the feed reads an export.
//!
//! **Export** streams the store in its own order — the embedded log by position, DynamoDB by its scan — with
//! each order's events in version order; `export → import → export` on the same profile gives the same bytes.
//! The envelope's `time` is the event's own time; the store's recording time is not part of it, so an imported
//! event is recorded at its `time`.
//!
//! **Import** writes into an empty store of either profile (refusing one that holds events unless
//! `--append`). Lines are read in batches of [`PAGE`]; a batch is written only once every line of it has been
//! parsed and checked (a CloudEvent of ours, each order's versions consecutive from 1, or with `--append` from
//! wherever the file takes the order up), and then written conditionally, each order's events in version order
//! (see [`crate::store::EventImport`]: SQLite one transaction per batch; DynamoDB event by event). So a
//! malformed line stops the import with its line number and nothing of its batch written: every order holds a
//! prefix of its history in the file. `--append` runs it again after a fix, skipping the events already there.
//! Idempotency records are not events and not exported.

use std::collections::HashMap;
use std::io::{BufRead, Write};

use anyhow::{Context as _, bail};

use super::{PAGE, Progress, Store, runs};
use crate::config::Settings;
use crate::domain::OrderId;
use crate::feed::cloudevents::CloudEvent;
use crate::store::{Imported, StoredEvent};

/// Writes every event as one NDJSON line; returns how many.
pub async fn export(settings: &Settings, out: &mut dyn Write) -> anyhow::Result<u64> {
    let store = Store::open(settings, false).await?;
    let mut progress = Progress::new("export", store.events.head().await);
    let mut cursor: Option<String> = None;
    let mut written = 0u64;
    loop {
        let chunk = store.events.read(cursor.as_deref(), PAGE).await?;
        for event in &chunk.events {
            out.write_all(&CloudEvent::encode(event)).and_then(|()| out.write_all(b"\n")).context("writing")?;
        }
        written += chunk.events.len() as u64;
        progress.add(chunk.events.len() as u64);
        match chunk.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    out.flush().context("writing")?;
    progress.finish();
    Ok(written)
}

pub struct ImportOptions {
    /// Import into a store that already holds events.
    pub append: bool,
    /// Publish the imported events to the distributed profile's event feed (see `crate::lifecycle`).
    pub publish: bool,
}

/// Reads NDJSON CloudEvents and writes them; returns what was written and skipped.
pub async fn import(settings: &Settings, input: &mut dyn BufRead, options: &ImportOptions) -> anyhow::Result<Imported> {
    let store = Store::open(settings, true).await?;
    if !options.append && !store.is_empty().await? {
        bail!("{} already holds events: import writes into an empty store (or add them with --append)", store.name);
    }
    let mut progress = Progress::new("import", 0);
    let mut done = Imported::default();
    let mut last: HashMap<OrderId, u64> = HashMap::new();
    let mut batch: Vec<StoredEvent> = Vec::with_capacity(PAGE);
    let mut batch_from = 1;
    let mut line = String::new();
    let mut number = 0usize;
    loop {
        line.clear();
        let read = input.read_line(&mut line).with_context(|| format!("reading line {}", number + 1))?;
        if read == 0 {
            break;
        }
        number += 1;
        if line.trim().is_empty() {
            continue;
        }
        let stop = |why: String| {
            anyhow::anyhow!(
                "line {number}: {why}; nothing of lines {batch_from}..={number} was written{}",
                if batch_from > 1 { format!(" (lines 1..{batch_from} were)") } else { String::new() }
            )
        };
        let event = CloudEvent::decode(line.trim_end().as_bytes()).map_err(|e| stop(e.to_string()))?;
        let expected = last.get(&event.order_id).map(|v| v + 1);
        match expected {
            Some(next) if event.version != next => {
                return Err(stop(format!(
                    "order {} version {} follows version {}",
                    event.order_id,
                    event.version,
                    next - 1
                )));
            }
            None if event.version != 1 && !options.append => {
                return Err(stop(format!(
                    "order {} starts at version {} (an import into an empty store starts every order at 1)",
                    event.order_id, event.version
                )));
            }
            _ => {}
        }
        last.insert(event.order_id.clone(), event.version);
        batch.push(event);
        if batch.len() >= PAGE {
            done += write(&store, &mut batch, options.publish, batch_from, number).await?;
            progress.add(PAGE as u64);
            batch_from = number + 1;
        }
    }
    let rest = batch.len() as u64;
    done += write(&store, &mut batch, options.publish, batch_from, number).await?;
    progress.add(rest);
    progress.finish();
    Ok(done)
}

async fn write(
    store: &Store,
    batch: &mut Vec<StoredEvent>,
    publish: bool,
    from: usize,
    to: usize,
) -> anyhow::Result<Imported> {
    if batch.is_empty() {
        return Ok(Imported::default());
    }
    let runs = runs(std::mem::take(batch));
    store.import.import(&runs, publish).await.with_context(|| format!("writing lines {from}..={to}"))
}
