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

/// Counts a hit in a fixed window and returns `{count, ms left in the window}`.
static HIT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        "local count = redis.call('INCR', KEYS[1]) \
         if count == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end \
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
    login_quota: Quota,
    local_ip: KeyedLimiter,
    local_logins: std::sync::Mutex<HashMap<String, (u32, Instant)>>,
    redis: Option<SharedCounters>,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("ip_quota", &self.ip_quota)
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
            login_quota: config.login_failure_limit,
            local_ip: RateLimiter::keyed(governor_quota(ip_quota))
                .with_middleware::<StateInformationMiddleware>(),
            local_logins: std::sync::Mutex::new(HashMap::new()),
            redis,
        });
        if limits.redis.is_some() {
            spawn_redis_checks(Arc::downgrade(&limits));
        }
        Ok(limits)
    }

    /// Counts a request from `ip` to `route` (a route template, so that path variants share
    /// one quota). IPv6 clients count by /64, the block one subscriber usually holds.
    pub async fn hit_ip(&self, route: &str, ip: IpAddr) -> Decision {
        let key = format!("ip:{route}:{}", client_block(ip));
        if let Some(decision) = self.shared_hit(&key, self.ip_quota).await {
            return decision;
        }
        if self.local_ip.len() > MAX_LOCAL_KEYS {
            self.local_ip.retain_recent();
        }
        let limit = self.ip_quota.count;
        let per_cell = self.ip_quota.window / limit;
        match self.local_ip.check_key(&key) {
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

    /// Reserves one failed-login slot of an account before its password is checked, so that
    /// a burst of parallel attempts cannot exceed the limit; [`Self::login_succeeded`] gives
    /// the slots back. The key is the address whether or not an account has it, so a
    /// refusal reveals nothing.
    pub async fn reserve_login(&self, email_key: &str) -> Decision {
        let key = format!("login:{}", hex_digest(email_key));
        if let Some(decision) = self.shared_hit(&key, self.login_quota).await {
            return decision;
        }
        let Ok(mut windows) = self.local_logins.lock() else {
            return Decision {
                allowed: true,
                limit: self.login_quota.count,
                remaining: 0,
                reset: Duration::ZERO,
            };
        };
        if windows.len() > MAX_LOCAL_KEYS {
            let window = self.login_quota.window;
            windows.retain(|_, (_, started)| started.elapsed() < window);
        }
        let now = Instant::now();
        let entry = windows.entry(key).or_insert((0, now));
        if now.duration_since(entry.1) >= self.login_quota.window {
            *entry = (0, now);
        }
        entry.0 = entry.0.saturating_add(1);
        window_decision(
            entry.0,
            self.login_quota,
            self.login_quota
                .window
                .saturating_sub(now.duration_since(entry.1)),
        )
    }

    /// A successful login clears the account's failure count.
    pub async fn login_succeeded(&self, email_key: &str) {
        let key = format!("login:{}", hex_digest(email_key));
        if let Some(redis) = &self.redis
            && redis.up.load(Ordering::Relaxed)
        {
            let mut connection = redis.connection.lock().await.clone();
            if let Some(connection) = connection.as_mut() {
                let cleared = tokio::time::timeout(
                    REDIS_TIMEOUT,
                    redis::cmd("DEL").arg(&key).query_async::<()>(connection),
                )
                .await;
                if !matches!(cleared, Ok(Ok(()))) {
                    redis.mark_down("clearing a login count failed");
                }
            }
        }
        if let Ok(mut windows) = self.local_logins.lock() {
            windows.remove(&key);
        }
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
    /// (the caller then counts in process).
    async fn shared_hit(&self, key: &str, quota: Quota) -> Option<Decision> {
        let redis = self.redis.as_ref()?;
        if !redis.up.load(Ordering::Relaxed) {
            return None;
        }
        let mut connection = redis.connection.lock().await.clone()?;
        let window_ms = u64::try_from(quota.window.as_millis()).unwrap_or(u64::MAX);
        let mut invocation = HIT.key(format!("servauth:{key}"));
        invocation.arg(window_ms);
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
