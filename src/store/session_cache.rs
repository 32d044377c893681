//! The live sessions this server has checked, kept in memory so that a token check needs no
//! database round trip, and forgotten at once when a session or its user changes.
//!
//! An entry says "session S of user U was live, until `expires_at`, with this user record".
//! It is only ever added from a database read, and is dropped:
//! - when this server changes the session or the user (the store wrapper,
//!   [`super::cached`], calls [`SessionCache::apply`] before the write's caller goes on);
//! - when another server does (its notification arrives through [`super::fanout`]);
//! - when the notification channel is lost: the whole cache is emptied, and nothing is kept
//!   until the channel is back ([`SessionCache::set_subscribed`]), so a notification missed
//!   meanwhile cannot leave a revoked session cached;
//! - after [`MAX_AGE`] whatever happens (a backstop for writes no notification reports,
//!   such as another process editing a SQLite file).
//!
//! A read that was in flight when a change arrived must not put its (older) answer in the
//! cache afterwards. Every read takes a ticket ([`SessionCache::begin`]); every change gets a
//! later number and leaves a tombstone (per session, or per user for changes that touch all
//! of a user's sessions); an answer is kept only when no tombstone of its session or user is
//! newer than its ticket. Tombstones are bounded: when there are too many, the cache is
//! emptied instead (a `floor` every older ticket falls below), which is always safe.
//!
//! Written here because the rules above (tickets against in-flight reads, user-wide
//! invalidation without a scan, emptying on a lost channel) are what makes a revocation
//! cache safe, and no cache crate has them; the entries themselves live in `quick_cache`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::{SessionRecord, UserRecord};

/// The longest an entry is trusted without being read again.
pub const MAX_AGE: Duration = Duration::from_secs(30);

/// A read that took longer than this keeps nothing (session tombstones live this long).
const MAX_READ: Duration = Duration::from_secs(5);

/// The most tombstones of each kind before the cache is emptied instead.
const MAX_TOMBSTONES: usize = 8192;

/// How many delivered notifications are remembered for [`SessionCache::delivered_since`].
const RECENT_DELIVERIES: usize = 4096;

/// What changed: a session (its user given when known), or every session of a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Change {
    Session {
        user: Option<Uuid>,
        session: Uuid,
    },
    User(Uuid),
    /// Anything may have changed (a malformed notification, an import): forget everything.
    Everything,
}

impl Change {
    /// The form notifications carry: `user:session`, `user:` or `*`; what the PostgreSQL
    /// triggers send (migration 0006) and what Redis subscribers receive.
    pub fn to_payload(self) -> String {
        match self {
            Self::Session { user, session } => match user {
                Some(user) => format!("{user}:{session}"),
                None => format!(":{session}"),
            },
            Self::User(user) => format!("{user}:"),
            Self::Everything => "*".to_owned(),
        }
    }

    /// Reads a notification; `None` for anything malformed (the caller forgets everything).
    pub fn from_payload(payload: &str) -> Option<Self> {
        if payload == "*" {
            return Some(Self::Everything);
        }
        let (user, session) = payload.split_once(':')?;
        let user = if user.is_empty() {
            None
        } else {
            Some(Uuid::try_parse(user).ok()?)
        };
        if session.is_empty() {
            return user.map(Self::User);
        }
        Some(Self::Session {
            user,
            session: Uuid::try_parse(session).ok()?,
        })
    }

    /// The ids a waiter may be waiting on for this change.
    fn keys(self) -> [Option<Uuid>; 2] {
        match self {
            Self::Session { user, session } => [Some(session), user],
            Self::User(user) => [Some(user), None],
            Self::Everything => [None, None],
        }
    }
}

/// One cached answer.
#[derive(Debug)]
struct Entry {
    user: UserRecord,
    expires_at: DateTime<Utc>,
    /// The session itself, when the read returned it (Better Auth token checks need it).
    session: Option<SessionRecord>,
    ticket: u64,
    cached_at: Instant,
}

/// A read's ticket: taken before the database is asked.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    number: u64,
    taken: Instant,
}

#[derive(Debug, Default)]
struct Tombstones {
    sessions: HashMap<Uuid, (u64, Instant)>,
    users: HashMap<Uuid, (u64, Instant)>,
}

