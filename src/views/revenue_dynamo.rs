//! The distributed daily revenue view: DynamoDB, with the semantics of the embedded one (`revenue_sqlite`).
//!
//! Two tables. `revenue_orders` (orderId S) keeps per order its `currency` S and the last `version` N the view
//! applied: the dedupe record. `revenue_daily` (month S HASH = `YYYY-MM`, dayCurrency S RANGE =
//! `YYYY-MM-DD#EUR`) keeps the totals of one business day and currency: `day` S, `currency` S, `gross` N,
//! `refunds` N, `paidOrders` N, `cancelledOrders` N, all grown with `ADD`. Partitioning by month keeps a
//! range query to at most 13 partitions (docs/api.md bounds the range at 366 days); the range key sorts by day,
//! then currency, which is the order the API answers in.
//!
//! Exactly-once in effect: an event moves the order's `version` from v-1 to v under the condition
//! `version = v-1` (an `OrderPlaced` creates the row under `attribute_not_exists`), in the same
//! `TransactWriteItems` as its `ADD` to the day row. A redelivered event fails the condition and changes
//! nothing; the view then reads the row to tell a duplicate (version ≥ v: skipped) from a gap
//! (`ViewError::OutOfOrder`).
//!
//! A batch is written in few transactions, not one per event: the batch's dedupe rows are read with
//! `BatchGetItem`, each order's new events fold into one conditional move of its row (from the version read
//! to its last event's), and the orders' payments and cancellations into one `ADD` per day row, packed up to
//! 100 items per transaction. Every payment of a day lands on one row, so one transaction per event would
//! contend for it (`TransactionConflict`) and throughput would be that row's; packed, a batch of 500 events is
//! a handful of transactions. A pack cancelled by a failed condition wrote nothing; its orders, and any order
//! whose events do not follow its row, then take the event-by-event path above (orders concurrently, each
//! in order; a `TransactionConflict` on a shared day row is retried).
//!
//! What an event does is decided by `rules` (this module loads and stores): duplicates and gaps by
//! `rules::revenue_step` / `rules::fold_revenue`, and days by `rules::business_day`: a payment counts on the
//! date of `paidAt` in the business time zone (`revenue.timezone`), a refund (and the cancellation, paid or
//! not) on that of `cancelledAt`. The view is fed by Kafka, which holds the consumer position: `checkpoint` is
//! always 0 and `reset_checkpoint` does nothing here (the feed is rewound by the consumer group, and the view
//! dedupes).
//!
//! Events of one order are applied in order; different orders are applied concurrently (bounded), since
//! they touch different dedupe rows. They may share a day row: DynamoDB then cancels one transaction with
//! `TransactionConflict`, which is retried (nothing was written).
//!
//! **Rebuild by table generation.** The two tables come in generations: 0 is `<prefix>_revenue_daily` /
//! `<prefix>_revenue_orders`, n appends `_<n>`. The active one is named by the item `revenue#generation` of the
//! checkpoints table (`generation` N; absent = 0), read at open. A rebuild takes a new number from the same
//! item's counter (`next` N, an atomic `ADD`, so two rebuilds never share tables), creates that generation's
//! tables and fills them with the same apply code as the projector. Then it switches: first durably (a
//! conditional update of `generation` from the old number to the new), then the in-memory pointer that queries
//! and the projector read, and only then deletes the old tables. Queries read one generation from start to
//! end, so they see either the old view or the whole new one, never a partial table. A query (or batch) that
//! fails re-reads the pointer and, if the generation moved on (a switch under it, or by another instance),
//! runs again on the new tables. The switch is coordinated within one instance (the projector pauses while
//! the rebuild runs); with several instances, rebuild while one instance runs the projectors, since another
//! instance's projector keeps writing the old tables until it notices the switch.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, Put, ReturnValue, TransactWriteItem, Update};
use chrono::{Datelike, Months, NaiveDate, Utc};
use chrono_tz::Tz;
use futures_util::stream::{self, StreamExt, TryStreamExt};

use super::rules::{self, DayDelta, RevenueChange, RevenueFold, RevenueOrder, RevenueStep, Sequence};
use super::{ApplyReport, Projection, Rebuilder, RevenueDay, RevenueView, ViewError};
use crate::aws::attr::{self, Item, num, string};
use crate::aws::{RevenueTableNames, Tables, delete_tables, dynamo_client_with_timeouts, ensure_tables, error_text};
use crate::domain::Currency;
use crate::store::StoredEvent;

const NAME: &str = super::REVENUE;

/// Orders applied at once on the event-by-event path (each order's events stay in order).
const CONCURRENT_ORDERS: usize = 8;

/// Keys per `BatchGetItem` (DynamoDB's limit).
const BATCH_GET_KEYS: usize = 100;

