//! The HTTP clients the conductor talks to agents with, built once and
//! shared: a client per call cost ~95 KiB (root store, TLS config, pool)
//! per call in flight, kept by the allocator after a boot storm. One plain
//! client serves http:// and unpinned https:// agents; agents that sent a
//! certificate get a pinned client, cached by the PEM's SHA-256 in a
//! bounded LRU. Timeouts are per request, so clients can be shared.
//!
//! Also the unreachable-agent backoff: an agent the conductor cannot reach
//! is not called again on every heartbeat, but after 30 s, then 60 s, ...
//! up to 10 min, per node and agent URL.

use std::collections::HashMap;
use std::fs;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrite_protocol::node::Node;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::agent_client::{AgentClient, AgentClientError};
use crate::agent_session::AgentSession;
use crate::config::ConductorConfig;
use crate::metrics::AgentMetrics;

/// Pinned clients kept; an evicted one is rebuilt on its next use.
const PINNED_CLIENTS: usize = 256;
/// Idle connections to one agent are kept this long: enough to reuse one
/// between the polls of a running command (`command_wait_interval`, 6 s),
/// short enough that a storm's thousands of agents do not stay connected.
const POOL_IDLE: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct AgentClients {
    config: Arc<ConductorConfig>,
    metrics: AgentMetrics,
    plain: reqwest::Client,
    pinned: Mutex<Lru>,
    backoff: Arc<Backoff>,
}

impl AgentClients {
    pub fn new(config: Arc<ConductorConfig>) -> Result<Self, AgentClientError> {
        let plain = builder()
            .build()
            .map_err(|e| AgentClientError::Tls(e.to_string()))?;
        let backoff = Arc::new(Backoff::new(
            Duration::from_secs(config.agent_backoff.max(1)),
            Duration::from_secs(config.agent_backoff_max.max(config.agent_backoff)),
        ));
        Ok(Self {
            config,
            metrics: AgentMetrics::default(),
            plain,
            pinned: Mutex::new(Lru::default()),
            backoff,
        })
    }

    /// Report request times and failures to `metrics`.
    pub fn with_metrics(mut self, metrics: AgentMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The client for the agent the node's last heartbeat announced.
    pub fn for_node(&self, node: &Node) -> Result<AgentClient, AgentClientError> {
        self.for_agent(&node.uuid, &node.driver_internal_info)
    }

    /// [`AgentClients::for_node`] that tries once: for calls made only
    /// because a heartbeat came (the next one tries again).
    pub fn opportunistic(&self, node: &Node) -> Result<AgentClient, AgentClientError> {
        Ok(self.for_node(node)?.once())
    }

    /// The client for a node's agent from its `driver_internal_info`:
    /// `agent_url`, the token and the path of the agent's certificate.
    pub fn for_agent(
        &self,
        uuid: &str,
        dii: &Map<String, Value>,
    ) -> Result<AgentClient, AgentClientError> {
        let session = AgentSession::read(dii);
        let agent_url = session.url.as_deref().ok_or(AgentClientError::NoAgentUrl)?;
        // The agent's certificate from this conductor's local copy (the
        // path recorded may be another conductor's).
        let pinned = session.verify_ca.is_some();
        let http = match pinned {
            true if agent_url.starts_with("https://") => {
                let path = crate::agent_certs::cache_path(&self.config.certificates_dir(), uuid);
                let pem = fs::read(&path)
                    .map_err(|e| AgentClientError::Tls(format!("{}: {e}", path.display())))?;
                self.pinned(&pem)?
            }
            _ => self.plain.clone(),
        };
        Ok(AgentClient::new(
            http,
            &self.config,
            agent_url,
            session.token.clone(),
            Outcomes {
                backoff: self.backoff.clone(),
                node: uuid.to_string(),
                url: agent_url.to_string(),
                metrics: self.metrics.clone(),
            },
        ))
    }

    /// How long the node's agent is still left alone after failing to
    /// connect; `None` when it may be called.
    pub fn backing_off(&self, node: &Node) -> Option<Duration> {
        let url = AgentSession::of(node).url?;
        self.backoff.wait_left(&node.uuid, &url, Instant::now())
    }

    fn pinned(&self, pem: &[u8]) -> Result<reqwest::Client, AgentClientError> {
        let key: [u8; 32] = Sha256::digest(pem).into();
        if let Some(client) = self.lock_pinned().get(&key) {
            return Ok(client);
        }
        // Built outside the lock: other agents' calls need not wait.
        let tls = crate::agent_tls::pinned_client_config(pem)
            .map_err(|e| AgentClientError::Tls(e.to_string()))?;
        let client = builder()
            .use_preconfigured_tls(tls)
            .build()
            .map_err(|e| AgentClientError::Tls(e.to_string()))?;
        Ok(self.lock_pinned().insert(key, client, PINNED_CLIENTS))
    }

    fn lock_pinned(&self) -> std::sync::MutexGuard<'_, Lru> {
        // The cache holds no invariant a panicking holder could break.
        self.pinned.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Pinned clients held now (for tests and diagnostics).
    pub fn pinned_count(&self) -> usize {
        self.lock_pinned().clients.len()
    }
}

fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .use_rustls_tls()
        .min_tls_version(reqwest::tls::Version::TLS_1_2)
        .connect_timeout(CONNECT_TIMEOUT)
        .pool_idle_timeout(POOL_IDLE)
        .pool_max_idle_per_host(1)
}

