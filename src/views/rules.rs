//! The rules of the read models, written once and pure: where an event stands against what a view holds for
//! its order (skip a duplicate, refuse a gap), how an event changes an order's search document, and what it
//! adds to a business day of revenue. The SQLite, Meilisearch and DynamoDB adapters only load and store what
//! these say.
//!
//! Revenue days are dates in the business time zone (`revenue.timezone`, an IANA name; default UTC): a payment
//! counts on the local date of its `paidAt`, a refund on that of its `cancelledAt`. The zone is applied when an
//! event is folded into a day row, so the rows a view holds were computed in the zone it ran with: after a
//! change of zone the revenue view must be rebuilt.

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;

use super::ViewError;
use crate::domain::{Order, OrderEvent};
use crate::store::StoredEvent;

/// Where an event stands against the version a view holds for its order (0: nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sequence {
    /// At or below the version held: delivered before, changes nothing.
    Duplicate,
    /// The one right after it: apply.
    Next,
    /// Further on: an earlier event is missing, so this one cannot be applied yet.
    Gap,
}

pub fn sequence(have: u64, version: u64) -> Sequence {
    if version <= have {
        Sequence::Duplicate
    } else if version == have + 1 {
        Sequence::Next
    } else {
        Sequence::Gap
    }
}

/// The error for an event that cannot follow the version `have` the view holds.
pub fn out_of_order(event: &StoredEvent, have: u64) -> ViewError {
    ViewError::OutOfOrder { order_id: event.order_id.to_string(), version: event.version, have }
}

/// Folds one event into an order's search document (`None`: the view holds nothing of the order) with the
/// domain's own `Order::evolve`. True when it changed the document, false for a duplicate; on a gap, or an
/// event that cannot apply to what is held, the document stays as it was and the event is refused.
pub fn fold_document(doc: &mut Option<Order>, event: &StoredEvent) -> Result<bool, ViewError> {
    let have = doc.as_ref().map_or(0, |o| o.version);
    match sequence(have, event.version) {
        Sequence::Duplicate => return Ok(false),
        Sequence::Gap => return Err(out_of_order(event, have)),
        Sequence::Next => {}
    }
    // `evolve` hands the state back unchanged when the event cannot apply to it.
    match Order::evolve(doc.take(), &event.order_id, &event.event) {
        Some(order) if order.version == event.version => {
            *doc = Some(order);
            Ok(true)
        }
        unchanged => {
            *doc = unchanged;
            Err(out_of_order(event, have))
        }
    }
}

/// What one event adds to one (day, currency) row of the revenue view: a payment counts on the business day
/// of its `paidAt`, a refund on the business day of its `cancelledAt` (see [`business_day`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayDelta {
    pub day: NaiveDate,
    pub gross: u64,
    pub refunds: u64,
    pub paid: u64,
    pub cancelled: u64,
}

impl DayDelta {
    /// Sums another delta of the same row into this one (a batch writes each row once).
    pub fn add(&mut self, other: &DayDelta) {
        self.gross += other.gross;
        self.refunds += other.refunds;
        self.paid += other.paid;
        self.cancelled += other.cancelled;
    }
}

/// The revenue an event moves, if any (placing and shipping move none), on its business day in `zone`.
pub fn revenue_delta(event: &OrderEvent, zone: Tz) -> Option<DayDelta> {
    match event {
        OrderEvent::PaymentConfirmed { amount, paid_at, .. } => Some(DayDelta {
            day: business_day(*paid_at, zone),
            gross: amount.minor(),
            refunds: 0,
            paid: 1,
            cancelled: 0,
        }),
        OrderEvent::OrderCancelled { refund, cancelled_at, .. } => Some(DayDelta {
            day: business_day(*cancelled_at, zone),
            gross: 0,
            refunds: refund.minor(),
            paid: 0,
            cancelled: 1,
        }),
        OrderEvent::OrderPlaced { .. } | OrderEvent::OrderShipped { .. } => None,
    }
}

