use std::process::ExitCode;

use servauth::cli::Cli;

/// jemalloc rather than glibc's malloc: glibc keeps what 10,000 connections needed at their
/// peak for the life of the process (its arenas shrink only from the top) and spreads it over
/// up to 16 arenas; jemalloc, with the decay settings in `.cargo/config.toml`, gives it back
/// within seconds and peaks lower (bench/memory.sh; figures in bench/RESULTS.md).
#[cfg(all(target_os = "linux", not(target_env = "musl")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let command = Cli::parse_or_exit().into_command();
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(servauth::run(command)),
        Err(error) => {
            eprintln!("servauth: cannot start the async runtime: {error}");
            ExitCode::FAILURE
        }
    }
}
