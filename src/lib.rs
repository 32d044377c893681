//! servauth: a self-hosted authentication server.
//!
//! Data flows one way — HTTP layer → services → store:
//! - [`cli`] and [`config`]: the command line and its validated settings;
//! - [`app`]: start-up (connect, migrate, keys) and serving with graceful shutdown;
//! - [`http`]: routes, extractors, problem+json errors, request ids, security headers;
//! - [`domain`]: identity types, password policy and hashing, tokens, accounts and sessions;
//! - [`store`]: the `Store` trait with its SQLite and PostgreSQL implementations;
//! - [`clock`]: the injected time source; [`telemetry`]: JSON logs; [`memory`]: the allocator.

pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod domain;
pub mod http;
pub mod import;
pub mod limits;
pub mod mail;
pub mod memory;
pub mod metrics;
mod run;
pub mod store;
pub mod telemetry;
pub mod webhooks;

pub use run::run;
