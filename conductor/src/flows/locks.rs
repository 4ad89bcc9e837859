//! A node's exclusive lock, as a flow holds it, and the releases that
//! failed. A release can fail while the database is away; the lock would
//! then stay with this live conductor, which nobody takes over, and the
//! node would be stuck. Such nodes are remembered and released again by a
//! periodic task until the database has it, unless a flow of this
//! conductor holds the node again by then (a release whose answer was
//! lost may have gone through).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use tracing::{info, warn};

use crate::store::Store;

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
