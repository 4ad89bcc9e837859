//! The power-state sync loop and power-failure recovery, as Ironic 39's
//! `_sync_power_states`, `do_sync_power_state`,
//! `handle_sync_power_state_max_retries_exceeded` and
//! `_power_failure_recovery` (ironic/conductor/manager.py). A machine found
//! in another power state than recorded is powered back (or the record
//! follows it); a BMC that cannot be read `max_retries + 1` rounds in a row
//! puts the node into maintenance with the fault "power failure", and the
//! first good read afterwards takes it out again.
//!
//! Each conductor acts only on the nodes it owns (`Owns`), so that two
//! conductors never power the same machine.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrite_protocol::node::Node;
use tracing::{debug, error, info, warn};

use super::Flows;
use crate::metrics::BmcMetrics;
use crate::power::{PowerAction, PowerDriver, PowerError};
use crate::provision_state::{NodeStates, ProvisionState as S};
use crate::store::{NodeQuery, StoreError};

/// Whether this conductor owns a node (its hash ring's answer).
pub type Owns = Arc<dyn Fn(&Node) -> bool + Send + Sync>;

/// Ironic's `faults.POWER_FAILURE`.
pub const POWER_FAILURE: &str = "power failure";

/// Ironic's `SYNC_EXCLUDED_STATES`: touching a node waiting for its ramdisk
/// could fail the ramdisk's callback; enroll and adopt failed have nothing
/// to sync. A state this conductor does not know is left alone too.
fn sync_excluded(node: &Node) -> bool {
    let state = match node.state() {
        Ok(state) => state,
        Err(e) => {
            warn!(error = %e, "power sync skips the node");
            return true;
        }
    };
    match state {
        S::DeployWait | S::CleanWait | S::Enroll | S::AdoptFail => true,
        S::Verifying
        | S::Manageable
        | S::Available
        | S::Deploying
        | S::Active
        | S::DeployFail
        | S::Deleting
        | S::Cleaning
        | S::CleanFail
        | S::Inspecting
        | S::InspectWait
        | S::InspectFail
        | S::Rescuing
        | S::RescueWait
        | S::Rescue
        | S::RescueFail
        | S::Unrescuing
        | S::UnrescueFail
        | S::Servicing
        | S::ServiceWait
        | S::ServiceHold
        | S::ServiceFail
        | S::Error => false,
    }
}

pub struct PowerSync {
    flows: Arc<Flows>,
    owns: Owns,
    /// Ironic's `power_state_sync_count`: failed syncs in a row per node,
    /// in memory only (a restart starts counting again, as in Ironic).
    failures: Mutex<HashMap<String, u32>>,
}

/// What one node's sync did to its failure count.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The new count; 0 is a good sync.
    Count(u32),
    /// Another process held the node: the count stays (Ironic's NodeLocked
    /// escapes `do_sync_power_state` before the count is stored).
    Locked,
}

/// Start the sync and recovery loops, each unless its interval is 0.
pub fn spawn(flows: &Arc<Flows>, owns: Owns) -> Arc<PowerSync> {
    let sync = Arc::new(PowerSync {
        flows: flows.clone(),
        owns,
        failures: Mutex::default(),
    });
    let config = &flows.config;
    if config.sync_power_state_interval > 0 {
        // Like Ironic's periodics, the first round is one interval in.
        let every = Duration::from_secs(config.sync_power_state_interval);
        let s = sync.clone();
        crate::periodic::spawn_every("power state sync", every, every, move || {
            let s = s.clone();
            async move { s.round().await.map(|_| ()) }
        });
    }
    if config.power_failure_recovery_interval > 0 {
        let every = Duration::from_secs(config.power_failure_recovery_interval);
        let s = sync.clone();
        crate::periodic::spawn_every("power failure recovery", every, every, move || {
            let s = s.clone();
            async move { s.recovery_round().await.map(|_| ()) }
        });
    }
    sync
}

