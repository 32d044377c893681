//! Start-up and serving: [`App::build`] connects the store, binds the listener and
//! initializes the services; [`App::serve`] answers until the shutdown future resolves.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use secrecy::ExposeSecret as _;
use tokio::net::TcpListener;

use crate::clock::Clock;
use crate::config::{Config, ConfigError, MigrateMode, SigningConfig};
use crate::domain::audit::Audit;
use crate::domain::{
    AccountMail, Accounts, Admin, FactorSealing, FactorSettings, InstallationKeys, KeySource,
    Lifetimes, PasswordHashing, PasswordPolicy, RELOAD_EVERY, ServiceSecret, Sessions, SigningKeys,
};
use crate::http::{self, ApiError};
use crate::limits::RateLimits;
use crate::mail::{Mailer, Templates};
use crate::store::{self, Pruning, Store, StoreError};

/// The services a request needs once start-up is done. Cheap to clone (all `Arc`s).
#[derive(Debug, Clone)]
pub struct Services {
    pub config: Arc<Config>,
    pub accounts: Accounts,
    pub sessions: Sessions,
    /// Set when `SERVAUTH_INTERNAL_SECRET` is (the internal routes exist only then).
    pub service_secret: Option<ServiceSecret>,
    pub admin: Admin,
}

/// What every handler can reach. `services` is set once the database has been migrated and
/// the signing keys loaded; until then only the health endpoints answer.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub limits: Arc<RateLimits>,
    services: Arc<OnceLock<Services>>,
}

impl AppState {
    pub fn is_initialized(&self) -> bool {
        self.services.get().is_some()
    }

    /// The services, once start-up is done.
    pub fn services(&self) -> Option<&Services> {
        self.services.get()
    }
}

impl FromRequestParts<AppState> for Services {
    type Rejection = ApiError;

    async fn from_request_parts(_: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        state.services.get().cloned().ok_or(ApiError::NotReady)
    }
}

/// A bound, initialized server, ready to [`serve`](App::serve).
pub struct App {
    listener: TcpListener,
    state: AppState,
}

/// How long to wait between start-up attempts while the database does not answer.
const INIT_RETRY: Duration = Duration::from_secs(2);

impl App {
    /// Connects to the database, binds the listener and initializes the services. A
    /// malformed database URL fails here; an unreachable database does not: the server
    /// starts, `/ready` says so, and start-up is retried in the background.
    pub async fn build(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        // Before anything is counted: metrics recorded without a recorder are lost.
        crate::metrics::handle();
        let config = Arc::new(config);
        let store = connect_serving_store(&config).await?;
        let listener = TcpListener::bind(config.listen).await.with_context(|| {
            format!(
                "cannot listen on {} (SERVAUTH_LISTEN / PORT)",
                config.listen
            )
        })?;
        let limits = RateLimits::new(&config)?;
        let state = AppState {
            config: config.clone(),
            store: store.clone(),
            limits: limits.clone(),
            services: Arc::default(),
        };
        match initialize(&config, &store, &clock, &limits).await {
            Ok(services) => {
                let _ = state.services.set(services);
            }
            // A setting that cannot work (a sealed key without its key) will not work on a
            // retry either: stop the start, naming it.
            Err(error) if error.downcast_ref::<ConfigError>().is_some() => {
                return Err(match error.downcast_ref::<ConfigError>() {
                    Some(cause) => ConfigError::new(cause.setting, cause.message.clone()).into(),
                    None => error,
                });
            }
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "start-up incomplete; retrying in the background"
                );
                let services = state.services.clone();
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(INIT_RETRY).await;
                        match initialize(&config, &store, &clock, &limits).await {
                            Ok(ready) => {
                                let _ = services.set(ready);
                                tracing::info!("start-up complete");
                                break;
                            }
                            Err(error) => {
                                tracing::warn!(
                                    error = format!("{error:#}"),
                                    "start-up failed again"
                                );
                            }
                        }
                    }
                });
            }
        }
        Ok(Self { listener, state })
    }

    /// The address actually bound (the port is chosen by the OS when configured as 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The store, for tests and administrative commands.
    pub fn store(&self) -> Arc<dyn Store> {
        self.state.store.clone()
    }

    /// Serves until `shutdown` resolves, then stops accepting and gives in-flight requests
    /// `SERVAUTH_SHUTDOWN_GRACE` to finish before closing the database pool.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let settings = http::server::Settings {
            grace: self.state.config.shutdown_grace,
            header_timeout: self.state.config.header_timeout,
            max_in_flight: self.state.config.max_in_flight,
            body_timeout: self.state.config.body_timeout,
        };
        let store = self.state.store.clone();
        tracing::info!(
            address = %self.listener.local_addr()?,
            database = store.backend(),
            "servauth listening"
        );
        let router = http::router(self.state);
        let upkeep = tokio::spawn(crate::metrics::upkeep());
        let shutdown = async move {
            shutdown.await;
            tracing::info!("shutting down: finishing in-flight requests");
        };
        let on_idle = {
            let store = store.clone();
            move || {
                let store = store.clone();
                tokio::spawn(async move { store.release_memory().await });
            }
        };
        if http::server::serve(self.listener, router, shutdown, settings, on_idle).await
            == http::server::Stopped::GraceExpired
        {
            tracing::warn!("shutdown grace expired; dropping remaining requests");
        }
        upkeep.abort();
        store.close().await;
        Ok(())
    }
}