/// Items per `TransactWriteItems` (DynamoDB's limit).
const TRANSACTION_ITEMS: usize = 100;

/// Retries of a write cancelled by a transient reason (a concurrent transaction on the same day row,
/// throttling) before the batch fails and the projector retries it with backoff.
const TRANSIENT_RETRIES: u32 = 5;

/// The id of the checkpoints-table item that names the active generation (`generation`) and hands out new
/// ones (`next`).
const GENERATION_ID: &str = "revenue#generation";

pub struct DynamoRevenueView {
    client: aws_sdk_dynamodb::Client,
    tables: Tables,
    /// The generation queries and the projector use now; a rebuild's `finish` replaces it.
    active: Arc<RwLock<Arc<RevenueTables>>>,
    /// The business time zone of the days (`revenue.timezone`).
    zone: Tz,
}

/// One generation of the view's two tables, with all the code that writes and reads them: the projector and
/// a rebuild apply events through the very same functions.
struct RevenueTables {
    client: aws_sdk_dynamodb::Client,
    generation: u64,
    names: RevenueTableNames,
    zone: Tz,
}

impl DynamoRevenueView {
    /// Wraps the client (adding timeouts where its configuration has none), reads the active generation and,
    /// when `create_tables`, creates the checkpoints table and the generation's two tables if they are missing.
    /// Its days are business days in `zone` (`revenue.timezone`).
    pub async fn open(
        client: aws_sdk_dynamodb::Client,
        tables: Tables,
        create_tables: bool,
        zone: Tz,
    ) -> anyhow::Result<Arc<Self>> {
        let client = dynamo_client_with_timeouts(&client);
        if create_tables {
            ensure_tables(&client, &[tables.checkpoints_spec()]).await?;
        }
        let generation = active_generation(&client, &tables).await?;
        if create_tables {
            ensure_tables(&client, &tables.revenue_specs(generation)).await?;
        }
        let active = Arc::new(RevenueTables::new(&client, &tables, generation, zone));
        Ok(Arc::new(Self { client, tables, active: Arc::new(RwLock::new(active)), zone }))
    }

    /// The generation in use now.
    fn active(&self) -> Arc<RevenueTables> {
        Arc::clone(&self.active.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// After a failure on `used`: reads the durable pointer and moves to a newer generation if there is one
    /// (switched under the call, or by another instance, whose old tables may be gone). `None`: nothing newer.
    async fn newer_than(&self, used: &RevenueTables) -> Option<Arc<RevenueTables>> {
        let generation = match active_generation(&self.client, &self.tables).await {
            Ok(generation) => generation,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the revenue generation");
                return None;
            }
        };
        let mut active = self.active.write().unwrap_or_else(|p| p.into_inner());
        // Generations only grow, so a lower number is a stale read racing a switch, never a rollback.
        if generation > active.generation {
            tracing::info!(generation, "the revenue view moved to a newer table generation");
            *active = Arc::new(RevenueTables::new(&self.client, &self.tables, generation, self.zone));
        }
        (active.generation > used.generation).then(|| Arc::clone(&active))
    }
}

/// The active generation named in the checkpoints table (0 when no rebuild ever switched).
async fn active_generation(client: &aws_sdk_dynamodb::Client, tables: &Tables) -> Result<u64, ViewError> {
    let table = &tables.checkpoints;
    let output = client
        .get_item()
        .table_name(table)
        .key("id", string(GENERATION_ID))
        .consistent_read(true)
        .send()
        .await
        .map_err(|e| unavailable(table, &e))?;
    match output.item.as_ref().filter(|item| item.contains_key("generation")) {
        None => Ok(0),
        Some(item) => attr::n(item, "generation")
            .map_err(|e| ViewError::Unavailable(format!("corrupt {GENERATION_ID} in {table}: {e}"))),
    }
}

impl RevenueTables {
    fn new(client: &aws_sdk_dynamodb::Client, tables: &Tables, generation: u64, zone: Tz) -> Self {
        Self { client: client.clone(), generation, names: tables.revenue_generation(generation), zone }
    }

