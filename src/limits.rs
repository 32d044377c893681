//! Rate limits: per client IP on the endpoints an attacker hammers, and per account on
//! failed logins. Kept in process by default; shared by every replica through Redis when
//! `REDIS_URL` is set (one server-side script per hit, so a count is atomic; keys expire).
//! If Redis stops answering, the in-process limits take over at once, the outage is logged
//! and shown on `/ready`, and Redis is used again as soon as it answers.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use governor::clock::{Clock as _, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota as GovernorQuota, RateLimiter};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::ExposeSecret as _;
use sha2::{Digest as _, Sha256};
use tokio::sync::Mutex;

use crate::config::{Config, Quota};

/// The answer to one counted request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Until the quota is whole again (and, when refused, until a retry may pass).
    pub reset: Duration,
}

/// Counts a hit in a fixed window and returns `{count, ms left in the window}`. `ARGV[2]` is
/// the least the count may be after this hit (what this server counted itself, plus one): a
/// Redis that restarted empty, or lost the key, gets the count back instead of starting over
/// (the restored key then lives `ARGV[3]` ms, what is left of the window here).
static HIT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        "local count = redis.call('INCR', KEYS[1]) \
         local floor = tonumber(ARGV[2]) \
         if count < floor then \
           redis.call('SET', KEYS[1], floor, 'PX', ARGV[3]) count = floor \
         elseif count == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end \
         return {count, redis.call('PTTL', KEYS[1])}",
    )
});

type KeyedLimiter =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// Forget idle in-process counters once this many are kept.
const MAX_LOCAL_KEYS: usize = 100_000;
/// A Redis command that takes longer counts as Redis being down.
const REDIS_TIMEOUT: Duration = Duration::from_millis(250);
/// How often the Redis connection is checked (and re-made after an outage).
const REDIS_CHECK_EVERY: Duration = Duration::from_secs(1);

/// Every limit of the server, in process or shared.
pub struct RateLimits {
    ip_quota: Quota,
    refresh_quota: Quota,
    login_quota: Quota,
    local_ip: KeyedLimiter,
    local_refresh: KeyedLimiter,
    /// Fixed-window counts by key: the only counts without Redis, and with Redis a mirror of
    /// what it last answered, so that an outage or a restart of Redis resets nothing.
    local_windows: std::sync::Mutex<HashMap<String, Window>>,
    redis: Option<SharedCounters>,
}

/// One fixed-window count.
#[derive(Debug, Clone, Copy)]
struct Window {
    count: u32,
    ends: Instant,
}

/// Who failed logins are counted for (`SERVAUTH_LOGIN_FAILURE_LIMIT` each).
#[derive(Debug, Clone, Copy)]
pub enum FailureSubject<'a> {
    /// An account, by its email comparison key (whether or not an account has it).
    Account(&'a str),
    /// A device that proved itself before (a device token), by the token's id: its own
    /// failures only, so that other clients' failures never throttle it.
    Device(&'a str),
    /// A signed-in session re-checking its password, by session id: like a device, it proved
    /// itself before, so it is throttled by its own failures.
    Session(&'a str),
}

impl FailureSubject<'_> {
    fn key(self) -> String {
        match self {
            // The same key as before device tokens, so counts survive an upgrade.
            Self::Account(email_key) => format!("login:{}", hex_digest(email_key)),
            Self::Device(id) => format!("login-device:{}", hex_digest(id)),
            Self::Session(id) => format!("login-session:{}", hex_digest(id)),
        }
    }
}

/// What else is counted in fixed windows by key (per session, per address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Password re-checks of one session (`SERVAUTH_RATE_LIMIT`).
    Reauthentication,
    /// Emails with a link to one address: 3 per 15 minutes.
    LinkMail,
}

/// At most this many link emails go to one address per [`LINK_MAIL_WINDOW`].
pub const LINK_MAIL_COUNT: u32 = 3;
pub const LINK_MAIL_WINDOW: Duration = Duration::from_secs(15 * 60);

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("ip_quota", &self.ip_quota)
            .field("refresh_quota", &self.refresh_quota)
            .field("login_quota", &self.login_quota)
            .field("redis", &self.redis.is_some())
            .finish_non_exhaustive()
    }
}

/// The Redis side: a connection made lazily and re-made after outages.
struct SharedCounters {
    client: redis::Client,
    connection: Mutex<Option<ConnectionManager>>,
    up: AtomicBool,
}

/// Where Redis stands, for `/ready`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisState {
    Disabled,
    Up,
    Down,
}

