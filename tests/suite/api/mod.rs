//! Behaviour over real HTTP: a server per test on a random port, a fresh database each.

mod accounts;
mod admin;
mod better_auth;
mod browser;
mod cli;
mod conventions;
mod gateways;
mod identity;
mod import;
mod internal;
mod limits;
mod mail;
mod metrics;
mod mfa;
mod openapi;
mod process;
mod replicas;
mod revocation;
mod security;
mod sessions;
mod tokens;
mod webhooks;