    /// The order's dedupe row: its currency and the last version applied.
    async fn order_row(&self, order_id: &str) -> Result<Option<RevenueOrder>, ViewError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.names.orders)
            .key("orderId", string(order_id))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable(&self.names.orders, &e))?;
        let Some(item) = output.item else { return Ok(None) };
        let decode = || -> Result<RevenueOrder, String> {
            Ok(RevenueOrder { currency: attr::s(&item, "currency")?.to_owned(), version: attr::n(&item, "version")? })
        };
        decode().map(Some).map_err(|e| ViewError::Unavailable(format!("corrupt revenue row of {order_id}: {e}")))
    }

    /// Applies one order's events (`batch[i]` for each `i` of `indices`) in order, stopping at the first error.
    async fn apply_order(&self, batch: &[StoredEvent], indices: Vec<usize>) -> Result<ApplyReport, ViewError> {
        let mut report = ApplyReport::default();
        for event in indices.into_iter().filter_map(|i| batch.get(i)) {
            if self.apply_one(event).await? {
                report.applied += 1;
            } else {
                report.skipped += 1;
            }
        }
        Ok(report)
    }

    /// True when applied, false when it was a duplicate (already applied).
    async fn apply_one(&self, event: &StoredEvent) -> Result<bool, ViewError> {
        let known = self.order_row(event.order_id.as_str()).await?;
        let Some(step) = rules::revenue_step(known.as_ref(), event, self.zone)? else { return Ok(false) };
        if settle(|| self.write(event, &step)).await? {
            return Ok(true);
        }
        // Someone (a redelivery racing us, another instance) moved the row: duplicate or gap?
        let now = self.order_row(event.order_id.as_str()).await?.map_or(0, |r| r.version);
        match rules::sequence(now, event.version) {
            Sequence::Duplicate => Ok(false),
            Sequence::Next | Sequence::Gap => Err(rules::out_of_order(event, now)),
        }
    }

    async fn write(&self, event: &StoredEvent, step: &RevenueStep) -> Result<Written, ViewError> {
        let table = &self.names.orders;
        let id = string(event.order_id.as_str());
        match &step.change {
            RevenueChange::Placed => {
                let result = self
                    .client
                    .put_item()
                    .table_name(table)
                    .item("orderId", id)
                    .item("currency", string(&step.record.currency))
                    .item("version", num(step.record.version))
                    .condition_expression("attribute_not_exists(orderId)")
                    .send()
                    .await;
                match result {
                    Ok(_) => Ok(Written::Done),
                    Err(SdkError::ServiceError(e)) => match e.err() {
                        PutItemError::ConditionalCheckFailedException(_) => Ok(Written::ConditionFailed),
                        PutItemError::TransactionConflictException(_) => Ok(Written::Transient("conflict".into())),
                        other => Err(ViewError::Unavailable(format!("put {table}: {}", error_text(other)))),
                    },
                    Err(e) => Err(unavailable(table, &e)),
                }
            }
            RevenueChange::Version => {
                let (names, values) = bump_expression(event.version.saturating_sub(1), event.version);
                let result = self
                    .client
                    .update_item()
                    .table_name(table)
                    .key("orderId", id)
                    .update_expression(BUMP_UPDATE)
                    .condition_expression(BUMP_CONDITION)
                    .set_expression_attribute_names(Some(names))
                    .set_expression_attribute_values(Some(values))
                    .send()
                    .await;
                match result {
                    Ok(_) => Ok(Written::Done),
                    Err(SdkError::ServiceError(e)) => match e.err() {
                        UpdateItemError::ConditionalCheckFailedException(_) => Ok(Written::ConditionFailed),
                        UpdateItemError::TransactionConflictException(_) => Ok(Written::Transient("conflict".into())),
                        other => Err(ViewError::Unavailable(format!("update {table}: {}", error_text(other)))),
                    },
                    Err(e) => Err(unavailable(table, &e)),
                }
            }
            RevenueChange::Day(delta) => {
                let items = self
                    .day_transaction(event, &step.record.currency, delta)
                    .map_err(|e| ViewError::Unavailable(e.to_string()))?;
                self.transact(items).await
            }
        }
    }

    /// Runs one transaction: done, cancelled by a failed condition (a dedupe row not at the version it was
    /// read at: a redelivery or another instance moved it), cancelled for a passing reason, or failed.
    async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<Written, ViewError> {
        let result = self.client.transact_write_items().set_transact_items(Some(items)).send().await;
        match result {
            Ok(_) => Ok(Written::Done),
            Err(SdkError::ServiceError(e)) => match e.err() {
                TransactWriteItemsError::TransactionCanceledException(cancelled) => {
                    let codes: Vec<&str> =
                        cancelled.cancellation_reasons().iter().map(|r| r.code().unwrap_or("None")).collect();
                    if codes.contains(&"ConditionalCheckFailed") {
                        // Only dedupe rows carry conditions; day rows are plain `ADD`s.
                        Ok(Written::ConditionFailed)
                    } else if codes.iter().all(|c| {
                        matches!(
                            *c,
                            "None" | "TransactionConflict" | "ThrottlingError" | "ProvisionedThroughputExceeded"
                        )
                    }) {
                        Ok(Written::Transient(codes.join(",")))
                    } else {
                        Err(ViewError::Unavailable(format!("revenue transaction cancelled: {codes:?}")))
                    }
                }
                other => Err(ViewError::Unavailable(format!("revenue transaction: {}", error_text(other)))),
            },
            Err(e) => Err(ViewError::Unavailable(format!("revenue transaction: {}", error_text(&e)))),
        }
    }

    /// The dedupe row's version bump and the day row's `ADD`, as one transaction.
    fn day_transaction(
        &self,
        event: &StoredEvent,
        currency: &str,
        delta: &DayDelta,
    ) -> Result<Vec<TransactWriteItem>, aws_sdk_dynamodb::error::BuildError> {
        let bump = self.bump(event.order_id.as_str(), event.version.saturating_sub(1), event.version)?;
        Ok(vec![TransactWriteItem::builder().update(bump).build(), self.day_add(currency, delta)?])
    }

    /// Moves an order's dedupe row from version `from` to `to`, on condition that it is at `from`.
    fn bump(&self, order_id: &str, from: u64, to: u64) -> Result<Update, aws_sdk_dynamodb::error::BuildError> {
        let (names, values) = bump_expression(from, to);
        Update::builder()
            .table_name(&self.names.orders)
            .key("orderId", string(order_id))
            .update_expression(BUMP_UPDATE)
            .condition_expression(BUMP_CONDITION)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .build()
    }

    /// Adds a delta to its (day, currency) row (created by the first `ADD`).
    fn day_add(
        &self,
        currency: &str,
        delta: &DayDelta,
    ) -> Result<TransactWriteItem, aws_sdk_dynamodb::error::BuildError> {
        let day = delta.day;
        let add = Update::builder()
            .table_name(&self.names.daily)
            .key("month", string(month_key(day)))
            .key("dayCurrency", string(format!("{day}#{currency}")))
            // `day` is a reserved word in DynamoDB expressions; every name goes through a #placeholder alike.
            .update_expression("SET #day = :day, #cur = :cur ADD #g :g, #r :r, #p :p, #c :c")
            .set_expression_attribute_names(Some(names_map(&[
                ("#day", "day"),
                ("#cur", "currency"),
                ("#g", "gross"),
                ("#r", "refunds"),
                ("#p", "paidOrders"),
                ("#c", "cancelledOrders"),
            ])))
            .set_expression_attribute_values(Some(HashMap::from([
                (":day".to_owned(), string(day.to_string())),
                (":cur".to_owned(), string(currency)),
                (":g".to_owned(), num(delta.gross)),
                (":r".to_owned(), num(delta.refunds)),
                (":p".to_owned(), num(delta.paid)),
                (":c".to_owned(), num(delta.cancelled)),
            ])))
            .build()?;
        Ok(TransactWriteItem::builder().update(add).build())
    }

    /// One month partition's rows with `from <= day <= to` (and the currency, when given).
    async fn query_month(
        &self,
        month: String,
        from: NaiveDate,
        to: NaiveDate,
        currency: Option<&str>,
    ) -> Result<Vec<RevenueDay>, ViewError> {
        let table = &self.names.daily;
        let mut rows = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut query = self
                .client
                .query()
                .table_name(table)
                .key_condition_expression("#m = :m AND #dc BETWEEN :lo AND :hi")
                .expression_attribute_names("#m", "month")
                .expression_attribute_names("#dc", "dayCurrency")
                .expression_attribute_values(":m", string(&month))
                // "#" < every currency letter < "~": the bounds take every currency of the first and last day.
                .expression_attribute_values(":lo", string(format!("{from}#")))
                .expression_attribute_values(":hi", string(format!("{to}#~")))
                .consistent_read(true)
                .set_exclusive_start_key(start.take());
            if let Some(currency) = currency {
                query = query
                    .filter_expression("#cur = :cur")
                    .expression_attribute_names("#cur", "currency")
                    .expression_attribute_values(":cur", string(currency));
            }
            let page = query.send().await.map_err(|e| unavailable(table, &e))?;
            for item in page.items.unwrap_or_default() {
                rows.push(
                    day_from_item(&item).map_err(|e| ViewError::Unavailable(format!("corrupt revenue day: {e}")))?,
                );
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(rows),
            }
        }
    }
}

