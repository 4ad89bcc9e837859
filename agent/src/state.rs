//! What the running agent knows, shared by the API, the heartbeater and
//! the commands. No globals: one `Arc<AgentContext>` is passed around.

use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use ferrite_protocol::LookupNode;
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
    node: RwLock<Option<LookupNode>>,
    heartbeat_now: Notify,
    lockdown: watch::Sender<bool>,
}

impl AgentContext {
    pub fn new(config: Config, logs: LogBuffer, hardware: HardwareManagers) -> Arc<Self> {
        let token = config.agent_token.clone();
        Arc::new(Self {
            config,
            started_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or_default(),
            logs,
            hardware,
            token: RwLock::new(token),
            node: RwLock::new(None),
            heartbeat_now: Notify::new(),
            lockdown: watch::channel(false).0,
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

    pub fn node(&self) -> Option<LookupNode> {
        self.node.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_node(&self, node: LookupNode) {
        *self.node.write().unwrap_or_else(|p| p.into_inner()) = Some(node);
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

    pub fn in_lockdown(&self) -> bool {
        *self.lockdown.borrow()
    }

    pub async fn lockdown_entered(&self) {
        let mut rx = self.lockdown.subscribe();
        let _ = rx.wait_for(|l| *l).await;
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