impl PowerSync {
    /// One `_sync_power_states`: the owned nodes out of maintenance, those
    /// failing longest first (to fail them fast), drained by
    /// `min(workers, periodic_max_workers, nodes)` tasks. Returns how many
    /// nodes were considered.
    pub async fn round(self: &Arc<Self>) -> anyhow::Result<usize> {
        let started = Instant::now();
        let config = &self.flows.config;
        let query = NodeQuery {
            maintenance: Some(false),
            ..Default::default()
        };
        // Which nodes, from the columns: each is read whole when its turn comes.
        let mut uuids: Vec<String> = self
            .flows
            .store
            .list_node_heads(&query)
            .await?
            .into_iter()
            .filter(|n| (self.owns)(n))
            .map(|n| n.uuid)
            .collect();
        {
            let failures = self.lock_failures();
            uuids.sort_by_key(|u| std::cmp::Reverse(failures.get(u).copied().unwrap_or(0)));
        }
        let count = uuids.len();
        let workers = (config
            .sync_power_state_workers
            .min(config.periodic_max_workers) as usize)
            .min(count);
        let queue = Arc::new(Mutex::new(VecDeque::from(uuids)));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..workers {
            let (sync, queue) = (self.clone(), queue.clone());
            tasks.spawn(async move {
                loop {
                    let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
                    let Some(uuid) = next else { break };
                    sync.sync_one(&uuid).await;
                }
            });
        }
        while let Some(joined) = tasks.join_next().await {
            if let Err(e) = joined {
                warn!(error = %e, "a power sync worker died");
            }
        }
        let runtime = started.elapsed();
        debug!(
            nodes = count,
            workers,
            seconds = runtime.as_secs_f64(),
            "power state sync done"
        );
        if runtime > Duration::from_secs(3 * config.sync_power_state_interval) {
            warn!(
                seconds = runtime.as_secs(),
                "The power state sync operation runtime is 3x the --sync-power-state-interval setting. \
                 You may need to tune --sync-power-state-workers and --periodic-max-workers, \
                 or add more conductors."
            );
        }
        Ok(count)
    }

    fn lock_failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `_sync_power_state_nodes_task` for one node: the checks made before
    /// any lock, then the sync, then the count kept or dropped.
    async fn sync_one(&self, uuid: &str) {
        let node = match self.flows.store.get_node(uuid).await {
            Ok(n) => n,
            Err(StoreError::NotFound(_)) => {
                info!(node = %uuid, "During sync_power_state, node was not found and presumed deleted by another process.");
                self.lock_failures().remove(uuid);
                return;
            }
            Err(e) => {
                warn!(node = %uuid, error = %e, "power sync: cannot read the node");
                return;
            }
        };
        if skipped(&node) {
            return;
        }
        let count = self.lock_failures().get(uuid).copied().unwrap_or(0);
        match self.do_sync(node, count).await {
            Ok(Outcome::Count(0)) => {
                self.lock_failures().remove(uuid);
            }
            Ok(Outcome::Count(n)) => {
                self.lock_failures().insert(uuid.to_string(), n);
            }
            Ok(Outcome::Locked) => {
                info!(node = %uuid, "During sync_power_state, node was already locked by another process. Skip.");
            }
            Err(e) => warn!(node = %uuid, error = %format!("{e:#}"), "power sync failed"),
        }
    }