enum Written {
    Done,
    /// The dedupe row was not at the expected version (or already existed).
    ConditionFailed,
    /// Cancelled for a passing reason; nothing was written.
    Transient(String),
}

/// One order's events of a batch, folded by [`rules::fold_revenue`] into one write: its dedupe row from `from`
/// (absent: `None`) to `to`, and what it adds to day rows of its currency.
struct OrderFold {
    /// The order's events, as indices into the batch, in feed order.
    group: Vec<usize>,
    from: Option<u64>,
    to: u64,
    currency: String,
    days: Vec<DayDelta>,
    applied: u64,
    skipped: u64,
}

impl OrderFold {
    /// Folds an order's events over its dedupe row as read (`known`). An event the rules refuse (a gap, an order
    /// the view does not hold whose first event is not its placement) gives the group back, for the
    /// event-by-event path to apply what it can and report the refusal.
    fn of(
        events: &[StoredEvent],
        group: Vec<usize>,
        known: Option<&RevenueOrder>,
        zone: Tz,
    ) -> Result<Self, Vec<usize>> {
        let folded = rules::fold_revenue(known, group.iter().filter_map(|&i| events.get(i)), zone);
        let Ok(RevenueFold { record, days, applied, skipped }) = folded else { return Err(group) };
        let (currency, to) = record.map_or((String::new(), 0), |r| (r.currency, r.version));
        Ok(OrderFold { group, from: known.map(|r| r.version), to, currency, days, applied, skipped })
    }

