//! Provisioning flows. An API verb moves a node into a transitional state
//! and spawns the flow's first part under the node's lock; agent
//! heartbeats drive the in-band parts (one agent command per beat, the
//! progress kept on the node, so a restarted conductor picks up where the
//! stored state says); a periodic task fails nodes whose agent went quiet.

mod cleaning;
mod deploy;
pub mod deploy_steps;
mod file_url;
mod intent;
mod locks;
mod logs;
mod power;
pub mod power_sync;
pub mod rescue;
mod steps_cache;
pub mod transition;
mod verify;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use ferrite_protocol::node::Node;
use serde_json::Value;
use tracing::{debug, info, warn};

use crate::agent_clients::AgentClients;
use crate::agent_session::AgentSession;
use crate::cluster::{Membership, MembershipConfig};
use crate::config::ConductorConfig;
use crate::fsm::{self, Event};
use crate::metrics::Metrics;
use crate::provision_state::{NodeStates, ProvisionState as S};
use crate::store::{NodeQuery, Store, StoreError};
pub use locks::LockRetry;
use locks::{Locks, Reservation};
use transition::TransitionError;

pub use deploy::validate as validate_deploy;
pub use deploy::PROGRESS as DEPLOY_PROGRESS_KEY;
pub use steps_cache::CACHE_KEY;
pub use transition::wipe_token_and_url;

pub struct Flows {
    store: Arc<Store>,
    config: Arc<ConductorConfig>,
    host: String,
    agents: AgentClients,
    /// Heartbeat work in flight (`--workers-pool-size`).
    workers: Arc<Semaphore>,
    /// This conductor among its peers: which nodes it owns.
    cluster: Arc<Membership>,
    /// The locks this conductor's flows hold, and failed releases.
    locks: Arc<Locks>,
    metrics: Arc<Metrics>,
}

