//! Work driven by agent heartbeats. Each heartbeat spawns a handler that
//! takes the node's lock, does what the node's state calls for, and
//! releases the lock; a locked node is simply retried on the next beat.

mod steps_cache;

use std::sync::Arc;

use tracing::{debug, warn};

use crate::config::ConductorConfig;
use crate::fsm;
use crate::store::Store;

pub struct Flows {
    store: Arc<Store>,
    config: Arc<ConductorConfig>,
    host: String,
}

/// The node's exclusive lock, released when dropped.
struct Reservation<'a> {
    store: &'a Store,
    uuid: String,
    host: &'a str,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.store.release(&self.uuid, self.host) {
            warn!(node = %self.uuid, error = %e, "could not release the node lock");
        }
    }
}

impl Flows {
    pub fn new(store: Arc<Store>, config: Arc<ConductorConfig>) -> Arc<Self> {
        let host = config.host_name();
        Arc::new(Self {
            store,
            config,
            host,
        })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    fn reserve(&self, uuid: &str) -> anyhow::Result<Option<Reservation<'_>>> {
        Ok(self
            .store
            .try_reserve(uuid, &self.host)?
            .then(|| Reservation {
                store: &self.store,
                uuid: uuid.to_string(),
                host: &self.host,
            }))
    }

    pub fn on_heartbeat(self: &Arc<Self>, node_uuid: String) {
        let flows = self.clone();
        tokio::spawn(async move {
            if let Err(e) = flows.handle_heartbeat(&node_uuid).await {
                warn!(node = %node_uuid, error = %format!("{e:#}"), "heartbeat handling failed");
            }
        });
    }

    async fn handle_heartbeat(&self, uuid: &str) -> anyhow::Result<()> {
        let node = self.store.get_node(uuid)?;
        if !fsm::lookup_allowed(&node.provision_state, self.config.fast_track) {
            return Ok(());
        }
        if node
            .driver_internal_info
            .contains_key(steps_cache::CACHE_KEY)
        {
            return Ok(());
        }
        let Some(_lock) = self.reserve(uuid)? else {
            debug!(node = %uuid, "node locked; will retry on the next heartbeat");
            return Ok(());
        };
        steps_cache::refresh_clean_steps(&self.store, &self.config, uuid).await
    }
}
