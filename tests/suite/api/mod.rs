//! Behaviour over real HTTP: a server per test on a random port, a fresh database each.

mod accounts;
mod conventions;
mod process;
mod tokens;