    /// The day rows this fold adds to.
    fn day_keys(&self) -> impl Iterator<Item = (NaiveDate, &str)> {
        self.days.iter().map(|d| (d.day, self.currency.as_str()))
    }
}

/// Splits folded orders into transactions of at most [`TRANSACTION_ITEMS`] items: one per order, one per day
/// row the pack adds to.
fn pack(folds: Vec<OrderFold>) -> Vec<Vec<OrderFold>> {
    let mut packs = Vec::new();
    let mut current: Vec<OrderFold> = Vec::new();
    let mut days: HashSet<(NaiveDate, String)> = HashSet::new();
    for fold in folds {
        let keys: HashSet<(NaiveDate, String)> = fold.day_keys().map(|(d, c)| (d, c.to_owned())).collect();
        let new_days = keys.difference(&days).count();
        if !current.is_empty() && current.len() + 1 + days.len() + new_days > TRANSACTION_ITEMS {
            packs.push(std::mem::take(&mut current));
            days.clear();
        }
        days.extend(keys);
        current.push(fold);
    }
    if !current.is_empty() {
        packs.push(current);
    }
    packs
}

/// Runs a write until it is done (true) or cancelled by a failed condition (false), retrying a cancellation
/// for a passing reason with backoff, at most [`TRANSIENT_RETRIES`] times.
async fn settle<F, Fut>(mut write: F) -> Result<bool, ViewError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Written, ViewError>>,
{
    let mut attempt = 0;
    loop {
        match write().await? {
            Written::Done => return Ok(true),
            Written::ConditionFailed => return Ok(false),
            Written::Transient(reason) if attempt >= TRANSIENT_RETRIES => {
                return Err(ViewError::Unavailable(format!("revenue write cancelled {} times: {reason}", attempt + 1)));
            }
            Written::Transient(_) => {
                attempt += 1;
                let jitter = u64::from(Utc::now().timestamp_subsec_micros() % 25);
                tokio::time::sleep(Duration::from_millis(10 * (1 << attempt) + jitter)).await;
            }
        }
    }
}

const BUMP_UPDATE: &str = "SET #v = :v";
const BUMP_CONDITION: &str = "#v = :prev";

fn bump_expression(from: u64, to: u64) -> (HashMap<String, String>, HashMap<String, AttributeValue>) {
    (names_map(&[("#v", "version")]), HashMap::from([(":v".to_owned(), num(to)), (":prev".to_owned(), num(from))]))
}

fn names_map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// `YYYY-MM`: the partition of a day.
fn month_key(day: NaiveDate) -> String {
    format!("{:04}-{:02}", day.year(), day.month())
}

fn day_from_item(item: &Item) -> Result<RevenueDay, String> {
    let date: NaiveDate = attr::s(item, "day")?.parse().map_err(|e| format!("attribute day: {e}"))?;
    let gross: u64 = attr::n(item, "gross")?;
    let refunds: u64 = attr::n(item, "refunds")?;
    Ok(RevenueDay {
        date,
        currency: attr::s(item, "currency")?.to_owned(),
        gross_revenue: gross,
        refunds,
        net_revenue: i64::try_from(i128::from(gross) - i128::from(refunds))
            .map_err(|_| format!("net revenue out of range: {gross} - {refunds}"))?,
        paid_orders: attr::n(item, "paidOrders")?,
        cancelled_orders: attr::n(item, "cancelledOrders")?,
    })
}

