//! The endpoints ramdisks call: `GET /v1/lookup` and
//! `POST /v1/heartbeat/{node}`, with Ironic's validation rules.

use std::collections::{BTreeSet, HashMap};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use base64::Engine;
use ferrite_protocol::lookup::MASKED_TOKEN;
use ferrite_protocol::node::{normalize_mac, Link, Node};
use ferrite_protocol::{ApiVersion, HeartbeatRequest, LookupConfig, LookupNode, LookupResponse};
use rand::RngCore;
use serde_json::{json, Value};
use tracing::{debug, info};

use super::error::{parse_body, ApiError, ApiResult};
use super::inspection;
use super::node_lock::{unlocked, update_unlocked};
use super::version::Requested;
use super::views::mask_node_secrets;
use super::AppState;
use crate::agent_session::{self, AgentSession, Beat};
use crate::fsm;
use crate::provision_state::NodeStates;
use crate::time::internal_now;

pub(super) const TOKEN_KEY: &str = agent_session::TOKEN;

fn endpoint_exists(version: ApiVersion) -> ApiResult<()> {
    if version < ApiVersion::RAMDISK_ENDPOINTS {
        return Err(ApiError::not_found("The resource could not be found."));
    }
    Ok(())
}

/// Ironic's `secrets.token_urlsafe()`: 32 random bytes, 43 characters.
fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub async fn lookup(
    State(state): State<AppState>,
    Extension(Requested(version)): Extension<Requested>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<Json<LookupResponse>> {
    // Told apart for the metrics only: the agent sees the same 404.
    let mut refused = false;
    let found = find(&state, version, &params, &mut refused).await;
    state.metrics.lookup(match &found {
        Ok(_) => "found",
        Err(_) if refused => "refused",
        Err(e) => match e.status {
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::CONFLICT => "refused",
            s if s.is_client_error() => "invalid",
            _ => "error",
        },
    });
    found
}

async fn find(
    state: &AppState,
    version: ApiVersion,
    params: &HashMap<String, String>,
    refused: &mut bool,
) -> ApiResult<Json<LookupResponse>> {
    endpoint_exists(version)?;
    let macs: Vec<String> = params
        .get("addresses")
        .map(|a| a.split(',').filter_map(normalize_mac).collect())
        .unwrap_or_default();
    // A UUID only: a name would let anyone who can guess one look it up.
    let node_uuid = params
        .get("node_uuid")
        .filter(|u| !u.is_empty())
        .map(|u| {
            uuid::Uuid::parse_str(u)
                .map(|u| u.to_string())
                .map_err(|_| ApiError::bad_request(format!("Expected a UUID for node_uuid: {u}")))
        })
        .transpose()?;
    if macs.is_empty() && node_uuid.is_none() {
        return Err(ApiError::bad_request(
            "Incomplete lookup request: at least one valid MAC address in 'addresses' or a 'node_uuid' is required",
        ));
    }
    // Deliberately the same 404 for "no such node" and "not allowed now".
    let not_found = || ApiError::not_found("The resource could not be found.");
    let uuid = match &node_uuid {
        Some(uuid) => {
            state
                .store
                .get_node(uuid)
                .await
                .map_err(|_| not_found())?
                .uuid
        }
        None => {
            let mut owners = BTreeSet::new();
            for mac in &macs {
                if let Some(port) = state.store.port_by_address(mac).await? {
                    owners.insert(port.node_uuid);
                }
            }
            match owners.len() {
                1 => owners.into_iter().next().ok_or_else(not_found)?,
                _ => return Err(not_found()),
            }
        }
    };
    let cfg = &state.config;
    let node = state.store.get_node(&uuid).await?;
    // An unknown state is no state a ramdisk may look itself up in.
    if cfg.restrict_lookup
        && !node
            .state()
            .is_ok_and(|s| fsm::lookup_allowed(s, cfg.fast_track))
    {
        debug!(node = %uuid, state = %node.provision_state, "lookup refused in this state");
        *refused = true;
        return Err(not_found());
    }

    // The token goes only to a caller that shows one of the node's MACs:
    // a UUID is not a secret (it is in logs, URLs and the boot script).
    let issue = owns_a_mac(state, &uuid, &macs).await?;
    Ok(Json(node_with_token(state, &uuid, version, issue).await?))
}

/// Whether one of `macs` is a port of the node.
async fn owns_a_mac(state: &AppState, uuid: &str, macs: &[String]) -> ApiResult<bool> {
    for mac in macs {
        if state
            .store
            .port_by_address(mac)
            .await?
            .is_some_and(|p| p.node_uuid == uuid)
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The token for the lookup's answer, under the node's lock as Ironic's
/// `get_node_with_token`: issued once per ramdisk boot when `issue`, a mask
/// to later lookups.
async fn take_token(
    state: &AppState,
    uuid: &str,
    issue: bool,
) -> ApiResult<(Node, Option<String>)> {
    // Made before the update, which may be tried more than once; the node
    // keeps it only if it had no token.
    let fresh = new_token();
    let node = update_unlocked(state, uuid, |n| {
        if !n.driver_internal_info.contains_key(TOKEN_KEY) {
            if issue {
                n.driver_internal_info
                    .insert(TOKEN_KEY.into(), Value::String(fresh.clone()));
                info!(node = %n.uuid, "agent token issued");
            } else {
                info!(node = %n.uuid, "lookup without a MAC of the node: no agent token");
            }
        }
        Ok(())
    })
    .await?;
    let token = match node.driver_internal_info.get(TOKEN_KEY) {
        Some(Value::String(t)) if *t == fresh => Some(fresh),
        Some(_) => Some(MASKED_TOKEN.to_string()),
        None => None,
    };
    Ok((node, token))
}

/// Ironic's `get_node_with_token` + `convert_with_links`: the lookup body,
/// issuing the agent token on first use (a mask afterwards) when `issue`.
async fn node_with_token(
    state: &AppState,
    uuid: &str,
    version: ApiVersion,
    issue: bool,
) -> ApiResult<LookupResponse> {
    let cfg = &state.config;
    let (node, token) = if version >= ApiVersion::AGENT_TOKEN {
        take_token(state, uuid, issue).await?
    } else {
        (state.store.get_node(uuid).await?, None)
    };

    let mut masked = serde_json::to_value(&node)
        .ok()
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default();
    mask_node_secrets(&mut masked);
    let take = |key: &str| {
        masked
            .get(key)
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    };
    let base = cfg.public_url();
    Ok(LookupResponse {
        node: LookupNode {
            uuid: node.uuid.clone(),
            properties: take("properties"),
            instance_info: take("instance_info"),
            driver_internal_info: take("driver_internal_info"),
            links: vec![
                Link::new(format!("{base}/v1/nodes/{}", node.uuid), "self"),
                Link::new(format!("{base}/nodes/{}", node.uuid), "bookmark"),
            ],
        },
        config: Some(LookupConfig {
            metrics: json!({"backend": "noop", "prepend_host": false, "prepend_uuid": false,
                            "prepend_host_reverse": true, "global_prefix": null}),
            metrics_statsd: json!({"statsd_host": "localhost", "statsd_port": 8125}),
            heartbeat_timeout: cfg.heartbeat_timeout as f64,
            agent_containers: json!({"allow_arbitrary_containers": false, "allowed_containers": [],
                                     "runner": "podman", "pull_options": [],
                                     "run_options": ["--rm", "--network=host"]}),
            agent_token: token,
            agent_token_required: true,
            agent_md5_checksum_enable: true,
            disable_deep_image_inspection: cfg.disable_deep_image_inspection,
            permitted_image_formats: Some(cfg.permitted_image_formats.clone()),
            agent_skip_bmc_detect: false,
            enable_bios_bootloader_install: cfg.enable_bios_bootloader_install,
            tls_min_version: Some("1.3".into()),
            tls_cipher_suites: None,
        }),
        heartbeat_timeout: None,
    })
}

/// `POST /v1/continue_inspection[?node_uuid=]`: at 1.1 (no header, the
/// ironic-inspector-compatible form, answering `{"uuid"}`) or ≥ 1.84
/// (answering like lookup, token included).
pub async fn continue_inspection(
    State(state): State<AppState>,
    Extension(Requested(version)): Extension<Requested>,
    Query(params): Query<HashMap<String, String>>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let new_style = version >= ApiVersion::CONTINUE_INSPECTION;
    let node_uuid = params.get("node_uuid").filter(|u| !u.is_empty());
    let allowed = if new_style {
        true
    } else {
        version == ApiVersion::new(1, 1) && node_uuid.is_none()
    };
    if !allowed {
        return Err(ApiError::not_found(format!(
            "API version {} or newer is required",
            ApiVersion::CONTINUE_INSPECTION
        )));
    }
    if let Some(uuid) = node_uuid {
        if uuid::Uuid::parse_str(uuid).is_err() {
            return Err(ApiError::bad_request(format!(
                "Expected a UUID for node_uuid: {uuid}"
            )));
        }
    }
    let mut data: Value = parse_body(&body)?;
    inspection::validate(&data)?;
    let inventory = data
        .as_object_mut()
        .and_then(|d| d.remove("inventory"))
        .unwrap_or_default();
    let macs = inspection::inventory_macs(&inventory);
    let bmc: Vec<String> = ["bmc_address", "bmc_v6address"]
        .iter()
        .filter_map(|k| inventory[*k].as_str())
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect();
    if macs.is_empty() && bmc.is_empty() && node_uuid.is_none() {
        return Err(ApiError::bad_request("No lookup information provided"));
    }
    let node =
        crate::inspection::lookup_node(&state.store, &macs, &bmc, node_uuid.map(String::as_str))
            .await?;
    let node = unlocked(&state, node).await?;
    // As Ironic: the token is taken before the (possibly long) processing.
    let answer = if new_style {
        // As lookup: the token only for a ramdisk that shows the node's
        // MACs or its BMC address, not for one that just names its UUID.
        let issue = owns_a_mac(&state, &node.uuid, &macs).await?
            || crate::inspection::bmc_matches(&node, &bmc);
        serde_json::to_value(node_with_token(&state, &node.uuid, version, issue).await?)
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    } else {
        json!({ "uuid": node.uuid })
    };
    let ramdisk_error = data["error"]
        .as_str()
        .filter(|e| !e.is_empty())
        .map(|e| format!("Ramdisk reported error: {e}"));
    crate::inspection::process(
        &state.store,
        state.config.inspector_add_ports,
        &node,
        inventory,
        data,
    )
    .await?;
    // The state machine moves on in the background: inspect wait →
    // manageable (or inspect failed), power off as Ironic's [inspector]power_off.
    state
        .flows
        .inspection_finished(node.uuid.clone(), ramdisk_error);
    Ok((StatusCode::ACCEPTED, Json(answer)))
}

pub async fn heartbeat(
    State(state): State<AppState>,
    Extension(Requested(version)): Extension<Requested>,
    Path(ident): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let beat = take_beat(&state, version, ident, &body).await;
    state.metrics.heartbeat(match &beat {
        Ok(result) => result,
        Err(e) if e.status.is_client_error() => "refused",
        Err(_) => "error",
    });
    beat.map(|_| StatusCode::ACCEPTED)
}

/// A heartbeat's work: `accepted`, or `ignored` in a state that expects none.
async fn take_beat(
    state: &AppState,
    version: ApiVersion,
    ident: String,
    body: &Bytes,
) -> ApiResult<&'static str> {
    endpoint_exists(version)?;
    let hb: HeartbeatRequest = parse_body(body)?;
    let scheme = url::Url::parse(&hb.callback_url)
        .map(|u| u.scheme().to_string())
        .unwrap_or_default();
    if !scheme.starts_with("http") {
        return Err(ApiError::bad_request(format!(
            "Invalid callback_url {:?}: it must be http(s)",
            hb.callback_url
        )));
    }
    let certs = state.config.certificates_dir();
    // The certificate the node's agent sent before, as any conductor
    // recorded it; compared under the node's row lock below.
    // Agents beat on their node's UUID (the path IPA builds), so the
    // certificate is looked up by it directly: one read, not two.
    let stored_pem = match &hb.agent_verify_ca {
        Some(_) => state.store.agent_certificate(&ident).await?,
        None => None,
    };
    // This conductor's file copy, read before the transaction: no file
    // I/O while the node's row is locked.
    let cached_pem = hb
        .agent_verify_ca
        .as_ref()
        .and_then(|_| crate::agent_certs::read_cache(&certs, &ident));
    let require_tls = state.config.require_tls;
    let fast_track = state.config.fast_track;
    let updated = state
        .store
        .update_node::<ApiError, _>(&ident, |node| {
            let session = AgentSession::of(node);
            let recorded_url = session.url.clone();
            if recorded_url.is_none() {
                if let Some(holder) = &node.reservation {
                    return Err(ApiError::node_locked(&node.uuid, holder));
                }
            }
            if !tokens_match(session.token.as_deref(), hb.agent_token.as_deref()) {
                return Err(ApiError::bad_request(
                    "Invalid or missing agent token received.",
                ));
            }
            // Ironic's heartbeat_allowed: a beat in a state that expects none
            // is answered (202) but changes nothing.
            if !node
                .state()
                .is_ok_and(|s| fsm::lookup_allowed(s, fast_track))
            {
                return Err(ignored_heartbeat());
            }
            if hb.agent_version.is_none() && hb.agent_status.is_none() {
                return Err(ApiError::bad_request(
                    "Agent did not transmit a version (agent_version is required)",
                ));
            }
            if require_tls && scheme != "https" {
                return Err(ApiError::bad_request("TLS is required by configuration"));
            }
            if recorded_url.as_ref().is_some_and(|u| u != &hb.callback_url) {
                return Err(ApiError::bad_request(
                    "Detected change in ramdisk provided callback_url",
                ));
            }
            let mut verify_ca = None;
            if let Some(pem) = &hb.agent_verify_ca {
                let recorded = session.verify_ca.is_some();
                let known = stored_pem.clone().or_else(|| cached_pem.clone());
                if recorded && known.as_deref() != Some(pem.as_str()) {
                    return Err(ApiError::bad_request(
                        "Detected change in ramdisk provided agent_verify_ca",
                    ));
                }
                // The file is written once the beat is accepted (below).
                let path = crate::agent_certs::cache_path(&certs, &node.uuid);
                verify_ca = Some(path.to_string_lossy().into_owned());
            }
            Beat {
                url: &hb.callback_url,
                version: hb.agent_version.as_deref(),
                status: hb.agent_status.as_deref(),
                status_message: hb.agent_status_message.as_deref(),
                verify_ca,
                at: internal_now(),
            }
            .record(&mut node.driver_internal_info);
            Ok(())
        })
        .await;
    let node = match updated {
        Err(e) if e.status == StatusCode::ACCEPTED => {
            info!(node = %ident, "heartbeat in a state that expects none: not taking any action");
            return Ok("ignored");
        }
        other => other?,
    };
    if let Some(pem) = hb.agent_verify_ca.as_deref() {
        if stored_pem.as_deref() != Some(pem) {
            state.store.save_agent_certificate(&node.uuid, pem).await?;
        }
        if cached_pem.as_deref() != Some(pem) {
            crate::agent_certs::write_cache(&certs, &node.uuid, pem).map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("storing agent certificate: {e}"),
                )
            })?;
        }
    }
    debug!(node = %node.uuid, state = %node.provision_state, "heartbeat");
    state.flows.on_heartbeat(node);
    Ok("accepted")
}

/// The marker [`heartbeat`] uses to leave the node untouched (never sent).
fn ignored_heartbeat() -> ApiError {
    ApiError::new(StatusCode::ACCEPTED, "heartbeat ignored")
}

/// Compare the agent's token with the stored one in constant time, so that
/// response timing tells nothing about how much of a guess was right.
pub(super) fn tokens_match(expected: Option<&str>, given: Option<&str>) -> bool {
    use subtle::ConstantTimeEq;
    match (expected, given) {
        (Some(e), Some(g)) => e.as_bytes().ct_eq(g.as_bytes()).into(),
        _ => false,
    }
}
