//! The password-hashing pool (`PasswordHashing`) at the parameters the server would use:
//! the settings are parsed exactly as `servauth serve` parses them, so the defaults apply
//! (Argon2id m=19456 KiB, t=2, p=1; one worker per core) and `SERVAUTH_ARGON2_*` /
//! `SERVAUTH_HASH_WORKERS` override them the same way.
//!
//! - `hash/1`, `verify/1`: one password at a time through the pool (the latency of one).
//! - `hash_concurrent/N`, `verify_concurrent/N`: N at once (4 per worker), so every worker
//!   is busy: N / time is the Argon2 limit of the machine in hashes/s, the ceiling of login
//!   and register. `bench/run.sh` reads it from `verify_concurrent` (what a login costs).
//!
//! - `argon2_raw/all_cores/N`: the same hash with no pool and no async runtime, one plain
//!   thread per core hashing back to back (4 each) in one reused work area: the machine's own
//!   ceiling (the Argon2 limit `bench/run.sh` reports), to see what the pool costs.
//! - `argon2_memory/*`: one Argon2id hash on this thread, its 19 MiB work area allocated
//!   (zeroed) per hash as the argon2 crate's `hash_password` does, or allocated once and
//!   reused (`hash_password_into_with_memory`) as `PasswordHashing`'s workers do. Run
//!   it with `MALLOC_MMAP_THRESHOLD_=1048576` to see the cost of fresh pages on every hash,
//!   which is what glibc pays once it returns the memory (bench/RESULTS.md § memory).
//!
//! `cargo bench --bench hashing`

#![expect(
    clippy::expect_used,
    reason = "a benchmark that cannot set up should stop"
)]

use std::time::Duration;

use argon2::{Algorithm, Argon2, Block, Params, Version};
use clap::Parser as _;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures::future::join_all;
use servauth::cli::Cli;
use servauth::domain::{Password, PasswordHashing};

const PASSWORD: &str = "correct horse battery staple";

fn hashing_pool(c: &mut Criterion) {
    let cli = Cli::try_parse_from(["servauth"]).expect("settings");
    let config = cli.serve.validate().expect("valid settings");
    let workers = config.hash_workers;
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let pool =
        PasswordHashing::new(config.argon2, workers, config.hash_queue).expect("hashing pool");
    let stored = runtime
        .block_on(pool.hash(Password::for_verification(PASSWORD)))
        .expect("hash");
    eprintln!(
        "hashing_pool: {stored:.40}… workers={workers} queue={}",
        config.hash_queue
    );
    let password = || Password::for_verification(PASSWORD);

    let mut group = c.benchmark_group("hashing_pool");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(6));
    group.throughput(Throughput::Elements(1));
    group.bench_function("hash/1", |b| {
        b.to_async(&runtime).iter(|| pool.hash(password()));
    });
    group.bench_function("verify/1", |b| {
        b.to_async(&runtime)
            .iter(|| pool.verify(password(), Some(stored.clone())));
    });
    // Within workers + queue, so that none is refused.
    let concurrent = (workers * 4).min(workers + config.hash_queue);
    group.throughput(Throughput::Elements(concurrent as u64));
    group.bench_with_input(
        BenchmarkId::new("hash_concurrent", concurrent),
        &concurrent,
        |b, &n| {
            b.to_async(&runtime).iter(|| async {
                for result in join_all((0..n).map(|_| pool.hash(password()))).await {
                    result.expect("hash");
                }
            });
        },
    );
    group.bench_with_input(
        BenchmarkId::new("verify_concurrent", concurrent),
        &concurrent,
        |b, &n| {
            b.to_async(&runtime).iter(|| async {
                let all = (0..n).map(|_| pool.verify(password(), Some(stored.clone())));
                for result in join_all(all).await {
                    assert!(result.expect("verify").matches);
                }
            });
        },
    );
    group.finish();
}

fn argon2_memory(c: &mut Criterion) {
    let cli = Cli::try_parse_from(["servauth"]).expect("settings");
    let config = cli.serve.validate().expect("valid settings").argon2;
    let params = Params::new(
        config.memory_kib,
        config.iterations,
        config.parallelism,
        None,
    )
    .expect("argon2 params");
    let blocks = params.block_count();
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let salt = [7_u8; 16];
    let mut out = [0_u8; 32];

    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let mut group = c.benchmark_group("argon2_raw");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6));
    group.throughput(Throughput::Elements(4 * cores as u64));
    group.bench_function(BenchmarkId::new("all_cores", cores), |b| {
        // One thread per core for the whole sample, so that thread start-up and each
        // thread's first allocation are not part of what is timed.
        b.iter_custom(|iters| {
            let started = std::time::Instant::now();
            std::thread::scope(|scope| {
                for _ in 0..cores {
                    scope.spawn(|| {
                        let mut out = [0_u8; 32];
                        let mut memory = vec![Block::default(); blocks];
                        for _ in 0..iters * 4 {
                            argon2
                                .hash_password_into_with_memory(
                                    PASSWORD.as_bytes(),
                                    &salt,
                                    &mut out,
                                    &mut memory[..],
                                )
                                .expect("hash");
                        }
                    });
                }
            });
            started.elapsed()
        });
    });
    group.finish();

    let mut group = c.benchmark_group("argon2_memory");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Elements(1));
    group.bench_function("fresh_allocation", |b| {
        b.iter(|| {
            argon2
                .hash_password_into(PASSWORD.as_bytes(), &salt, &mut out)
                .expect("hash");
        });
    });
    let mut memory = vec![Block::default(); blocks];
    group.bench_function("reused_memory", |b| {
        b.iter(|| {
            argon2
                .hash_password_into_with_memory(
                    PASSWORD.as_bytes(),
                    &salt,
                    &mut out,
                    &mut memory[..],
                )
                .expect("hash");
        });
    });
    group.finish();
}

criterion_group!(benches, hashing_pool, argon2_memory);
criterion_main!(benches);