/// Connects the store a server uses: with the session cache in front
/// (`SERVAUTH_SESSION_CACHE` sessions; none with 0), its changes fanned out through Redis when
/// `REDIS_URL` is set on PostgreSQL, else through PostgreSQL itself (or within this process
/// on SQLite).
pub async fn connect_serving_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    if config.session_cache == 0 {
        return connect_store(config).await;
    }
    let redis = match &config.redis_url {
        Some(url) => Some(
            redis::Client::open(url.expose_secret())
                .map_err(|error| ConfigError::new("REDIS_URL", error.to_string()))?,
        ),
        None => None,
    };
    let store = store::connect_cached(
        config.database_url.expose_secret(),
        config.database_max_connections,
        redis,
        config.session_cache,
    )
    .await
    .map_err(store_error)?;
    Ok(store)
}

/// Connects the store; a malformed URL is a configuration error naming `DATABASE_URL`.
pub async fn connect_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    store::connect(
        config.database_url.expose_secret(),
        config.database_max_connections,
    )
    .await
    .map_err(store_error)
}

fn store_error(error: StoreError) -> anyhow::Error {
    match error {
        StoreError::InvalidUrl(message) => ConfigError::new("DATABASE_URL", message).into(),
        other => anyhow::Error::new(other).context("cannot open the database (DATABASE_URL)"),
    }
}