    /// `do_sync_power_state`: compare the BMC with the record, counting
    /// one more try; the count afterwards.
    async fn do_sync(&self, node: Node, count: u32) -> anyhow::Result<Outcome> {
        let flows = &self.flows;
        let max_retries = flows.config.power_state_sync_max_retries;
        let count = count + 1;
        let driver = PowerDriver::for_node(&node);
        // Nothing recorded and nothing to ask with: no sync, no failure.
        if node.power_state.is_none() && driver.is_err() {
            return Ok(Outcome::Count(0));
        }
        // Read without the lock, as Ironic does under a shared lock.
        let actual = match read_power(driver, &node, &flows.metrics.bmc).await {
            Ok(state) => state,
            Err(e) => {
                if count > max_retries {
                    let Some(_lock) = flows.reserve(&node.uuid).await? else {
                        return Ok(Outcome::Locked);
                    };
                    self.max_retries_exceeded(&node.uuid, None, Some(&e))
                        .await?;
                } else {
                    warn!(
                        node = %node.uuid,
                        "During sync_power_state, could not get power state for node {}, attempt {count} of {max_retries}. Error: {e}.",
                        node.uuid
                    );
                }
                return Ok(Outcome::Count(count));
            }
        };
        if node.power_state == actual {
            self.clear_last_error(&node, "confirmed power state match")
                .await?;
            return Ok(Outcome::Count(0));
        }

        // It differs: take the lock, and decide on the node as it is now.
        let Some(_lock) = flows.reserve(&node.uuid).await? else {
            return Ok(Outcome::Locked);
        };
        let node = flows.store.get_node(&node.uuid).await?;
        if node.power_state == actual {
            self.clear_last_error(&node, "confirmed power state match")
                .await?;
            return Ok(Outcome::Count(0));
        }
        // Something was done to the node meanwhile. Ironic re-checks the
        // state and maintenance; our power API sets target_power_state and
        // acts without the lock, so an action in flight is skipped too.
        if sync_excluded(&node) || node.maintenance || node.target_power_state.is_some() {
            return Ok(Outcome::Count(0));
        }
        let Some(actual) = actual else {
            // Only the fake interface reads None, and it reads the record.
            return Ok(Outcome::Count(0));
        };
        if node.power_state.is_none() {
            info!(node = %node.uuid, state = %actual, "During sync_power_state, node has no previous known state. Recording current state.");
            flows
                .store
                .update_node::<StoreError, _>(&node.uuid, |n| {
                    n.power_state = Some(actual.clone());
                    drop_last_error(n, "no previous known state");
                    Ok(())
                })
                .await?;
            return Ok(Outcome::Count(0));
        }
        if count > max_retries {
            self.max_retries_exceeded(&node.uuid, Some(&actual), None)
                .await?;
            return Ok(Outcome::Count(count));
        }
        let recorded = node.power_state.clone().unwrap_or_default();
        if flows.config.force_power_state_during_sync && !node.disable_power_off {
            warn!(
                node = %node.uuid,
                "During sync_power_state, node state '{actual}' does not match expected state. Changing hardware state to '{recorded}'."
            );
            if let Err(e) = self.power_action(&node, &recorded).await {
                error!(
                    node = %node.uuid,
                    error = %format!("{e:#}"),
                    "Failed to change power state of node to '{recorded}', attempt {count} of {max_retries}."
                );
            }
        } else {
            warn!(
                node = %node.uuid,
                "During sync_power_state, node state does not match expected state '{recorded}'. Updating recorded state to '{actual}'."
            );
            flows
                .store
                .update_node::<StoreError, _>(&node.uuid, |n| {
                    n.power_state = Some(actual.clone());
                    Ok(())
                })
                .await?;
        }
        Ok(Outcome::Count(count))
    }

    /// `handle_sync_power_state_max_retries_exceeded`, with the lock held:
    /// record what the BMC said (None when it could not be read), the
    /// message as a MONITORING error, and maintenance with the power
    /// failure fault unless an operator had already set maintenance.
    async fn max_retries_exceeded(
        &self,
        uuid: &str,
        actual: Option<&str>,
        error: Option<&PowerError>,
    ) -> Result<(), StoreError> {
        let flows = &self.flows;
        let mut message = String::new();
        flows.store.update_node::<StoreError, _>(uuid, |n| {
            // Python's '%s' of None is "None".
            let actual_text = actual.unwrap_or("None");
            let recorded = n.power_state.as_deref().unwrap_or("None");
            message = format!(
                "During sync_power_state, max retries exceeded for node {uuid}, node state {actual_text} \
                 does not match expected state '{recorded}'. Updating DB state to '{actual_text}' \
                 Switching node to maintenance mode."
            );
            if let Some(e) = error {
                message.push_str(&format!(" Error: {e}"));
            }
            n.power_state = actual.map(str::to_string);
            n.last_error = Some(message.clone());
            if !n.maintenance {
                n.maintenance = true;
                n.maintenance_reason = Some(message.clone());
                n.fault = Some(POWER_FAILURE.to_string());
            }
            Ok(())
        }).await?;
        record(flows, uuid, "ERROR", "monitoring", &message).await;
        error!(node = %uuid, "{message}");
        Ok(())
    }

