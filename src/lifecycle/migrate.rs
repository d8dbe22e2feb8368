//! `orderflow migrate --from <data folder> --config <distributed.toml>`: copies an embedded event log into the
//! distributed profile's DynamoDB tables, then verifies both sides (see the module doc of `crate::lifecycle`).
//!
//! Resumable by construction: every event is a conditional write of its (orderId, version), so a second run —
//! or one after the first was killed — finds what is there, compares it and skips it, and writes only the rest.
//! A different event at a version already taken is an error naming the order: the target holds another history.

use std::path::PathBuf;

use anyhow::bail;

use super::{PAGE, Progress, Store, digest_all, runs};
use crate::admin_client::UsageError;
use crate::config::{Profile, Settings};
use crate::store::Imported;

pub struct Options {
    /// The embedded data folder to copy from.
    pub from: PathBuf,
    /// Publish the history to the event feed as if it were new (see the module doc).
    pub publish: bool,
}

/// How many differing orders the summary names.
const NAMED: usize = 10;

pub async fn run(settings: &Settings, options: &Options) -> anyhow::Result<()> {
    if settings.profile != Profile::Distributed {
        return Err(UsageError(
            "migrate copies into the distributed profile: give its configuration with --config (profile = \
             \"distributed\", e.g. config/distributed.toml)"
                .into(),
        )
        .into());
    }
    let (source, sqlite) = Store::embedded(settings, &options.from, false)?;
    let (target, dynamo) = Store::distributed(settings).await?;
    eprintln!("migrate: {} → {}", source.name, target.name);

    let total = sqlite.count().await?;
    let mut progress = Progress::new("copy", total);
    let mut done = Imported::default();
    let mut cursor: Option<String> = None;
    loop {
        let chunk = source.import.read_raw(cursor.as_deref(), PAGE).await?;
        let count = chunk.events.len() as u64;
        done += target.import.import(&runs(chunk.events), options.publish).await?;
        progress.add(count);
        match chunk.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    progress.finish();

    let (mut carried, mut present) = (0u64, 0u64);
    let mut after = String::new();
    loop {
        let page = sqlite.live_idempotency(&after, PAGE).await?;
        let Some((last, _)) = page.last() else { break };
        after = last.scope.clone();
        for (record, created_at) in &page {
            if dynamo.import_idempotency(record, *created_at).await? { carried += 1 } else { present += 1 }
        }
    }
    println!(
        "copied: {} events written, {} already there; idempotency records: {carried} written, {present} already there",
        done.written, done.skipped
    );

    let mut progress = Progress::new("verify source", total);
    let left = digest_all(&*source.import, &mut progress).await?;
    let mut progress = Progress::new("verify target", total);
    let right = digest_all(&*target.import, &mut progress).await?;
    let (mut equal, mut missing, mut different) = (0u64, Vec::new(), Vec::new());
    for (order, (_, digest)) in &left {
        match right.get(order) {
            None => missing.push(order.as_str()),
            Some((_, other)) if other == digest => equal += 1,
            Some(_) => different.push(order.as_str()),
        }
    }
    let events = |side: &std::collections::BTreeMap<String, (u64, String)>| side.values().map(|(n, _)| n).sum::<u64>();
    let only_target = right.keys().filter(|k| !left.contains_key(*k)).count();
    println!("verification:");
    println!("  events: {} in the source, {} in the target", events(&left), events(&right));
    println!("  orders: {} in the source, {equal} with equal digests in the target", left.len());
    println!("  missing in the target: {}{}", missing.len(), named(&missing));
    println!("  different in the target: {}{}", different.len(), named(&different));
    if only_target > 0 {
        println!("  orders only in the target (not from this data folder): {only_target}");
    }
    if !missing.is_empty() || !different.is_empty() {
        bail!("verification failed: {} orders missing, {} different", missing.len(), different.len());
    }
    println!("migration verified.");
    if !options.publish {
        println!(
            "next: start the service with this configuration and build its views from the migrated history before \
             it takes commands: `orderflow rebuild search` and `orderflow rebuild revenue` (the history was not \
             published to the event feed; run with --publish to publish it instead)"
        );
    }
    Ok(())
}

fn named(orders: &[&str]) -> String {
    if orders.is_empty() {
        return String::new();
    }
    let more = if orders.len() > NAMED { ", …" } else { "" };
    format!(" ({}{more})", orders.iter().take(NAMED).copied().collect::<Vec<_>>().join(", "))
}
