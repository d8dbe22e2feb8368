//! The rules of the read models, written once and pure: where an event stands against what a view holds for
//! its order (skip a duplicate, refuse a gap), how an event changes an order's search document, and what it
//! adds to a day of revenue. The SQLite, Meilisearch and DynamoDB adapters only load and store what these say.

use chrono::{DateTime, NaiveDate, Utc};

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

/// What one event adds to one (day, currency) row of the revenue view: a payment counts on the day of its
/// `paidAt`, a refund on the day of its `cancelledAt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayDelta {
    pub day: NaiveDate,
    pub gross: u64,
    pub refunds: u64,
    pub paid: u64,
    pub cancelled: u64,
}

/// The revenue an event moves, if any (placing and shipping move none).
pub fn revenue_delta(event: &OrderEvent) -> Option<DayDelta> {
    match event {
        OrderEvent::PaymentConfirmed { amount, paid_at, .. } => {
            Some(DayDelta { day: business_day(*paid_at), gross: amount.minor(), refunds: 0, paid: 1, cancelled: 0 })
        }
        OrderEvent::OrderCancelled { refund, cancelled_at, .. } => Some(DayDelta {
            day: business_day(*cancelled_at),
            gross: 0,
            refunds: refund.minor(),
            paid: 0,
            cancelled: 1,
        }),
        OrderEvent::OrderPlaced { .. } | OrderEvent::OrderShipped { .. } => None,
    }
}

/// The day an instant counts on (UTC days).
pub fn business_day(at: DateTime<Utc>) -> NaiveDate {
    at.date_naive()
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

    #[test]
    fn payments_and_refunds_count_on_their_own_day() {
        let paid = revenue_delta(&paid("2026-12-01T23:59:59.999Z")).expect("a payment moves revenue");
        assert_eq!((paid.day.to_string(), paid.gross, paid.paid, paid.refunds), ("2026-12-01".into(), 1000, 1, 0));
        let cancelled = OrderEvent::OrderCancelled {
            reason: Text::parse("reason", "changed my mind", 500).expect("reason"),
            refund: Money::parse("refund", 1000, i128::MAX).expect("refund"),
            cancelled_at: at("2026-12-02T00:00:00Z"),
        };
        let refund = revenue_delta(&cancelled).expect("a cancellation moves revenue");
        assert_eq!(
            (refund.day.to_string(), refund.refunds, refund.cancelled, refund.gross),
            ("2026-12-02".into(), 1000, 1, 0)
        );
        assert_eq!(revenue_delta(&placed()), None);
    }
}