/// Notifications this server has received, for writers waiting to see their own come back.
#[derive(Debug, Default)]
struct Deliveries {
    received: u64,
    recent: VecDeque<(u64, Uuid)>,
    waiters: Vec<(Uuid, u64, oneshot::Sender<()>)>,
}

/// See the module documentation.
pub struct SessionCache {
    entries: quick_cache::sync::Cache<Uuid, Arc<Entry>>,
    /// Better Auth session tokens (SHA-256) to their session ids: a fixed association, so
    /// safe to keep; liveness is the entry's.
    tokens: quick_cache::sync::Cache<[u8; 32], Uuid>,
    counter: AtomicU64,
    floor: AtomicU64,
    subscribed: AtomicBool,
    tombstones: Mutex<Tombstones>,
    deliveries: Mutex<Deliveries>,
}

impl std::fmt::Debug for SessionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCache")
            .field("entries", &self.entries.len())
            .field("subscribed", &self.subscribed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves plain data, still consistent enough
    // for what is kept here (at worst an extra miss).
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl SessionCache {
    /// A cache of at most `capacity` sessions; `subscribed` says whether it is usable from
    /// the start (no remote channel to wait for).
    pub fn new(capacity: usize, subscribed: bool) -> Self {
        Self {
            entries: quick_cache::sync::Cache::new(capacity.max(1)),
            tokens: quick_cache::sync::Cache::new(capacity.max(1)),
            counter: AtomicU64::new(1),
            floor: AtomicU64::new(0),
            subscribed: AtomicBool::new(subscribed),
            tombstones: Mutex::default(),
            deliveries: Mutex::default(),
        }
    }

    /// How many sessions are cached.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the notification channel is up (the cache is in use).
    pub fn is_subscribed(&self) -> bool {
        self.subscribed.load(Ordering::SeqCst)
    }

    /// The channel is up (`true`: everything cached before is forgotten, since notifications
    /// may have been missed) or lost (`false`: forgotten, and nothing is kept until it is up).
    pub fn set_subscribed(&self, up: bool) {
        if !up {
            self.subscribed.store(false, Ordering::SeqCst);
        }
        self.forget_everything();
        if up {
            self.subscribed.store(true, Ordering::SeqCst);
        }
        metrics::gauge!("servauth_session_cache_subscribed").set(if up { 1.0 } else { 0.0 });
    }

    /// A ticket for a read about to be sent; `None` when nothing may be cached now.
    pub fn begin(&self) -> Option<Ticket> {
        self.is_subscribed().then(|| Ticket {
            number: self.counter.load(Ordering::SeqCst),
            taken: Instant::now(),
        })
    }

    /// The cached user of live session `session_id` (of `user_id`) at `now`.
    pub fn live_user(
        &self,
        session_id: Uuid,
        user_id: Uuid,
        now: DateTime<Utc>,
    ) -> Option<(UserRecord, DateTime<Utc>)> {
        let entry = self.usable(session_id, now)?;
        (entry.user.id == user_id).then(|| (entry.user.clone(), entry.expires_at))
    }

    /// The cached live session holding the Better Auth token with this hash, with its user.
    pub fn token_session(
        &self,
        token_hash: &[u8],
        now: DateTime<Utc>,
    ) -> Option<(SessionRecord, UserRecord)> {
        let key: [u8; 32] = token_hash.try_into().ok()?;
        let session_id = self.tokens.get(&key)?;
        let entry = self.usable(session_id, now)?;
        let session = entry.session.clone()?;
        Some((session, entry.user.clone()))
    }

    fn usable(&self, session_id: Uuid, now: DateTime<Utc>) -> Option<Arc<Entry>> {
        let hit = self
            .is_subscribed()
            .then(|| self.entries.get(&session_id))
            .flatten();
        let Some(entry) = hit else {
            metrics::counter!("servauth_session_cache_misses_total").increment(1);
            return None;
        };
        let stale = entry.expires_at <= now
            || entry.cached_at.elapsed() >= MAX_AGE
            || entry.ticket < self.floor.load(Ordering::SeqCst)
            || self.user_changed_since(entry.user.id, entry.ticket);
        if stale {
            self.entries
                .remove_if(&session_id, |current| Arc::ptr_eq(current, &entry));
            metrics::counter!("servauth_session_cache_misses_total").increment(1);
            return None;
        }
        metrics::counter!("servauth_session_cache_hits_total").increment(1);
        Some(entry)
    }

    fn user_changed_since(&self, user_id: Uuid, ticket: u64) -> bool {
        let tombstones = locked(&self.tombstones);
        tombstones
            .users
            .get(&user_id)
            .is_some_and(|(changed, _)| *changed > ticket)
    }

    /// Keeps what a read that took `ticket` found: session `session_id` live until
    /// `expires_at`, of `user` (with the session record and token hash, for a Better Auth
    /// token check). Nothing is kept when anything about the session or its user changed
    /// since the ticket was taken.
    pub fn keep(
        &self,
        ticket: Ticket,
        session_id: Uuid,
        user: UserRecord,
        expires_at: DateTime<Utc>,
        session: Option<(SessionRecord, &[u8])>,
    ) {
        if ticket.taken.elapsed() >= MAX_READ {
            return;
        }
        let user_id = user.id;
        let (session, token) = match session {
            Some((record, hash)) => (Some(record), <[u8; 32]>::try_from(hash).ok()),
            None => (None, None),
        };
        let entry = Arc::new(Entry {
            user,
            expires_at,
            session,
            ticket: ticket.number,
            cached_at: Instant::now(),
        });
        if let Some(token) = token {
            self.tokens.insert(token, session_id);
        }
        self.entries.insert(session_id, entry.clone());
        // A change applied meanwhile bumped the counter before removing entries: either
        // its removal saw this entry, or this check sees its tombstone.
        if self.changed_since(ticket.number, session_id, user_id) {
            self.entries
                .remove_if(&session_id, |current| Arc::ptr_eq(current, &entry));
        }
    }

    fn changed_since(&self, ticket: u64, session_id: Uuid, user_id: Uuid) -> bool {
        if !self.is_subscribed() || self.floor.load(Ordering::SeqCst) > ticket {
            return true;
        }
        let tombstones = locked(&self.tombstones);
        let newer = |map: &HashMap<Uuid, (u64, Instant)>, id: &Uuid| {
            map.get(id).is_some_and(|(changed, _)| *changed > ticket)
        };
        newer(&tombstones.sessions, &session_id) || newer(&tombstones.users, &user_id)
    }

    /// Forgets what `change` makes stale.
    pub fn apply(&self, change: Change) {
        let number = self.counter.fetch_add(1, Ordering::SeqCst) + 1;
        let now = Instant::now();
        match change {
            Change::Session { session, .. } => {
                let overflow = {
                    let mut tombstones = locked(&self.tombstones);
                    tombstones.sessions.insert(session, (number, now));
                    bounded(&mut tombstones.sessions, MAX_READ, now)
                };
                self.entries.remove(&session);
                if overflow {
                    self.forget_everything();
                }
            }
            Change::User(user) => {
                let overflow = {
                    let mut tombstones = locked(&self.tombstones);
                    tombstones.users.insert(user, (number, now));
                    bounded(&mut tombstones.users, MAX_AGE, now)
                };
                if overflow {
                    self.forget_everything();
                }
            }
            Change::Everything => self.forget_everything(),
        }
        metrics::counter!("servauth_session_cache_invalidations_total").increment(1);
    }

    /// Empties the cache: every ticket taken before now falls below the floor.
    fn forget_everything(&self) {
        let number = self.counter.fetch_add(1, Ordering::SeqCst) + 1;
        self.floor.fetch_max(number, Ordering::SeqCst);
        {
            let mut tombstones = locked(&self.tombstones);
            tombstones.sessions.clear();
            tombstones.users.clear();
        }
        self.entries.clear();
        self.tokens.clear();
    }

    /// Records a notification received from the channel, and wakes the writers waiting for
    /// it (see [`Self::delivered_since`]).
    pub fn delivered(&self, change: Change) {
        let mut deliveries = locked(&self.deliveries);
        deliveries.received += 1;
        let number = deliveries.received;
        for key in change.keys().into_iter().flatten() {
            if deliveries.recent.len() == RECENT_DELIVERIES {
                deliveries.recent.pop_front();
            }
            deliveries.recent.push_back((number, key));
        }
        let waiting = std::mem::take(&mut deliveries.waiters);
        for (key, after, reply) in waiting {
            if number > after && change.keys().contains(&Some(key)) {
                let _ = reply.send(());
            } else if !reply.is_closed() {
                deliveries.waiters.push((key, after, reply));
            }
        }
    }

    /// A mark to wait from: how many notifications have arrived so far.
    pub fn delivery_mark(&self) -> u64 {
        locked(&self.deliveries).received
    }

    /// Waits (at most `limit`) until a notification about `key` (a session or user id)
    /// arrives after `mark`; `true` when it did. Only meaningful while subscribed.
    pub async fn delivered_since(&self, key: Uuid, mark: u64, limit: Duration) -> bool {
        let wait = {
            let mut deliveries = locked(&self.deliveries);
            if deliveries
                .recent
                .iter()
                .any(|(number, seen)| *number > mark && *seen == key)
            {
                return true;
            }
            let (reply, wait) = oneshot::channel();
            deliveries.waiters.push((key, mark, reply));
            wait
        };
        matches!(tokio::time::timeout(limit, wait).await, Ok(Ok(())))
    }
}

/// Keeps a tombstone map bounded: drops those older than `life`; `true` when it is still
/// too large (the caller then empties the cache).
fn bounded(map: &mut HashMap<Uuid, (u64, Instant)>, life: Duration, now: Instant) -> bool {
    if map.len() <= MAX_TOMBSTONES {
        return false;
    }
    map.retain(|_, (_, at)| now.duration_since(*at) < life);
    map.len() > MAX_TOMBSTONES
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Role;

    fn user(id: Uuid) -> UserRecord {
        let now = Utc::now();
        UserRecord {
            id,
            email: "ada@example.com".to_owned(),
            username: None,
            name: None,
            image: None,
            email_verified: true,
            role: Role::User,
            pending_email: None,
            created_at: now,
            updated_at: now,
            better_auth_id: None,
            ban: None,
        }
    }

    fn later() -> DateTime<Utc> {
        Utc::now() + chrono::Duration::hours(1)
    }

    #[test]
    fn a_kept_session_is_answered_until_it_changes() {
        let cache = SessionCache::new(100, true);
        let (session, owner) = (Uuid::now_v7(), Uuid::now_v7());
        let ticket = cache.begin().expect("subscribed");
        cache.keep(ticket, session, user(owner), later(), None);
        assert!(cache.live_user(session, owner, Utc::now()).is_some());
        assert!(
            cache
                .live_user(session, Uuid::now_v7(), Utc::now())
                .is_none(),
            "another user's claim of the session is not answered"
        );
        cache.apply(Change::Session {
            user: Some(owner),
            session,
        });
        assert!(cache.live_user(session, owner, Utc::now()).is_none());
    }

    #[test]
    fn a_user_wide_change_forgets_every_session_of_the_user_only() {
        let cache = SessionCache::new(100, true);
        let (owner, other) = (Uuid::now_v7(), Uuid::now_v7());
        let sessions: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        for session in &sessions {
            let ticket = cache.begin().expect("subscribed");
            cache.keep(ticket, *session, user(owner), later(), None);
        }
        let theirs = Uuid::now_v7();
        let ticket = cache.begin().expect("subscribed");
        cache.keep(ticket, theirs, user(other), later(), None);
        cache.apply(Change::User(owner));
        for session in &sessions {
            assert!(cache.live_user(*session, owner, Utc::now()).is_none());
        }
        assert!(cache.live_user(theirs, other, Utc::now()).is_some());
        // A read begun after the change is kept again.
        let ticket = cache.begin().expect("subscribed");
        cache.keep(ticket, sessions[0], user(owner), later(), None);
        assert!(cache.live_user(sessions[0], owner, Utc::now()).is_some());
    }

    #[test]
    fn a_read_in_flight_during_a_change_keeps_nothing() {
        let cache = SessionCache::new(100, true);
        let (session, owner) = (Uuid::now_v7(), Uuid::now_v7());
        let ticket = cache.begin().expect("subscribed");
        cache.apply(Change::Session {
            user: None,
            session,
        });
        cache.keep(ticket, session, user(owner), later(), None);
        assert!(cache.live_user(session, owner, Utc::now()).is_none());
        let ticket = cache.begin().expect("subscribed");
        cache.apply(Change::User(owner));
        cache.keep(ticket, session, user(owner), later(), None);
        assert!(cache.live_user(session, owner, Utc::now()).is_none());
    }

    #[test]
    fn a_lost_channel_empties_the_cache_and_keeps_nothing_until_it_is_back() {
        let cache = SessionCache::new(100, true);
        let (session, owner) = (Uuid::now_v7(), Uuid::now_v7());
        let ticket = cache.begin().expect("subscribed");
        cache.keep(ticket, session, user(owner), later(), None);
        let in_flight = cache.begin().expect("subscribed");
        cache.set_subscribed(false);
        assert!(cache.live_user(session, owner, Utc::now()).is_none());
        assert!(cache.begin().is_none());
        cache.keep(in_flight, session, user(owner), later(), None);
        assert!(cache.is_empty());
        cache.set_subscribed(true);
        cache.keep(in_flight, session, user(owner), later(), None);
        assert!(
            cache.is_empty(),
            "a read begun before the channel came back is not kept"
        );
    }

    #[test]
    fn an_expired_session_is_not_answered() {
        let cache = SessionCache::new(100, true);
        let (session, owner) = (Uuid::now_v7(), Uuid::now_v7());
        let ticket = cache.begin().expect("subscribed");
        let soon = Utc::now() + chrono::Duration::seconds(1);
        cache.keep(ticket, session, user(owner), soon, None);
        assert!(cache.live_user(session, owner, Utc::now()).is_some());
        assert!(
            cache
                .live_user(session, owner, soon + chrono::Duration::seconds(1))
                .is_none()
        );
    }

    #[test]
    fn a_storm_of_changes_stays_bounded_and_never_serves_a_changed_session() {
        let cache = SessionCache::new(100, true);
        let (session, owner) = (Uuid::now_v7(), Uuid::now_v7());
        let ticket = cache.begin().expect("subscribed");
        cache.keep(ticket, session, user(owner), later(), None);
        let in_flight = cache.begin().expect("subscribed");
        cache.apply(Change::User(owner));
        for _ in 0..(MAX_TOMBSTONES * 2) {
            cache.apply(Change::User(Uuid::now_v7()));
            cache.apply(Change::Session {
                user: None,
                session: Uuid::now_v7(),
            });
        }
        let tombstones = locked(&cache.tombstones);
        assert!(tombstones.users.len() <= MAX_TOMBSTONES + 1);
        assert!(tombstones.sessions.len() <= MAX_TOMBSTONES + 1);
        drop(tombstones);
        assert!(cache.live_user(session, owner, Utc::now()).is_none());
        cache.keep(in_flight, session, user(owner), later(), None);
        assert!(cache.live_user(session, owner, Utc::now()).is_none());
    }

    #[test]
    fn notifications_read_back_as_written_and_garbage_is_refused() {
        let (user, session) = (Uuid::now_v7(), Uuid::now_v7());
        for change in [
            Change::User(user),
            Change::Session {
                user: Some(user),
                session,
            },
            Change::Session {
                user: None,
                session,
            },
            Change::Everything,
        ] {
            assert_eq!(Change::from_payload(&change.to_payload()), Some(change));
        }
        for garbage in ["", ":", "x:", "nonsense", &format!("{user}:x"), "**"] {
            assert_eq!(Change::from_payload(garbage), None, "{garbage:?}");
        }
    }

    #[tokio::test]
    async fn a_writer_sees_its_notification_come_back() {
        let cache = Arc::new(SessionCache::new(100, true));
        let user = Uuid::now_v7();
        let mark = cache.delivery_mark();
        cache.delivered(Change::User(Uuid::now_v7()));
        assert!(
            !cache
                .delivered_since(user, mark, Duration::from_millis(10))
                .await
        );
        let waiter = tokio::spawn({
            let cache = cache.clone();
            async move {
                cache
                    .delivered_since(user, mark, Duration::from_secs(5))
                    .await
            }
        });
        tokio::task::yield_now().await;
        cache.delivered(Change::Session {
            user: Some(user),
            session: Uuid::now_v7(),
        });
        assert!(waiter.await.unwrap_or(false));
        // Already delivered before the wait began: answered at once.
        assert!(
            cache
                .delivered_since(user, mark, Duration::from_millis(1))
                .await
        );
    }
}
