//! What the conductor counts and times, for Prometheus (`GET /metrics`).
//!
//! One [`Metrics`] per conductor, made at start and handed to the store,
//! the flows, the agent clients and the API: no global registry, so unit
//! tests and several conductors in one process keep apart. Built on
//! `prometheus-client`, the Prometheus project's own Rust client (the
//! OpenMetrics text format; no global recorder, unlike the `metrics` crate).
//!
//! Names follow ironic-prometheus-exporter where it has an equivalent:
//! its per-node data is `baremetal_*` labelled `node_uuid` and
//! `node_name`; the rest is `ferrite_conductor_*`, in seconds and bytes
//! (the exporter's conductor timers are millisecond sums without
//! buckets; histograms say more).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde_json::Value;

/// What `/metrics` answers with.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Histograms<L> = Family<L, Histogram>;
type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// Seconds, 1 s to 9 h: a flow (a deploy is minutes, a disk erase hours).
fn flow_buckets() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 16))
}

/// Seconds, 5 ms to 80 s: a call to an agent or a BMC, an API request.
fn call_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

/// Seconds, 100 µs to 3 s: one database operation.
fn db_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProvisionLabels {
    provision_state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PowerLabels {
    power_state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FlowLabels {
    flow: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandLabels {
    command: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandFailureLabels {
    command: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BmcLabels {
    interface: &'static str,
    call: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DbLabels {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: String,
    route: String,
    status: u16,
}

/// ironic-prometheus-exporter's node labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node_uuid: String,
    node_name: String,
}

/// Nodes in one combination of states, as the store counts them.
pub struct NodeCount {
    pub provision_state: String,
    pub power_state: Option<String>,
    pub maintenance: bool,
    pub nodes: u64,
}

/// The database's share: handed to [`crate::store::Store`]. Cheap to
/// clone (the families are shared); the default is counted but not
/// exported, for stores made outside a conductor (tests, tools).
#[derive(Clone)]
pub struct DbMetrics {
    latency: Histograms<DbLabels>,
    errors: Family<DbLabels, Counter>,
}

impl Default for DbMetrics {
    fn default() -> Self {
        Self {
            latency: Family::new_with_constructor(db_buckets as fn() -> Histogram),
            errors: Family::default(),
        }
    }
}

impl DbMetrics {
    pub fn observe(&self, operation: &'static str, took: Duration, ok: bool) {
        let labels = DbLabels { operation };
        self.latency
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        if !ok {
            self.errors.get_or_create(&labels).inc();
        }
    }
}

/// The agent clients' share.
#[derive(Clone)]
pub struct AgentMetrics {
    latency: Histograms<CommandLabels>,
    failures: Family<CommandFailureLabels, Counter>,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self {
            latency: Family::new_with_constructor(call_buckets as fn() -> Histogram),
            failures: Family::default(),
        }
    }
}

impl AgentMetrics {
    /// One request to an agent (retries included); `failure` names why it
    /// failed, if it did.
    pub fn observe(&self, command: &str, took: Duration, failure: Option<&'static str>) {
        let command = command.to_string();
        self.latency
            .get_or_create(&CommandLabels {
                command: command.clone(),
            })
            .observe(took.as_secs_f64());
        if let Some(reason) = failure {
            self.failures
                .get_or_create(&CommandFailureLabels { command, reason })
                .inc();
        }
    }
}

/// The power drivers' share.
#[derive(Clone)]
pub struct BmcMetrics {
    latency: Histograms<BmcLabels>,
    failures: Family<BmcLabels, Counter>,
}

impl Default for BmcMetrics {
    fn default() -> Self {
        Self {
            latency: Family::new_with_constructor(call_buckets as fn() -> Histogram),
            failures: Family::default(),
        }
    }
}

impl BmcMetrics {
    pub fn observe(&self, interface: &'static str, call: &'static str, took: Duration, ok: bool) {
        let labels = BmcLabels { interface, call };
        self.latency
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        if !ok {
            self.failures.get_or_create(&labels).inc();
        }
    }
}

/// An image write in progress on one node, as its last heartbeat showed.
struct Write {
    labels: NodeLabels,
    written: u64,
}

pub struct Metrics {
    registry: Registry,
    /// Scrapes one at a time: each resets the node gauges, then encodes.
    scrape: Mutex<()>,
    nodes_provision: Family<ProvisionLabels, Gauge>,
    nodes_power: Family<PowerLabels, Gauge>,
    nodes_maintenance: Gauge,
    flow_duration: Histograms<FlowLabels>,
    /// Flows under way on this conductor: node UUID to the flow's name
    /// and when it left its stable state.
    flows: Mutex<HashMap<String, (&'static str, Instant)>>,
    heartbeats: Family<ResultLabels, Counter>,
    lookups: Family<ResultLabels, Counter>,
    image_received: Family<NodeLabels, Gauge>,
    image_written: Family<NodeLabels, Gauge>,
    image_rate: Family<NodeLabels, FloatGauge>,
    image_written_total: Counter,
    writes: Mutex<HashMap<String, Write>>,
    http: Histograms<HttpLabels>,
    pub db: DbMetrics,
    pub agent: AgentMetrics,
    pub bmc: BmcMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let nodes_provision = Family::<ProvisionLabels, Gauge>::default();
        let nodes_power = Family::<PowerLabels, Gauge>::default();
        let nodes_maintenance = Gauge::default();
        let flow_duration = Family::new_with_constructor(flow_buckets as fn() -> Histogram);
        let heartbeats = Family::<ResultLabels, Counter>::default();
        let lookups = Family::<ResultLabels, Counter>::default();
        let image_received = Family::<NodeLabels, Gauge>::default();
        let image_written = Family::<NodeLabels, Gauge>::default();
        let image_rate = Family::<NodeLabels, FloatGauge>::default();
        let image_written_total = Counter::default();
        let http = Family::new_with_constructor(call_buckets as fn() -> Histogram);
        let db = DbMetrics::default();
        let agent = AgentMetrics::default();
        let bmc = BmcMetrics::default();
        let r = &mut registry;
        r.register(
            "ferrite_conductor_nodes_provision_state",
            "Nodes in each provision state (all conductors' nodes, from the database at scrape time)",
            nodes_provision.clone(),
        );
        r.register(
            "ferrite_conductor_nodes_power_state",
            "Nodes in each recorded power state (\"none\" when unknown)",
            nodes_power.clone(),
        );
        r.register(
            "ferrite_conductor_nodes_maintenance",
            "Nodes in maintenance",
            nodes_maintenance.clone(),
        );
        r.register(
            "ferrite_conductor_flow_duration_seconds",
            "Provisioning flows run by this conductor, from leaving a stable state to reaching the next one",
            flow_duration.clone(),
        );
        r.register(
            "ferrite_conductor_heartbeats",
            "Agent heartbeats received, by result (accepted, refused, error)",
            heartbeats.clone(),
        );
        r.register(
            "ferrite_conductor_lookups",
            "Agent lookups, by result (found, not_found, refused, invalid, error)",
            lookups.clone(),
        );
        r.register(
            "baremetal_image_received_bytes",
            "Bytes of the image the node's agent has received in the running write",
            image_received.clone(),
        );
        r.register(
            "baremetal_image_written_bytes",
            "Bytes of the image the node's agent has written to disk in the running write",
            image_written.clone(),
        );
        r.register(
            "baremetal_image_rate_bytes_per_second",
            "Download rate of the node's running image write",
            image_rate.clone(),
        );
        r.register(
            "ferrite_conductor_image_written_bytes",
            "Bytes of images agents reported written to disk, over all nodes",
            image_written_total.clone(),
        );
        r.register(
            "ferrite_conductor_agent_command_duration_seconds",
            "Requests to agents by command (retries included); commands.list is the status poll",
            agent.latency.clone(),
        );
        r.register(
            "ferrite_conductor_agent_command_failures",
            "Agent requests that failed or whose command failed, by command and reason",
            agent.failures.clone(),
        );
        r.register(
            "ferrite_conductor_bmc_call_duration_seconds",
            "Calls to BMCs by power interface and call",
            bmc.latency.clone(),
        );
        r.register(
            "ferrite_conductor_bmc_call_failures",
            "BMC calls that failed, by power interface and call",
            bmc.failures.clone(),
        );
        r.register(
            "ferrite_conductor_db_operation_duration_seconds",
            "Database operations by kind",
            db.latency.clone(),
        );
        r.register(
            "ferrite_conductor_db_operation_errors",
            "Database operations that failed (not an update its caller refused)",
            db.errors.clone(),
        );
        r.register(
            "ferrite_conductor_http_request_duration_seconds",
            "API requests by method, route and status",
            http.clone(),
        );
        Self {
            registry,
            scrape: Mutex::default(),
            nodes_provision,
            nodes_power,
            nodes_maintenance,
            flow_duration,
            flows: Mutex::default(),
            heartbeats,
            lookups,
            image_received,
            image_written,
            image_rate,
            image_written_total,
            writes: Mutex::default(),
            http,
            db,
            agent,
            bmc,
        }
    }

    /// The exposition, with the node gauges set from `counts`.
    pub fn render(&self, counts: &[NodeCount]) -> Result<String, std::fmt::Error> {
        let _one = lock(&self.scrape);
        self.nodes_provision.clear();
        self.nodes_power.clear();
        let mut maintenance = 0;
        for c in counts {
            let n = i64::try_from(c.nodes).unwrap_or(i64::MAX);
            self.nodes_provision
                .get_or_create(&ProvisionLabels {
                    provision_state: c.provision_state.clone(),
                })
                .inc_by(n);
            self.nodes_power
                .get_or_create(&PowerLabels {
                    power_state: c.power_state.clone().unwrap_or_else(|| "none".into()),
                })
                .inc_by(n);
            if c.maintenance {
                maintenance += n;
            }
        }
        self.nodes_maintenance.set(maintenance);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// A node left a stable state: `flow` starts.
    pub fn flow_started(&self, node: &str, flow: &'static str) {
        lock(&self.flows).insert(node.to_string(), (flow, Instant::now()));
    }

    /// A node reached a stable state: its flow (if this conductor saw it
    /// start) is observed, and its image write gauges go.
    pub fn flow_ended(&self, node: &str, failed: bool) {
        if let Some((flow, since)) = lock(&self.flows).remove(node) {
            let result = if failed { "failure" } else { "success" };
            self.flow_duration
                .get_or_create(&FlowLabels { flow, result })
                .observe(since.elapsed().as_secs_f64());
        }
        if let Some(write) = lock(&self.writes).remove(node) {
            self.image_received.remove(&write.labels);
            self.image_written.remove(&write.labels);
            self.image_rate.remove(&write.labels);
        }
    }

    pub fn heartbeat(&self, result: &'static str) {
        self.heartbeats
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn lookup(&self, result: &'static str) {
        self.lookups.get_or_create(&ResultLabels { result }).inc();
    }

    /// The agent's `progress` of a running image write (`bytes_received`,
    /// `bytes_written`, `rate_bytes_per_second`).
    pub fn image_progress(&self, node: &str, name: Option<&str>, progress: &Value) {
        let field = |k: &str| progress.get(k).and_then(Value::as_u64);
        let labels = NodeLabels {
            node_uuid: node.to_string(),
            node_name: name.unwrap_or_default().to_string(),
        };
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        if let Some(received) = field("bytes_received") {
            self.image_received
                .get_or_create(&labels)
                .set(clamp(received));
        }
        if let Some(rate) = progress
            .get("rate_bytes_per_second")
            .and_then(Value::as_f64)
        {
            self.image_rate.get_or_create(&labels).set(rate);
        }
        let Some(written) = field("bytes_written") else {
            return;
        };
        self.image_written
            .get_or_create(&labels)
            .set(clamp(written));
        let mut writes = lock(&self.writes);
        let write = writes
            .entry(node.to_string())
            .or_insert(Write { labels, written: 0 });
        // Less than before: the agent started the write again (a retry).
        let new = written.checked_sub(write.written).unwrap_or(written);
        self.image_written_total.inc_by(new);
        write.written = written;
    }

    /// One API request answered.
    pub fn http_request(&self, method: &str, route: &str, status: u16, took: Duration) {
        self.http
            .get_or_create(&HttpLabels {
                method: method.to_string(),
                route: route.to_string(),
                status,
            })
            .observe(took.as_secs_f64());
    }
}

/// A poisoned lock only means a panic elsewhere: the maps stay usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn written_bytes_count_once_and_again_after_a_restart() {
        let m = Metrics::new();
        m.image_progress(
            "n1",
            Some("a"),
            &json!({"bytes_written": 100, "bytes_received": 120, "rate_bytes_per_second": 10}),
        );
        m.image_progress("n1", Some("a"), &json!({"bytes_written": 250}));
        assert_eq!(m.image_written_total.get(), 250);
        m.image_progress("n1", Some("a"), &json!({"bytes_written": 40}));
        assert_eq!(m.image_written_total.get(), 290);
        let text = m.render(&[]).unwrap();
        assert!(
            text.contains("baremetal_image_written_bytes{node_uuid=\"n1\",node_name=\"a\"} 40"),
            "{text}"
        );
        m.flow_ended("n1", false);
        let text = m.render(&[]).unwrap();
        assert!(!text.contains("node_uuid=\"n1\""), "{text}");
        assert!(
            text.contains("ferrite_conductor_image_written_bytes_total 290"),
            "{text}"
        );
    }

    #[test]
    fn node_gauges_follow_the_counts() {
        let m = Metrics::new();
        let count = |p: &str, w: Option<&str>, maint, nodes| NodeCount {
            provision_state: p.into(),
            power_state: w.map(str::to_string),
            maintenance: maint,
            nodes,
        };
        let text = m
            .render(&[
                count("active", Some("power on"), false, 2),
                count("active", Some("power off"), true, 1),
                count("available", None, false, 3),
            ])
            .unwrap();
        for line in [
            "ferrite_conductor_nodes_provision_state{provision_state=\"active\"} 3",
            "ferrite_conductor_nodes_provision_state{provision_state=\"available\"} 3",
            "ferrite_conductor_nodes_power_state{power_state=\"none\"} 3",
            "ferrite_conductor_nodes_power_state{power_state=\"power on\"} 2",
            "ferrite_conductor_nodes_maintenance 1",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        // A state no node is in any more disappears.
        let text = m.render(&[count("available", None, false, 1)]).unwrap();
        assert!(!text.contains("\"active\""), "{text}");
    }
}
