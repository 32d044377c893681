//! The machine's ceiling for bench/run.sh: a bare axum handler answering `ok` on
//! `BARE_LISTEN` (default 127.0.0.1:4299), on the same runtime, allocator and release
//! profile as servauth, with no middleware, no logging and no database. Built and started by
//! the benchmark (`cargo build --release --example bare_ok`), never by the server.

use axum::Router;
use axum::routing::get;

#[cfg(all(target_os = "linux", not(target_env = "musl")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listen = std::env::var("BARE_LISTEN").unwrap_or_else(|_| "127.0.0.1:4299".to_owned());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    let app = Router::new().route("/", get(|| async { "ok" }));
    axum::serve(listener, app).await
}
