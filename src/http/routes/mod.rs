//! Handlers, one file per resource, with their request and response types.

pub mod auth;
pub mod health;
pub mod internal;
pub mod me;
pub mod sessions;
