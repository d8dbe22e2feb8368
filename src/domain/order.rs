//! The Order aggregate: `decide(state, command) -> events` checks the rules of docs/api.md §1, and
//! `Order::evolve(state, event)` folds one event into the state. State is only ever a fold over events.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::values::{Currency, CustomerId, LineItem, Money, OrderId, ShippingAddress, Text};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OrderStatus {
    Placed,
    Paid,
    Shipped,
    Cancelled,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 4] = [Self::Placed, Self::Paid, Self::Shipped, Self::Cancelled];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Placed => "placed",
            Self::Paid => "paid",
            Self::Shipped => "shipped",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }
}

/// The four facts an order's stream is made of. Serialized as `{type, data}` with the data fields of docs/api.md §1,
/// in the shape of each type's current schema version (`store::codec` reads older ones).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", content = "data")]
pub enum OrderEvent {
    #[serde(rename_all = "camelCase")]
    OrderPlaced {
        customer_id: CustomerId,
        currency: Currency,
        items: Vec<LineItem>,
        total: Money,
        placed_at: DateTime<Utc>,
        /// Since schema version 2: always present, `null` when the order has none.
        #[schema(required = true)]
        shipping_address: Option<ShippingAddress>,
    },
    #[serde(rename_all = "camelCase")]
    PaymentConfirmed { payment_id: Text, amount: Money, paid_at: DateTime<Utc> },
    #[serde(rename_all = "camelCase")]
    OrderShipped { carrier: Text, tracking_number: Text, shipped_at: DateTime<Utc> },
    #[serde(rename_all = "camelCase")]
    OrderCancelled { reason: Text, refund: Money, cancelled_at: DateTime<Utc> },
}

impl OrderEvent {
    /// Every [`OrderEvent::type_name`]: the label values of `orderflow_events_appended_total`, known at startup.
    pub const TYPES: [&'static str; 4] = ["OrderPlaced", "PaymentConfirmed", "OrderShipped", "OrderCancelled"];

    /// The bare event type name of docs/api.md §1 (`OrderPlaced`), a small fixed set fit for metric labels.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::OrderPlaced { .. } => "OrderPlaced",
            Self::PaymentConfirmed { .. } => "PaymentConfirmed",
            Self::OrderShipped { .. } => "OrderShipped",
            Self::OrderCancelled { .. } => "OrderCancelled",
        }
    }

    /// When the fact happened (the timestamp inside its data).
    pub fn occurred_at(&self) -> DateTime<Utc> {
        match self {
            Self::OrderPlaced { placed_at: t, .. }
            | Self::PaymentConfirmed { paid_at: t, .. }
            | Self::OrderShipped { shipped_at: t, .. }
            | Self::OrderCancelled { cancelled_at: t, .. } => *t,
        }
    }
}

/// A command, already parsed into valid values: what the client asked for. The time of the decision is not
/// part of it; [`decide`] is given it, so that deciding stays pure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Place {
        customer_id: CustomerId,
        currency: Currency,
        items: Vec<LineItem>,
        total: Money,
        shipping_address: Option<ShippingAddress>,
    },
    ConfirmPayment {
        payment_id: Text,
        amount: Money,
    },
    Ship {
        carrier: Text,
        tracking_number: Text,
    },
    Cancel {
        reason: Text,
    },
}

impl Command {
    /// Every [`Command::name`]: the label values of the command metrics, known at startup.
    pub const NAMES: [&'static str; 4] = ["place", "confirm-payment", "ship", "cancel"];

    /// The command's name as used in metrics and routes.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Place { .. } => "place",
            Self::ConfirmPayment { .. } => "confirm-payment",
            Self::Ship { .. } => "ship",
            Self::Cancel { .. } => "cancel",
        }
    }
}

/// Why a command was refused. Each maps to one status and code of docs/api.md (see `http::error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("the order does not exist")]
    NotFound,
    #[error("an order with this id already exists")]
    AlreadyExists,
    #[error("the amount does not equal the order total")]
    AmountMismatch,
    #[error("the order is already paid with another payment")]
    PaymentAlreadyConfirmed,
    #[error("the order is cancelled")]
    Cancelled,
    #[error("the order is not paid")]
    NotPaid,
    #[error("the order is already shipped")]
    AlreadyShipped,
    #[error("the order is already cancelled")]
    AlreadyCancelled,
}

