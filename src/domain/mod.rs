//! The pure domain: the Order aggregate, its commands and events, the business rules of docs/api.md §1 and the
//! validated value types they are made of. No IO, no actix, no tokio: everything here is a plain function
//! of its inputs, tested with given/when/then cases next to the code.

pub mod order;
pub mod values;

pub use order::{Command, Decision, Order, OrderError, OrderEvent, OrderStatus, decide};
pub use values::{
    Country, Currency, CustomerId, FieldError, LineItem, Money, OrderId, Quantity, ShippingAddress, Sku, Text,
    ValidationErrors,
};
