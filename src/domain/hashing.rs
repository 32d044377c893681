use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use argon2::password_hash::PasswordHasher as _;
use argon2::{Algorithm, Argon2, Block, Params, Version};
use password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use super::Password;
use super::stored_hash::StoredHash;
use crate::config::Argon2Config;

/// How long a worker keeps its work area with nothing to hash before giving it back.
const IDLE_RELEASE: Duration = Duration::from_secs(10);

/// A failed password check is padded to at most this long, however slow a stored hash is.
const MAX_FAILURE_PADDING: Duration = Duration::from_secs(2);
/// The slowest verifications are kept per bucket of this length; the current and the
/// previous bucket count, so a slow verification is remembered for 30 to 60 minutes.
const SLOWEST_BUCKET: Duration = Duration::from_secs(30 * 60);

/// Why a hash could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// Every worker is busy and the queue is full: answer 503 at once.
    #[error("password hashing queue is full")]
    Overloaded,
    #[error("password hashing failed: {0}")]
    Failed(String),
}

/// Argon2id hashing on a bounded pool of dedicated threads, never on the async workers.
///
/// `workers` threads hash (each with one `m` KiB work area it reuses from hash to hash, so
/// hashing memory stays at `workers × m` and no hash pays for zeroing or faulting in fresh
/// pages; the area is given back after [`IDLE_RELEASE`] without work). At most `queue` more
/// calls wait for a worker; beyond that a call fails at once with [`HashError::Overloaded`]
/// rather than letting latency grow without bound. A call whose caller has gone (the client
/// hung up) while it waited is dropped without hashing.
#[derive(Clone)]
pub struct PasswordHashing {
    /// Permits for running or waiting: `workers + queue`.
    admission: Arc<Semaphore>,
    /// The workers' queue; they stop when the last clone of the pool is dropped.
    jobs: flume::Sender<Job>,
    workers: usize,
    /// A hash of a random password with the current parameters: verifying an unknown
    /// account's login against it costs what a real verification costs.
    dummy_hash: Arc<str>,
    /// The parameters new hashes get (a stored hash with others is re-hashed on login).
    params: Argon2Config,
    /// How long verifications of each kind of stored hash took lately (the slowest).
    slowest: Arc<Mutex<SlowestVerifications>>,
}

/// One call's work, run by whichever worker takes it.
type Job = Box<dyn FnOnce(&mut Worker) + Send>;

/// The outcome of checking a password.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Verification {
    pub matches: bool,
    /// The stored hash is of another kind or has other parameters than new hashes get.
    pub needs_rehash: bool,
}

impl std::fmt::Debug for PasswordHashing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHashing")
            .field("workers", &self.workers)
            .field("admission", &self.admission.available_permits())
            .finish_non_exhaustive()
    }
}

impl PasswordHashing {
    /// Starts the workers; computes the dummy hash once (one hash of start-up time).
    pub fn new(config: Argon2Config, workers: usize, queue: usize) -> Result<Self, HashError> {
        let params = Params::new(
            config.memory_kib,
            config.iterations,
            config.parallelism,
            None,
        )
        .map_err(|error| HashError::Failed(error.to_string()))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let mut random = [0_u8; 32];
        rand::fill(&mut random);
        let dummy_hash = argon2
            .hash_password(&random)
            .map_err(|error| HashError::Failed(error.to_string()))?
            .to_string();
        let workers = workers.max(1);
        let (jobs, queued) = flume::unbounded::<Job>();
        for index in 0..workers {
            let queued = queued.clone();
            let mut worker = Worker {
                argon2: argon2.clone(),
                area: None,
            };
            std::thread::Builder::new()
                .name(format!("servauth-hash-{index}"))
                .spawn(move || worker.serve(&queued))
                .map_err(|error| HashError::Failed(format!("cannot start a worker: {error}")))?;
        }
        Ok(Self {
            admission: Arc::new(Semaphore::new(workers + queue)),
            jobs,
            workers,
            dummy_hash: dummy_hash.into(),
            params: config,
            slowest: Arc::new(Mutex::new(SlowestVerifications::new(Instant::now()))),
        })
    }

