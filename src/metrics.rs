//! Prometheus metrics: the recorder, the per-request middleware and the `/metrics` text.
//!
//! Names: `servauth_http_requests_total{method,route,status}` and
//! `servauth_http_request_duration_seconds{method,route}`; `servauth_logins_total{outcome}`,
//! `servauth_registrations_total{outcome}`, `servauth_refresh_reuse_detected_total`,
//! `servauth_rate_limited_total{limit}`, `servauth_emails_total{outcome}`;
//! `servauth_password_hash_queue_depth`, `servauth_password_hash_wait_seconds`,
//! `servauth_password_hash_duration_seconds`, `servauth_password_hash_rejected_total`;
//! `servauth_db_pool_connections{state}` and `servauth_db_pool_max_connections`;
//! `servauth_allocator_bytes{kind}`: jemalloc's `allocated`, `active`, `resident`,
//! `metadata` and `thread_caches` ([`crate::memory::AllocatorStats`]).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::store::Store;

/// Latency buckets in seconds: token checks take well under a millisecond, logins tens to
/// hundreds of milliseconds.
const BUCKETS: &[f64] = &[
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process-wide recorder (metrics are per process, like Prometheus scrapes them).
/// Installed on first use; `None` if another recorder was installed first.
pub fn handle() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), BUCKETS)
                .ok()?;
            match builder.install_recorder() {
                Ok(handle) => Some(handle),
                Err(error) => {
                    tracing::error!(error = %error, "metrics recorder not installed");
                    None
                }
            }
        })
        .as_ref()
}

/// How often the samples histograms recorded since the last scrape are folded into buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Folds the samples histograms recorded since the last scrape into their buckets, every
/// [`UPKEEP_EVERY`], for as long as it runs. Without it a server that nobody scrapes keeps
/// every sample (8 bytes per request per histogram, in 1 KiB blocks scattered over the heap)
/// for ever: `install_recorder` leaves this upkeep to its caller.
pub async fn upkeep() {
    let mut ticks = tokio::time::interval(UPKEEP_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Some(handle) = handle() {
            handle.run_upkeep();
        }
    }
}

/// Counts and times every request by method, route template (never the raw path, so ids
/// do not explode the label space) and status.
pub async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("servauth_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("servauth_http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// The Prometheus text of every metric, with the database pool and the allocator sampled
/// now.
pub fn render(store: &dyn Store) -> String {
    let pool = store.pool_status();
    metrics::gauge!("servauth_db_pool_connections", "state" => "idle").set(f64::from(pool.idle));
    metrics::gauge!("servauth_db_pool_connections", "state" => "in_use")
        .set(f64::from(pool.size.saturating_sub(pool.idle)));
    metrics::gauge!("servauth_db_pool_max_connections").set(f64::from(pool.max));
    if let Some(memory) = crate::memory::allocator_stats() {
        for (kind, bytes) in [
            ("allocated", memory.allocated),
            ("active", memory.active),
            ("resident", memory.resident),
            ("metadata", memory.metadata),
            ("thread_caches", memory.thread_caches),
        ] {
            #[allow(clippy::cast_precision_loss)] // exact below 2^53 bytes
            metrics::gauge!("servauth_allocator_bytes", "kind" => kind).set(bytes as f64);
        }
    }
    handle().map(PrometheusHandle::render).unwrap_or_default()
}
