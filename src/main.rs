use std::process::ExitCode;

use servauth::cli::Cli;

fn main() -> ExitCode {
    let command = Cli::parse_or_exit().into_command();
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(servauth::memory::on_worker_park)
        .build()
    {
        Ok(runtime) => runtime.block_on(servauth::run(command)),
        Err(error) => {
            eprintln!("servauth: cannot start the async runtime: {error}");
            ExitCode::FAILURE
        }
    }
}