    /// Waits until a failed password check that began at `started` has taken as long as the
    /// slowest verification of any kind of stored hash lately (over the last 30 to 60
    /// minutes; at most [`MAX_FAILURE_PADDING`]). Then an unknown address (checked against
    /// the dummy hash), a current Argon2 account and an imported bcrypt or scrypt account
    /// fail alike, and the time of a failure tells nothing about the account. Sleeps on the
    /// async runtime: the padding holds neither a hashing worker nor a hashing place.
    pub async fn pad_failure(&self, started: Instant) {
        let slowest = self
            .slowest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .slowest(Instant::now());
        let deadline = started
            .checked_add(slowest.min(MAX_FAILURE_PADDING))
            .unwrap_or(started);
        tokio::time::sleep_until(deadline.into()).await;
    }

    /// Hashes a new password into a PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`).
    pub async fn hash(&self, password: Password) -> Result<String, HashError> {
        self.admit()?.hash(password).await
    }

    /// Verifies a password against a stored hash: see [`Admission::verify`].
    pub async fn verify(
        &self,
        password: Password,
        stored: Option<String>,
    ) -> Result<Verification, HashError> {
        self.admit()?.verify(password, stored).await
    }

    /// Whether every place (running or waiting) is taken: the next [`Self::admit`] would
    /// fail, unless a hash finishes first.
    pub fn is_full(&self) -> bool {
        self.admission.available_permits() == 0
    }

    /// Takes a place (running or waiting) for one hash, or fails at once with
    /// [`HashError::Overloaded`]: a caller that takes it before other work (a login's user
    /// lookup) refuses before doing that work for nothing.
    pub fn admit(&self) -> Result<Admission, HashError> {
        let Ok(permit) = self.admission.clone().try_acquire_owned() else {
            metrics::counter!("servauth_password_hash_rejected_total").increment(1);
            return Err(HashError::Overloaded);
        };
        Ok(Admission {
            pool: self.clone(),
            permit,
        })
    }
}

/// A place in the hashing pool, held until its one hash is done.
pub struct Admission {
    pool: PasswordHashing,
    permit: OwnedSemaphorePermit,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission").finish_non_exhaustive()
    }
}

impl Admission {
    /// Hashes a new password into a PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`).
    pub async fn hash(self, password: Password) -> Result<String, HashError> {
        self.run(move |worker| worker.hash(password.expose().as_bytes()))
            .await?
    }

    /// Verifies a password against a stored hash (ours, or an imported argon2, scrypt,
    /// bcrypt or Better Auth hash), or, when there is no account, against the dummy hash (never a match)
    /// so that both cases cost the same. An unusable stored hash (unknown kind, or a cost
    /// beyond the bounds) never matches and is logged.
    pub async fn verify(
        self,
        password: Password,
        stored: Option<String>,
    ) -> Result<Verification, HashError> {
        let known = stored.is_some();
        let stored = stored.unwrap_or_else(|| self.pool.dummy_hash.to_string());
        let stored = match StoredHash::parse(&stored, self.pool.params) {
            Ok(stored) => stored,
            Err(error) => {
                tracing::warn!(error = %error, "stored password hash cannot be verified");
                return Ok(Verification::default());
            }
        };
        let needs_rehash = stored.needs_rehash();
        let kind = HashKind::of(&stored);
        let slowest = Arc::clone(&self.pool.slowest);
        let matches = self
            .run(move |worker| {
                let started = Instant::now();
                let matches = worker.verify(&stored, password.expose().as_bytes());
                let took = started.elapsed();
                slowest
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .record(kind, took, Instant::now());
                matches
            })
            .await?;
        Ok(Verification {
            matches: known && matches,
            needs_rehash,
        })
    }

    async fn run<T, F>(self, work: F) -> Result<T, HashError>
    where
        F: FnOnce(&mut Worker) -> T + Send + 'static,
        T: Send + 'static,
    {
        let (reply, result) = oneshot::channel();
        let job = queued_job(self.permit, reply, work);
        metrics::gauge!("servauth_password_hash_queue_depth").increment(1.0);
        if self.pool.jobs.send(job).is_err() {
            metrics::gauge!("servauth_password_hash_queue_depth").decrement(1.0);
            return Err(HashError::Failed("hashing pool stopped".to_owned()));
        }
        result
            .await
            .map_err(|_| HashError::Failed("hashing worker stopped".to_owned()))
    }
}

