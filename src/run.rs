//! What each command does, given its settings.

use std::process::ExitCode;
use std::sync::Arc;

use crate::app::{App, connect_store};
use crate::cli::Command;
use crate::clock::SystemClock;
use crate::config::{ConfigError, Settings};
use crate::telemetry;

/// Runs a command to completion and says how the process should exit.
pub async fn run(command: Command) -> ExitCode {
    let (settings, serve) = match command {
        Command::Serve(settings) => (settings, true),
        Command::Migrate(settings) => (settings, false),
    };
    let config = match Settings::validate(settings) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("servauth: {error}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(&config.log);
    let result = if serve {
        match App::build(config, Arc::new(SystemClock)).await {
            Ok(app) => app.serve(shutdown_signal()).await,
            Err(error) => Err(error),
        }
    } else {
        migrate(&config).await
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A setting found unusable only when used (a malformed database URL): one line, as
        // for the settings checked up front.
        Err(error) if error.downcast_ref::<ConfigError>().is_some() => {
            eprintln!("servauth: {error}");
            ExitCode::from(2)
        }
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "servauth stopped");
            eprintln!("servauth: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn migrate(config: &crate::config::Config) -> anyhow::Result<()> {
    let store = connect_store(config).await?;
    store.migrate().await?;
    tracing::info!(database = store.backend(), "migrations applied");
    store.close().await;
    Ok(())
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
}