    /// Ironic's `_clear_last_error_if_needed` (with node history on, the
    /// default): a confirmed power state clears a stale error.
    async fn clear_last_error(&self, node: &Node, reason: &str) -> Result<(), StoreError> {
        if node.last_error.is_none() {
            return Ok(());
        }
        self.flows
            .store
            .update_node::<StoreError, _>(&node.uuid, |n| {
                drop_last_error(n, reason);
                Ok(())
            })
            .await?;
        Ok(())
    }

    /// `node_power_action(task, recorded)` with the lock held: announce the
    /// target, act through the node's driver, and on failure record
    /// Ironic's message as the node's error.
    async fn power_action(&self, node: &Node, recorded: &str) -> anyhow::Result<()> {
        let flows = &self.flows;
        let action = match recorded {
            crate::power::POWER_ON => PowerAction::On,
            crate::power::POWER_OFF => PowerAction::Off,
            other => anyhow::bail!("cannot power a node towards '{other}'"),
        };
        let node = flows
            .store
            .update_node::<StoreError, _>(&node.uuid, |n| {
                n.target_power_state = Some(recorded.to_string());
                // A state this conductor does not know is no failure state.
                if !n.state().is_ok_and(S::is_failure) {
                    n.last_error = None;
                }
                Ok(())
            })
            .await?;
        if let Err(e) = super::power::set_power(flows, &node, action).await {
            let message =
                format!("Failed to change power state to '{recorded}' by '{recorded}': {e:#}");
            flows
                .store
                .update_node::<StoreError, _>(&node.uuid, |n| {
                    n.target_power_state = None;
                    n.last_error = Some(message.clone());
                    Ok(())
                })
                .await?;
            // node_history_record without an event type stores "UNKNOWN".
            record(flows, &node.uuid, "ERROR", "UNKNOWN", &message).await;
            return Err(e);
        }
        Ok(())
    }

    /// One `_power_failure_recovery`: the owned nodes in maintenance for a
    /// power failure whose BMC answers again leave maintenance, with the
    /// power state it reports. Returns how many recovered.
    pub async fn recovery_round(&self) -> anyhow::Result<usize> {
        let flows = &self.flows;
        let query = NodeQuery {
            maintenance: Some(true),
            ..Default::default()
        };
        let mut recovered = 0;
        for node in flows.store.list_nodes(&query).await? {
            if node.reservation.is_some() || !power_failed(&node) || !(self.owns)(&node) {
                continue;
            }
            let actual = match read_power(PowerDriver::for_node(&node), &node, &flows.metrics.bmc)
                .await
            {
                Ok(state) => state,
                Err(e) => {
                    debug!(node = %node.uuid, error = %e, "During power_failure_recovery, could not get power state");
                    continue;
                }
            };
            let Some(_lock) = flows.reserve(&node.uuid).await? else {
                continue;
            };
            let mut done = false;
            flows
                .store
                .update_node::<StoreError, _>(&node.uuid, |n| {
                    // An operator may have acted meanwhile (the lock is ours).
                    if !power_failed(n) {
                        return Ok(());
                    }
                    n.power_state = actual.clone();
                    n.maintenance = false;
                    n.maintenance_reason = None;
                    n.fault = None;
                    done = true;
                    Ok(())
                })
                .await?;
            if done {
                recovered += 1;
                info!(node = %node.uuid, state = ?actual, "Node is recovered from power failure with actual power state.");
            }
        }
        Ok(recovered)
    }
}

/// The pre-lock checks of `_sync_power_state_nodes_task`.
fn skipped(node: &Node) -> bool {
    sync_excluded(node)
        || node.maintenance
        || node.target_power_state.is_some()
        || node.reservation.is_some()
        // The BMC may not answer, and a power cycle would break the update.
        || node.driver_internal_info.contains_key("redfish_fw_updates")
}

