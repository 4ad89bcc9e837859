//! Moving a node through the state machine: one place that sets
//! `provision_state`, `target_provision_state`, `provision_updated_at`
//! and `last_error` together, as Ironic's `process_event` does.

use ferrite_protocol::node::Node;
use tracing::info;

use super::Flows;
use crate::fsm::{self, Event};
use crate::provision_state::{NodeStateError, NodeStates, ProvisionState as S};
use crate::store::StoreError;
use crate::time::api_now;

#[derive(Debug, thiserror::Error)]
pub enum TransitionError {
    #[error("The requested action \"{verb}\" can not be performed on node \"{node}\" while it is in state \"{state}\".")]
    Invalid {
        verb: &'static str,
        node: String,
        state: String,
    },
    /// The stored state is not one this conductor knows.
    #[error(transparent)]
    State(#[from] NodeStateError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Apply `event` to the node in memory; the new state.
pub fn apply(node: &mut Node, event: Event) -> Result<S, TransitionError> {
    let state = node.state()?;
    let next = fsm::next_state(state, event).ok_or_else(|| TransitionError::Invalid {
        verb: event.verb(),
        node: node.uuid.clone(),
        state: node.provision_state.clone(),
    })?;
    // Manual cleaning and its waits keep the target they started with.
    let manual_clean = node.target_state() == Ok(Some(S::Manageable));
    let target = match (next, fsm::target_of(next)) {
        (S::Cleaning | S::CleanWait, Some(S::Available)) if manual_clean => Some(S::Manageable),
        (_, t) => t,
    };
    node.set_state(next);
    node.set_target_state(target);
    node.provision_updated_at = Some(api_now());
    Ok(next)
}

/// Apply `event` in the store, with `also` for the flow's own fields; the
/// change goes into the node's history.
pub async fn fire(
    flows: &Flows,
    uuid: &str,
    event: Event,
    also: impl FnOnce(&mut Node),
) -> Result<Node, TransitionError> {
    let mut moved = None;
    let node = flows
        .store
        .update_node::<TransitionError, _>(uuid, |n| {
            let from = n.state()?;
            let to = apply(n, event)?;
            moved = Some((from, to));
            also(n);
            // Ironic (wipe_deploy/cleaning_internal_info, the error handlers)
            // wipes the agent's token and URL when a flow fails, is aborted or
            // ends in a state that expects no agent, unless it is
            // `fast_track_able` (fast track on, no last_error): a stale agent
            // (or whoever learnt its token) must not drive the node afterwards.
            let ended =
                matches!(event, Event::Fail | Event::Abort) || !fsm::lookup_allowed(to, false);
            let fast_track_able = flows.config.fast_track && n.last_error.is_none();
            if ended && !fast_track_able {
                wipe_token_and_url(n);
            }
            Ok(())
        })
        .await?;
    // Set by the update, which succeeded.
    let Some((from, to)) = moved else {
        return Ok(node);
    };
    info!(node = %uuid, %from, %to, event = event.verb(), "provision state changed");
    observe_flow(flows, uuid, from, to, event);
    let (severity, text) = match (&node.last_error, event) {
        (Some(err), Event::Fail | Event::Abort) => {
            ("ERROR", format!("{err} (provision state {from} -> {to})"))
        }
        _ => (
            "INFO",
            format!(
                "Provision state changed from {from} to {to} ({})",
                event.verb()
            ),
        ),
    };
    if let Err(e) = flows
        .store
        .record_event(uuid, severity, "provisioning", &text, flows.host())
        .await
    {
        tracing::warn!(node = %uuid, error = %e, "could not record node history");
    }
    Ok(node)
}

/// In a flow: between leaving a stable state and reaching the next.
fn in_flow(state: S) -> bool {
    fsm::is_transient(state) || fsm::is_wait_state(state)
}

/// Flow durations for the metrics: a flow is named by the first state it
/// enters, and fails when it ends in a failed state (or by abort).
fn observe_flow(flows: &Flows, uuid: &str, from: S, to: S, event: Event) {
    match (in_flow(from), in_flow(to)) {
        (false, true) => flows.metrics.flow_started(uuid, flow_name(to)),
        (true, false) => {
            let failed = matches!(event, Event::Fail | Event::Abort) || ends_failed(to);
            flows.metrics.flow_ended(uuid, failed);
        }
        _ => {}
    }
}

/// A state a flow ends in when it failed.
fn ends_failed(state: S) -> bool {
    state.is_failure() || state == S::Error
}

fn flow_name(first: S) -> &'static str {
    match first {
        S::Deploying | S::DeployWait => "deploy",
        S::Cleaning | S::CleanWait => "clean",
        S::Inspecting | S::InspectWait => "inspect",
        S::Rescuing | S::RescueWait => "rescue",
        S::Unrescuing => "unrescue",
        S::Deleting => "undeploy",
        S::Verifying => "verify",
        S::Enroll
        | S::Manageable
        | S::Available
        | S::Active
        | S::DeployFail
        | S::CleanFail
        | S::InspectFail
        | S::Rescue
        | S::RescueFail
        | S::UnrescueFail
        | S::Servicing
        | S::ServiceWait
        | S::ServiceHold
        | S::ServiceFail
        | S::Error
        | S::AdoptFail => "other",
    }
}

/// Ironic's `wipe_token_and_url` (and the heartbeat time, so that fast
/// track cannot trust a URL that is gone).
pub fn wipe_token_and_url(node: &mut Node) {
    crate::agent_session::AgentSession::wipe(&mut node.driver_internal_info);
}

/// `fail` with Ironic's `last_error`.
pub async fn fail(flows: &Flows, uuid: &str, error: &str) -> Result<Node, TransitionError> {
    let error = error.to_string();
    tracing::warn!(node = %uuid, %error, "flow failed");
    fire(flows, uuid, Event::Fail, move |n| {
        n.last_error = Some(error);
        n.clean_step.clear();
        n.deploy_step.clear();
        // An image write that failed is no longer in progress.
        n.driver_internal_info.remove(super::deploy::PROGRESS);
    })
    .await
}
