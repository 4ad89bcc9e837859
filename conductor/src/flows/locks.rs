//! A node's exclusive lock, as a flow holds it, and the releases that
//! failed. A release can fail while the database is away; the lock would
//! then stay with this live conductor, which nobody takes over, and the
//! node would be stuck. Such nodes are remembered and released again by a
//! periodic task until the database has it, unless a flow of this
//! conductor holds the node again by then (a release whose answer was
//! lost may have gone through).

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::{info, warn};

use crate::store::Store;

/// Ironic's `node_locked_retry_attempts` and `node_locked_retry_interval`:
/// a request that finds the node held tries again before it answers
/// NodeLocked. A flow shows its new state a moment before it lets go of
/// the node, so a client acting on that state must not be refused for it.
#[derive(Debug, Clone, Copy)]
pub struct LockRetry {
    pub attempts: u32,
    pub interval: Duration,
}

impl LockRetry {
    /// Runs `attempt` until `held` says its answer is not "the node is
    /// held", at most `attempts` times, `interval` apart; the last answer.
    pub async fn run<R, F: Future<Output = R>>(
        &self,
        held: impl Fn(&R) -> bool,
        mut attempt: impl FnMut() -> F,
    ) -> R {
        let mut tried = 1;
        loop {
            let answer = attempt().await;
            if tried >= self.attempts || !held(&answer) {
                return answer;
            }
            tried += 1;
            tokio::time::sleep(self.interval).await;
        }
    }
}

/// The node's exclusive lock. A flow gives it back with
/// [`Reservation::release`], so the next caller finds the node free the
/// moment the flow's task ends; dropping it (an early return, an error)
/// releases it too, on PostgreSQL a statement later.
pub struct Reservation {
    store: Arc<Store>,
    uuid: String,
    host: String,
    locks: Arc<Locks>,
    released: bool,
}

impl Reservation {
    /// The lock `store.try_reserve` just won for `host`.
    pub fn won(store: Arc<Store>, uuid: &str, host: &str, locks: Arc<Locks>) -> Self {
        locks.set(&locks.held, uuid, true);
        Self {
            store,
            uuid: uuid.to_string(),
            host: host.to_string(),
            locks,
            released: false,
        }
    }

    /// Release the lock now, and wait until the database has it.
    pub async fn release(mut self) {
        self.released = true;
        let outcome = self.store.release(&self.uuid, &self.host).await;
        self.locks.set(&self.locks.held, &self.uuid, false);
        if let Err(e) = outcome {
            warn!(node = %self.uuid, error = %e, "could not release the node lock; retrying until the database takes it");
            self.locks.set(&self.locks.unreleased, &self.uuid, true);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        self.locks.set(&self.locks.held, &self.uuid, false);
        let locks = self.locks.clone();
        let uuid = self.uuid.clone();
        self.store
            .release_on_drop(&self.uuid, &self.host, move |e| {
                warn!(node = %uuid, error = %e, "could not release the node lock; retrying until the database takes it");
                locks.set(&locks.unreleased, &uuid, true);
            });
    }
}

/// The nodes this conductor's flows hold, and those whose release failed.
#[derive(Default)]
pub struct Locks {
    held: Mutex<BTreeSet<String>>,
    unreleased: Mutex<BTreeSet<String>>,
}

impl Locks {
    fn set(&self, set: &Mutex<BTreeSet<String>>, uuid: &str, member: bool) {
        let mut set = set.lock().unwrap_or_else(|p| p.into_inner());
        if member {
            set.insert(uuid.to_string());
        } else {
            set.remove(uuid);
        }
    }

    fn has(&self, set: &Mutex<BTreeSet<String>>, uuid: &str) -> bool {
        set.lock().unwrap_or_else(|p| p.into_inner()).contains(uuid)
    }

    /// Release again each lock whose release failed; those the database
    /// still refuses stay for the next round.
    pub async fn retry_releases(&self, store: &Store, host: &str) -> anyhow::Result<()> {
        let pending: Vec<String> = self
            .unreleased
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        for uuid in pending {
            // Held by a flow of ours again: that flow releases it.
            if !self.has(&self.held, &uuid) {
                store.release(&uuid, host).await?;
                info!(node = %uuid, "released a node lock an earlier release had left held");
            }
            self.set(&self.unreleased, &uuid, false);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn retry_stops_at_the_first_answer_that_is_not_held_or_after_the_attempts() {
        let retry = LockRetry {
            attempts: 3,
            interval: Duration::ZERO,
        };
        let held = |r: &Option<u32>| r.is_none();
        let tries = Mutex::new(0);
        let count = || {
            let n = {
                let mut t = tries.lock().unwrap();
                *t += 1;
                *t
            };
            async move { n }
        };
        // Free on the second try: two tries, its answer.
        let answer = retry.run(held, || {
            let n = count();
            async move { (n.await >= 2).then_some(7) }
        });
        assert_eq!(answer.await, Some(7));
        assert_eq!(*tries.lock().unwrap(), 2);
        // Never free: exactly `attempts` tries, the last answer.
        *tries.lock().unwrap() = 0;
        assert_eq!(
            retry
                .run(held, || async {
                    count().await;
                    None
                })
                .await,
            None
        );
        assert_eq!(*tries.lock().unwrap(), 3);
    }
}
