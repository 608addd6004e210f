//! The batch store of one pairing: the online batches streamed from the
//! dealer, which sessions take by number (party 1: the batch party 0 named)
//! or in order (party 0), the credit sent to the dealer, and the health of
//! the pairing's links.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mpc_core::{MaterialGen, Party, Seed, StreamedPool};
use tokio::sync::{Semaphore, mpsc, watch};

use super::lock;
use crate::bridge::TokioFeed;
use crate::defaults;
use crate::error::ServerError;
use crate::plan::ModelPlans;

/// Liveness of a pairing's links.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Health {
    /// Our dealer stream is up.
    pub dealer: bool,
    /// The other party's dealer stream is up (as it told us).
    pub peer_dealer: bool,
    /// The pairing's stream to the other party is up.
    pub peer: bool,
}

/// One batch's dealer bytes, as they arrive (see [`PoolStore`]): chunks in
/// a channel whose bytes are bounded by the `budget` semaphore (one permit
/// per byte; the reader takes permits before it queues a chunk, the session
/// gives them back as it reads).
#[derive(Debug)]
pub(super) struct BatchFeed {
    pub batch: u64,
    pub rx: mpsc::UnboundedReceiver<Vec<u8>>,
    pub budget: Arc<Semaphore>,
    /// The budget's permits in all.
    pub size: usize,
    /// Set once the batch arrived whole, or at once for a batch larger than
    /// the buffer (it can only arrive while its session runs).
    pub ready: Arc<AtomicBool>,
}

/// The batches of one pairing, streamed from the dealer.
pub(super) struct PoolStore {
    target: u64,
    party: Party,
    /// The seed agreed with the dealer: batch `k`'s material is expanded
    /// from its stream `k` ([`MaterialGen::for_batch`]).
    seed: Seed,
    plans: ModelPlans,
    state: std::sync::Mutex<PoolState>,
    /// Bumped on every arrival and every health change.
    version: watch::Sender<u64>,
    /// Credit sent to the dealer.
    pub want: watch::Sender<u64>,
    pub health: watch::Sender<Health>,
}

#[derive(Default)]
struct PoolState {
    /// Batches that started arriving and no session took yet.
    batches: BTreeMap<u64, BatchFeed>,
    /// Batches party 0 released before they arrived.
    released: BTreeSet<u64>,
    /// The highest batch that started arriving.
    arrived: Option<u64>,
    highest_used: u64,
    dealer_error: Option<String>,
}

impl PoolStore {
    pub fn new(target: u64, party: Party, seed: Seed, plans: ModelPlans) -> Arc<Self> {
        Arc::new(PoolStore {
            target,
            party,
            seed,
            plans,
            state: std::sync::Mutex::new(PoolState::default()),
            version: watch::channel(0).0,
            want: watch::channel(target).0,
            health: watch::channel(Health {
                dealer: true,
                peer_dealer: true,
                peer: true,
            })
            .0,
        })
    }

    /// The material source of a taken batch, reading its bytes with `wait`
    /// per piece (call on the blocking thread that runs the protocol).
    pub fn source(
        &self,
        feed: BatchFeed,
        handle: tokio::runtime::Handle,
        wait: Duration,
    ) -> StreamedPool<TokioFeed> {
        let plan = if feed.batch == 0 {
            self.plans.prepare.clone()
        } else {
            self.plans.online.clone()
        };
        StreamedPool::new(
            MaterialGen::for_batch(self.party, &self.seed, feed.batch),
            plan,
            TokioFeed::new(feed.rx, feed.budget, feed.size, handle, wait),
        )
    }

    /// Wake everything that waits on the pool (an arrival, a health change).
    pub fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    /// Batch `feed.batch` started arriving; false if it was released
    /// (nobody will read it: the caller discards its bytes).
    pub fn put(&self, feed: BatchFeed) -> bool {
        let kept = {
            let mut st = lock(&self.state);
            let id = feed.batch;
            st.arrived = Some(st.arrived.map_or(id, |a| a.max(id)));
            let released = st.released.contains(&id);
            st.released.retain(|r| *r > id);
            if !released {
                st.batches.insert(id, feed);
            }
            !released
        };
        self.bump();
        kept
    }

    /// Party 0 gave batch `id` up: drop it, now or when it arrives.
    pub fn release(&self, id: u64) {
        let mut st = lock(&self.state);
        if st.batches.remove(&id).is_none() && st.arrived.is_none_or(|a| a < id) {
            st.released.insert(id);
        }
    }

    /// Batch `id` will never arrive whole (the dealer's stream ended inside
    /// it): drop it unless a session took it already. Whether it was there.
    pub fn set_aside(&self, id: u64) -> bool {
        let removed = lock(&self.state).batches.remove(&id).is_some();
        self.bump();
        removed
    }

    /// The dealer stream ended for `reason`: sessions waiting for a batch
    /// fail once the pool is empty.
    pub fn dealer_lost(&self, reason: String) {
        lock(&self.state).dealer_error = Some(reason);
        self.health.send_modify(|h| h.dealer = false);
        self.bump();
    }

    /// The pairing's stream to the other party ended.
    pub fn peer_lost(&self) {
        self.health.send_modify(|h| h.peer = false);
        self.bump();
    }

    /// Online batches ready for a session: arrived whole, or started if they
    /// are larger than the buffer.
    pub fn available(&self) -> u64 {
        let st = lock(&self.state);
        st.batches
            .values()
            .filter(|b| b.batch > 0 && b.ready.load(Ordering::SeqCst))
            .count() as u64
    }

