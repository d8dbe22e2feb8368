//! `orderflow export [FILE]` / `orderflow import [FILE]`: the event log as NDJSON, one CloudEvent per line in
//! exactly the envelope of the event feed (`feed::cloudevents`, docs/api.md §3), so a file holds what a feed
//! consumer would have received, and anything that reads the feed reads an export.
//!
//! **Export** streams the store in its own order — the embedded log by position, DynamoDB by its scan — with
//! each order's events in version order, each as it was written: its schema version and data as stored (a legacy
//! event stays a legacy event; `--current-shape` gives every event in today's shape instead, as the feed does).
//! The envelope's `time` is the event's own time, and the extension attribute `recordedat` carries the store's
//! recording time where it differs, so `export → import → export` gives the same bytes, on either profile.
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
use crate::store::{Imported, RawEvent};

/// Writes every event as one NDJSON line; returns how many.
pub async fn export(settings: &Settings, out: &mut dyn Write, current_shape: bool) -> anyhow::Result<u64> {
    let store = Store::open(settings, false).await?;
    let mut progress = Progress::new("export", store.events.head().await);
    let mut cursor: Option<String> = None;
    let mut written = 0u64;
    loop {
        let chunk = store.import.read_raw(cursor.as_deref(), PAGE).await?;
        for event in &chunk.events {
            let record = if current_shape {
                CloudEvent::from_stored(&event.decode().with_context(|| unreadable(event))?)
            } else {
                CloudEvent::from_raw(event).with_context(|| unreadable(event))?
            };
            serde_json::to_writer(&mut *out, &record).context("writing")?;
            out.write_all(b"\n").context("writing")?;
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

fn unreadable(event: &RawEvent) -> String {
    format!("order {} version {}: the stored event is unreadable", event.order_id, event.version)
}

pub struct ImportOptions {
    /// Import into a store that already holds events.
    pub append: bool,
    /// Publish the imported events to the distributed profile's event feed (see `crate::lifecycle`).
    pub publish: bool,
}

/// Reads NDJSON CloudEvents and writes them; returns what was written and skipped. Every line is checked before
/// anything is written (the input is spooled to a temporary file meanwhile, so it may be a pipe of any length):
/// a malformed line stops the import with its number and the store as it was.
pub async fn import(settings: &Settings, input: &mut dyn BufRead, options: &ImportOptions) -> anyhow::Result<Imported> {
    let store = Store::open(settings, true).await?;
    if !options.append && !store.is_empty().await? {
        bail!("{} already holds events: import writes into an empty store (or add them with --append)", store.name);
    }
    let (spool, lines) = check(input, options.append)?;
    let mut progress = Progress::new("import", lines);
    let mut done = Imported::default();
    let mut batch: Vec<RawEvent> = Vec::with_capacity(PAGE);
    let (mut batch_from, mut number) = (1, 0);
    for line in std::io::BufReader::new(spool).lines() {
        let line = line.context("reading the checked lines back")?;
        number += 1;
        let record: CloudEvent = serde_json::from_str(&line).context("a checked line")?;
        batch.push(record.into_raw().context("a checked line")?);
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

/// Checks every line — a CloudEvent of ours, readable, each order's versions following one another from 1 (or,
/// with `append`, from wherever the file takes the order up) — and spools the non-empty ones to a temporary file,
/// rewound; returns it with their count.
fn check(input: &mut dyn BufRead, append: bool) -> anyhow::Result<(std::fs::File, u64)> {
    use std::io::Seek as _;
    let mut spool = std::io::BufWriter::new(tempfile::tempfile().context("a temporary file for the import")?);
    let mut last: HashMap<OrderId, u64> = HashMap::new();
    let (mut line, mut number, mut lines) = (String::new(), 0usize, 0u64);
    loop {
        line.clear();
        let read = input.read_line(&mut line).with_context(|| format!("reading line {}", number + 1))?;
        if read == 0 {
            break;
        }
        number += 1;
        let text = line.trim_end();
        if text.trim().is_empty() {
            continue;
        }
        let stop = |why: String| anyhow::anyhow!("line {number}: {why}; nothing was imported");
        let record: CloudEvent = serde_json::from_str(text).map_err(|e| stop(e.to_string()))?;
        let event = record.into_raw().map_err(|e| stop(e.to_string()))?;
        match last.get(&event.order_id).map(|v| v + 1) {
            Some(next) if event.version != next => {
                return Err(stop(format!(
                    "order {} version {} follows version {}",
                    event.order_id,
                    event.version,
                    next - 1
                )));
            }
            None if event.version != 1 && !append => {
                return Err(stop(format!(
                    "order {} starts at version {} (an import into an empty store starts every order at 1)",
                    event.order_id, event.version
                )));
            }
            _ => {}
        }
        last.insert(event.order_id, event.version);
        writeln!(spool, "{text}").context("spooling the import")?;
        lines += 1;
    }
    let mut spool = spool.into_inner().map_err(|e| e.into_error()).context("spooling the import")?;
    spool.rewind().context("spooling the import")?;
    Ok((spool, lines))
}

async fn write(
    store: &Store,
    batch: &mut Vec<RawEvent>,
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