/// Least recently used eviction over a small map: a scan of 256 entries on
/// a miss costs less than a dependency.
#[derive(Default)]
struct Lru {
    tick: u64,
    clients: HashMap<[u8; 32], (reqwest::Client, u64)>,
}

impl Lru {
    fn get(&mut self, key: &[u8; 32]) -> Option<reqwest::Client> {
        self.tick += 1;
        let tick = self.tick;
        self.clients.get_mut(key).map(|(client, used)| {
            *used = tick;
            client.clone()
        })
    }

    /// Insert unless a racing caller did first; the client to use.
    fn insert(&mut self, key: [u8; 32], client: reqwest::Client, cap: usize) -> reqwest::Client {
        if let Some(existing) = self.get(&key) {
            return existing;
        }
        if self.clients.len() >= cap {
            let oldest = self
                .clients
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| *k);
            if let Some(oldest) = oldest {
                self.clients.remove(&oldest);
            }
        }
        self.tick += 1;
        self.clients.insert(key, (client.clone(), self.tick));
        client
    }
}

/// Where an [`AgentClient`] reports whether its agent answered.
pub struct Outcomes {
    backoff: Arc<Backoff>,
    node: String,
    url: String,
    /// Each request's time and failure, by command.
    pub(crate) metrics: AgentMetrics,
}

impl Outcomes {
    /// The agent answered (any HTTP status): the backoff is over.
    pub fn reached(&self) {
        self.backoff.succeeded(&self.node, &self.url);
    }

    /// No answer at all: the next window, doubled.
    pub fn unreachable(&self) -> Duration {
        self.backoff.failed(&self.node, &self.url, Instant::now())
    }
}

/// Per node, the agent URL that failed and until when it is left alone.
/// One entry per node: a new URL (a new ramdisk boot) replaces it.
pub struct Backoff {
    first: Duration,
    max: Duration,
    entries: Mutex<HashMap<String, Entry>>,
}

struct Entry {
    url: String,
    delay: Duration,
    until: Instant,
}

/// Entries kept before expired ones are swept.
const SWEEP_ABOVE: usize = 1024;

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            entries: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn wait_left(&self, node: &str, url: &str, now: Instant) -> Option<Duration> {
        let entries = self.lock();
        let entry = entries.get(node).filter(|e| e.url == url)?;
        entry
            .until
            .checked_duration_since(now)
            .filter(|d| !d.is_zero())
    }

    /// Record a failure; the window it opens.
    pub fn failed(&self, node: &str, url: &str, now: Instant) -> Duration {
        let mut entries = self.lock();
        if entries.len() > SWEEP_ABOVE {
            // An entry whose window ended `max` ago would restart at `first`
            // anyway in spirit; forget it so the map stays bounded.
            let max = self.max;
            entries.retain(|_, e| e.until + max > now);
        }
        let delay = match entries.get(node) {
            Some(e) if e.url == url => (e.delay * 2).min(self.max),
            _ => self.first,
        };
        entries.insert(
            node.to_string(),
            Entry {
                url: url.to_string(),
                delay,
                until: now + delay,
            },
        );
        delay
    }

    pub fn succeeded(&self, node: &str, url: &str) {
        let mut entries = self.lock();
        if entries.get(node).is_some_and(|e| e.url == url) {
            entries.remove(node);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let b = Backoff::new(30 * S, 600 * S);
        let t0 = Instant::now();
        assert_eq!(b.wait_left("n", "https://a:9999", t0), None);
        assert_eq!(b.failed("n", "https://a:9999", t0), 30 * S);
        assert_eq!(
            b.wait_left("n", "https://a:9999", t0 + 10 * S),
            Some(20 * S)
        );
        assert_eq!(b.wait_left("n", "https://a:9999", t0 + 30 * S), None);
        // Another node is not affected.
        assert_eq!(b.wait_left("m", "https://a:9999", t0), None);
        let mut at = t0;
        let windows: Vec<u64> = (0..6)
            .map(|_| {
                at += 700 * S;
                b.failed("n", "https://a:9999", at).as_secs()
            })
            .collect();
        assert_eq!(windows, [60, 120, 240, 480, 600, 600]);
        // A new agent URL (a new ramdisk) starts afresh ...
        assert_eq!(b.wait_left("n", "https://b:9999", at), None);
        assert_eq!(b.failed("n", "https://b:9999", at), 30 * S);
        // ... and an answer ends the backoff.
        b.succeeded("n", "https://b:9999");
        assert_eq!(b.wait_left("n", "https://b:9999", at), None);
        assert_eq!(b.failed("n", "https://b:9999", at), 30 * S);
    }

    #[test]
    fn backoff_forgets_long_expired_entries() {
        let b = Backoff::new(S, 2 * S);
        let t0 = Instant::now();
        for i in 0..=SWEEP_ABOVE {
            b.failed(&format!("n{i}"), "u", t0);
        }
        b.failed("last", "u", t0 + 10 * S);
        assert_eq!(b.lock().len(), 1);
    }

    fn client() -> reqwest::Client {
        reqwest::Client::new()
    }

    #[test]
    fn lru_evicts_the_least_recently_used() {
        let mut lru = Lru::default();
        for k in 0..3u8 {
            lru.insert([k; 32], client(), 3);
        }
        assert!(lru.get(&[0; 32]).is_some());
        lru.insert([3; 32], client(), 3);
        assert_eq!(lru.clients.len(), 3);
        assert!(lru.get(&[1; 32]).is_none(), "the oldest unused went");
        assert!(lru.get(&[0; 32]).is_some() && lru.get(&[2; 32]).is_some());
    }
}