/// The business day an instant counts on: its date in the business time zone (`revenue.timezone`). Days
/// follow the zone's clock, so a day around a DST switch is 23 or 25 hours long.
pub fn business_day(at: DateTime<Utc>, zone: Tz) -> NaiveDate {
    at.with_timezone(&zone).date_naive()
}

/// What the revenue view keeps of an order: its currency (which its later payments and refunds count in) and
/// the last version applied, the dedupe record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevenueOrder {
    pub currency: String,
    pub version: u64,
}

/// What applying one event writes to the revenue view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevenueChange {
    /// The order's record begins (its `OrderPlaced`); no day row moves.
    Placed,
    /// Only the record's version moves (`OrderShipped`).
    Version,
    /// The record's version moves, and a day row of the order's currency grows by this much.
    Day(DayDelta),
}

/// One event applied to an order's revenue record: the record as it is after the event, and what to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevenueStep {
    pub record: RevenueOrder,
    pub change: RevenueChange,
}

/// Applies one event to the revenue view's record of its order (`None`: the view holds nothing of it), with
/// days in `zone`. `None` for a duplicate. A gap, an order whose first event is not its placement (the view
/// could not know its currency) and a second placement are refused.
pub fn revenue_step(
    record: Option<&RevenueOrder>,
    event: &StoredEvent,
    zone: Tz,
) -> Result<Option<RevenueStep>, ViewError> {
    let have = record.map_or(0, |r| r.version);
    match sequence(have, event.version) {
        Sequence::Duplicate => return Ok(None),
        Sequence::Gap => return Err(out_of_order(event, have)),
        Sequence::Next => {}
    }
    let (currency, change) = match (&event.event, record) {
        (OrderEvent::OrderPlaced { currency, .. }, None) => (currency.as_str().to_owned(), RevenueChange::Placed),
        (OrderEvent::OrderPlaced { .. }, Some(_)) | (_, None) => return Err(out_of_order(event, have)),
        (other, Some(known)) => {
            (known.currency.clone(), revenue_delta(other, zone).map_or(RevenueChange::Version, RevenueChange::Day))
        }
    };
    Ok(Some(RevenueStep { record: RevenueOrder { currency, version: event.version }, change }))
}

/// Several events of one order folded over its revenue record: the record after the last one, and the day
/// rows they add to (in the order's currency), so a batch moves the record and each day row once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevenueFold {
    pub record: Option<RevenueOrder>,
    pub days: Vec<DayDelta>,
    pub applied: u64,
    pub skipped: u64,
}

