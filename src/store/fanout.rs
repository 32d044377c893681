//! How a change to a session or user reaches every server's [`SessionCache`].
//!
//! - SQLite: the servers of this process on the same file apply it in the writer's own call
//!   (one process owns an embedded database).
//! - PostgreSQL: triggers on `sessions` and `users` (migration 0006) send it with
//!   `pg_notify` in the writing transaction, so it is delivered exactly when the write
//!   commits, whoever wrote (another replica, an operator's SQL). Each server listens on one
//!   dedicated connection.
//! - Redis (when `REDIS_URL` is set, on PostgreSQL): the writing server publishes it after
//!   the write; each server subscribes.
//!
//! The writer applies a change to its own cache before it goes on, and, with a remote
//! channel, waits (at most [`ECHO_WAIT`]) until its own subscription delivers it back: the
//! channel delivers to every subscriber at once, so when the revoking request answers the
//! other servers have it too. Every server sends a ping through the channel every
//! [`PING_EVERY`]; a subscription that hears nothing for [`SILENCE`] is taken as lost, like a
//! dropped connection: the cache is emptied and bypassed until a new subscription is up.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::watch;

use super::session_cache::{Change, SessionCache};

/// The PostgreSQL channel (and the Redis one) changes travel on.
pub const CHANNEL: &str = "servauth_sessions";

/// The `application_name` of each server's listening connection (in `pg_stat_activity`).
pub const LISTENER_NAME: &str = "servauth-notifications";

/// What a ping looks like on the channel (never a valid change).
const PING: &str = "~";

/// How often each server pings through its channel.
const PING_EVERY: Duration = Duration::from_secs(2);

/// A subscription that hears nothing (not even its own pings) for this long is lost.
const SILENCE: Duration = Duration::from_secs(5);

/// The longest a writer waits for its change to come back through the channel.
pub const ECHO_WAIT: Duration = Duration::from_millis(250);

/// The longest a Redis publish may take.
const REDIS_TIMEOUT: Duration = Duration::from_secs(1);

/// The longest wait between attempts to subscribe again.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The caches of this process's servers on each SQLite database, by URL.
static LOCAL_PEERS: LazyLock<Mutex<HashMap<String, Vec<Weak<SessionCache>>>>> =
    LazyLock::new(Mutex::default);

fn local_peers() -> std::sync::MutexGuard<'static, HashMap<String, Vec<Weak<SessionCache>>>> {
    LOCAL_PEERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Where changes go and come from. See the module documentation.
pub enum Channel {
    /// SQLite: the servers of this process on the database with this URL.
    Local(String),
    /// PostgreSQL `LISTEN/NOTIFY` on this pool's database.
    Postgres(PgPool),
    /// Redis pub/sub.
    Redis(redis::Client),
}

/// One server's end of the channel.
pub struct Fanout {
    cache: Arc<SessionCache>,
    end: End,
    stop: watch::Sender<bool>,
}

impl std::fmt::Debug for Fanout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fanout")
            .field("cache", &self.cache)
            .field("remote", &!matches!(self.end, End::Local(_)))
            .finish()
    }
}

/// Which channel this end is on (what [`Channel`] started), with what publishing needs.
enum End {
    /// The key of this process's servers on the same SQLite database.
    Local(String),
    /// The triggers publish; this end only listens.
    Postgres,
    /// This end publishes, on a connection made at its first change.
    Redis(Box<(tokio::sync::OnceCell<ConnectionManager>, redis::Client)>),
}

