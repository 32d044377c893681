//! Behaviour over real HTTP: a server per test on a random port, a fresh database each.

mod accounts;
mod browser;
mod conventions;
mod internal;
mod mail;
mod openapi;
mod process;
mod sessions;
mod tokens;
