//! Handlers, one file per resource, with their request and response types.

pub mod admin;
pub mod auth;
pub mod docs;
pub mod email;
pub mod health;
pub mod internal;
pub mod me;
pub mod mfa;
pub mod passkeys;
pub mod password;
pub mod sessions;