/// Wraps a call's work with its admission permit (held until the work is done), its wait and
/// duration metrics and the caller's span.
fn queued_job<T, F>(admitted: OwnedSemaphorePermit, reply: oneshot::Sender<T>, work: F) -> Job
where
    F: FnOnce(&mut Worker) -> T + Send + 'static,
    T: Send + 'static,
{
    let span = tracing::Span::current();
    let queued = Instant::now();
    Box::new(move |worker| {
        metrics::gauge!("servauth_password_hash_queue_depth").decrement(1.0);
        metrics::histogram!("servauth_password_hash_wait_seconds")
            .record(queued.elapsed().as_secs_f64());
        if reply.is_closed() {
            return;
        }
        let started = Instant::now();
        let value = span.in_scope(|| work(worker));
        metrics::histogram!("servauth_password_hash_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        // Free the slot before the caller hears back, so that it can be taken again at once.
        drop(admitted);
        // The caller may have gone meanwhile; then nobody wants the value.
        let _ = reply.send(value);
    })
}

/// The kinds of stored hash whose verifications take distinctly long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HashKind {
    /// Argon2id with the current parameters: ours, and the dummy hash of unknown accounts.
    CurrentArgon2,
    /// Argon2 of another variant or with other parameters (imported, or older settings).
    OtherArgon2,
    Scrypt,
    Bcrypt,
    /// Better Auth's scrypt (N=2^14, r=16): fixed, and dearer than most PHC scrypt imports.
    BetterAuth,
}

impl HashKind {
    const COUNT: usize = 5;

    fn of(stored: &StoredHash) -> Self {
        match stored {
            StoredHash::Argon2 { current: true, .. } => Self::CurrentArgon2,
            StoredHash::Argon2 { current: false, .. } => Self::OtherArgon2,
            StoredHash::Scrypt(_) => Self::Scrypt,
            StoredHash::Bcrypt(_) => Self::Bcrypt,
            StoredHash::BetterAuth(_) => Self::BetterAuth,
        }
    }

    fn index(self) -> usize {
        match self {
            Self::CurrentArgon2 => 0,
            Self::OtherArgon2 => 1,
            Self::Scrypt => 2,
            Self::Bcrypt => 3,
            Self::BetterAuth => 4,
        }
    }
}

/// The slowest verification of each [`HashKind`] in the current and the previous
/// [`SLOWEST_BUCKET`] (counted from `origin`). A maximum per bucket, not a moving average,
/// so that any number of fast verifications (cheap probes of unknown addresses) cannot
/// wear down what one slow imported hash took.
#[derive(Debug)]
struct SlowestVerifications {
    origin: Instant,
    kinds: [Buckets; HashKind::COUNT],
}

/// One kind's slowest verification in bucket `index` and in the one before it.
#[derive(Debug, Clone, Copy, Default)]
struct Buckets {
    index: u64,
    current: Duration,
    previous: Duration,
}

impl SlowestVerifications {
    fn new(origin: Instant) -> Self {
        Self {
            origin,
            kinds: [Buckets::default(); HashKind::COUNT],
        }
    }

    fn bucket(&self, at: Instant) -> u64 {
        let elapsed = at.saturating_duration_since(self.origin).as_secs();
        elapsed / SLOWEST_BUCKET.as_secs()
    }

    /// Notes that a verification of `kind` took `took`, finishing `at`.
    fn record(&mut self, kind: HashKind, took: Duration, at: Instant) {
        let bucket = self.bucket(at);
        let Some(buckets) = self.kinds.get_mut(kind.index()) else {
            return;
        };
        *buckets = buckets.at(bucket);
        buckets.current = buckets.current.max(took);
    }

    /// The slowest verification of any kind in the current and the previous bucket.
    fn slowest(&self, at: Instant) -> Duration {
        let bucket = self.bucket(at);
        self.kinds
            .iter()
            .map(|buckets| {
                let moved = buckets.at(bucket);
                moved.current.max(moved.previous)
            })
            .max()
            .unwrap_or_default()
    }
}

impl Buckets {
    /// These buckets as seen from bucket `index`: a later one forgets what is over an hour
    /// old. (Never an earlier one: records take the time while holding the lock.)
    fn at(self, index: u64) -> Self {
        match index.checked_sub(self.index) {
            None | Some(0) => self,
            Some(1) => Self {
                index,
                current: Duration::ZERO,
                previous: self.current,
            },
            Some(_) => Self {
                index,
                ..Self::default()
            },
        }
    }
}

