//! The allocator: jemalloc, its own figures for `/metrics`, and giving back what idle
//! threads keep cached.
//!
//! jemalloc rather than glibc's malloc: glibc keeps what 10,000 connections needed at their
//! peak for the life of the process (its arenas shrink only from the top) and spreads it over
//! up to 16 arenas; jemalloc, with the decay settings in `.cargo/config.toml`, gives freed
//! pages back within about a second and peaks lower (bench/memory.sh; bench/RESULTS.md).
//! It is also the process's `malloc` (tikv-jemallocator's unprefixed feature), so SQLite's
//! page caches come from it too: with glibc they were spread over an arena per connection
//! thread, and readers that close when idle left their freed pages in those arenas.
//!
//! Freed pages are not all of it. Each thread keeps a cache of recently freed blocks of
//! every size class, and each cached block keeps the page it lies on resident; a thread
//! empties its cache only while it allocates, so a worker thread that goes quiet after a
//! burst of 10,000 connections holds its cache, and the pages under it, for good. So when
//! no request has come for a while, [`release_when_idle`] has every runtime worker empty
//! its cache once, as it parks ([`on_worker_park`]); the hashing threads do the same when
//! they drop their work areas. A thread's cache is refilled by its next few allocations.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[cfg(all(target_os = "linux", not(target_env = "musl")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// How long without a request before the caches are given back.
const IDLE_AFTER: Duration = Duration::from_secs(2);

/// Bumped each time the workers should give back their caches.
static RELEASE_EPOCH: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The epoch up to which this thread has given back its cache.
    static RELEASED: Cell<u64> = const { Cell::new(0) };
}

/// The runtime's `on_thread_park` hook: a worker about to wait for work gives back its
/// cache if a release was asked for since its last one. One atomic load otherwise.
pub fn on_worker_park() {
    let epoch = RELEASE_EPOCH.load(Ordering::Relaxed);
    if RELEASED.get() != epoch {
        RELEASED.set(epoch);
        release_thread_cache();
    }
}

/// Watches `requests` (a count of the requests received) and, once it has not moved for
/// [`IDLE_AFTER`], asks every runtime worker to give back its cache and calls `also` (for
/// what others keep, such as SQLite's page cache): once per quiet spell.
pub async fn release_when_idle(requests: Arc<AtomicU64>, mut also: impl FnMut()) {
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    on_each_quiet_spell(&requests, || {
        also();
        RELEASE_EPOCH.fetch_add(1, Ordering::Relaxed);
        // Parked workers see the new epoch only when they next park: a few empty tasks
        // wake them (each woken worker steals one, finds nothing more, parks again).
        for _ in 0..workers * 2 {
            tokio::spawn(async {});
        }
    })
    .await;
}

/// Calls `quiet` once each time `requests` has stayed the same for a whole [`IDLE_AFTER`]
/// after it last moved (and not before any request has come).
async fn on_each_quiet_spell(requests: &AtomicU64, mut quiet: impl FnMut()) {
    let mut seen = requests.load(Ordering::Relaxed);
    let mut released_at = seen;
    let mut ticks = tokio::time::interval(IDLE_AFTER);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let now = requests.load(Ordering::Relaxed);
        if now != seen {
            seen = now;
        } else if now != released_at {
            released_at = now;
            quiet();
        }
    }
}

/// Empties the calling thread's cache into the arenas, whose emptied pages the background
/// thread then returns to the system. jemalloc's `thread.idle` does this but takes no
/// argument, which the safe `mallctl` wrapper cannot express; turning the cache off and on
/// again flushes it the same way.
pub fn release_thread_cache() {
    #[cfg(all(target_os = "linux", not(target_env = "musl")))]
    {
        use tikv_jemalloc_ctl::{Access as _, AsName as _};
        let enabled = b"thread.tcache.enabled\0".name();
        let on: tikv_jemalloc_ctl::Result<bool> = enabled.read();
        if on == Ok(true) {
            let _ = enabled.write(false);
            let _ = enabled.write(true);
        }
    }
}