/// The events a command produces. Empty means "already done, nothing to append" (a repeated payment).
pub type Decision = Vec<OrderEvent>;

/// The order's current state: the document of docs/api.md §2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    pub order_id: OrderId,
    pub customer_id: CustomerId,
    pub status: OrderStatus,
    pub currency: Currency,
    pub items: Vec<LineItem>,
    pub total: Money,
    pub version: u64,
    pub placed_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipping_address: Option<ShippingAddress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paid_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<Text>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipped_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier: Option<Text>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_number: Option<Text>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_reason: Option<Text>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund: Option<Money>,
}

impl Order {
    /// Folds one event into the state. Version goes up by one per event.
    /// An event that cannot apply (anything but `OrderPlaced` on no state) leaves the state as it was.
    pub fn evolve(state: Option<Order>, order_id: &OrderId, event: &OrderEvent) -> Option<Order> {
        match (state, event) {
            (None, OrderEvent::OrderPlaced { customer_id, currency, items, total, placed_at, shipping_address }) => {
                Some(Order {
                    order_id: order_id.clone(),
                    customer_id: customer_id.clone(),
                    status: OrderStatus::Placed,
                    currency: *currency,
                    items: items.clone(),
                    total: *total,
                    version: 1,
                    placed_at: *placed_at,
                    shipping_address: shipping_address.clone(),
                    paid_at: None,
                    payment_id: None,
                    shipped_at: None,
                    carrier: None,
                    tracking_number: None,
                    cancelled_at: None,
                    cancel_reason: None,
                    refund: None,
                })
            }
            (None, _) => None,
            (Some(mut order), event) => {
                match event {
                    OrderEvent::OrderPlaced { .. } => return Some(order),
                    OrderEvent::PaymentConfirmed { payment_id, paid_at, .. } => {
                        order.status = OrderStatus::Paid;
                        order.payment_id = Some(payment_id.clone());
                        order.paid_at = Some(*paid_at);
                    }
                    OrderEvent::OrderShipped { carrier, tracking_number, shipped_at } => {
                        order.status = OrderStatus::Shipped;
                        order.carrier = Some(carrier.clone());
                        order.tracking_number = Some(tracking_number.clone());
                        order.shipped_at = Some(*shipped_at);
                    }
                    OrderEvent::OrderCancelled { reason, refund, cancelled_at } => {
                        order.status = OrderStatus::Cancelled;
                        order.cancel_reason = Some(reason.clone());
                        order.refund = Some(*refund);
                        order.cancelled_at = Some(*cancelled_at);
                    }
                }
                order.version += 1;
                Some(order)
            }
        }
    }

    /// Folds a whole stream, starting from an optional snapshot.
    pub fn fold<'a>(
        start: Option<Order>,
        order_id: &OrderId,
        events: impl IntoIterator<Item = &'a OrderEvent>,
    ) -> Option<Order> {
        events.into_iter().fold(start, |state, event| Order::evolve(state, order_id, event))
    }

    fn is_paid(&self) -> bool {
        matches!(self.status, OrderStatus::Paid | OrderStatus::Shipped)
    }
}