/// One hashing thread and its work area.
struct Worker {
    argon2: Argon2<'static>,
    area: Option<Vec<Block>>,
}

/// How much lower than the rest of the process the hashing threads run (nice steps).
/// Hashing is the one long computation here; everything else (answering requests, token
/// checks, a refusal under overload, the database on the same host) is short. With the
/// hashing threads behind, a short task gets a core the moment it is ready instead of
/// waiting out a hash's time slice, and hashing still takes every cycle the rest leaves:
/// the priority only matters while both want the same core.
const HASHING_NICE: i32 = 10;

/// Lowers the calling thread's priority by [`HASHING_NICE`] (Linux: nice is per thread).
/// Best effort: where it cannot be changed, hashing runs at the process's priority.
fn lower_this_threads_priority() {
    #[cfg(target_os = "linux")]
    {
        let me = Some(rustix::thread::gettid());
        if let Ok(current) = rustix::process::getpriority_process(me) {
            let _ = rustix::process::setpriority_process(me, (current + HASHING_NICE).min(19));
        }
    }
}

impl Worker {
    fn serve(&mut self, jobs: &flume::Receiver<Job>) {
        lower_this_threads_priority();
        loop {
            let job = match jobs.recv_timeout(IDLE_RELEASE) {
                Ok(job) => job,
                Err(flume::RecvTimeoutError::Timeout) => {
                    self.area = None;
                    crate::memory::release_thread_cache();
                    match jobs.recv() {
                        Ok(job) => job,
                        Err(flume::RecvError::Disconnected) => return,
                    }
                }
                Err(flume::RecvTimeoutError::Disconnected) => return,
            };
            // A panic fails that call (its reply is dropped), not the worker.
            if catch_unwind(AssertUnwindSafe(|| job(self))).is_err() {
                tracing::error!("password hashing worker recovered from a panic");
            }
        }
    }

    fn area(&mut self) -> &mut [Block] {
        let blocks = self.argon2.params().block_count();
        self.area
            .get_or_insert_with(|| vec![Block::default(); blocks])
            .as_mut_slice()
    }