impl Fanout {
    /// Starts this server's end of `channel` for a cache of `capacity` sessions. With a
    /// remote channel, the cache is bypassed until the first subscription is up. Must be
    /// called inside a Tokio runtime.
    pub fn start(channel: Channel, capacity: usize) -> Arc<Self> {
        let (stop, stopped) = watch::channel(false);
        match channel {
            Channel::Local(key) => {
                let cache = Arc::new(SessionCache::new(capacity, true));
                let mut peers = local_peers();
                let list = peers.entry(key.clone()).or_default();
                list.retain(|peer| peer.strong_count() > 0);
                list.push(Arc::downgrade(&cache));
                Arc::new(Self {
                    cache,
                    end: End::Local(key),
                    stop,
                })
            }
            Channel::Postgres(pool) => {
                let cache = Arc::new(SessionCache::new(capacity, false));
                let subscriber = Subscriber::new(&cache, stopped);
                // Its own connection, outside the pool the requests use.
                let listening = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(1)
                    .connect_lazy_with(
                        (*pool.connect_options())
                            .clone()
                            .application_name(LISTENER_NAME),
                    );
                tokio::spawn(subscriber.clone().run_postgres(listening));
                tokio::spawn(subscriber.ping(move || {
                    let pool = pool.clone();
                    async move {
                        sqlx::query("SELECT pg_notify($1, $2)")
                            .bind(CHANNEL)
                            .bind(PING)
                            .execute(&pool)
                            .await
                            .is_ok()
                    }
                }));
                Arc::new(Self {
                    cache,
                    end: End::Postgres,
                    stop,
                })
            }
            Channel::Redis(client) => {
                let cache = Arc::new(SessionCache::new(capacity, false));
                let subscriber = Subscriber::new(&cache, stopped);
                tokio::spawn(subscriber.clone().run_redis(client.clone()));
                let fanout = Arc::new(Self {
                    cache,
                    end: End::Redis(Box::new((tokio::sync::OnceCell::new(), client))),
                    stop,
                });
                let pinger = Arc::downgrade(&fanout);
                tokio::spawn(subscriber.ping(move || {
                    let fanout = pinger.upgrade();
                    async move {
                        match fanout {
                            Some(fanout) => fanout.publish(PING).await,
                            None => false,
                        }
                    }
                }));
                fanout
            }
        }
    }

    /// The cache this end keeps.
    pub fn cache(&self) -> &SessionCache {
        &self.cache
    }

    /// A mark taken before a write, for [`Self::changed`].
    pub fn mark(&self) -> u64 {
        self.cache.delivery_mark()
    }

    /// Applies a change this server just wrote (after the write, `mark` taken before it):
    /// to its own cache at once, then through the channel, and, with `wait`, waits for it to
    /// come back (pass `false` when the write may have changed nothing a trigger reports).
    pub async fn changed(&self, change: Change, mark: u64, wait: bool) {
        if let End::Local(key) = &self.end {
            // This server's own cache is one of them (registered for as long as it lives).
            let peers: Vec<Arc<SessionCache>> = local_peers()
                .get(key)
                .map(|list| list.iter().filter_map(Weak::upgrade).collect())
                .unwrap_or_default();
            for peer in peers {
                peer.apply(change);
            }
            return;
        }
        self.cache.apply(change);
        if let End::Redis(..) = &self.end
            && !self.publish(&change.to_payload()).await
        {
            // The others' subscriptions are most likely down too (and then bypass their
            // caches); a change that could not be sent is logged for the operator.
            tracing::error!("a session change could not be published to Redis");
            metrics::counter!("servauth_session_notify_failures_total").increment(1);
            return;
        }
        let key = match change {
            Change::Session { session, .. } => session,
            Change::User(user) => user,
            Change::Everything => return,
        };
        if wait
            && self.cache.is_subscribed()
            && !self.cache.delivered_since(key, mark, ECHO_WAIT).await
        {
            metrics::counter!("servauth_session_notify_echo_timeouts_total").increment(1);
        }
    }

    /// Publishes on Redis; `false` when it failed.
    async fn publish(&self, payload: &str) -> bool {
        let End::Redis(redis) = &self.end else {
            return false;
        };
        let (connection, client) = &**redis;
        let connect = || async {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(REDIS_TIMEOUT))
                .set_response_timeout(Some(REDIS_TIMEOUT))
                .set_number_of_retries(1);
            ConnectionManager::new_with_config(client.clone(), config).await
        };
        let Ok(manager) = connection.get_or_try_init(connect).await else {
            return false;
        };
        let mut manager = manager.clone();
        let mut command = redis::cmd("PUBLISH");
        command.arg(CHANNEL).arg(payload);
        let sent = command.query_async::<i64>(&mut manager);
        matches!(tokio::time::timeout(REDIS_TIMEOUT, sent).await, Ok(Ok(_)))
    }

    /// Stops the subscription (the server is shutting down).
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }
}

impl Drop for Fanout {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

/// The receiving side: one task holding the subscription, one sending pings.
#[derive(Clone)]
struct Subscriber {
    cache: Weak<SessionCache>,
    /// Milliseconds since `epoch` when anything was last heard on the channel.
    heard: Arc<AtomicU64>,
    epoch: Instant,
    stopped: watch::Receiver<bool>,
}

impl Subscriber {
    fn new(cache: &Arc<SessionCache>, stopped: watch::Receiver<bool>) -> Self {
        Self {
            cache: Arc::downgrade(cache),
            heard: Arc::default(),
            epoch: Instant::now(),
            stopped,
        }
    }