impl RateLimits {
    pub fn new(config: &Config) -> anyhow::Result<Arc<Self>> {
        let ip_quota = config.rate_limit;
        let redis = match &config.redis_url {
            Some(url) => Some(SharedCounters {
                client: redis::Client::open(url.expose_secret())?,
                connection: Mutex::new(None),
                up: AtomicBool::new(false),
            }),
            None => None,
        };
        let limits = Arc::new(Self {
            ip_quota,
            refresh_quota: config.refresh_rate_limit,
            login_quota: config.login_failure_limit,
            local_ip: RateLimiter::keyed(governor_quota(ip_quota))
                .with_middleware::<StateInformationMiddleware>(),
            local_refresh: RateLimiter::keyed(governor_quota(config.refresh_rate_limit))
                .with_middleware::<StateInformationMiddleware>(),
            local_windows: std::sync::Mutex::new(HashMap::new()),
            redis,
        });
        if limits.redis.is_some() {
            spawn_redis_checks(Arc::downgrade(&limits));
        }
        Ok(limits)
    }

    /// Counts a request from `ip` to `route` (a route template, so that path variants share
    /// one quota) under `SERVAUTH_RATE_LIMIT`. IPv6 clients count by /64, the block one
    /// subscriber usually holds.
    pub async fn hit_ip(&self, route: &str, ip: IpAddr) -> Decision {
        self.hit_ip_in(route, ip, self.ip_quota, &self.local_ip)
            .await
    }

    /// As [`Self::hit_ip`], under `SERVAUTH_REFRESH_RATE_LIMIT` (refreshes come far more often
    /// than logins, and from every signed-in client behind one address).
    pub async fn hit_ip_refresh(&self, route: &str, ip: IpAddr) -> Decision {
        self.hit_ip_in(route, ip, self.refresh_quota, &self.local_refresh)
            .await
    }

    async fn hit_ip_in(
        &self,
        route: &str,
        ip: IpAddr,
        quota: Quota,
        local: &KeyedLimiter,
    ) -> Decision {
        let key = format!("ip:{route}:{}", client_block(ip));
        if let Some(decision) = self.shared_hit(&key, quota, 1, quota.window).await {
            return decision;
        }
        if local.len() > MAX_LOCAL_KEYS {
            local.retain_recent();
        }
        let limit = quota.count;
        let per_cell = quota.window / limit;
        match local.check_key(&key) {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                Decision {
                    allowed: true,
                    limit,
                    remaining,
                    reset: per_cell * (limit - remaining),
                }
            }
            Err(not_until) => Decision {
                allowed: false,
                limit,
                remaining: 0,
                reset: not_until.wait_time_from(DefaultClock::default().now()),
            },
        }
    }

    /// Reserves one failed-login slot of `subject` before a password is checked, so that a
    /// burst of parallel attempts cannot exceed the limit; [`Self::clear_failures`] gives
    /// the slots back. An account is keyed by its address whether or not an account has it,
    /// so a refusal reveals nothing.
    pub async fn reserve_failure(&self, subject: FailureSubject<'_>) -> Decision {
        self.count(subject.key(), self.login_quota).await
    }

    /// A password that checked out clears the subject's failure count (in Redis and here).
    pub async fn clear_failures(&self, subject: FailureSubject<'_>) {
        let key = subject.key();
        if let Some(redis) = &self.redis
            && redis.up.load(Ordering::Relaxed)
        {
            let mut connection = redis.connection.lock().await.clone();
            if let Some(connection) = connection.as_mut() {
                let cleared = tokio::time::timeout(
                    REDIS_TIMEOUT,
                    redis::cmd("DEL")
                        .arg(format!("servauth:{key}"))
                        .query_async::<()>(connection),
                )
                .await;
                if !matches!(cleared, Ok(Ok(()))) {
                    redis.mark_down("clearing a login count failed");
                }
            }
        }
        if let Ok(mut windows) = self.local_windows.lock() {
            windows.remove(&key);
        }
    }

    /// Counts one hit of `key` in `scope`: per session under `SERVAUTH_RATE_LIMIT`, per
    /// address under the link-mail limit.
    pub async fn hit(&self, scope: Scope, key: &str) -> Decision {
        let (name, quota) = match scope {
            Scope::Reauthentication => ("reauth", self.ip_quota),
            Scope::LinkMail => (
                "link-mail",
                Quota {
                    count: LINK_MAIL_COUNT,
                    window: LINK_MAIL_WINDOW,
                },
            ),
        };
        self.count(format!("{name}:{}", hex_digest(key)), quota)
            .await
    }

    /// One hit of a fixed-window count: in Redis when it answers (never below what this
    /// server counted itself), mirrored here; here alone otherwise.
    async fn count(&self, key: String, quota: Quota) -> Decision {
        let now = Instant::now();
        let (floor, left) = match self.local_windows.lock() {
            Ok(mut windows) => {
                if windows.len() > MAX_LOCAL_KEYS {
                    windows.retain(|_, window| window.ends > now);
                }
                match windows.get(&key) {
                    Some(window) if window.ends > now => {
                        (window.count.saturating_add(1), window.ends - now)
                    }
                    _ => (1, quota.window),
                }
            }
            Err(_) => (1, quota.window),
        };
        let decision = match self.shared_hit(&key, quota, floor, left).await {
            Some(decision) => decision,
            None => window_decision(floor, quota, left),
        };
        if let Ok(mut windows) = self.local_windows.lock() {
            let count = quota.count.saturating_sub(decision.remaining);
            let count = if decision.allowed {
                count
            } else {
                floor.max(count)
            };
            windows.insert(
                key,
                Window {
                    count,
                    ends: now + decision.reset,
                },
            );
        }
        decision
    }

    /// Whether Redis is in use and answering.
    pub fn redis_state(&self) -> RedisState {
        match &self.redis {
            None => RedisState::Disabled,
            Some(redis) if redis.up.load(Ordering::Relaxed) => RedisState::Up,
            Some(_) => RedisState::Down,
        }
    }

    /// The decision from Redis, or `None` when Redis is not configured or not answering
    /// (the caller then counts in process). `floor` and `left`: see [`HIT`].
    async fn shared_hit(
        &self,
        key: &str,
        quota: Quota,
        floor: u32,
        left: Duration,
    ) -> Option<Decision> {
        let redis = self.redis.as_ref()?;
        if !redis.up.load(Ordering::Relaxed) {
            return None;
        }
        let mut connection = redis.connection.lock().await.clone()?;
        let millis = |duration: Duration| u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        let mut invocation = HIT.key(format!("servauth:{key}"));
        invocation
            .arg(millis(quota.window))
            .arg(floor)
            .arg(millis(left).max(1));
        let call = invocation.invoke_async::<(u32, i64)>(&mut connection);
        match tokio::time::timeout(REDIS_TIMEOUT, call).await {
            Ok(Ok((count, left_ms))) => {
                let left = Duration::from_millis(u64::try_from(left_ms).unwrap_or(0));
                Some(window_decision(count, quota, left))
            }
            _ => {
                redis.mark_down("a rate-limit count failed");
                None
            }
        }
    }
}

