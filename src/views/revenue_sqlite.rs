//! The embedded daily revenue view: totals per (business day, currency), and per order the currency and the
//! last version applied. The per-order version is the dedupe record: it is updated in the same transaction as
//! the totals, so a redelivered or replayed event is skipped and never counts twice. What an event does (skip,
//! refuse, which day row grows) is decided by `rules`; this module only loads and stores.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::NaiveDate;
use chrono_tz::Tz;
use rusqlite::{Connection, OptionalExtension, params};

use super::rules::{self, RevenueChange, RevenueOrder, RevenueStep};
use super::sqlite::{
    ApplyFn, Direct, Generations, SqliteRebuild, apply_batch, apply_each, read_checkpoint, save_checkpoint,
};
use super::{ApplyReport, Projection, Rebuilder, RevenueDay, RevenueView, ViewError};
use crate::domain::Currency;
use crate::sql::DbError;
use crate::store::StoredEvent;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS revenue_daily (
    day              TEXT    NOT NULL,
    currency         TEXT    NOT NULL,
    gross            INTEGER NOT NULL DEFAULT 0,
    refunds          INTEGER NOT NULL DEFAULT 0,
    paid_orders      INTEGER NOT NULL DEFAULT 0,
    cancelled_orders INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day, currency)
);
CREATE TABLE IF NOT EXISTS revenue_orders (
    order_id TEXT PRIMARY KEY,
    currency TEXT    NOT NULL,
    version  INTEGER NOT NULL
);

";

const NAME: &str = super::REVENUE;

pub struct SqliteRevenueView {
    gens: Generations,
    /// Applies a batch with the view's business time zone.
    apply: ApplyFn,
}

impl SqliteRevenueView {
    /// Opens the view; its days are business days in `zone` (`revenue.timezone`).
    pub fn open(dir: &Path, read_connections: usize, zone: Tz) -> Result<Arc<Self>, DbError> {
        let apply: ApplyFn = Arc::new(move |conn, events| apply_each(conn, events, |conn, e| apply_one(conn, e, zone)));
        Ok(Arc::new(Self { gens: Generations::open(dir, "revenue", SCHEMA, &[], read_connections)?, apply }))
    }
}

/// Loads the order's record, lets [`rules::revenue_step`] decide, and stores what it says.
fn apply_one(conn: &Connection, event: &StoredEvent, zone: Tz) -> Result<bool, ViewError> {
    let id = event.order_id.as_str();
    let known: Option<RevenueOrder> = conn
        .prepare_cached("SELECT currency, version FROM revenue_orders WHERE order_id = ?1")?
        .query_row([id], |r| Ok(RevenueOrder { currency: r.get(0)?, version: r.get(1)? }))
        .optional()?;
    let Some(RevenueStep { record, change }) = rules::revenue_step(known.as_ref(), event, zone)? else {
        return Ok(false);
    };
    match change {
        RevenueChange::Placed => {
            conn.prepare_cached("INSERT INTO revenue_orders (order_id, currency, version) VALUES (?1, ?2, ?3)")?
                .execute(params![id, record.currency, record.version])?;
            return Ok(true);
        }
        RevenueChange::Day(delta) => {
            conn.prepare_cached(
                "INSERT INTO revenue_daily (day, currency, gross, refunds, paid_orders, cancelled_orders)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (day, currency) DO UPDATE SET
                     gross = gross + excluded.gross, refunds = refunds + excluded.refunds,
                     paid_orders = paid_orders + excluded.paid_orders,
                     cancelled_orders = cancelled_orders + excluded.cancelled_orders",
            )?
            .execute(params![
                delta.day.to_string(),
                record.currency,
                delta.gross as i64,
                delta.refunds as i64,
                delta.paid,
                delta.cancelled
            ])?;
        }
        RevenueChange::Version => {}
    }
    conn.prepare_cached("UPDATE revenue_orders SET version = ?2 WHERE order_id = ?1")?
        .execute(params![id, record.version])?;
    Ok(true)
}

#[async_trait]
impl Projection for SqliteRevenueView {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn apply(&self, events: &[StoredEvent], checkpoint: Option<u64>) -> Result<ApplyReport, ViewError> {
        let apply = Arc::clone(&self.apply);
        apply_batch(
            &self.gens.db().writer,
            NAME,
            events,
            checkpoint,
            move |conn, events| Ok((apply(conn, events)?, ())),
            drop,
        )
        .await
    }

    async fn checkpoint(&self) -> Result<u64, ViewError> {
        Ok(self.gens.db().readers.read(|conn| read_checkpoint(conn, NAME)).await?)
    }

    async fn rebuild(&self) -> Result<Box<dyn Rebuilder>, ViewError> {
        Ok(Box::new(SqliteRebuild::new(&self.gens, NAME, Box::new(Direct(Arc::clone(&self.apply))))?))
    }

    async fn reset_checkpoint(&self) -> Result<(), ViewError> {
        Ok(self.gens.db().writer.write(|conn| save_checkpoint(conn, NAME, 0)).await?)
    }

    async fn skip(&self, event: &StoredEvent) -> Result<(), ViewError> {
        let (id, version) = (event.order_id.to_string(), event.version);
        Ok(self
            .gens
            .db()
            .writer
            .write(move |conn| {
                conn.execute(
                    "UPDATE revenue_orders SET version = ?2 WHERE order_id = ?1 AND version < ?2",
                    params![id, version],
                )?;
                Ok(())
            })
            .await?)
    }
}

#[async_trait]
impl RevenueView for SqliteRevenueView {
    async fn ping(&self) -> Result<(), ViewError> {
        Ok(self.gens.db().readers.read(|conn| Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?)).await?)
    }

    async fn daily(
        &self,
        from: NaiveDate,
        to: NaiveDate,
        currency: Option<Currency>,
    ) -> Result<Vec<RevenueDay>, ViewError> {
        let (from, to) = (from.to_string(), to.to_string());
        let currency = currency.map(|c| c.as_str().to_owned());
        Ok(self
            .gens
            .db()
            .readers
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT day, currency, gross, refunds, paid_orders, cancelled_orders FROM revenue_daily
                     WHERE day >= ?1 AND day <= ?2 AND (?3 IS NULL OR currency = ?3)
                     ORDER BY day, currency",
                )?;
                let rows = stmt.query_map(params![from, to, currency], |r| {
                    let (gross, refunds): (i64, i64) = (r.get(2)?, r.get(3)?);
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, gross, refunds, r.get(4)?, r.get(5)?))
                })?;
                rows.map(|row| {
                    let (date, currency, gross, refunds, paid_orders, cancelled_orders) = row?;
                    Ok(RevenueDay {
                        date: date.parse().map_err(|e: chrono::ParseError| DbError::Corrupt(e.to_string()))?,
                        currency,
                        gross_revenue: gross as u64,
                        refunds: refunds as u64,
                        net_revenue: gross - refunds,
                        paid_orders,
                        cancelled_orders,
                    })
                })
                .collect()
            })
            .await?)
    }
}
