//! One fleet row per node: what the fleet table and its live stream show,
//! computed once so the first render and the SSE updates agree.

use ferrite_protocol::node::Node;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::store::{NodeQuery, Page, SortKey};

/// How many nodes one fleet page lists (one SQL page, enrollment order).
pub const FLEET_LIMIT: usize = 1000;

/// The fleet's filters: `?state=` (a provision state) and `?q=` (a part
/// of a name or UUID, case-insensitive).
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct Filter {
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub q: Option<String>,
}

impl Filter {
    fn state(&self) -> Option<&str> {
        self.state
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }

    fn search(&self) -> Option<String> {
        self.q
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_lowercase)
    }

    /// The state filter runs in SQL; the search runs on the page read.
    pub fn query(&self) -> NodeQuery {
        NodeQuery {
            provision_state: self
                .state()
                .map(|s| vec![s.to_string()])
                .unwrap_or_default(),
            page: Some(Page {
                sort: SortKey::ID,
                descending: false,
                marker: None,
                limit: FLEET_LIMIT,
            }),
            ..NodeQuery::default()
        }
    }

    /// The provision state filter, as the key of a shared listing.
    pub fn state_key(&self) -> Option<String> {
        self.state().map(str::to_string)
    }

    pub fn matches(&self, row: &FleetRow) -> bool {
        let Some(needle) = self.search() else {
            return true;
        };
        row.uuid.to_lowercase().contains(&needle)
            || row
                .name
                .as_deref()
                .is_some_and(|n| n.to_lowercase().contains(&needle))
    }
}

/// An image write in progress, from the agent's `progress` snapshot that
/// the deploy flow keeps in `driver_internal_info.deploy_progress`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Progress {
    pub received: u64,
    pub written: u64,
    /// The image's size, when the agent knows it.
    pub total: Option<u64>,
    pub rate: u64,
    /// 0–100, when `total` is known.
    pub percent: Option<f64>,
    pub eta_seconds: Option<u64>,
}

impl Progress {
    pub fn from_snapshot(p: &Value) -> Option<Self> {
        let field = |k: &str| p.get(k).and_then(Value::as_u64);
        let received = field("bytes_received")?;
        let written = field("bytes_written").unwrap_or(0);
        let total = field("bytes_total")
            .or_else(|| field("target_bytes"))
            .filter(|t| *t > 0);
        let rate = field("rate_bytes_per_second").unwrap_or(0);
        let percent = total.map(|t| (received.min(t) as f64 * 100.0 / t as f64).clamp(0.0, 100.0));
        let eta_seconds = match total {
            Some(t) if rate > 0 => Some(t.saturating_sub(received).div_ceil(rate)),
            _ => None,
        };
        Some(Self {
            received,
            written,
            total,
            rate,
            percent,
            eta_seconds,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FleetRow {
    pub uuid: String,
    pub name: Option<String>,
    pub provision_state: String,
    pub target_provision_state: Option<String>,
    pub power_state: Option<String>,
    pub maintenance: bool,
    /// The running deploy, clean or service step, `interface.step`.
    pub step: Option<String>,
    pub progress: Option<Progress>,
    pub last_error: Option<String>,
}

fn step_name(step: &Map<String, Value>) -> Option<String> {
    let name = step.get("step")?.as_str()?;
    match step.get("interface").and_then(Value::as_str) {
        Some(iface) => Some(format!("{iface}.{name}")),
        None => Some(name.to_string()),
    }
}

impl FleetRow {
    pub fn of(node: &Node) -> Self {
        let step = [&node.deploy_step, &node.clean_step, &node.service_step]
            .into_iter()
            .find_map(step_name);
        Self {
            uuid: node.uuid.clone(),
            name: node.name.clone(),
            provision_state: node.provision_state.clone(),
            target_provision_state: node.target_provision_state.clone(),
            power_state: node.power_state.clone(),
            maintenance: node.maintenance,
            step,
            progress: node
                .driver_internal_info
                .get(crate::flows::DEPLOY_PROGRESS_KEY)
                .and_then(Progress::from_snapshot),
            last_error: node.last_error.clone(),
        }
    }
}

/// Bytes as the console shows them (binary units, one decimal).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn progress_from_the_agents_snapshot() {
        let p = Progress::from_snapshot(&json!({
            "bytes_received": 25u64 << 20,
            "bytes_total": 100u64 << 20,
            "bytes_written": 20u64 << 20,
            "rate_bytes_per_second": 5u64 << 20,
        }))
        .expect("progress");
        assert_eq!(p.percent, Some(25.0));
        assert_eq!(p.eta_seconds, Some(15));
        assert_eq!(p.written, 20 << 20);
        // Unknown size: no percentage, no ETA, still bytes and rate.
        let p = Progress::from_snapshot(&json!({"bytes_received": 10, "rate_bytes_per_second": 0}))
            .expect("progress");
        assert_eq!((p.percent, p.eta_seconds, p.total), (None, None, None));
        assert!(Progress::from_snapshot(&json!({})).is_none());
    }

    #[test]
    fn units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
    }
}