/// Checks a command against the current state and says which events it produces, stamped `now`.
pub fn decide(state: Option<&Order>, command: &Command, now: DateTime<Utc>) -> Result<Decision, OrderError> {
    let order = match (state, command) {
        (None, Command::Place { customer_id, currency, items, total, shipping_address }) => {
            return Ok(vec![OrderEvent::OrderPlaced {
                customer_id: customer_id.clone(),
                currency: *currency,
                items: items.clone(),
                total: *total,
                placed_at: now,
                shipping_address: shipping_address.clone(),
            }]);
        }
        (Some(_), Command::Place { .. }) => return Err(OrderError::AlreadyExists),
        (None, _) => return Err(OrderError::NotFound),
        (Some(order), _) => order,
    };
    match command {
        Command::Place { .. } => Err(OrderError::AlreadyExists),
        Command::ConfirmPayment { payment_id, amount } => {
            if order.status == OrderStatus::Cancelled {
                return Err(OrderError::Cancelled);
            }
            if order.is_paid() {
                return if order.payment_id.as_ref() == Some(payment_id) {
                    Ok(vec![])
                } else {
                    Err(OrderError::PaymentAlreadyConfirmed)
                };
            }
            if *amount != order.total {
                return Err(OrderError::AmountMismatch);
            }
            Ok(vec![OrderEvent::PaymentConfirmed { payment_id: payment_id.clone(), amount: *amount, paid_at: now }])
        }
        Command::Ship { carrier, tracking_number } => match order.status {
            OrderStatus::Cancelled => Err(OrderError::Cancelled),
            OrderStatus::Shipped => Err(OrderError::AlreadyShipped),
            OrderStatus::Placed => Err(OrderError::NotPaid),
            OrderStatus::Paid => Ok(vec![OrderEvent::OrderShipped {
                carrier: carrier.clone(),
                tracking_number: tracking_number.clone(),
                shipped_at: now,
            }]),
        },
        Command::Cancel { reason } => match order.status {
            OrderStatus::Shipped => Err(OrderError::AlreadyShipped),
            OrderStatus::Cancelled => Err(OrderError::AlreadyCancelled),
            OrderStatus::Placed | OrderStatus::Paid => Ok(vec![OrderEvent::OrderCancelled {
                reason: reason.clone(),
                // A payment is only accepted for exactly the total, so a paid order refunds its total.
                refund: if order.is_paid() { order.total } else { Money::ZERO },
                cancelled_at: now,
            }]),
        },
    }
}

#[cfg(test)]
mod tests {
    //! Given (past events) / when (a command) / then (new events or an error), one case per rule.
    use super::*;
    use crate::domain::values::{Quantity, limits};

    fn t(s: &str) -> Text {
        Text::parse("t", s, 500).unwrap()
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z").unwrap().with_timezone(&Utc)
    }

    fn id() -> OrderId {
        OrderId::parse("orderId", "o-1").unwrap()
    }

    fn place() -> Command {
        let items = vec![LineItem {
            sku: t("SKU-1"),
            name: t("Blue mug"),
            quantity: Quantity::parse("q", 2).unwrap(),
            unit_price: Money::parse("p", 1250, limits::MAX_UNIT_PRICE).unwrap(),
        }];
        Command::Place {
            customer_id: CustomerId::parse("c", "c-1").unwrap(),
            currency: Currency::parse("c", "EUR").unwrap(),
            total: crate::domain::values::order_total(&items).unwrap(),
            items,
            shipping_address: None,
        }
    }

    fn pay(payment_id: &str, amount: u64) -> Command {
        Command::ConfirmPayment { payment_id: t(payment_id), amount: Money::from_minor(amount) }
    }

    fn ship() -> Command {
        Command::Ship { carrier: t("DHL"), tracking_number: t("TN1") }
    }

    fn cancel() -> Command {
        Command::Cancel { reason: t("changed mind") }
    }

    /// Given the commands (each must succeed), when `command`, then the result.
    fn given_when(given: &[Command], command: Command) -> Result<Decision, OrderError> {
        let mut state = None;
        for c in given {
            let events = decide(state.as_ref(), c, now()).expect("given command succeeds");
            state = Order::fold(state, &id(), &events);
        }
        decide(state.as_ref(), &command, now())
    }