    fn stopping(&self) -> bool {
        *self.stopped.borrow() || self.cache.strong_count() == 0
    }

    fn hear(&self) {
        let at = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.heard.store(at, Ordering::SeqCst);
    }

    /// A notification arrived.
    fn received(&self, payload: &str) {
        self.hear();
        let Some(cache) = self.cache.upgrade() else {
            return;
        };
        if payload == PING {
            return;
        }
        let change = Change::from_payload(payload).unwrap_or_else(|| {
            metrics::counter!("servauth_session_notify_malformed_total").increment(1);
            Change::Everything
        });
        cache.apply(change);
        cache.delivered(change);
    }

    fn set_subscribed(&self, up: bool) {
        if let Some(cache) = self.cache.upgrade() {
            if cache.is_subscribed() != up {
                if up {
                    tracing::info!("session notifications subscribed");
                } else {
                    tracing::warn!(
                        "session notifications lost: checking every session in the database \
                         until they are back"
                    );
                    metrics::counter!("servauth_session_notify_lost_total").increment(1);
                }
            }
            cache.set_subscribed(up);
        }
    }

    /// Resolves when the subscription has been silent for [`SILENCE`], or the server stops.
    async fn silence(&self) {
        let mut stopped = self.stopped.clone();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = stopped.changed() => return,
            }
            let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
            let silent = now.saturating_sub(self.heard.load(Ordering::SeqCst));
            if Duration::from_millis(silent) >= SILENCE || self.stopping() {
                return;
            }
        }
    }

    /// Keeps a subscription up with `session` (which returns when it is lost), emptying the
    /// cache whenever it is not.
    async fn keep_up<F, Fut>(self, what: &'static str, mut session: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        let mut backoff = Duration::from_millis(50);
        while !self.stopping() {
            self.hear();
            let started = Instant::now();
            let ended = tokio::select! {
                result = session() => result,
                () = self.silence() => Err("silent".to_owned()),
            };
            self.set_subscribed(false);
            if self.stopping() {
                return;
            }
            if let Err(error) = ended {
                tracing::warn!(
                    channel = what,
                    error,
                    "session notification subscription ended"
                );
            }
            if started.elapsed() > SILENCE {
                backoff = Duration::from_millis(50);
            }
            let mut stopped = self.stopped.clone();
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stopped.changed() => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn run_postgres(self, pool: PgPool) {
        let this = self.clone();
        self.keep_up("postgres", move || {
            let (this, pool) = (this.clone(), pool.clone());
            async move {
                let mut listener = PgListener::connect_with(&pool)
                    .await
                    .map_err(|error| error.to_string())?;
                listener.eager_reconnect(false);
                listener
                    .listen(CHANNEL)
                    .await
                    .map_err(|error| error.to_string())?;
                this.set_subscribed(true);
                loop {
                    match listener.try_recv().await {
                        Ok(Some(notification)) => this.received(notification.payload()),
                        Ok(None) => return Err("connection lost".to_owned()),
                        Err(error) => return Err(error.to_string()),
                    }
                }
            }
        })
        .await;
    }

    async fn run_redis(self, client: redis::Client) {
        let this = self.clone();
        self.keep_up("redis", move || {
            let (this, client) = (this.clone(), client.clone());
            async move {
                let connect = async {
                    let mut pubsub = client.get_async_pubsub().await?;
                    pubsub.subscribe(CHANNEL).await?;
                    Ok::<_, redis::RedisError>(pubsub)
                };
                let mut pubsub = tokio::time::timeout(REDIS_TIMEOUT * 2, connect)
                    .await
                    .map_err(|_| "timed out".to_owned())?
                    .map_err(|error| error.to_string())?;
                this.set_subscribed(true);
                let mut messages = pubsub.on_message();
                while let Some(message) = messages.next().await {
                    match message.get_payload::<String>() {
                        Ok(payload) => this.received(&payload),
                        Err(_) => this.received(""),
                    }
                }
                Err("connection lost".to_owned())
            }
        })
        .await;
    }

    /// Sends a ping every [`PING_EVERY`] with `send` until the server stops.
    async fn ping<F, Fut>(self, send: F)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = bool>,
    {
        let mut stopped = self.stopped.clone();
        while !self.stopping() {
            let _ = send().await;
            tokio::select! {
                _ = tokio::time::sleep(PING_EVERY) => {}
                _ = stopped.changed() => return,
            }
        }
    }
}
