//! What the running agent knows, shared by the API, the heartbeater and
//! the commands. No globals: one `Arc<AgentContext>` is passed around.

use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use std::path::PathBuf;

use ferrite_protocol::{LookupConfig, LookupNode};
use tokio::sync::{watch, Notify};

use crate::config::Config;
use crate::hardware::HardwareManagers;
use crate::logbuf::LogBuffer;

pub struct AgentContext {
    pub config: Config,
    /// Epoch seconds, as `/v1/status` reports them.
    pub started_at: f64,
    pub logs: LogBuffer,
    pub hardware: HardwareManagers,
    token: RwLock<Option<String>>,
    /// The address heartbeats advertise (found once Ironic is reachable).
    advertise_ip: RwLock<Option<std::net::IpAddr>>,
    node: RwLock<Option<LookupNode>>,
    lookup_config: RwLock<Option<LookupConfig>>,
    prepared: RwLock<Option<PreparedImage>>,
    heartbeat_now: Notify,
    lockdown: watch::Sender<bool>,
    rescued: std::sync::atomic::AtomicBool,
}

impl AgentContext {
    pub fn new(config: Config, logs: LogBuffer, hardware: HardwareManagers) -> Arc<Self> {
        // A token from the kernel command line, else one an earlier agent
        // process of this boot kept (we were restarted).
        let token = config
            .agent_token
            .clone()
            .or_else(|| crate::token_store::load(&config.run_dir));
        Arc::new(Self {
            config,
            started_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or_default(),
            logs,
            hardware,
            token: RwLock::new(token),
            advertise_ip: RwLock::new(None),
            node: RwLock::new(None),
            lookup_config: RwLock::new(None),
            prepared: RwLock::new(None),
            heartbeat_now: Notify::new(),
            lockdown: watch::channel(false).0,
            rescued: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub fn token(&self) -> Option<String> {
        self.token.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_token(&self, token: String) {
        *self.token.write().unwrap_or_else(|p| p.into_inner()) = Some(token);
    }

    /// IPA's `validate_agent_token`: both sides present and equal.
    pub fn token_matches(&self, presented: Option<&str>) -> bool {
        match (self.token(), presented) {
            (Some(ours), Some(theirs)) if !ours.is_empty() && !theirs.is_empty() => {
                constant_time_eq(ours.as_bytes(), theirs.as_bytes())
            }
            _ => false,
        }
    }

    /// Our address as heartbeats advertise it, else `ipa-advertise-host`.
    pub fn advertise_ip(&self) -> Option<std::net::IpAddr> {
        self.advertise_ip
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .or(self.config.advertise_host)
    }

    pub fn set_advertise_ip(&self, ip: std::net::IpAddr) {
        *self.advertise_ip.write().unwrap_or_else(|p| p.into_inner()) = Some(ip);
    }

    pub fn node(&self) -> Option<LookupNode> {
        self.node.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_node(&self, node: LookupNode) {
        *self.node.write().unwrap_or_else(|p| p.into_inner()) = Some(node);
    }

    pub fn lookup_config(&self) -> Option<LookupConfig> {
        self.lookup_config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_lookup_config(&self, config: LookupConfig) {
        *self
            .lookup_config
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(config);
    }

    /// The image last written by `prepare_image`.
    pub fn prepared(&self) -> Option<PreparedImage> {
        self.prepared
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_prepared(&self, image: PreparedImage) {
        *self.prepared.write().unwrap_or_else(|p| p.into_inner()) = Some(image);
    }

    /// Ask the heartbeater to report now (end of an async command).
    pub fn force_heartbeat(&self) {
        self.heartbeat_now.notify_one();
    }

    pub async fn heartbeat_forced(&self) {
        self.heartbeat_now.notified().await
    }

    /// Stop serving the API and heartbeating for good.
    pub fn enter_lockdown(&self) {
        self.lockdown.send_replace(true);
    }

    /// Rescue finalized: the API closes and heartbeats stop as in a
    /// lockdown, but the network stays up for the tenant.
    pub fn enter_rescue(&self) {
        self.rescued
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.enter_lockdown();
    }

    pub fn is_rescued(&self) -> bool {
        self.rescued.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn in_lockdown(&self) -> bool {
        *self.lockdown.borrow()
    }

    pub async fn lockdown_entered(&self) {
        let mut rx = self.lockdown.subscribe();
        let _ = rx.wait_for(|l| *l).await;
    }
}

/// Where `prepare_image` put the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedImage {
    pub device: PathBuf,
    pub root_uuid: String,
    /// Partition images only: the ESP's UUID, and each partition by its
    /// `get_partition_uuids` key (`root`, `swap`, …) with its device path.
    pub partition: Option<PartitionImage>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PartitionImage {
    pub efi_system_partition_uuid: Option<String>,
    pub partitions: Vec<(String, PathBuf)>,
}

/// `subtle`'s comparison: no early exit the optimiser could introduce.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(a.ct_eq(b))
}
