//! Behaviour over real HTTP: a server per test on a random port, a fresh database each.

mod accounts;
mod browser;
mod cli;
mod conventions;
mod internal;
mod mail;
mod metrics;
mod openapi;
mod process;
mod sessions;
mod tokens;