/// jemalloc's own figures, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AllocatorStats {
    /// Held by live allocations.
    pub allocated: usize,
    /// In pages that hold live allocations (`allocated` plus the free space around them).
    pub active: usize,
    /// Resident in memory: active pages, the allocator's metadata, and freed pages not yet
    /// given back.
    pub resident: usize,
    /// The allocator's own bookkeeping.
    pub metadata: usize,
    /// Freed blocks kept in the threads' caches (counted in `allocated`).
    pub thread_caches: usize,
}

/// Reads jemalloc's figures; `None` where jemalloc is not the allocator.
pub fn allocator_stats() -> Option<AllocatorStats> {
    #[cfg(all(target_os = "linux", not(target_env = "musl")))]
    {
        use tikv_jemalloc_ctl::{Access as _, AsName as _, epoch, stats};
        // The figures are a snapshot taken when the epoch advances.
        epoch::advance().ok()?;
        // Arena 4096 is `MALLCTL_ARENAS_ALL`: the sum over every arena.
        let thread_caches: usize = b"stats.arenas.4096.tcache_bytes\0"
            .name()
            .read()
            .unwrap_or_default();
        Some(AllocatorStats {
            allocated: stats::allocated::read().ok()?,
            active: stats::active::read().ok()?,
            resident: stats::resident::read().ok()?,
            metadata: stats::metadata::read().ok()?,
            thread_caches,
        })
    }
    #[cfg(not(all(target_os = "linux", not(target_env = "musl"))))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn caches_are_released_once_per_quiet_spell_and_never_while_requests_come() {
        let requests = Arc::new(AtomicU64::new(0));
        let released = Arc::new(AtomicUsize::new(0));
        let watcher = tokio::spawn({
            let (requests, released) = (requests.clone(), released.clone());
            async move {
                on_each_quiet_spell(&requests, || {
                    released.fetch_add(1, Ordering::Relaxed);
                })
                .await;
            }
        });
        let count = || released.load(Ordering::Relaxed);
        let step = IDLE_AFTER / 4;
        // A fresh server has nothing to give back.
        tokio::time::sleep(IDLE_AFTER * 3).await;
        assert_eq!(count(), 0);
        // Busy: a request every quarter of the idle time, for ten idle times.
        for _ in 0..40 {
            requests.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(step).await;
        }
        assert_eq!(count(), 0, "released while requests were coming");
        // Quiet: released once, however long it stays quiet.
        tokio::time::sleep(IDLE_AFTER * 3).await;
        assert_eq!(count(), 1);
        tokio::time::sleep(IDLE_AFTER * 10).await;
        assert_eq!(count(), 1);
        // One more request, then quiet again: released again.
        requests.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(IDLE_AFTER * 3).await;
        assert_eq!(count(), 2);
        watcher.abort();
    }

    #[test]
    fn a_thread_releases_its_cache_when_it_parks_after_a_release_is_asked_for() {
        // Runs on its own thread: the epoch it has seen starts at 0.
        std::thread::spawn(|| {
            let before = RELEASE_EPOCH.load(Ordering::Relaxed);
            RELEASED.set(before);
            on_worker_park();
            assert_eq!(RELEASED.get(), before, "nothing asked for, nothing done");
            RELEASE_EPOCH.fetch_add(1, Ordering::Relaxed);
            on_worker_park();
            assert!(RELEASED.get() > before, "the release was not taken");
        })
        .join()
        .map_err(|_| "the parking thread panicked")
        .unwrap_or_else(|error| panic!("{error}"));
    }

    #[test]
    #[cfg(all(target_os = "linux", not(target_env = "musl")))]
    fn jemalloc_is_the_allocator_and_reports_its_figures() {
        let stats = allocator_stats();
        let Some(stats) = stats else {
            panic!("no jemalloc figures");
        };
        assert!(stats.allocated > 0 && stats.active >= stats.allocated);
        assert!(stats.resident >= stats.active && stats.metadata > 0);
        // Turning the cache off and on again leaves it on.
        release_thread_cache();
        use tikv_jemalloc_ctl::{Access as _, AsName as _};
        let on: tikv_jemalloc_ctl::Result<bool> = b"thread.tcache.enabled\0".name().read();
        assert_eq!(on, Ok(true));
    }
}
