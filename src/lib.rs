//! servauth: a self-hosted authentication server.

pub mod store;