/// Migrates (when `SERVAUTH_MIGRATE=auto`), loads or creates the signing key, and builds the
/// services.
async fn initialize(
    config: &Arc<Config>,
    store: &Arc<dyn Store>,
    clock: &Arc<dyn Clock>,
    limits: &Arc<RateLimits>,
) -> anyhow::Result<Services> {
    if config.migrate == MigrateMode::Auto {
        store.migrate().await.context("applying migrations")?;
    }
    let source = KeySource {
        store: store.clone(),
        issuer: config.issuer.clone(),
        audience: config.audience.clone(),
        access_ttl: config.access_ttl,
        hs256_secret: match &config.signing {
            SigningConfig::Hs256(secret) => Some(secret.clone()),
            SigningConfig::EdDsa => None,
        },
        key_encryption_key: config.key_encryption_key.clone(),
    };
    let keys = Arc::new(
        SigningKeys::load(source, clock.now())
            .await
            .context("loading the signing keys")?,
    );
    spawn_key_reloads(Arc::downgrade(&keys), clock.clone());
    let (argon2, workers, queue) = (config.argon2, config.hash_workers, config.hash_queue);
    let hashing =
        tokio::task::spawn_blocking(move || PasswordHashing::new(argon2, workers, queue)).await??;
    let lifetimes = Lifetimes {
        refresh: config.refresh_ttl,
        session: config.session_ttl,
        reuse_grace: config.refresh_reuse_grace,
    };
    let audit = Audit::new(store.clone(), clock.clone(), config.webhook.is_some());
    let sessions = Sessions::new(
        store.clone(),
        keys,
        clock.clone(),
        lifetimes,
        config.require_verified_email,
        audit.clone(),
    );
    let installation = InstallationKeys::load(store, clock.now())
        .await
        .context("loading the installation secret")?;
    spawn_pruning(
        Arc::downgrade(store),
        clock.clone(),
        lifetimes,
        config.audit_retention,
    );
    let mail = AccountMail {
        // Queued messages are sealed like second-factor secrets (the row's id is the
        // associated data, so no sealed value opens as another).
        mailer: Mailer::start(
            config,
            store.clone(),
            FactorSealing::new(config.key_encryption_key.clone(), installation.factor_key()),
            clock.clone(),
        )?,
        templates: Templates::new(config.app_url.clone()),
        reset_ttl: config.reset_ttl,
        verify_ttl: config.verify_ttl,
    };
    let accounts = Accounts::new(
        store.clone(),
        hashing,
        PasswordPolicy::new(config.password_min_length),
        clock.clone(),
        mail,
        config.require_verified_email,
        limits.clone(),
        installation.clone(),
        factor_settings(config, &installation),
        audit.clone(),
    );
    if let Some(target) = &config.webhook {
        crate::webhooks::start(target.clone(), store, clock.clone())?;
    }
    let service_secret = config.internal_secret.as_ref().map(ServiceSecret::new);
    Ok(Services {
        config: config.clone(),
        admin: Admin::new(store.clone(), accounts.clone(), clock.clone(), audit),
        accounts,
        sessions,
        service_secret,
    })
}

/// What second factors need: the sealing keys, the step-up window, and the WebAuthn relying
/// party (none, with a warning, when its settings do not make one: passkeys then answer
/// `404 passkeys_unavailable`, everything else works).
fn factor_settings(config: &Config, installation: &InstallationKeys) -> FactorSettings {
    // Checked here first: webauthn-rs logs its own error for a relying party it refuses.
    // The id must be a domain (not an IP address) that every origin's host is or is under.
    let rp_id = config.webauthn_rp_id.as_str();
    let fits = rp_id.parse::<std::net::IpAddr>().is_err()
        && !config.webauthn_origins.is_empty()
        && config.webauthn_origins.iter().all(|origin| {
            origin
                .host_str()
                .is_some_and(|host| host == rp_id || host.ends_with(&format!(".{rp_id}")))
        });
    if !fits {
        tracing::warn!(
            rp_id,
            "passkeys are off: SERVAUTH_WEBAUTHN_RP_ID must be a domain that the host of every \
             SERVAUTH_WEBAUTHN_ORIGINS origin is or is under (an IP address cannot be one)"
        );
    }
    let origins = if fits {
        config.webauthn_origins.as_slice()
    } else {
        &[]
    };
    let webauthn = origins.split_first().and_then(|(first, rest)| {
        let built = webauthn_rs::WebauthnBuilder::new(&config.webauthn_rp_id, first)
            .map(|builder| {
                rest.iter()
                    .fold(builder.rp_name(&config.service_name), |builder, origin| {
                        builder.append_allowed_origin(origin)
                    })
            })
            .and_then(webauthn_rs::WebauthnBuilder::build);
        match built {
            Ok(webauthn) => Some(Arc::new(webauthn)),
            Err(error) => {
                tracing::warn!(
                    rp_id = config.webauthn_rp_id,
                    error = %error,
                    "passkeys are off: SERVAUTH_WEBAUTHN_RP_ID does not fit SERVAUTH_WEBAUTHN_ORIGINS"
                );
                None
            }
        }
    });
    FactorSettings {
        sealing: FactorSealing::new(config.key_encryption_key.clone(), installation.factor_key()),
        service_name: config.service_name.clone(),
        reauth_max_age: config.reauth_max_age,
        webauthn,
        summaries: Arc::default(),
    }
}

