//! This conductor among its peers: it registers in the `conductors` table,
//! keeps its row fresh, and rebuilds the hash rings from the live rows, as
//! Ironic's `base_manager` (`_register_and_validate_hardware_interfaces`,
//! `_conductor_service_record_keepalive`) and `HashRingManager` do.
//!
//! A node is *owned* by the one conductor its ring names. Owners alone run
//! the periodic work for a node (timeouts, power sync, takeover); requests
//! and heartbeats are served by any conductor of the node's group, under
//! the node's reservation (the API hands those for another group's node to
//! the owner: `api::forward`).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ferrite_protocol::node::Node;
use tracing::{info, warn};

use super::hash_ring::{ConductorEntry, Rings};
use crate::store::{ConductorRecord, Store, StoreResult};

/// Membership settings (Ironic's `[conductor]` and `[DEFAULT]` options).
#[derive(Debug, Clone)]
pub struct MembershipConfig {
    pub hostname: String,
    pub conductor_group: String,
    pub hardware_types: Vec<String>,
    pub api_url: String,
    /// `[conductor]heartbeat_interval`: the keepalive period.
    pub heartbeat_interval: Duration,
    /// `[conductor]heartbeat_timeout`: a row older than this is a dead conductor.
    pub heartbeat_timeout: Duration,
    /// `[DEFAULT]hash_ring_reset_interval`: how stale the rings may be.
    pub ring_reset_interval: Duration,
    /// `[DEFAULT]hash_partition_exponent`.
    pub partition_exponent: u32,
}

pub struct Membership {
    store: Arc<Store>,
    config: MembershipConfig,
    view: RwLock<Arc<View>>,
}

/// One snapshot of the cluster, from one read of the table.
#[derive(Default)]
struct View {
    rings: Rings,
    /// Hostnames whose rows are older than the timeout, or offline.
    dead: Vec<String>,
    /// The live conductors' API URLs, from the same read as the rings.
    api_urls: HashMap<String, String>,
    /// Whether any conductor, live or dead, is of another group.
    other_groups: bool,
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

impl Membership {
    pub fn new(store: Arc<Store>, config: MembershipConfig) -> Arc<Self> {
        Arc::new(Self {
            store,
            config,
            view: RwLock::default(),
        })
    }

    pub fn hostname(&self) -> &str {
        &self.config.hostname
    }

    pub fn conductor_group(&self) -> &str {
        &self.config.conductor_group
    }

    /// Join: write this conductor's row, online, and build the rings.
    pub async fn register(&self) -> StoreResult<()> {
        let now = crate::time::api_now();
        self.store
            .register_conductor(&ConductorRecord {
                hostname: self.config.hostname.clone(),
                conductor_group: self.config.conductor_group.clone(),
                hardware_types: self.config.hardware_types.clone(),
                api_url: Some(self.config.api_url.clone()),
                online: true,
                created_at: now.clone(),
                updated_at: now,
                updated_us: now_us(),
            })
            .await?;
        info!(host = %self.config.hostname, group = %self.config.conductor_group, "conductor registered");
        self.rebuild().await
    }

    /// Leave cleanly: the others take this conductor's nodes at their next rebuild.
    pub async fn unregister(&self) -> StoreResult<()> {
        self.store.conductor_offline(&self.config.hostname).await
    }

    async fn keepalive(&self) -> StoreResult<()> {
        let fresh = self
            .store
            .touch_conductor(&self.config.hostname, &crate::time::api_now(), now_us())
            .await?;
        if !fresh {
            // The row was removed by hand: join again, as Ironic re-registers.
            warn!(host = %self.config.hostname, "conductor row missing; registering again");
            self.register().await?;
        }
        Ok(())
    }

    /// Rebuild the rings from the live rows.
    pub async fn rebuild(&self) -> StoreResult<()> {
        let rows = self.store.list_conductors().await?;
        let other_groups = rows
            .iter()
            .any(|c| c.conductor_group != self.config.conductor_group);
        let cutoff = self.alive_after_us();
        let (live, dead): (Vec<_>, Vec<_>) = rows
            .into_iter()
            .partition(|c| c.online && c.updated_us >= cutoff);
        let api_urls = live
            .iter()
            .filter_map(|c| Some((c.hostname.clone(), c.api_url.clone()?)))
            .collect();
        let entries: Vec<ConductorEntry> = live
            .into_iter()
            .map(|c| ConductorEntry {
                hostname: c.hostname,
                conductor_group: c.conductor_group,
                hardware_types: c.hardware_types,
            })
            .collect();
        let view = View {
            rings: Rings::build(&entries, self.config.partition_exponent),
            dead: dead.into_iter().map(|c| c.hostname).collect(),
            api_urls,
            other_groups,
        };
        *self.view.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(view);
        Ok(())
    }

    fn view(&self) -> Arc<View> {
        self.view.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The conductor the rings name for this node; `None` when no live
    /// conductor serves its group and driver (Ironic's NoValidHost).
    pub fn owner(&self, node: &Node) -> Option<String> {
        self.view()
            .rings
            .owner(&node.conductor_group, &node.driver, &node.uuid)
            .map(str::to_string)
    }

    pub fn owns(&self, node: &Node) -> bool {
        self.owner(node).as_deref() == Some(self.config.hostname.as_str())
    }

    /// Where a live conductor serves its API (its `api_url` row).
    pub fn api_url(&self, hostname: &str) -> Option<String> {
        self.view().api_urls.get(hostname).cloned()
    }

    /// Whether a conductor of another group has registered (and not been
    /// removed from the table): only then can a node need another group.
    pub fn other_groups(&self) -> bool {
        self.view().other_groups
    }

    /// Whether `hostname` is a registered conductor that is dead now.
    pub fn is_dead(&self, hostname: &str) -> bool {
        self.view().dead.iter().any(|h| h == hostname)
    }

    /// Rows updated before this instant belong to dead conductors.
    pub fn alive_after_us(&self) -> i64 {
        now_us() - self.config.heartbeat_timeout.as_micros() as i64
    }

    /// The keepalive and ring-rebuild loops, for the process's lifetime.
    pub fn spawn(self: &Arc<Self>) {
        let me = self.clone();
        let every = self.config.heartbeat_interval;
        crate::periodic::spawn_every("conductor keepalive", every, every, move || {
            let me = me.clone();
            async move { Ok(me.keepalive().await?) }
        });
        let me = self.clone();
        let every = self.config.ring_reset_interval;
        crate::periodic::spawn_every("hash ring rebuild", every, every, move || {
            let me = me.clone();
            async move { Ok(me.rebuild().await?) }
        });
    }
}