fn unavailable(table: &str, error: &(dyn std::error::Error + 'static)) -> ViewError {
    ViewError::Unavailable(format!("{table}: {}", error_text(error)))
}

impl RevenueTables {
    /// Applies a batch. The dedupe rows of its orders are read together (`BatchGetItem`); each order's new
    /// events are folded into one move of its row from the version read to its last event's, and the orders'
    /// payments and cancellations into one `ADD` per day row; these go in transactions of up to
    /// [`TRANSACTION_ITEMS`] items, one after another (they would contend for the same day rows). A
    /// transaction cancelled by a failed condition (a redelivery or another instance moved a row since it was
    /// read) wrote nothing: its orders, and orders whose events do not follow their row (a gap, an unknown
    /// order), take the event-by-event path, which tells duplicates from gaps.
    async fn apply(&self, events: &[StoredEvent]) -> Result<ApplyReport, ViewError> {
        // Group by order, keeping each order's feed order; orders keep their first-seen order too.
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (i, event) in events.iter().enumerate() {
            let slot = *index.entry(event.order_id.as_str()).or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
            groups[slot].push(i);
        }
        let ids: Vec<&str> = index.keys().copied().collect();
        let rows = self.order_rows(&ids).await?;

        let mut total = ApplyReport::default();
        let mut one_by_one = Vec::new();
        let mut folds = Vec::new();
        for group in groups {
            let id = events[group[0]].order_id.as_str();
            match OrderFold::of(events, group, rows.get(id), self.zone) {
                Ok(fold) if fold.applied == 0 => total.skipped += fold.skipped,
                Ok(fold) => folds.push(fold),
                Err(group) => one_by_one.push(group),
            }
        }
        for chunk in pack(folds) {
            if self.write_folds(events, &chunk).await? {
                for fold in &chunk {
                    total.applied += fold.applied;
                    total.skipped += fold.skipped;
                }
            } else {
                one_by_one.extend(chunk.into_iter().map(|fold| fold.group));
            }
        }

        let reports: Vec<Result<ApplyReport, ViewError>> = stream::iter(one_by_one)
            .map(|group| self.apply_order(events, group))
            .buffer_unordered(CONCURRENT_ORDERS)
            .collect()
            .await;
        // Every order ran to its end or its first error; what was applied is durable and dedupes on retry.
        for report in reports {
            let report = report?;
            total.applied += report.applied;
            total.skipped += report.skipped;
        }
        Ok(total)
    }

    /// The dedupe rows of these orders (consistent reads, [`BATCH_GET_KEYS`] per request), by order id.
    async fn order_rows(&self, ids: &[&str]) -> Result<HashMap<String, RevenueOrder>, ViewError> {
        let table = &self.names.orders;
        let mut rows = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(BATCH_GET_KEYS) {
            let keys = chunk.iter().map(|id| HashMap::from([("orderId".to_owned(), string(*id))])).collect();
            let mut request = KeysAndAttributes::builder()
                .set_keys(Some(keys))
                .consistent_read(true)
                .build()
                .map_err(|e| ViewError::Unavailable(e.to_string()))?;
            let mut attempt = 0;
            loop {
                let output = self
                    .client
                    .batch_get_item()
                    .request_items(table, request)
                    .send()
                    .await
                    .map_err(|e| unavailable(table, &e))?;
                for item in output.responses.and_then(|mut r| r.remove(table)).unwrap_or_default() {
                    let decode = || -> Result<(String, RevenueOrder), String> {
                        let id = attr::s(&item, "orderId")?.to_owned();
                        let currency = attr::s(&item, "currency")?.to_owned();
                        Ok((id, RevenueOrder { currency, version: attr::n(&item, "version")? }))
                    };
                    let (id, row) =
                        decode().map_err(|e| ViewError::Unavailable(format!("corrupt revenue row: {e}")))?;
                    rows.insert(id, row);
                }
                // Keys DynamoDB did not get to (throttling, the response size limit) are asked again.
                match output.unprocessed_keys.and_then(|mut u| u.remove(table)) {
                    Some(rest) if !rest.keys.is_empty() && attempt < TRANSIENT_RETRIES => {
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(10 * (1 << attempt))).await;
                        request = rest;
                    }
                    Some(rest) if !rest.keys.is_empty() => {
                        return Err(ViewError::Unavailable(format!("{table}: keys still unprocessed after retries")));
                    }
                    _ => break,
                }
            }
        }
        Ok(rows)
    }

    /// Writes a pack of folded orders as one transaction. False when a condition failed (nothing written).
    async fn write_folds(&self, events: &[StoredEvent], folds: &[OrderFold]) -> Result<bool, ViewError> {
        let build = || -> Result<Vec<TransactWriteItem>, aws_sdk_dynamodb::error::BuildError> {
            let mut items = Vec::with_capacity(folds.len() + 1);
            // The pack's day rows, each summed once: (day, currency) → delta.
            let mut days: Vec<(&str, DayDelta)> = Vec::new();
            for fold in folds {
                let id = events[fold.group[0]].order_id.as_str();
                items.push(match fold.from {
                    None => TransactWriteItem::builder()
                        .put(
                            Put::builder()
                                .table_name(&self.names.orders)
                                .item("orderId", string(id))
                                .item("currency", string(&fold.currency))
                                .item("version", num(fold.to))
                                .condition_expression("attribute_not_exists(orderId)")
                                .build()?,
                        )
                        .build(),
                    Some(from) => TransactWriteItem::builder().update(self.bump(id, from, fold.to)?).build(),
                });
                for delta in &fold.days {
                    match days.iter_mut().find(|(c, d)| d.day == delta.day && *c == fold.currency) {
                        Some((_, sum)) => sum.add(delta),
                        None => days.push((&fold.currency, *delta)),
                    }
                }
            }
            for (currency, delta) in &days {
                items.push(self.day_add(currency, delta)?);
            }
            Ok(items)
        };
        let items = build().map_err(|e| ViewError::Unavailable(e.to_string()))?;
        settle(|| self.transact(items.clone())).await
    }

    async fn skip(&self, event: &StoredEvent) -> Result<(), ViewError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.names.orders)
            .key("orderId", attr::string(event.order_id.as_str()))
            .update_expression("SET version = :v")
            .condition_expression("version < :v")
            .expression_attribute_values(":v", attr::num(event.version))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Already at or past that version, or an order this view does not hold: nothing to skip.
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => Ok(()),
            Err(e) => Err(ViewError::Unavailable(format!("skip in {}: {}", self.names.orders, error_text(&e)))),
        }
    }

    async fn ping(&self) -> Result<(), ViewError> {
        self.client
            .describe_table()
            .table_name(&self.names.daily)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| ViewError::Unavailable(format!("describe {}: {}", self.names.daily, error_text(&e))))
    }

    async fn daily(
        &self,
        from: NaiveDate,
        to: NaiveDate,
        currency: Option<&str>,
    ) -> Result<Vec<RevenueDay>, ViewError> {
        if from > to {
            return Ok(Vec::new());
        }
        let mut months = Vec::new();
        let mut first = from.with_day(1).unwrap_or(from);
        while first <= to {
            months.push(month_key(first));
            match first.checked_add_months(Months::new(1)) {
                Some(next) => first = next,
                None => break,
            }
        }
        let per_month: Vec<Vec<RevenueDay>> = stream::iter(months)
            .map(|month| self.query_month(month, from, to, currency))
            .buffered(4)
            .try_collect()
            .await?;
        let mut days: Vec<RevenueDay> = per_month.into_iter().flatten().collect();
        days.sort_by(|a, b| (a.date, &a.currency).cmp(&(b.date, &b.currency)));
        Ok(days)
    }
}