    fn used(&self, st: &mut PoolState, id: u64) {
        st.highest_used = st.highest_used.max(id);
        // Party 1: batches far behind the ones in use were never claimed by
        // a session (party 0 gave up on it): drop them.
        let horizon = st
            .highest_used
            .saturating_sub(4 * self.target + defaults::STALE_BATCH_SLACK);
        st.batches.retain(|k, _| *k == 0 || *k >= horizon);
        // Replacements are asked for when the session that took this batch
        // ends ([`Replenish`]), so that dealing and expansion do not take
        // the cores from its online phase; at once only if the pool is now
        // empty (under load, when waiting would starve the next session).
        if !st.batches.keys().any(|k| *k > 0) {
            self.grow_want(st.highest_used + self.target);
        }
    }

    /// The session that used batch `id` ended: keep `target` batches ahead of it.
    fn finished(&self, id: u64) {
        self.grow_want(id + self.target);
    }

    fn grow_want(&self, want: u64) {
        self.want.send_if_modified(|w| {
            let grow = want > *w;
            *w = (*w).max(want);
            grow
        });
    }

    /// Take batch `id` (or, with `None`, the lowest online batch), waiting up
    /// to `wait` while the dealer is up.
    pub async fn take(&self, id: Option<u64>, wait: Duration) -> Result<BatchFeed, ServerError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut version = self.version.subscribe();
        loop {
            {
                let mut st = lock(&self.state);
                let key = match id {
                    Some(i) => st.batches.contains_key(&i).then_some(i),
                    None => st.batches.keys().find(|k| **k > 0).copied(),
                };
                if let Some(feed) = key.and_then(|k| st.batches.remove(&k)) {
                    if feed.batch > 0 {
                        self.used(&mut st, feed.batch);
                    }
                    return Ok(feed);
                }
                if let (Some(i), Some(a)) = (id, st.arrived)
                    && i <= a
                {
                    return Err(ServerError::BatchGone { batch: i });
                }
                if let Some(e) = &st.dealer_error {
                    return Err(ServerError::PoolDealerLost { reason: e.clone() });
                }
            }
            match tokio::time::timeout_at(deadline, version.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => {
                    return Err(ServerError::ChannelClosed {
                        op: "waiting for the pool",
                    });
                }
                Err(_) => return Err(ServerError::PoolTimeout { waited: wait }),
            }
        }
    }
}

/// Held by a session for the batch it took; asks for its replacement when
/// dropped (the session ended, whichever way).
pub(super) struct Replenish {
    pub store: Arc<PoolStore>,
    pub batch: u64,
}

impl Drop for Replenish {
    fn drop(&mut self) {
        self.store.finished(self.batch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn test_store() -> Arc<PoolStore> {
        let plans = ModelPlans {
            prepare: Arc::new(Vec::new()),
            online: Arc::new(Vec::new()),
        };
        PoolStore::new(2, Party::P1, Seed::for_tests(1), plans)
    }

    fn test_feed(batch: u64) -> BatchFeed {
        BatchFeed {
            batch,
            rx: mpsc::unbounded_channel().1,
            budget: Arc::new(Semaphore::new(1)),
            size: 1,
            ready: Arc::new(true.into()),
        }
    }

    /// Party 0 releases batches its sessions took but party 1 never
    /// acknowledged: party 1 drops them whether they arrived already or
    /// arrive later, and a late request for one fails at once.
    #[tokio::test]
    async fn released_batches_are_dropped_before_or_after_they_arrive() {
        let store = test_store();
        assert!(store.put(test_feed(1)));
        store.release(1);
        store.release(3);
        assert!(store.put(test_feed(2)));
        assert!(!store.put(test_feed(3)), "released before it arrived");
        assert!(store.put(test_feed(4)));
        assert_eq!(store.available(), 2);
        let t = Instant::now();
        let err = store
            .take(Some(1), Duration::from_secs(30))
            .await
            .unwrap_err();
        assert!(matches!(err, ServerError::BatchGone { batch: 1 }), "{err}");
        assert!(t.elapsed() < Duration::from_secs(10), "failed at once");
        assert_eq!(
            store
                .take(Some(4), Duration::from_secs(1))
                .await
                .unwrap()
                .batch,
            4
        );
        assert_eq!(
            store
                .take(None, Duration::from_secs(1))
                .await
                .unwrap()
                .batch,
            2
        );
    }

    /// A lone session takes a batch from a full pool: its replacement is
    /// asked for when it ends, not while it computes. A take that empties
    /// the pool asks at once.
    #[tokio::test]
    async fn replacements_are_asked_for_when_the_session_ends() {
        let store = test_store();
        let want = || *store.want.borrow();
        assert!(store.put(test_feed(1)));
        assert!(store.put(test_feed(2)));
        assert_eq!(want(), 2);
        let b = store
            .take(None, Duration::from_secs(1))
            .await
            .unwrap()
            .batch;
        assert_eq!(b, 1);
        let guard = Replenish {
            store: store.clone(),
            batch: b,
        };
        assert_eq!(want(), 2, "no dealing while the session computes");
        drop(guard);
        assert_eq!(want(), 3, "the session ended: two batches ahead of it");
        let b = store
            .take(None, Duration::from_secs(1))
            .await
            .unwrap()
            .batch;
        assert_eq!(b, 2);
        assert_eq!(want(), 4, "the pool ran empty: asked at once");
    }
}