/// Re-reads the signing keys every [`RELOAD_EVERY`], so a `servauth keys rotate` run
/// anywhere reaches this server; stops when the server is gone.
fn spawn_key_reloads(keys: std::sync::Weak<SigningKeys>, clock: Arc<dyn Clock>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(RELOAD_EVERY).await;
            let Some(keys) = keys.upgrade() else { return };
            if let Err(error) = keys.reload(clock.now()).await {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "reloading signing keys failed"
                );
            }
        }
    });
}

/// How often each server deletes what nothing needs any more, and how long after start the
/// first run comes (after start-up's own work, but soon: a server that runs only briefly
/// still prunes).
const PRUNE_EVERY: Duration = Duration::from_secs(10 * 60);
const FIRST_PRUNE_AFTER: Duration = Duration::from_secs(30);
/// Ended sessions and used or expired one-time tokens are kept this long before they go.
const PRUNE_RETENTION: chrono::TimeDelta = chrono::TimeDelta::days(1);

/// Prunes the store every [`PRUNE_EVERY`] (see [`Store::prune`]); stops when the server is
/// gone. Replicas may prune at the same time: each statement deletes what is still there.
/// How long delivered and dead messages stay in the outbox (dead ones: visible in
/// `/admin/outbox` meanwhile).
const OUTBOX_RETENTION: chrono::Duration = chrono::Duration::days(7);

fn spawn_pruning(
    store: std::sync::Weak<dyn Store>,
    clock: Arc<dyn Clock>,
    lifetimes: Lifetimes,
    audit_retention: chrono::Duration,
) {
    tokio::spawn(async move {
        tokio::time::sleep(FIRST_PRUNE_AFTER).await;
        loop {
            let Some(store) = store.upgrade() else { return };
            prune(store.as_ref(), clock.now(), lifetimes, audit_retention).await;
            drop(store);
            tokio::time::sleep(PRUNE_EVERY).await;
        }
    });
}

/// One pruning run at `now`, logged; a failure is logged and left to the next run.
pub async fn prune(
    store: &dyn Store,
    now: chrono::DateTime<chrono::Utc>,
    lifetimes: Lifetimes,
    audit_retention: chrono::Duration,
) {
    match store.prune_outbox(now - OUTBOX_RETENTION).await {
        Ok(messages) => tracing::debug!(messages, "pruned delivered and dead messages"),
        Err(error) => tracing::warn!(error = %error, "pruning the outbox failed"),
    }
    match store.prune_audit_events(now - audit_retention).await {
        Ok(events) => tracing::debug!(events, "pruned audit events past SERVAUTH_AUDIT_RETENTION"),
        Err(error) => tracing::warn!(error = %error, "pruning audit events failed"),
    }
    let pruning = Pruning {
        ended_before: now - PRUNE_RETENTION,
        now,
        rotated_before: now - lifetimes.reuse_grace,
    };
    match store.prune_challenges(now - PRUNE_RETENTION).await {
        Ok(challenges) => tracing::debug!(challenges, "pruned expired challenges"),
        Err(error) => tracing::warn!(error = %error, "pruning challenges failed"),
    }
    match store.prune(pruning).await {
        Ok(pruned) => tracing::info!(
            sessions = pruned.sessions,
            refresh_tokens = pruned.refresh_tokens,
            successors = pruned.successors,
            one_time_tokens = pruned.one_time_tokens,
            "pruned ended sessions and spent tokens"
        ),
        Err(error) => tracing::warn!(error = %error, "pruning failed; retrying at the next run"),
    }
}