impl SharedCounters {
    fn mark_down(&self, why: &str) {
        if self.up.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                why,
                "Redis is not answering: rate limits are per process until it is back"
            );
        }
    }

    /// Connects if needed and pings; flips the state and logs the transitions.
    async fn check(&self) {
        let mut slot = self.connection.lock().await;
        if slot.is_none() {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(REDIS_TIMEOUT * 4))
                .set_response_timeout(Some(REDIS_TIMEOUT))
                .set_number_of_retries(1);
            *slot = tokio::time::timeout(
                REDIS_TIMEOUT * 8,
                self.client.get_connection_manager_with_config(config),
            )
            .await
            .ok()
            .and_then(Result::ok);
        }
        let Some(connection) = slot.as_mut() else {
            self.mark_down("cannot connect");
            return;
        };
        let pong = tokio::time::timeout(
            REDIS_TIMEOUT,
            redis::cmd("PING").query_async::<String>(connection),
        )
        .await;
        if matches!(pong, Ok(Ok(_))) {
            if !self.up.swap(true, Ordering::Relaxed) {
                tracing::info!("Redis answers: rate limits are shared by every replica");
            }
        } else {
            *slot = None;
            self.mark_down("ping failed");
        }
    }
}

fn spawn_redis_checks(limits: std::sync::Weak<RateLimits>) {
    tokio::spawn(async move {
        loop {
            let Some(limits) = limits.upgrade() else {
                return;
            };
            if let Some(redis) = &limits.redis {
                redis.check().await;
            }
            drop(limits);
            tokio::time::sleep(REDIS_CHECK_EVERY).await;
        }
    });
}

fn window_decision(count: u32, quota: Quota, left: Duration) -> Decision {
    Decision {
        allowed: count <= quota.count,
        limit: quota.count,
        remaining: quota.count.saturating_sub(count),
        reset: left,
    }
}

fn governor_quota(quota: Quota) -> GovernorQuota {
    let burst = NonZeroU32::new(quota.count).unwrap_or(NonZeroU32::MIN);
    GovernorQuota::with_period(quota.window / quota.count).map_or_else(
        || GovernorQuota::per_second(burst),
        |per_cell| per_cell.allow_burst(burst),
    )
}

/// The unit a client is counted by: its IPv4 address, or the /64 of its IPv6 address.
fn client_block(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let segments = v6.segments();
            format!(
                "{:x}:{:x}:{:x}:{:x}::/64",
                segments[0], segments[1], segments[2], segments[3]
            )
        }
    }
}

/// Keys never hold an address in clear (Redis dumps are not a place for personal data).
fn hex_digest(value: &str) -> String {
    Sha256::digest(value.as_bytes())
        .iter()
        .take(16)
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_count_by_their_64_block() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        assert_eq!(client_block(a), client_block(b));
        assert_eq!(client_block("::ffff:10.1.2.3".parse().unwrap()), "10.1.2.3");
    }

    #[test]
    fn a_window_allows_its_count_and_then_refuses() {
        let quota = Quota {
            count: 2,
            window: Duration::from_secs(60),
        };
        assert!(window_decision(2, quota, Duration::from_secs(5)).allowed);
        let refused = window_decision(3, quota, Duration::from_secs(5));
        assert_eq!((refused.allowed, refused.remaining), (false, 0));
    }
}
