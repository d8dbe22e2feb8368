//! The Meilisearch contract mock, shared with the `adapters` test crate: see `tests/support/meili_mock.rs`.

#[path = "../support/meili_mock.rs"]
mod contract;

pub use contract::*;
