//! The actors, and the only module that uses actix directly (besides actix-web in `http`):
//! - [`order::OrderActor`]: one per live order; serializes its commands and appends conditionally.
//! - [`order::OrderRegistry`]: finds or starts an order's actor; sheds load when an order's queue is full.
//! - [`projector::Projector`]: keeps one view up to date from the event feed.
//! - [`bridge::Bridge`]: forwards DynamoDB Streams to the public feed (distributed profile).
//! - [`projections::Projections`]: the admin facade over the running projectors and the bridge.

pub mod bridge;
pub mod order;
pub mod projections;
pub mod projector;

pub use order::OrderRegistry;
pub use order::{Answers, CommandError, Execute, Executed, IdempotencyDraft, Precondition};
pub use projector::Projector;
