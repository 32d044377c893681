//! Natural batching of one kind of read: lookups that arrive while earlier ones are in
//! flight are answered together by one query.
//!
//! A few worker tasks take calls from one queue. An idle worker takes the first call that
//! arrives and runs it at once (no waiting for company, so a quiet server answers as fast as
//! without batching); a worker that comes back from the database takes everything queued
//! meanwhile, up to `max_batch`, in one query. Under load, one round trip and one statement
//! then serve tens of requests, which is what the database's CPU goes on for small reads.
//!
//! Every call is answered by a query sent after the call was queued, so a batch never
//! serves a stale answer: a session revoked before the request arrived is seen as revoked.
//!
//! Written here because no maintained crate does this for a value owned by a struct: the
//! `dataloader` crate delays every call by yielding a fixed number of times to collect
//! company (and caches by default), and `batched` generates global functions with time
//! windows.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::{StoreError, StoreResult};

/// One queued lookup and where its answer goes.
struct Call<K, V> {
    key: K,
    reply: oneshot::Sender<Result<V, Arc<StoreError>>>,
}

/// A handle to the queue; cheap to clone. The workers end when the last handle is dropped.
pub(crate) struct Batcher<K, V> {
    calls: flume::Sender<Call<K, V>>,
}

impl<K, V> Clone for Batcher<K, V> {
    fn clone(&self) -> Self {
        Self {
            calls: self.calls.clone(),
        }
    }
}

impl<K, V> std::fmt::Debug for Batcher<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("queued", &self.calls.len())
            .finish()
    }
}

impl<K: Send + 'static, V: Send + 'static> Batcher<K, V> {
    /// Starts `workers` tasks (at least one) that answer calls with `run`, which gets the
    /// keys of a batch and must return one value per key, in the same order. Must be called
    /// inside a Tokio runtime.
    pub(crate) fn spawn<F, Fut>(workers: usize, max_batch: usize, run: F) -> Self
    where
        F: Fn(Vec<K>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = StoreResult<Vec<V>>> + Send + 'static,
    {
        let (calls, queue) = flume::unbounded::<Call<K, V>>();
        let run = Arc::new(run);
        for _ in 0..workers.max(1) {
            let queue = queue.clone();
            let run = run.clone();
            tokio::spawn(async move {
                while let Ok(first) = queue.recv_async().await {
                    let mut batch = vec![first];
                    batch.extend(queue.try_iter().take(max_batch.saturating_sub(1)));
                    let (keys, replies): (Vec<K>, Vec<_>) =
                        batch.into_iter().map(|call| (call.key, call.reply)).unzip();
                    let expected = keys.len();
                    let answered = match run(keys).await {
                        Ok(values) if values.len() == expected => Ok(values),
                        Ok(values) => Err(StoreError::Database(
                            format!(
                                "a batch of {expected} lookups returned {} answers",
                                values.len()
                            )
                            .into(),
                        )),
                        Err(error) => Err(error),
                    };
                    match answered {
                        Ok(values) => {
                            for (reply, value) in replies.into_iter().zip(values) {
                                let _ = reply.send(Ok(value));
                            }
                        }
                        Err(error) => {
                            let error = Arc::new(error);
                            for reply in replies {
                                let _ = reply.send(Err(error.clone()));
                            }
                        }
                    }
                }
            });
        }
        Self { calls }
    }

    /// Queues a lookup and waits for its answer. A failed batch fails every call in it with
    /// the same (shared) error.
    pub(crate) async fn load(&self, key: K) -> StoreResult<V> {
        let (reply, answer) = oneshot::channel();
        self.calls
            .send(Call { key, reply })
            .map_err(|_| stopped())?;
        match answer.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(shared)) => Err(StoreError::Database(Box::new(shared))),
            Err(_) => Err(stopped()),
        }
    }
}

/// The workers are gone (the runtime is shutting down, or a worker's task was dropped).
fn stopped() -> StoreError {
    StoreError::Database("the lookup workers have stopped".into())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_lone_call_runs_at_once_and_queued_calls_share_a_batch() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let (gate_tx, gate_rx) = tokio::sync::watch::channel(false);
        let seen = sizes.clone();
        let batcher = Batcher::spawn(1, 100, move |keys: Vec<u32>| {
            let seen = seen.clone();
            let mut gate = gate_rx.clone();
            async move {
                seen.lock().map(|mut sizes| sizes.push(keys.len())).ok();
                // The first batch waits for the gate, so the next calls queue up behind it.
                let _ = gate.wait_for(|open| *open).await;
                Ok(keys.into_iter().map(|key| key * 10).collect())
            }
        });
        let first = tokio::spawn({
            let batcher = batcher.clone();
            async move { batcher.load(1).await }
        });
        while sizes.lock().map(|sizes| sizes.len()).unwrap_or(0) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let rest: Vec<_> = (2..=5)
            .map(|key| {
                let batcher = batcher.clone();
                tokio::spawn(async move { batcher.load(key).await })
            })
            .collect();
        while batcher.calls.len() < 4 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        gate_tx.send_replace(true);
        assert_eq!(first.await.ok().and_then(Result::ok), Some(10));
        for (handle, key) in rest.into_iter().zip(2..) {
            assert_eq!(handle.await.ok().and_then(Result::ok), Some(key * 10));
        }
        assert_eq!(*sizes.lock().unwrap_or_else(|e| e.into_inner()), vec![1, 4]);
    }

    #[tokio::test]
    async fn a_failed_or_short_batch_fails_each_of_its_calls() {
        let failing = Batcher::spawn(2, 10, |_keys: Vec<u32>| async {
            Err::<Vec<u32>, _>(StoreError::Database("down".into()))
        });
        assert!(matches!(
            failing.load(1).await,
            Err(StoreError::Database(_))
        ));
        let short = Batcher::spawn(1, 10, |_keys: Vec<u32>| async { Ok(Vec::<u32>::new()) });
        assert!(matches!(short.load(1).await, Err(StoreError::Database(_))));
    }
}
