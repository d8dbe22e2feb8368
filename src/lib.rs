//! orderflow: CQRS with event sourcing for orders, on actors.
//!
//! ```text
//! HTTP (http/) ─► OrderRegistry ─► OrderActor(orderId) ─► EventStore (store/)  write model, conditional appends
//!                                                             │ change feed (feed/)
//!                                                             ▼
//!                                        Projector(search) · Projector(revenue)   (actors/)
//!                                                             ▼
//! HTTP queries ◄──────────────────────────────────────── views (views/)           read models
//! ```
//!
//! `domain` is pure (rules, events, values); `actors` hold the concurrency; `store`, `feed` and `views` are
//! ports with their adapters; `app` wires them by config; `http` is the REST surface of docs/api.md.
#![forbid(unsafe_code)]

pub mod actors;
pub mod admin_client;
pub mod app;
pub mod audit;
pub mod auth;
pub mod aws;
pub mod clock;
pub mod config;
pub mod domain;
pub mod feed;
pub mod files;
pub mod http;
pub mod lease;
pub mod lifecycle;
pub mod projection;
pub mod sql;
pub mod store;
pub mod telemetry;
pub mod trace;
pub mod views;
