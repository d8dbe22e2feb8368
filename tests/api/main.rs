//! Black-box tests of the HTTP API (API.md §2), one binary for the whole area. Each test starts its own
//! orderflow on port 0 with its own data folder.

mod helpers;
mod meili_mock;
mod failures;
mod restart;
mod scaleout;
mod outage;
mod smoke;
mod queries;
mod consistency;
mod cli;
mod commands;
mod errors;
mod auth;
mod openapi;
mod console;
mod audit;
mod hardening;
mod tracing;