/// The checks of `_power_failure_recovery`, but for the reservation.
fn power_failed(node: &Node) -> bool {
    node.state() != Ok(S::Enroll)
        && node.maintenance
        && node.fault.as_deref() == Some(POWER_FAILURE)
        && node.target_power_state.is_none()
}

/// The BMC's power state. The fake interface answers with the record, None
/// included, as Ironic's fake power interface does.
async fn read_power(
    driver: Result<PowerDriver, PowerError>,
    node: &Node,
    bmc: &BmcMetrics,
) -> Result<Option<String>, PowerError> {
    match driver? {
        PowerDriver::Fake => Ok(node.power_state.clone()),
        driver => driver.get_state(node, bmc).await.map(Some),
    }
}

fn drop_last_error(node: &mut Node, reason: &str) {
    if node.last_error.take().is_some() {
        info!(node = %node.uuid, "Clearing last_error for node after {reason}.");
    }
}

async fn record(flows: &Flows, uuid: &str, severity: &str, event_type: &str, event: &str) {
    if let Err(e) = flows
        .store
        .record_event(uuid, severity, event_type, event, flows.host())
        .await
    {
        warn!(node = %uuid, error = %e, "could not record node history");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConductorConfig;
    use crate::store::Store;
    use clap::Parser;
    use serde_json::json;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: ConductorConfig,
    }

    fn sync(owns: Owns) -> Arc<PowerSync> {
        let config = Cli::parse_from(["ferrite-conductor", "--host", "c1"]).config;
        let flows = Flows::new(
            Arc::new(Store::in_memory().expect("store")),
            Arc::new(config),
            Arc::default(),
        )
        .expect("flows");
        Arc::new(PowerSync {
            flows,
            owns,
            failures: Mutex::default(),
        })
    }

    fn everything() -> Owns {
        Arc::new(|_: &Node| true)
    }

    /// A Redfish address nothing listens on: every read is refused at once.
    fn dead_bmc() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        format!("http://127.0.0.1:{port}")
    }

    async fn add(s: &PowerSync, uuid: &str, edit: impl FnOnce(&mut Node)) {
        let mut node = Node {
            uuid: uuid.into(),
            driver: "redfish".into(),
            provision_state: S::Manageable.to_string(),
            power_state: Some(crate::power::POWER_ON.into()),
            ..Node::default()
        };
        edit(&mut node);
        s.flows.store.create_node(&node).await.expect("create");
    }

    fn redfish(node: &mut Node, address: &str) {
        node.power_interface = Some("redfish".into());
        node.driver_info =
            json!({"redfish_address": address, "redfish_system_id": "/redfish/v1/Systems/x"})
                .as_object()
                .cloned()
                .unwrap_or_default();
    }

    async fn get(s: &PowerSync, uuid: &str) -> Node {
        s.flows.store.get_node(uuid).await.expect("node")
    }

    #[tokio::test]
    async fn an_unreadable_bmc_means_maintenance_after_max_retries_plus_one_rounds() {
        let s = sync(everything());
        let bmc = dead_bmc();
        add(&s, "n1", |n| redfish(n, &bmc)).await;
        for round in 1..=3 {
            assert_eq!(s.round().await.expect("round"), 1);
            let n = get(&s, "n1").await;
            assert!(!n.maintenance, "round {round}");
            assert_eq!(s.lock_failures().get("n1"), Some(&round));
        }
        s.round().await.expect("round");
        let n = get(&s, "n1").await;
        assert!(n.maintenance);
        assert_eq!(n.fault.as_deref(), Some(POWER_FAILURE));
        assert_eq!(n.power_state, None);
        let reason = n.maintenance_reason.expect("reason");
        assert!(
            reason.starts_with("During sync_power_state, max retries exceeded for node n1, node state None does not match expected state 'power on'. Updating DB state to 'None' Switching node to maintenance mode. Error: Redfish get system"),
            "{reason}"
        );
        assert_eq!(n.last_error.as_deref(), Some(reason.as_str()));
        let history = s.flows.store.history("n1").await.expect("history");
        assert_eq!(history.len(), 1);
        assert_eq!(
            (history[0].severity.as_str(), history[0].event_type.as_str()),
            ("ERROR", "monitoring")
        );
        assert_eq!(history[0].event, reason);
        assert_eq!(history[0].conductor.as_deref(), Some("c1"));
        // In maintenance, the sync leaves it alone; the BMC is still down,
        // so recovery does too.
        assert_eq!(s.round().await.expect("round"), 0);
        assert_eq!(s.recovery_round().await.expect("recovery"), 0);
        assert!(get(&s, "n1").await.maintenance);
    }

    #[tokio::test]
    async fn a_readable_bmc_ends_a_power_failure() {
        let s = sync(everything());
        // The fake interface reads the record, as a BMC that answers.
        add(&s, "n1", |n| {
            n.maintenance = true;
            n.maintenance_reason = Some("max retries exceeded".into());
            n.fault = Some(POWER_FAILURE.into());
            n.last_error = Some("max retries exceeded".into());
        })
        .await;
        // An operator's maintenance is not ours to end.
        add(&s, "n2", |n| {
            n.maintenance = true;
            n.maintenance_reason = Some("operator".into());
        })
        .await;
        assert_eq!(s.recovery_round().await.expect("recovery"), 1);
        let n = get(&s, "n1").await;
        assert!(!n.maintenance);
        assert_eq!((n.maintenance_reason, n.fault), (None, None));
        assert_eq!(n.power_state.as_deref(), Some(crate::power::POWER_ON));
        // Recovery keeps last_error; the next matching sync clears it.
        assert!(n.last_error.is_some());
        s.round().await.expect("round");
        assert_eq!(get(&s, "n1").await.last_error, None);
        assert!(get(&s, "n2").await.maintenance);
    }

    #[tokio::test]
    async fn nodes_not_ours_or_busy_are_left_alone() {
        let bmc = dead_bmc();
        let s = sync(Arc::new(|n: &Node| n.uuid != "theirs"));
        add(&s, "theirs", |n| redfish(n, &bmc)).await;
        add(&s, "waiting", |n| {
            redfish(n, &bmc);
            n.set_state(S::DeployWait);
        })
        .await;
        add(&s, "acting", |n| {
            redfish(n, &bmc);
            n.target_power_state = Some(crate::power::POWER_OFF.into());
        })
        .await;
        add(&s, "locked", |n| redfish(n, &bmc)).await;
        assert!(s
            .flows
            .store
            .try_reserve("locked", "c2")
            .await
            .expect("reserve"));
        // No record and no usable driver_info: not a failure.
        add(&s, "unset", |n| {
            redfish(n, "");
            n.power_state = None;
        })
        .await;
        for _ in 0..6 {
            assert_eq!(s.round().await.expect("round"), 4);
        }
        for uuid in ["theirs", "waiting", "acting", "locked", "unset"] {
            let n = get(&s, uuid).await;
            assert!(!n.maintenance, "{uuid}");
            assert_eq!(s.lock_failures().get(uuid), None, "{uuid}");
        }
        assert_eq!(get(&s, "locked").await.reservation.as_deref(), Some("c2"));
    }

    #[tokio::test]
    async fn a_confirmed_state_clears_last_error() {
        let s = sync(everything());
        add(&s, "n1", |n| n.last_error = Some("old".into())).await;
        add(&s, "n2", |n| {
            n.power_state = None;
            n.last_error = Some("old".into());
        })
        .await;
        s.round().await.expect("round");
        assert_eq!(get(&s, "n1").await.last_error, None);
        // The fake interface reads None back: a match too, as in Ironic
        // (`node.power_state is None and power_state is None`).
        let n2 = get(&s, "n2").await;
        assert_eq!((n2.power_state, n2.last_error), (None, None));
        assert!(s.lock_failures().is_empty());
    }
}