#[async_trait]
impl Projection for DynamoRevenueView {
    fn name(&self) -> &'static str {
        NAME
    }

    /// `checkpoint` is ignored: the Kafka consumer commits its offsets after this returns.
    async fn apply(&self, events: &[StoredEvent], _checkpoint: Option<u64>) -> Result<ApplyReport, ViewError> {
        let tables = self.active();
        let result = tables.apply(events).await;
        if let Err(ViewError::Unavailable(_)) = &result {
            // Not retried here (the projector retries the batch), but the retry must go to the live generation.
            self.newer_than(&tables).await;
        }
        result
    }

    async fn checkpoint(&self) -> Result<u64, ViewError> {
        Ok(0)
    }

    async fn reset_checkpoint(&self) -> Result<(), ViewError> {
        Ok(())
    }

    async fn skip(&self, event: &StoredEvent) -> Result<(), ViewError> {
        self.active().skip(event).await
    }

    async fn rebuild(&self) -> Result<Box<dyn Rebuilder>, ViewError> {
        let previous = self.active();
        let generation = self.claim_generation().await?;
        let fresh = Arc::new(RevenueTables::new(&self.client, &self.tables, generation, self.zone));
        if let Err(e) = ensure_tables(&self.client, &self.tables.revenue_specs(generation)).await {
            drop_generation(&fresh).await;
            return Err(ViewError::Unavailable(format!(
                "creating the tables of revenue generation {generation}: {e:#}"
            )));
        }
        tracing::info!(generation, daily = %fresh.names.daily, "rebuilding the revenue view into fresh tables");
        Ok(Box::new(RevenueRebuild {
            client: self.client.clone(),
            tables: self.tables.clone(),
            active: Arc::clone(&self.active),
            previous,
            fresh,
        }))
    }
}

impl DynamoRevenueView {
    /// A generation number no other rebuild has or will have: an atomic `ADD` to the pointer item's counter.
    async fn claim_generation(&self) -> Result<u64, ViewError> {
        let table = &self.tables.checkpoints;
        let output = self
            .client
            .update_item()
            .table_name(table)
            .key("id", string(GENERATION_ID))
            .update_expression("ADD #next :one")
            .expression_attribute_names("#next", "next")
            .expression_attribute_values(":one", num(1))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(|e| unavailable(table, &e))?;
        let attributes = output.attributes.unwrap_or_default();
        let next: u64 = attr::n(&attributes, "next")
            .map_err(|e| ViewError::Unavailable(format!("corrupt {GENERATION_ID} in {table}: {e}")))?;
        // `next` starts at 1 and only grows, and a switch only ever goes to a number it handed out, so it is
        // always above the active generation; checked anyway, since reusing live tables would be fatal.
        if next <= self.active().generation {
            return Err(ViewError::Unavailable(format!(
                "{GENERATION_ID}: next generation {next} is not above the active one"
            )));
        }
        Ok(next)
    }
}

