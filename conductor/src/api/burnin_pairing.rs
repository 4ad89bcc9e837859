//! Ferrite's pairing endpoints for `burnin_network` (IPA agents use a
//! tooz backend instead; see `crate::pairing`). Agents authenticate as
//! they do for heartbeats: the node's UUID and its agent token.
//!
//! `POST /v1/ferrite/network-burnin/pair`
//! `{"node_uuid", "agent_token", "group", "address", "wait"}` answers
//! `{"status": "paired", "role", "partner", "partner_node"}` or, after
//! `wait` seconds (at most 25) without a partner, `{"status": "waiting"}`:
//! ask again. `POST /v1/ferrite/network-burnin/leave`
//! `{"node_uuid", "agent_token", "group"}` answers 204.

use std::net::IpAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use super::error::{parse_body, ApiError, ApiResult};
use super::ramdisk::{tokens_match, TOKEN_KEY};
use super::AppState;
use crate::fsm;
use crate::pairing::Answer;
use crate::provision_state::NodeStates;

#[derive(Deserialize)]
struct Member {
    node_uuid: String,
    agent_token: String,
    group: String,
}

#[derive(Deserialize)]
struct PairRequest {
    #[serde(flatten)]
    member: Member,
    /// Where the partner should connect: the agent's own address.
    address: IpAddr,
    /// Seconds to wait for a partner in this request.
    #[serde(default)]
    wait: u64,
}

pub async fn pair(State(state): State<AppState>, body: Bytes) -> ApiResult<Json<Answer>> {
    let req: PairRequest = parse_body(&body)?;
    let node = authenticate(&state, &req.member).await?;
    // Answer well before the server's own request timeout cuts us off.
    let cap = Duration::from_secs(state.config.request_timeout.saturating_sub(5).max(1));
    let answer = state
        .pairing
        .pair(
            &req.member.group,
            &node,
            req.address,
            Duration::from_secs(req.wait).min(cap),
        )
        .await;
    Ok(Json(answer))
}

pub async fn leave(State(state): State<AppState>, body: Bytes) -> ApiResult<StatusCode> {
    let member: Member = parse_body(&body)?;
    let node = authenticate(&state, &member).await?;
    if state.pairing.leave(&member.group, &node) {
        tracing::info!(node, group = %member.group, "left the network burn-in group");
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The node's UUID, if the token is its agent's and a ramdisk may be
/// running on it.
async fn authenticate(state: &AppState, member: &Member) -> ApiResult<String> {
    if member.group.is_empty() || member.group.len() > 255 {
        return Err(ApiError::bad_request(
            "group must be between 1 and 255 characters",
        ));
    }
    let node = state.store.get_node(&member.node_uuid).await?;
    let expected = node
        .driver_internal_info
        .get(TOKEN_KEY)
        .and_then(Value::as_str);
    if !tokens_match(expected, Some(&member.agent_token)) {
        return Err(ApiError::bad_request(
            "Invalid or missing agent token received.",
        ));
    }
    // A state this conductor does not know runs no agent of its flows.
    let fast_track = state.config.fast_track;
    if !node
        .state()
        .is_ok_and(|s| fsm::lookup_allowed(s, fast_track))
    {
        return Err(ApiError::conflict(format!(
            "Node {} is in provision state {}, where no agent runs",
            node.uuid, node.provision_state
        )));
    }
    Ok(node.uuid)
}