/// What a provision verb carries besides its target.
#[derive(Debug, Default, Clone)]
pub struct ActionArgs {
    pub configdrive: Option<Value>,
    pub clean_steps: Option<Vec<Value>>,
    /// `rescue` only: the tenant's password (required there).
    pub rescue_password: Option<rescue::RescuePassword>,
    /// `active`/`rebuild` only: the operator's deploy steps (API 1.69),
    /// schema-checked, priorities as numbers.
    pub deploy_steps: Option<Vec<Value>>,
}

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("node {node} is locked by {host}")]
    Locked { node: String, host: String },
    #[error(
        "The {verb} operation can't be performed on node {node} because it's in maintenance mode."
    )]
    Maintenance { verb: &'static str, node: String },
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error("{0}")]
    Invalid(String),
    /// Ironic's InstanceRescueFailure (an HTTP 500 there).
    #[error("Failed to rescue instance {instance} for node {node}: {reason}")]
    RescueFailure {
        instance: String,
        node: String,
        reason: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Verbs that maintenance mode blocks (Ironic's conductor checks).
fn blocked_in_maintenance(event: Event) -> bool {
    matches!(
        event,
        Event::Deploy
            | Event::Rebuild
            | Event::Provide
            | Event::Clean
            | Event::Inspect
            | Event::Rescue
            | Event::Unrescue
    )
}

/// The `last_error` an abort in `state` leaves.
fn abort_error(node: &Node, state: S) -> Option<String> {
    match state {
        S::CleanWait => Some(match node.clean_step.get("step") {
            Some(step) => format!(
                "By request, the clean operation was aborted after the completion of step {step}"
            ),
            None => "By request, the clean operation was aborted".to_string(),
        }),
        // Ironic records a rescue abort in the history, not as an error.
        S::RescueWait => None,
        S::InspectWait => Some("By request, the inspection operation was aborted".to_string()),
        // The state machine refuses an abort in any other state.
        S::Enroll
        | S::Verifying
        | S::Manageable
        | S::Available
        | S::Deploying
        | S::DeployWait
        | S::Active
        | S::DeployFail
        | S::Deleting
        | S::Cleaning
        | S::CleanFail
        | S::Inspecting
        | S::InspectFail
        | S::Rescuing
        | S::Rescue
        | S::RescueFail
        | S::Unrescuing
        | S::UnrescueFail
        | S::Servicing
        | S::ServiceWait
        | S::ServiceHold
        | S::ServiceFail
        | S::Error
        | S::AdoptFail => None,
    }
}

impl Flows {
    pub fn new(
        store: Arc<Store>,
        config: Arc<ConductorConfig>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, crate::agent_client::AgentClientError> {
        let host = config.host_name();
        let agents = AgentClients::new(config.clone())?.with_metrics(metrics.agent.clone());
        let workers = Arc::new(Semaphore::new(config.workers_pool_size as usize));
        let cluster = Membership::new(
            store.clone(),
            MembershipConfig {
                hostname: host.clone(),
                conductor_group: config.conductor_group.clone(),
                hardware_types: config.enabled_hardware_types.clone(),
                api_url: config.public_url(),
                heartbeat_interval: Duration::from_secs(config.conductor_heartbeat_interval.max(1)),
                heartbeat_timeout: Duration::from_secs(config.conductor_heartbeat_timeout.max(1)),
                ring_reset_interval: Duration::from_secs(config.hash_ring_reset_interval.max(1)),
                partition_exponent: config.hash_partition_exponent,
            },
        );
        Ok(Arc::new(Self {
            store,
            config,
            host,
            agents,
            workers,
            cluster,
            locks: Arc::default(),
            metrics,
        }))
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn cluster(&self) -> &Arc<Membership> {
        &self.cluster
    }

    /// Before calling a node's agent from this conductor: its local copy
    /// of the agent's certificate, from the database when another
    /// conductor took the heartbeat that brought it.
    async fn ensure_agent_certificate(&self, node: &Node) -> anyhow::Result<()> {
        if AgentSession::of(node).verify_ca.is_none() {
            return Ok(());
        }
        let dir = self.config.certificates_dir();
        if crate::agent_certs::read_cache(&dir, &node.uuid).is_some() {
            return Ok(());
        }
        if let Some(pem) = self.store.agent_certificate(&node.uuid).await? {
            crate::agent_certs::write_cache(&dir, &node.uuid, &pem)?;
        }
        Ok(())
    }

    async fn reserve(&self, uuid: &str) -> anyhow::Result<Option<Reservation>> {
        Ok(self
            .store
            .try_reserve(uuid, &self.host)
            .await?
            .then(|| Reservation::won(self.store.clone(), uuid, &self.host, self.locks.clone())))
    }

    /// How a request waits for a node another task holds.
    pub fn lock_retry(&self) -> LockRetry {
        LockRetry {
            attempts: self.config.node_locked_retry_attempts,
            interval: Duration::from_secs(self.config.node_locked_retry_interval),
        }
    }

    /// The node's reservation for a request, tried as Ironic's
    /// `task_manager.acquire` does, or NodeLocked naming the holder.
    async fn locked(&self, uuid: &str) -> Result<Reservation, RequestError> {
        let won = self
            .lock_retry()
            .run(|r| matches!(r, Ok(None)), || self.reserve(uuid))
            .await
            .map_err(|e| RequestError::Invalid(e.to_string()))?;
        match won {
            Some(lock) => Ok(lock),
            None => Err(RequestError::Locked {
                node: uuid.to_string(),
                host: self
                    .store
                    .get_node(uuid)
                    .await?
                    .reservation
                    .unwrap_or_default(),
            }),
        }
    }

    /// `PUT /v1/nodes/{id}/states/provision`: validate, move the node into
    /// the verb's state and start the flow in the background.
    pub async fn request(
        self: &Arc<Self>,
        ident: &str,
        event: Event,
        args: ActionArgs,
    ) -> Result<Node, RequestError> {
        let node = self.store.get_node(ident).await?;
        if let Err(e) = self.ensure_agent_certificate(&node).await {
            warn!(node = %node.uuid, error = %format!("{e:#}"), "no local copy of the agent's certificate");
        }
        if node.maintenance && blocked_in_maintenance(event) {
            return Err(RequestError::Maintenance {
                verb: match event {
                    Event::Rescue => "rescuing",
                    Event::Unrescue => "unrescuing",
                    other => other.verb(),
                },
                node: node.uuid,
            });
        }
        // Refuse an illegal verb before taking the lock, as Ironic's API does.
        let state = node.state().map_err(TransitionError::from)?;
        if fsm::next_state(state, event).is_none() {
            return Err(TransitionError::Invalid {
                verb: event.verb(),
                node: node.uuid,
                state: node.provision_state,
            }
            .into());
        }
        if event == Event::Rescue {
            self.validate_rescue(&node, args.rescue_password.is_some())?;
        }
        if event == Event::Deploy || event == Event::Rebuild {
            // Ironic's do_node_deploy: the disallow list, then start_deploy's
            // validation (in-band steps are not known before the agent runs).
            if let Some(user) = &args.deploy_steps {
                deploy_steps::check_disallowed(user).map_err(RequestError::Invalid)?;
            }
            deploy::validate(&node, &self.config.file_url_allowed_paths)
                .map_err(RequestError::Invalid)?;
            if let Some(user) = &args.deploy_steps {
                deploy_steps::validate_user(&node, user, true).map_err(|e| {
                    RequestError::Invalid(format!(
                        "Failed to validate deploy or power info for node {}: {e}",
                        node.uuid
                    ))
                })?;
            }
        }
        let lock = self.locked(&node.uuid).await?;
        // The node as it is now: a flow may have moved it while this waited
        // for the lock (`fire` checks the transition again).
        let node = self.store.get_node(&node.uuid).await?;
        let manual_clean = event == Event::Clean;
        let aborted = match event {
            Event::Abort => abort_error(&node, node.state().map_err(TransitionError::from)?),
            _ => None,
        };
        // Hashed before the state changes: a failure leaves the node as it was.
        let rescue_hash = match (&args.rescue_password, event) {
            (Some(password), Event::Rescue) => Some(
                rescue::hash_password(password, self.config.rescue_password_hash_algorithm)
                    .map_err(|e| RequestError::Invalid(e.to_string()))?,
            ),
            _ => None,
        };
        let updated = transition::fire(self, &node.uuid, event, |n| {
            n.last_error = aborted;
            if let (Some(password), Some(hashed)) = (&args.rescue_password, &rescue_hash) {
                rescue::store_password(n, password, hashed);
            }
            // Any agent of an earlier boot must not drive a rescue or unrescue.
            if matches!(event, Event::Rescue | Event::Unrescue) {
                wipe_token_and_url(n);
            }
            if manual_clean {
                n.set_target_state(Some(S::Manageable));
            }
            if let Some(cd) = &args.configdrive {
                n.instance_info.insert("configdrive".into(), cd.clone());
            }
            if matches!(event, Event::Deploy | Event::Rebuild) {
                match &args.deploy_steps {
                    Some(user) => n
                        .driver_internal_info
                        .insert(deploy_steps::USER_STEPS.into(), Value::Array(user.clone())),
                    None => n.driver_internal_info.remove(deploy_steps::USER_STEPS),
                };
            }
            cleaning::reset(n, args.clean_steps.clone());
        })
        .await?;
        let flows = self.clone();
        let uuid = updated.uuid.clone();
        tokio::spawn(async move {
            if let Err(e) = flows.begin(&uuid, event).await {
                warn!(node = %uuid, error = %format!("{e:#}"), "flow start failed");
            }
            lock.release().await;
            flows.continue_fast_track(&uuid).await;
        });
        Ok(updated)
    }

    /// The API's and the conductor's checks of a rescue, in Ironic's order
    /// (after the state check): a password, the rescue interface, then the
    /// rescue kernel and ramdisk.
    fn validate_rescue(&self, node: &Node, has_password: bool) -> Result<(), RequestError> {
        if !has_password {
            return Err(RequestError::Invalid(
                "A non-empty \"rescue_password\" is required when setting target provision state to rescue"
                    .into(),
            ));
        }
        let iface = node
            .rescue_interface
            .as_deref()
            .unwrap_or(crate::drivers::NO_RESCUE);
        if iface != crate::drivers::AGENT_RESCUE {
            return Err(RequestError::RescueFailure {
                instance: node.instance_uuid.clone().unwrap_or_else(|| "None".into()),
                node: node.uuid.clone(),
                reason: format!(
                    "Validation failed: Driver {} does not support rescue (disabled or not implemented).",
                    node.driver
                ),
            });
        }
        // The boot interface's `validate_rescue`: a rescue kernel and ramdisk.
        if let Err(missing) = crate::boot::images::rescue_references(node, &self.config) {
            return Err(RequestError::RescueFailure {
                instance: node.instance_uuid.clone().unwrap_or_else(|| "None".into()),
                node: node.uuid.clone(),
                reason: format!("Validation failed: {missing}"),
            });
        }
        Ok(())
    }

    /// Fast track found the agent running: go on at once, as Ironic does,
    /// rather than wait for its next heartbeat (IPA's can be minutes away).
    async fn continue_fast_track(&self, uuid: &str) {
        let Ok(node) = self.store.get_node(uuid).await else {
            return;
        };
        let waiting = matches!(node.state(), Ok(S::CleanWait | S::DeployWait));
        if waiting && self.agent_alive(&node) {
            info!(node = %uuid, "fast track: continuing without waiting for a heartbeat");
            if let Err(e) = self.handle_heartbeat(node, true).await {
                warn!(node = %uuid, error = %format!("{e:#}"), "fast-track continuation failed");
            }
        }
    }

    /// The part of a flow that runs right after the verb (lock held).
    async fn begin(&self, uuid: &str, event: Event) -> anyhow::Result<()> {
        let node = self.store.get_node(uuid).await?;
        match node.state()? {
            S::Verifying => verify::run(self, &node).await,
            S::Manageable => Ok(()),
            S::Cleaning => cleaning::begin(self, &node).await,
            S::Deploying => deploy::begin(self, &node).await,
            S::Deleting => deploy::tear_down(self, &node).await,
            S::Inspecting => self.begin_inspection(&node).await,
            S::Rescuing => rescue::begin(self, &node).await,
            S::Unrescuing => rescue::unrescue(self, &node).await,
            S::RescueFail if event == Event::Abort => rescue::fail_cleanup(self, &node).await,
            S::CleanFail | S::InspectFail if event == Event::Abort => {
                power::set_power(self, &node, crate::power::PowerAction::Off).await
            }
            state @ (S::RescueFail
            | S::CleanFail
            | S::InspectFail
            | S::Enroll
            | S::Available
            | S::DeployWait
            | S::Active
            | S::DeployFail
            | S::CleanWait
            | S::InspectWait
            | S::RescueWait
            | S::Rescue
            | S::UnrescueFail
            | S::Servicing
            | S::ServiceWait
            | S::ServiceHold
            | S::ServiceFail
            | S::Error
            | S::AdoptFail) => {
                debug!(node = %uuid, %state, "nothing to start");
                Ok(())
            }
        }
    }

    async fn begin_inspection(&self, node: &Node) -> anyhow::Result<()> {
        self.store
            .update_node::<StoreError, _>(&node.uuid, |n| {
                n.inspection_started_at = Some(crate::time::api_now());
                n.inspection_finished_at = None;
                Ok(())
            })
            .await?;
        // Always a fresh boot: the agent sends its inventory when it starts.
        self.boot_and_wait(node, true, "Failed to boot the inspection ramdisk")
            .await
    }

    /// Boot the ramdisk (fast track may skip that) and wait for its call,
    /// or fail the flow with `what` and the reason.
    async fn boot_and_wait(&self, node: &Node, fresh: bool, what: &str) -> anyhow::Result<()> {
        let booted = if fresh {
            self.boot_fresh_ramdisk(node).await
        } else {
            self.boot_ramdisk(node).await
        };
        match booted {
            Ok(()) => transition::fire(self, &node.uuid, Event::Wait, |_| {}).await?,
            Err(e) => transition::fail(self, &node.uuid, &format!("{what}: {e:#}")).await?,
        };
        Ok(())
    }

    /// Parameters of `clean/deploy.execute_*_step`, as Ironic sends them:
    /// the step, the node (secrets masked), its ports and the hardware
    /// manager versions under `version_key`.
    async fn step_params(
        &self,
        node: &Node,
        step: &Value,
        version_key: &str,
    ) -> anyhow::Result<serde_json::Map<String, Value>> {
        let ports: Vec<Value> = self
            .store
            .list_ports(Some(&node.uuid))
            .await?
            .iter()
            .filter_map(|p| serde_json::to_value(p).ok())
            .collect();
        let mut params = serde_json::Map::new();
        params.insert("step".into(), step.clone());
        params.insert("node".into(), crate::node_view::node_secure_dict(node));
        params.insert("ports".into(), Value::Array(ports));
        params.insert(
            version_key.into(),
            node.driver_internal_info
                .get("hardware_manager_version")
                .cloned()
                .unwrap_or(Value::Null),
        );
        Ok(params)
    }

    /// Boot the ramdisk unless fast-track finds the agent already running.
    async fn boot_ramdisk(&self, node: &Node) -> anyhow::Result<()> {
        if self.agent_alive(node) {
            info!(node = %node.uuid, "fast track: the agent is already running");
            return Ok(());
        }
        self.boot_fresh_ramdisk(node).await
    }

    async fn boot_fresh_ramdisk(&self, node: &Node) -> anyhow::Result<()> {
        // A new ramdisk boot gets a new agent, URL and token.
        self.store
            .update_node::<StoreError, _>(&node.uuid, |n| {
                AgentSession::wipe(&mut n.driver_internal_info);
                for key in [CACHE_KEY, deploy_steps::AGENT_CACHE] {
                    n.driver_internal_info.remove(key);
                }
                Ok(())
            })
            .await?;
        let node = self.store.get_node(&node.uuid).await?;
        power::boot_ramdisk(self, &node).await
    }

    /// Fast track: an agent that heartbeated within the timeout.
    fn agent_alive(&self, node: &Node) -> bool {
        if !self.config.fast_track {
            return false;
        }
        let session = AgentSession::of(node);
        let Some(last) = session
            .last_heartbeat
            .as_deref()
            .and_then(crate::time::parse_internal)
        else {
            return false;
        };
        let age = chrono::Utc::now().naive_utc() - last;
        // Ironic's fast_track_able: a URL is worth nothing if the machine is
        // off. `fake` power only records what someone else did, so there the
        // heartbeat is the evidence.
        let fake_power = node.power_interface.as_deref().unwrap_or("fake") == "fake";
        (fake_power || node.power_state.as_deref() == Some(crate::power::POWER_ON))
            && session.url.is_some()
            && age.num_seconds() < self.config.heartbeat_timeout as i64
    }

    /// A heartbeat was recorded; `node` is the node as the beat wrote it.
    pub fn on_heartbeat(self: &Arc<Self>, node: Node) {
        let state = match node.state() {
            Ok(state) => state,
            Err(e) => {
                warn!(error = %e, "heartbeat ignored");
                return;
            }
        };
        if !fsm::lookup_allowed(state, self.config.fast_track) {
            return;
        }
        let waiting = fsm::is_wait_state(state);
        // Most beats of a fleet at rest (fast track, steps cached) need
        // nothing: no task, no read, no lock; the beat's only write is its own.
        if !waiting
            && node
                .driver_internal_info
                .contains_key(steps_cache::CACHE_KEY)
        {
            return;
        }
        // Bounded as Ironic's worker pool: a storm cannot pile up tasks.
        let Ok(worker) = self.workers.clone().try_acquire_owned() else {
            debug!(node = %node.uuid, "all heartbeat workers busy; the next heartbeat retries");
            return;
        };
        let flows = self.clone();
        tokio::spawn(async move {
            let _worker = worker;
            let uuid = node.uuid.clone();
            if let Err(e) = flows.handle_heartbeat(node, waiting).await {
                warn!(node = %uuid, error = %format!("{e:#}"), "heartbeat handling failed");
            }
        });
    }

    async fn handle_heartbeat(&self, node: Node, waiting: bool) -> anyhow::Result<()> {
        let uuid = node.uuid.clone();
        let uuid = uuid.as_str();
        // An agent that could not be reached is not called again before its
        // backoff ends; in a wait state the beat still counts as progress.
        let backing_off = self.agents.backing_off(&node);
        if let Some(left) = backing_off {
            debug!(node = %uuid, left_s = left.as_secs(), "agent unreachable; not calling it before the backoff ends");
            if !waiting {
                return Ok(());
            }
        }
        let Some(lock) = self.reserve(uuid).await? else {
            debug!(node = %uuid, "node locked; will retry on the next heartbeat");
            return Ok(());
        };
        let outcome = self
            .heartbeat_locked(uuid, node, waiting, backing_off.is_some())
            .await;
        lock.release().await;
        outcome
    }

    /// The beat's work under the node's lock.
    async fn heartbeat_locked(
        &self,
        uuid: &str,
        node: Node,
        waiting: bool,
        backing_off: bool,
    ) -> anyhow::Result<()> {
        // A beat is progress: it pushes the wait timeout back (Ironic's touch_provisioning).
        let node = if waiting {
            self.store
                .update_node::<StoreError, _>(uuid, |n| {
                    n.provision_updated_at = Some(crate::time::api_now());
                    Ok(())
                })
                .await?
        } else {
            node
        };
        if backing_off {
            return Ok(());
        }
        match node.state()? {
            S::CleanWait => cleaning::on_heartbeat(self, &node).await,
            S::DeployWait => deploy::on_heartbeat(self, &node).await,
            S::RescueWait => rescue::on_heartbeat(self, &node).await,
            // Nothing of a flow to drive: keep the agent's clean steps cached.
            S::Enroll
            | S::Verifying
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
            | S::Rescue
            | S::RescueFail
            | S::Unrescuing
            | S::UnrescueFail
            | S::Servicing
            | S::ServiceWait
            | S::ServiceHold
            | S::ServiceFail
            | S::Error
            | S::AdoptFail => {
                if node
                    .driver_internal_info
                    .contains_key(steps_cache::CACHE_KEY)
                {
                    return Ok(());
                }
                steps_cache::refresh_clean_steps(&self.store, &self.agents, uuid, true).await
            }
        }
    }

    /// `POST /v1/continue_inspection` stored the data: finish the
    /// inspection under the node's lock (waiting for it if a heartbeat
    /// holds it), or fail it with the ramdisk's error.
    pub fn inspection_finished(self: &Arc<Self>, uuid: String, ramdisk_error: Option<String>) {
        let flows = self.clone();
        tokio::spawn(async move {
            let mut lock = None;
            for _ in 0..300 {
                match flows.reserve(&uuid).await {
                    Ok(Some(l)) => {
                        lock = Some(l);
                        break;
                    }
                    Ok(None) => tokio::time::sleep(Duration::from_millis(100)).await,
                    Err(e) => {
                        warn!(node = %uuid, error = %e, "cannot lock the node to finish inspection");
                        return;
                    }
                }
            }
            let Some(lock) = lock else {
                warn!(node = %uuid, "node stayed locked; inspection result left for the timeout");
                return;
            };
            let outcome = match ramdisk_error {
                Some(err) => transition::fail(&flows, &uuid, &err)
                    .await
                    .map(|_| ())
                    .map_err(anyhow::Error::from),
                None => flows.inspection_done(&uuid).await,
            };
            if let Err(e) = outcome {
                warn!(node = %uuid, error = %format!("{e:#}"), "finishing inspection failed");
            }
            lock.release().await;
        });
    }

    /// Inspection data is in: power off (unless fast track keeps the
    /// ramdisk) and move to manageable. Called with the lock held.
    async fn inspection_done(&self, uuid: &str) -> anyhow::Result<()> {
        let node = self.store.get_node(uuid).await?;
        if !matches!(node.state()?, S::InspectWait | S::Inspecting) {
            return Ok(());
        }
        if !self.config.fast_track {
            power::set_power(self, &node, crate::power::PowerAction::Off).await?;
        }
        transition::fire(self, uuid, Event::Done, |n| {
            n.inspection_finished_at = Some(crate::time::api_now());
        })
        .await?;
        Ok(())
    }

    /// Fail nodes in wait states whose agent stopped calling back.
    pub async fn check_timeouts(&self) -> anyhow::Result<()> {
        let waiting = NodeQuery::in_states(&fsm::WAIT_STATES);
        for node in self.store.list_nodes(&waiting).await? {
            if !self.cluster.owns(&node) || self.timeout_message(&node).is_none() {
                continue;
            }
            let Some(lock) = self.reserve(&node.uuid).await? else {
                continue;
            };
            // Decide on the node as it is under the lock: a heartbeat may
            // have come, or a flow moved it on, since the list was read.
            let outcome = match self.store.get_node(&node.uuid).await {
                Ok(node) => self.time_out(&node).await,
                Err(e) => Err(e.into()),
            };
            lock.release().await;
            outcome?;
        }
        Ok(())
    }

    /// The `last_error` of a node whose wait has run out, if it has.
    fn timeout_message(&self, node: &Node) -> Option<String> {
        // An unknown state has no timeout of ours; the flows refuse it elsewhere.
        let state = node.state().ok()?;
        let (limit, message) = match state {
            S::DeployWait => (
                self.config.deploy_callback_timeout,
                format!("Timeout reached while waiting for callback for node {}", node.uuid),
            ),
            S::CleanWait => (
                self.config.clean_callback_timeout,
                "Timeout reached while cleaning the node. Please check if the ramdisk responsible for the cleaning is running on the node.".to_string(),
            ),
            S::InspectWait => (
                self.config.inspect_wait_timeout,
                "Timeout reached while inspecting the node".to_string(),
            ),
            S::RescueWait => (self.config.rescue_callback_timeout, String::new()),
            S::Enroll
            | S::Verifying
            | S::Manageable
            | S::Available
            | S::Deploying
            | S::Active
            | S::DeployFail
            | S::Deleting
            | S::Cleaning
            | S::CleanFail
            | S::Inspecting
            | S::InspectFail
            | S::Rescuing
            | S::Rescue
            | S::RescueFail
            | S::Unrescuing
            | S::UnrescueFail
            | S::Servicing
            | S::ServiceWait
            | S::ServiceHold
            | S::ServiceFail
            | S::Error
            | S::AdoptFail => return None,
        };
        let updated = crate::time::parse_api(node.provision_updated_at.as_deref()?)?;
        let now = chrono::Utc::now().naive_utc();
        if (now - updated).num_seconds() < limit as i64 {
            return None;
        }
        let step = if state == S::CleanWait && !node.clean_step.is_empty() {
            format!(
                " Failed on step {}.",
                Value::Object(node.clean_step.clone())
            )
        } else {
            String::new()
        };
        Some(format!("{message}{step}"))
    }

    /// Fail a timed-out node (called with its lock held).
    async fn time_out(&self, node: &Node) -> anyhow::Result<()> {
        let Some(message) = self.timeout_message(node) else {
            return Ok(());
        };
        warn!(node = %node.uuid, state = %node.provision_state, "callback timeout");
        if node.state()? == S::RescueWait {
            return rescue::timed_out(self, node).await;
        }
        transition::fail(self, &node.uuid, &message).await?;
        if let Err(e) = power::set_power(self, node, crate::power::PowerAction::Off).await {
            warn!(node = %node.uuid, error = %e, "power off after timeout failed");
        }
        Ok(())
    }

    /// Periodic work: wait timeouts, power-state sync and power-failure
    /// recovery.
    pub fn spawn_periodic(self: &Arc<Self>) {
        // Periodic work runs on the nodes this conductor owns by the ring.
        let cluster = self.cluster.clone();
        power_sync::spawn(self, Arc::new(move |node: &Node| cluster.owns(node)));
        let every = Duration::from_secs(self.config.periodic_interval.max(1));
        let flows = self.clone();
        crate::periodic::spawn_every("timeout check", Duration::ZERO, every, move || {
            let flows = flows.clone();
            async move { flows.check_timeouts().await }
        });
        let flows = self.clone();
        let retry = Duration::from_secs(2);
        crate::periodic::spawn_every("lock release retry", retry, retry, move || {
            let flows = flows.clone();
            async move { flows.locks.retry_releases(&flows.store, &flows.host).await }
        });
        let flows = self.clone();
        crate::periodic::spawn_every("orphan reservation check", every, every, move || {
            let flows = flows.clone();
            async move { flows.take_over_orphans().await }
        });
    }

    /// After a restart: flows that were between steps continue. Wait
    /// states continue on the next heartbeat by themselves.
    pub async fn resume_interrupted(self: &Arc<Self>) -> anyhow::Result<()> {
        let between_steps = NodeQuery::in_states(&fsm::TRANSIENT_STATES);
        for node in self.store.list_nodes(&between_steps).await? {
            if self.cluster.owns(&node) {
                self.resume(node).await?;
            }
        }
        Ok(())
    }

    /// Continue one node's flow if it stopped between steps (a transient
    /// state with nobody holding the node).
    async fn resume(self: &Arc<Self>, node: Node) -> anyhow::Result<()> {
        if node.fault.as_deref() == Some(crate::store::CORRUPT_FAULT) {
            return Ok(());
        }
        match node.state() {
            Ok(state) if fsm::is_transient(state) => {}
            Ok(_) => return Ok(()),
            // Not a flow this conductor knows how to continue.
            Err(e) => {
                warn!(error = %e, "not resuming");
                return Ok(());
            }
        }
        let Some(lock) = self.reserve(&node.uuid).await? else {
            return Ok(());
        };
        // Re-read under the lock: the snapshot may be stale.
        let node = self.store.get_node(&node.uuid).await?;
        self.ensure_agent_certificate(&node).await?;
        info!(node = %node.uuid, state = %node.provision_state, "resuming an interrupted flow");
        let flows = self.clone();
        tokio::spawn(async move {
            let uuid = node.uuid.clone();
            let resumed = match node.state() {
                Ok(S::Deploying) if deploy::finishing(&node) => deploy::finish(&flows, &node).await,
                Ok(S::Cleaning) if cleaning::finishing(&node) => {
                    cleaning::finish(&flows, &node).await
                }
                Ok(state) if fsm::is_transient(state) => flows.begin(&uuid, Event::Resume).await,
                // Moved on while we waited for the lock.
                Ok(_) => Ok(()),
                Err(e) => Err(e.into()),
            };
            if let Err(e) = resumed {
                warn!(node = %uuid, error = %format!("{e:#}"), "resume failed");
            }
            lock.release().await;
        });
        Ok(())
    }

    /// Ironic's `_check_orphan_nodes`: on the nodes this conductor owns,
    /// free the reservations of conductors that died, record it, and
    /// continue a flow the dead one left between steps.
    pub async fn take_over_orphans(self: &Arc<Self>) -> anyhow::Result<()> {
        for node in self.store.reserved_nodes().await? {
            let Some(holder) = node.reservation.clone() else {
                continue;
            };
            if holder == self.host || !self.cluster.is_dead(&holder) || !self.cluster.owns(&node) {
                continue;
            }
            // A compare-and-set on the holder and its death: if it came
            // back in between (the ring view may be seconds old), or let
            // go, this changes nothing.
            if !self
                .store
                .release_orphan(&node.uuid, &holder, self.cluster.alive_after_us())
                .await?
            {
                continue;
            }
            warn!(node = %node.uuid, dead = %holder, "took over the reservation of a dead conductor");
            self.store
                .record_event(
                    &node.uuid,
                    "INFO",
                    "TAKEOVER",
                    &format!(
                        "Forcibly removed reservation of conductor {holder} on node {}",
                        node.uuid
                    ),
                    &self.host,
                )
                .await?;
            if node.target_power_state.is_some() {
                self.store
                    .update_node::<StoreError, _>(&node.uuid, |n| {
                        n.target_power_state = None;
                        n.last_error = Some(
                            "Pending power operation was aborted due to conductor take over".into(),
                        );
                        Ok(())
                    })
                    .await?;
            }
            let node = self.store.get_node(&node.uuid).await?;
            self.resume(node).await?;
        }
        Ok(())
    }
}