/// Folds one order's events, in order, over its revenue record (`None`: the view holds nothing of it) with
/// [`revenue_step`]: duplicates are counted and skipped, and the first event refused stops the fold.
pub fn fold_revenue<'a>(
    record: Option<&RevenueOrder>,
    events: impl IntoIterator<Item = &'a StoredEvent>,
    zone: Tz,
) -> Result<RevenueFold, ViewError> {
    let mut fold = RevenueFold { record: record.cloned(), ..RevenueFold::default() };
    for event in events {
        let Some(step) = revenue_step(fold.record.as_ref(), event, zone)? else {
            fold.skipped += 1;
            continue;
        };
        if let RevenueChange::Day(delta) = step.change {
            match fold.days.iter_mut().find(|d| d.day == delta.day) {
                Some(sum) => sum.add(&delta),
                None => fold.days.push(delta),
            }
        }
        fold.record = Some(step.record);
        fold.applied += 1;
    }
    Ok(fold)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Currency, CustomerId, LineItem, Money, OrderId, Quantity, Text};
    use uuid::Uuid;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().expect("instant")
    }

    fn stored(version: u64, event: OrderEvent) -> StoredEvent {
        StoredEvent {
            event_id: Uuid::nil(),
            order_id: OrderId::parse("orderId", "o-1").expect("id"),
            version,
            position: version,
            schema_version: 1,
            recorded_at: at("2026-12-01T10:00:00Z"),
            traceparent: None,
            event,
        }
    }

    fn placed() -> OrderEvent {
        OrderEvent::OrderPlaced {
            customer_id: CustomerId::parse("customerId", "c-1").expect("customer"),
            currency: Currency::parse("currency", "EUR").expect("currency"),
            items: vec![LineItem {
                sku: Text::parse("sku", "MUG", 64).expect("sku"),
                name: Text::parse("name", "Mug", 200).expect("name"),
                quantity: Quantity::parse("quantity", 2).expect("quantity"),
                unit_price: Money::parse("unitPrice", 500, 10_000_000_000).expect("price"),
            }],
            total: Money::parse("total", 1000, i128::MAX).expect("total"),
            placed_at: at("2026-12-01T10:00:00Z"),
            shipping_address: None,
        }
    }

    fn paid(when: &str) -> OrderEvent {
        OrderEvent::PaymentConfirmed {
            payment_id: Text::parse("paymentId", "p-1", 64).expect("payment"),
            amount: Money::parse("amount", 1000, i128::MAX).expect("amount"),
            paid_at: at(when),
        }
    }

    #[test]
    fn duplicates_are_skipped_and_gaps_refused() {
        assert_eq!(sequence(0, 1), Sequence::Next);
        assert_eq!(sequence(3, 4), Sequence::Next);
        assert_eq!(sequence(3, 3), Sequence::Duplicate);
        assert_eq!(sequence(3, 1), Sequence::Duplicate);
        assert_eq!(sequence(3, 5), Sequence::Gap);
        assert_eq!(sequence(0, 2), Sequence::Gap);
    }

    #[test]
    fn a_document_follows_its_events_once_and_in_order() {
        let mut doc = None;
        assert!(fold_document(&mut doc, &stored(1, placed())).expect("placed"));
        assert_eq!(doc.as_ref().map(|o| o.version), Some(1));
        assert!(!fold_document(&mut doc, &stored(1, placed())).expect("a redelivery is skipped"));
        let gap = fold_document(&mut doc, &stored(3, paid("2026-12-01T11:00:00Z")));
        assert!(matches!(gap, Err(ViewError::OutOfOrder { version: 3, have: 1, .. })), "{gap:?}");
        assert_eq!(doc.as_ref().map(|o| o.version), Some(1), "a refused event leaves the document as it was");
        assert!(fold_document(&mut doc, &stored(2, paid("2026-12-01T11:00:00Z"))).expect("paid"));
        let order = doc.expect("document");
        assert_eq!((order.version, order.status.as_str()), (2, "paid"));
    }

    #[test]
    fn an_event_that_cannot_start_a_document_is_refused() {
        let mut doc = None;
        let refused = fold_document(&mut doc, &stored(1, paid("2026-12-01T11:00:00Z")));
        assert!(matches!(refused, Err(ViewError::OutOfOrder { version: 1, have: 0, .. })), "{refused:?}");
        assert!(doc.is_none());
        let mut doc = None;
        fold_document(&mut doc, &stored(1, placed())).expect("placed");
        let again = fold_document(&mut doc, &stored(2, placed()));
        assert!(again.is_err(), "a second OrderPlaced cannot apply");
        assert_eq!(doc.map(|o| o.version), Some(1));
    }

    fn cancelled(when: &str) -> OrderEvent {
        OrderEvent::OrderCancelled {
            reason: Text::parse("reason", "changed my mind", 500).expect("reason"),
            refund: Money::parse("refund", 1000, i128::MAX).expect("refund"),
            cancelled_at: at(when),
        }
    }

    fn shipped() -> OrderEvent {
        OrderEvent::OrderShipped {
            carrier: Text::parse("carrier", "DHL", 64).expect("carrier"),
            tracking_number: Text::parse("trackingNumber", "T-1", 64).expect("tracking"),
            shipped_at: at("2026-12-02T09:00:00Z"),
        }
    }

    fn day(text: &str) -> NaiveDate {
        text.parse().expect("date")
    }

    #[test]
    fn payments_and_refunds_count_on_their_own_day() {
        let paid = revenue_delta(&paid("2026-12-01T23:59:59.999Z"), Tz::UTC).expect("a payment moves revenue");
        assert_eq!((paid.day.to_string(), paid.gross, paid.paid, paid.refunds), ("2026-12-01".into(), 1000, 1, 0));
        let refund = revenue_delta(&cancelled("2026-12-02T00:00:00Z"), Tz::UTC).expect("a cancellation moves revenue");
        assert_eq!(
            (refund.day.to_string(), refund.refunds, refund.cancelled, refund.gross),
            ("2026-12-02".into(), 1000, 1, 0)
        );
        assert_eq!(revenue_delta(&placed(), Tz::UTC), None);
        assert_eq!(revenue_delta(&shipped(), Tz::UTC), None);
    }

    #[test]
    fn a_business_day_is_the_date_in_the_business_time_zone() {
        let berlin = Tz::Europe__Berlin;
        // Winter: UTC+1.
        assert_eq!(business_day(at("2026-12-01T22:59:59Z"), berlin), day("2026-12-01"));
        assert_eq!(business_day(at("2026-12-01T23:00:00Z"), berlin), day("2026-12-02"));
        // West of UTC the evening belongs to the day before.
        let new_york = Tz::America__New_York;
        assert_eq!(business_day(at("2026-12-02T04:59:59Z"), new_york), day("2026-12-01"));
        assert_eq!(business_day(at("2026-12-02T05:00:00Z"), new_york), day("2026-12-02"));
        assert_eq!(business_day(at("2026-12-02T04:59:59Z"), Tz::UTC), day("2026-12-02"));
    }

    /// Each (UTC instant, its Berlin date, the Berlin clock then) in order.
    fn assert_berlin_days(cases: &[(&str, &str, &str)]) {
        for (instant, date, clock) in cases {
            assert_eq!(business_day(at(instant), Tz::Europe__Berlin).to_string(), *date, "{instant} is {clock}");
        }
    }

    #[test]
    fn days_around_the_switch_to_summer_time_follow_the_local_clock() {
        // Europe/Berlin, 2026-03-29: 02:00 CET becomes 03:00 CEST (01:00 UTC), so the 29th lasts 23 hours,
        // from 2026-03-28T23:00Z to 2026-03-29T22:00Z.
        assert_berlin_days(&[
            ("2026-03-28T22:30:00Z", "2026-03-28", "23:30 CET"),
            ("2026-03-28T23:30:00Z", "2026-03-29", "00:30 CET"),
            ("2026-03-29T00:30:00Z", "2026-03-29", "01:30 CET"),
            ("2026-03-29T01:30:00Z", "2026-03-29", "03:30 CEST"),
            ("2026-03-29T21:59:59Z", "2026-03-29", "23:59:59 CEST"),
            ("2026-03-29T22:00:00Z", "2026-03-30", "midnight CEST"),
            ("2026-03-29T23:30:00Z", "2026-03-30", "01:30 CEST"),
            ("2026-03-30T00:30:00Z", "2026-03-30", "02:30 CEST"),
        ]);
    }

    #[test]
    fn days_around_the_switch_to_winter_time_follow_the_local_clock() {
        // Europe/Berlin, 2026-10-25: 03:00 CEST becomes 02:00 CET (01:00 UTC), so the 25th lasts 25 hours,
        // from 2026-10-24T22:00Z to 2026-10-25T23:00Z.
        assert_berlin_days(&[
            ("2026-10-24T21:59:59Z", "2026-10-24", "23:59:59 CEST"),
            ("2026-10-24T22:00:00Z", "2026-10-25", "midnight CEST"),
            ("2026-10-24T23:30:00Z", "2026-10-25", "01:30 CEST"),
            ("2026-10-25T00:30:00Z", "2026-10-25", "02:30 CEST"),
            ("2026-10-25T01:30:00Z", "2026-10-25", "02:30 CET, the second time"),
            ("2026-10-25T22:59:59Z", "2026-10-25", "23:59:59 CET"),
            ("2026-10-25T23:00:00Z", "2026-10-26", "midnight CET"),
            ("2026-10-25T23:30:00Z", "2026-10-26", "00:30 CET"),
            ("2026-10-26T00:30:00Z", "2026-10-26", "01:30 CET"),
        ]);
        // A payment and a refund each count on their own local day.
        let payment = revenue_delta(&paid("2026-10-24T22:30:00Z"), Tz::Europe__Berlin).expect("payment");
        let refund = revenue_delta(&cancelled("2026-10-25T23:30:00Z"), Tz::Europe__Berlin).expect("refund");
        assert_eq!((payment.day, refund.day), (day("2026-10-25"), day("2026-10-26")));
    }

    fn record(currency: &str, version: u64) -> RevenueOrder {
        RevenueOrder { currency: currency.into(), version }
    }

    #[test]
    fn a_revenue_record_starts_with_the_placement_and_keeps_its_currency() {
        let utc = Tz::UTC;
        let step = revenue_step(None, &stored(1, placed()), utc).expect("placed").expect("applied");
        assert_eq!(step, RevenueStep { record: record("EUR", 1), change: RevenueChange::Placed });
        let step = revenue_step(Some(&step.record), &stored(2, paid("2026-12-01T11:00:00Z")), utc)
            .expect("paid")
            .expect("applied");
        let delta = DayDelta { day: day("2026-12-01"), gross: 1000, refunds: 0, paid: 1, cancelled: 0 };
        assert_eq!(step, RevenueStep { record: record("EUR", 2), change: RevenueChange::Day(delta) });
        let step = revenue_step(Some(&step.record), &stored(3, shipped()), utc).expect("shipped").expect("applied");
        assert_eq!(step, RevenueStep { record: record("EUR", 3), change: RevenueChange::Version });
    }

    #[test]
    fn revenue_skips_duplicates_and_refuses_what_cannot_follow() {
        let utc = Tz::UTC;
        let held = record("EUR", 2);
        assert_eq!(revenue_step(Some(&held), &stored(2, paid("2026-12-01T11:00:00Z")), utc).expect("dup"), None);
        assert_eq!(revenue_step(Some(&held), &stored(1, placed()), utc).expect("dup"), None);
        let gap = revenue_step(Some(&held), &stored(4, shipped()), utc);
        assert!(matches!(gap, Err(ViewError::OutOfOrder { version: 4, have: 2, .. })), "{gap:?}");
        // Without its placement the view cannot know the order's currency.
        let unknown = revenue_step(None, &stored(1, paid("2026-12-01T11:00:00Z")), utc);
        assert!(matches!(unknown, Err(ViewError::OutOfOrder { version: 1, have: 0, .. })), "{unknown:?}");
        let again = revenue_step(Some(&record("EUR", 1)), &stored(2, placed()), utc);
        assert!(matches!(again, Err(ViewError::OutOfOrder { version: 2, have: 1, .. })), "{again:?}");
    }

    #[test]
    fn an_order_folds_into_one_record_move_and_one_delta_per_day() {
        let berlin = Tz::Europe__Berlin;
        let events = [
            stored(1, placed()),
            stored(1, placed()),
            stored(2, paid("2026-03-28T23:30:00Z")),
            stored(3, cancelled("2026-03-29T21:00:00Z")),
        ];
        let fold = fold_revenue(None, &events, berlin).expect("fold");
        assert_eq!((fold.record, fold.applied, fold.skipped), (Some(record("EUR", 3)), 3, 1));
        let both = DayDelta { day: day("2026-03-29"), gross: 1000, refunds: 1000, paid: 1, cancelled: 1 };
        assert_eq!(fold.days, vec![both], "a payment and a refund of one local day share a row");

        let fold = fold_revenue(Some(&record("EUR", 3)), &events, berlin).expect("all seen");
        assert_eq!((fold.record, fold.applied, fold.skipped, fold.days.len()), (Some(record("EUR", 3)), 0, 4, 0));

        let gap = [stored(2, paid("2026-03-28T23:30:00Z")), stored(4, shipped())];
        assert!(fold_revenue(Some(&record("EUR", 1)), &gap, berlin).is_err(), "a gap stops the fold");
    }
}