    /// A new Argon2id hash with a random 16-byte salt, as a PHC string.
    fn hash(&mut self, password: &[u8]) -> Result<String, HashError> {
        let failed = |error: &dyn std::fmt::Display| HashError::Failed(error.to_string());
        let mut salt = [0_u8; Salt::RECOMMENDED_LENGTH];
        rand::fill(&mut salt);
        let mut output = [0_u8; Params::DEFAULT_OUTPUT_LEN];
        let argon2 = self.argon2.clone();
        argon2
            .hash_password_into_with_memory(password, &salt, &mut output, self.area())
            .map_err(|error| failed(&error))?;
        let phc = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(argon2.params()).map_err(|error| failed(&error))?,
            salt: Some(Salt::new(&salt).map_err(|error| failed(&error))?),
            hash: Some(Output::new(&output).map_err(|error| failed(&error))?),
        };
        Ok(phc.to_string())
    }

    /// Our current Argon2id hashes are checked in the work area; other kinds (imported,
    /// older parameters) the way their crates do it.
    fn verify(&mut self, stored: &StoredHash, password: &[u8]) -> bool {
        let StoredHash::Argon2 {
            hash,
            current: true,
        } = stored
        else {
            return stored.verify(password);
        };
        let Ok(parsed) = PasswordHash::new(hash) else {
            return false;
        };
        let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
            return false;
        };
        let mut output = [0_u8; Output::MAX_LENGTH];
        let Some(output) = output.get_mut(..expected.len()) else {
            return false;
        };
        let argon2 = self.argon2.clone();
        argon2
            .hash_password_into_with_memory(password, &salt, &mut *output, self.area())
            .is_ok()
            // `Output`'s equality is constant-time.
            && Output::new(output).is_ok_and(|computed| computed == expected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> Argon2Config {
        Argon2Config {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        }
    }

    #[tokio::test]
    async fn hashes_verify_and_wrong_passwords_do_not() {
        let pool = PasswordHashing::new(cheap(), 2, 4).unwrap();
        let hash = pool
            .hash(Password::for_verification("a long passphrase"))
            .await
            .unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{hash}");
        let ok = pool.verify(
            Password::for_verification("a long passphrase"),
            Some(hash.clone()),
        );
        assert_eq!(
            ok.await.unwrap(),
            Verification {
                matches: true,
                needs_rehash: false
            }
        );
        let wrong = pool.verify(Password::for_verification("A long passphrase"), Some(hash));
        assert!(!wrong.await.unwrap().matches);
    }

    #[tokio::test]
    async fn work_area_hashes_match_the_argon2_crate_both_ways() {
        use argon2::password_hash::PasswordVerifier as _;
        let pool = PasswordHashing::new(cheap(), 1, 1).unwrap();
        // Ours, checked by the crate's own verifier.
        let ours = pool
            .hash(Password::for_verification("a long passphrase"))
            .await
            .unwrap();
        let crate_argon2 = Argon2::default();
        assert!(
            crate_argon2
                .verify_password(b"a long passphrase", ours.as_str())
                .is_ok()
        );
        assert!(
            crate_argon2
                .verify_password(b"another passphrase", ours.as_str())
                .is_err()
        );
        // The crate's, with our parameters, checked in the work area (twice: the area is
        // reused, and what the first hash left in it must not matter).
        let params = Params::new(64, 1, 1, None).unwrap();
        let theirs = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(b"a long passphrase")
            .unwrap()
            .to_string();
        for _ in 0..2 {
            let verified = pool
                .verify(
                    Password::for_verification("a long passphrase"),
                    Some(theirs.clone()),
                )
                .await
                .unwrap();
            assert_eq!(
                verified,
                Verification {
                    matches: true,
                    needs_rehash: false
                }
            );
        }
        let wrong = pool
            .verify(
                Password::for_verification("a long passphrasE"),
                Some(theirs),
            )
            .await
            .unwrap();
        assert!(!wrong.matches);
    }

    #[tokio::test]
    async fn a_call_whose_caller_has_gone_is_not_hashed() {
        let pool = PasswordHashing::new(cheap(), 1, 4).unwrap();
        // The only worker is blocked until the gate opens.
        let (open, gate) = std::sync::mpsc::channel::<()>();
        let holder = pool.clone();
        let blocked = tokio::spawn(async move {
            holder
                .admit()
                .unwrap()
                .run(move |_| gate.recv().is_ok())
                .await
        });
        // Its job is queued first (the queue is FIFO), so the worker takes it first.
        while pool.admission.available_permits() == 5 {
            tokio::task::yield_now().await;
        }
        let hashed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&hashed);
        let abandoned = pool
            .admit()
            .unwrap()
            .run(move |_| flag.store(true, std::sync::atomic::Ordering::SeqCst));
        // Polled once (queued), then dropped, as when a client hangs up.
        let _ = tokio::time::timeout(Duration::from_millis(20), abandoned).await;
        open.send(()).unwrap();
        assert!(blocked.await.unwrap().unwrap());
        // A later call runs after the abandoned one was taken off the queue.
        pool.admit().unwrap().run(|_| ()).await.unwrap();
        assert!(!hashed.load(std::sync::atomic::Ordering::SeqCst));
        // Its admission permit came back: workers + queue are all free again.
        assert_eq!(pool.admission.available_permits(), 5);
    }

    #[tokio::test]
    async fn an_unknown_account_never_verifies() {
        let pool = PasswordHashing::new(cheap(), 1, 1).unwrap();
        let verified = pool
            .verify(Password::for_verification(""), None)
            .await
            .unwrap();
        assert!(!verified.matches);
    }

    #[test]
    fn the_slowest_verification_counts_for_30_to_60_minutes_whatever_came_after() {
        let origin = Instant::now();
        let at = |minutes: u64| origin + Duration::from_secs(minutes * 60);
        let slow = Duration::from_millis(300);
        let fast = Duration::from_millis(1);
        let mut slowest = SlowestVerifications::new(origin);
        assert_eq!(slowest.slowest(at(0)), Duration::ZERO);
        slowest.record(HashKind::Bcrypt, slow, at(1));
        // Many fast probes, of every kind, in this bucket and the next: the maximum stays.
        for minute in 1..45 {
            slowest.record(HashKind::CurrentArgon2, fast, at(minute));
            slowest.record(HashKind::Bcrypt, fast, at(minute));
        }
        for minute in [1, 29, 30, 45, 59] {
            assert_eq!(slowest.slowest(at(minute)), slow, "minute {minute}");
        }
        // Two buckets on, the slow one is forgotten; the fast ones of bucket 1 remain.
        assert_eq!(slowest.slowest(at(60)), fast);
        assert_eq!(slowest.slowest(at(89)), fast);
        assert_eq!(slowest.slowest(at(90)), Duration::ZERO);
        // A kind's maximum is its own; the answer is the maximum over kinds.
        slowest.record(HashKind::Scrypt, Duration::from_millis(50), at(200));
        slowest.record(HashKind::OtherArgon2, Duration::from_millis(80), at(200));
        assert_eq!(slowest.slowest(at(200)), Duration::from_millis(80));
        // Far later, with nothing in between, everything is forgotten.
        assert_eq!(slowest.slowest(at(100_000)), Duration::ZERO);
    }

    #[tokio::test]
    async fn verifications_are_timed_per_kind_of_hash() {
        let pool = PasswordHashing::new(cheap(), 1, 1).unwrap();
        let bcrypt = bcrypt::hash("pw", 6).unwrap();
        pool.verify(Password::for_verification("px"), Some(bcrypt))
            .await
            .unwrap();
        pool.verify(Password::for_verification("px"), None)
            .await
            .unwrap();
        let slowest = pool.slowest.lock().unwrap();
        let bcrypt = slowest.kinds[HashKind::Bcrypt.index()].current;
        let dummy = slowest.kinds[HashKind::CurrentArgon2.index()].current;
        assert!(bcrypt > Duration::ZERO && dummy > Duration::ZERO);
        assert_eq!(slowest.slowest(Instant::now()), bcrypt.max(dummy));
    }

    #[tokio::test]
    async fn a_better_auth_verification_is_timed_as_its_own_kind() {
        let pool = PasswordHashing::new(cheap(), 1, 1).unwrap();
        // Any well-formed Better Auth hash costs one full scrypt (N=2^14, r=16) to refuse.
        let better_auth = format!("{}:{}", "ab".repeat(16), "cd".repeat(64));
        let verified = pool
            .verify(Password::for_verification("px"), Some(better_auth))
            .await
            .unwrap();
        assert_eq!(
            verified,
            Verification {
                matches: false,
                needs_rehash: true
            }
        );
        let slowest = pool.slowest.lock().unwrap();
        let took = |kind: HashKind| slowest.kinds[kind.index()].current;
        assert!(took(HashKind::BetterAuth) > Duration::ZERO);
        for other in [HashKind::Scrypt, HashKind::CurrentArgon2, HashKind::Bcrypt] {
            assert_eq!(took(other), Duration::ZERO, "{other:?}");
        }
        assert_eq!(slowest.slowest(Instant::now()), took(HashKind::BetterAuth));
    }

    #[tokio::test]
    async fn a_failure_is_padded_to_the_slowest_verification_at_most_2_seconds() {
        let pool = PasswordHashing::new(cheap(), 1, 1).unwrap();
        let record = |took| {
            let now = Instant::now();
            pool.slowest
                .lock()
                .unwrap()
                .record(HashKind::Bcrypt, took, now);
        };
        record(Duration::from_millis(150));
        let started = Instant::now();
        pool.pad_failure(started).await;
        let padded = started.elapsed();
        assert!(padded >= Duration::from_millis(150), "{padded:?}");
        assert!(padded < Duration::from_millis(1_000), "{padded:?}");
        // A failure that already took that long waits no more.
        let long_ago = Instant::now() - Duration::from_secs(1);
        let before = Instant::now();
        pool.pad_failure(long_ago).await;
        assert!(before.elapsed() < Duration::from_millis(100));
        // However slow a hash was, a failure waits at most 2 s.
        record(Duration::from_secs(60));
        let started = Instant::now();
        pool.pad_failure(started).await;
        let padded = started.elapsed();
        assert!(padded >= Duration::from_secs(2), "{padded:?}");
        assert!(padded < Duration::from_secs(3), "{padded:?}");
    }

    #[tokio::test]
    async fn a_full_queue_answers_overloaded_at_once() {
        let pool = PasswordHashing::new(cheap(), 1, 0).unwrap();
        // Hold the only admission permit, as a running hash would.
        let _busy = pool.admission.clone().try_acquire_owned().unwrap();
        assert!(matches!(pool.admit(), Err(HashError::Overloaded)));
        let result = pool
            .hash(Password::for_verification("whatever it is"))
            .await;
        assert!(matches!(result, Err(HashError::Overloaded)));
    }
}