    fn single_type(result: Result<Decision, OrderError>) -> Result<&'static str, OrderError> {
        result.map(|events| {
            assert_eq!(events.len(), 1);
            events[0].type_name()
        })
    }

    #[test]
    fn place_creates_an_order_at_version_1() {
        let events = given_when(&[], place()).unwrap();
        let order = Order::fold(None, &id(), &events).unwrap();
        assert_eq!((order.version, order.status, order.total), (1, OrderStatus::Placed, Money::from_minor(2500)));
    }

    #[test]
    fn place_on_an_existing_order_is_refused() {
        assert_eq!(given_when(&[place()], place()), Err(OrderError::AlreadyExists));
    }

    #[test]
    fn any_command_on_a_missing_order_is_not_found() {
        for c in [pay("p", 2500), ship(), cancel()] {
            assert_eq!(given_when(&[], c), Err(OrderError::NotFound));
        }
    }

    #[test]
    fn payment_of_the_total_confirms() {
        assert_eq!(single_type(given_when(&[place()], pay("p1", 2500))), Ok("PaymentConfirmed"));
    }

    #[test]
    fn payment_of_another_amount_is_a_mismatch() {
        assert_eq!(given_when(&[place()], pay("p1", 2499)), Err(OrderError::AmountMismatch));
    }

    #[test]
    fn the_same_payment_again_is_accepted_without_a_new_event() {
        assert_eq!(given_when(&[place(), pay("p1", 2500)], pay("p1", 2500)), Ok(vec![]));
        // A shipped order counts as paid.
        assert_eq!(given_when(&[place(), pay("p1", 2500), ship()], pay("p1", 2500)), Ok(vec![]));
    }

    #[test]
    fn another_payment_on_a_paid_order_is_refused_before_the_amount_check() {
        let err = Err(OrderError::PaymentAlreadyConfirmed);
        assert_eq!(given_when(&[place(), pay("p1", 2500)], pay("p2", 1)), err);
        assert_eq!(given_when(&[place(), pay("p1", 2500), ship()], pay("p2", 2500)), err);
    }

    #[test]
    fn payment_on_a_cancelled_order_is_refused_before_the_amount_check() {
        assert_eq!(given_when(&[place(), cancel()], pay("p1", 1)), Err(OrderError::Cancelled));
        assert_eq!(given_when(&[place(), pay("p1", 2500), cancel()], pay("p1", 2500)), Err(OrderError::Cancelled));
    }

    #[test]
    fn ship_needs_a_paid_order() {
        assert_eq!(given_when(&[place()], ship()), Err(OrderError::NotPaid));
        assert_eq!(single_type(given_when(&[place(), pay("p1", 2500)], ship())), Ok("OrderShipped"));
    }

    #[test]
    fn ship_a_cancelled_or_shipped_order_is_refused() {
        assert_eq!(given_when(&[place(), cancel()], ship()), Err(OrderError::Cancelled));
        assert_eq!(given_when(&[place(), pay("p1", 2500), ship()], ship()), Err(OrderError::AlreadyShipped));
    }

    #[test]
    fn cancel_refunds_what_was_paid() {
        let refund = |given: &[Command]| match given_when(given, cancel()).unwrap().as_slice() {
            [OrderEvent::OrderCancelled { refund, .. }] => refund.minor(),
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(refund(&[place()]), 0);
        assert_eq!(refund(&[place(), pay("p1", 2500)]), 2500);
    }

    #[test]
    fn cancel_a_shipped_or_cancelled_order_is_refused() {
        assert_eq!(given_when(&[place(), pay("p1", 2500), ship()], cancel()), Err(OrderError::AlreadyShipped));
        assert_eq!(given_when(&[place(), cancel()], cancel()), Err(OrderError::AlreadyCancelled));
    }

    #[test]
    fn version_counts_events_and_state_follows_them() {
        let mut state = None;
        for c in [place(), pay("p1", 2500), ship()] {
            let events = decide(state.as_ref(), &c, now()).unwrap();
            state = Order::fold(state, &id(), &events);
        }
        let order = state.unwrap();
        assert_eq!((order.version, order.status), (3, OrderStatus::Shipped));
        assert_eq!(order.carrier.as_ref().map(Text::as_str), Some("DHL"));
    }

    #[test]
    fn events_serialize_with_their_bare_type_and_camel_case_data() {
        let events = given_when(&[], place()).unwrap();
        let json = serde_json::to_value(&events[0]).unwrap();
        assert_eq!(json["type"], "OrderPlaced");
        assert_eq!(json["data"]["customerId"], "c-1");
        assert_eq!(json["data"]["items"][0]["unitPrice"], 1250);
        let back: OrderEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, events[0]);
    }

    #[test]
    fn the_known_label_sets_hold_every_name_and_type() {
        let commands = [place(), pay("p1", 2500), ship(), cancel()];
        assert_eq!(commands.map(|c| c.name()), Command::NAMES);
        let events = [
            given_when(&[], place()),
            given_when(&[place()], pay("p1", 2500)),
            given_when(&[place(), pay("p1", 2500)], ship()),
            given_when(&[place()], cancel()),
        ];
        let types: Vec<&str> =
            events.iter().flat_map(|e| e.as_ref().unwrap().iter().map(OrderEvent::type_name)).collect();
        assert_eq!(types, OrderEvent::TYPES);
    }
}