/// Deletes a generation's tables; best effort (logged), for tables nothing reads.
async fn drop_generation(tables: &RevenueTables) {
    let names = [tables.names.daily.as_str(), tables.names.orders.as_str()];
    if let Err(e) = delete_tables(&tables.client, &names).await {
        tracing::warn!(generation = tables.generation, error = %format!("{e:#}"), "could not delete old revenue tables");
    }
}

/// A rebuild of the revenue view: fills a fresh table generation, then switches to it.
struct RevenueRebuild {
    client: aws_sdk_dynamodb::Client,
    tables: Tables,
    active: Arc<RwLock<Arc<RevenueTables>>>,
    /// The generation active when the rebuild began: the switch is conditioned on it still being active.
    previous: Arc<RevenueTables>,
    fresh: Arc<RevenueTables>,
}

#[async_trait]
impl Rebuilder for RevenueRebuild {
    async fn apply(&mut self, events: Arc<[StoredEvent]>, _checkpoint: Option<u64>) -> Result<(), ViewError> {
        self.fresh.apply(&events).await.map(|_| ())
    }

    async fn finish(self: Box<Self>) -> Result<(), ViewError> {
        let table = &self.tables.checkpoints;
        let (old, new) = (self.previous.generation, self.fresh.generation);
        // Durable first: once this update is done, every instance that (re)opens the view reads the new tables.
        let result = self
            .client
            .update_item()
            .table_name(table)
            .key("id", string(GENERATION_ID))
            .update_expression("SET #g = :new")
            .condition_expression(if old == 0 { "attribute_not_exists(#g) OR #g = :old" } else { "#g = :old" })
            .expression_attribute_names("#g", "generation")
            .expression_attribute_values(":new", num(new))
            .expression_attribute_values(":old", num(old))
            .send()
            .await;
        if let Err(e) = result {
            drop_generation(&self.fresh).await;
            if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) {
                return Err(ViewError::Unavailable(format!(
                    "revenue generation {old} is no longer the active one (another rebuild switched first)"
                )));
            }
            return Err(unavailable(table, &e));
        }
        // Then at once for new queries and the projector's next batch; queries already running finish on the
        // old tables (or, if those are gone first, run again on the new ones: see `newer_than`).
        *self.active.write().unwrap_or_else(|p| p.into_inner()) = Arc::clone(&self.fresh);
        tracing::info!(from = old, to = new, "switched the revenue view to its rebuilt tables");
        drop_generation(&self.previous).await;
        Ok(())
    }

    async fn abort(self: Box<Self>) {
        drop_generation(&self.fresh).await;
    }
}

#[async_trait]
impl RevenueView for DynamoRevenueView {
    async fn ping(&self) -> Result<(), ViewError> {
        let tables = self.active();
        match tables.ping().await {
            Err(e) => match self.newer_than(&tables).await {
                Some(newer) => newer.ping().await,
                None => Err(e),
            },
            ok => ok,
        }
    }

    async fn daily(
        &self,
        from: NaiveDate,
        to: NaiveDate,
        currency: Option<Currency>,
    ) -> Result<Vec<RevenueDay>, ViewError> {
        let currency = currency.map(|c| c.as_str().to_owned());
        let tables = self.active();
        match tables.daily(from, to, currency.as_deref()).await {
            // The generation may have been switched under the query and its tables deleted: ask the new one.
            Err(e) => match self.newer_than(&tables).await {
                Some(newer) => newer.daily(from, to, currency.as_deref()).await,
                None => Err(e),
            },
            ok => ok,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_and_day_rows() {
        let day = NaiveDate::from_ymd_opt(2025, 3, 7).unwrap();
        assert_eq!(month_key(day), "2025-03");
        let item: Item = HashMap::from([
            ("day".to_owned(), string("2025-03-07")),
            ("currency".to_owned(), string("EUR")),
            ("gross".to_owned(), num(100)),
            ("refunds".to_owned(), num(250)),
            ("paidOrders".to_owned(), num(1)),
            ("cancelledOrders".to_owned(), num(2)),
        ]);
        let row = day_from_item(&item).unwrap();
        assert_eq!((row.date, row.net_revenue, row.cancelled_orders), (day, -150, 2));
        let mut broken = item.clone();
        broken.remove("gross");
        assert!(day_from_item(&broken).is_err());
    }
}
