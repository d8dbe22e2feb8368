//! Black-box tests of the HTTP API (docs/api.md §2), one binary for the whole area. Each test starts its own
//! orderflow on port 0 with its own data folder.

mod asyncapi;
mod audit;
mod auth;
mod backup;
mod cli;
mod commands;
mod consistency;
mod console;
mod convergence;
mod deploy;
mod errors;
mod evolution;
mod failures;
mod hardening;
mod helpers;
mod lifecycle;
mod metrics;
mod openapi;
mod outage;
mod poison;
mod queries;
mod restart;
mod scaleout;
mod search_backend;
mod security;
mod smoke;
mod tracing;
