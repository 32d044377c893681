//! The integration test binary: one binary for every suite, so the crate and its dependencies
//! are linked once. Each suite runs against SQLite and PostgreSQL (see `support`).

// A test states its expectations by failing loudly: `expect` with a message is the point here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api;
mod deploy;
mod email_keys;
mod store_contract;
mod support;
