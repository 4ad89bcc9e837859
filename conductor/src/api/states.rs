//! Node actions: `PUT .../states/provision` (the verbs), `PUT
//! .../states/power`, `.../management/boot_device`, and `GET .../validate`.

use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::error::{parse_body, ApiError, ApiResult};
use super::version::Requested;
use super::AppState;
use crate::flows::rescue::RescuePassword;
use crate::flows::{ActionArgs, RequestError};
use crate::fsm::{self, Event};
use crate::power::{BootDevice, PowerAction, PowerDriver};
use crate::store::StoreError;

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::Locked { node, host } => ApiError::node_locked(&node, &host),
            e @ RequestError::RescueFailure { .. } => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            }
            RequestError::Store(s) => s.into(),
            RequestError::Transition(crate::flows::transition::TransitionError::Store(s)) => {
                s.into()
            }
            // A stored state this conductor does not know is its fault, not the caller's.
            RequestError::Transition(e @ crate::flows::transition::TransitionError::State(_)) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            }
            _ => ApiError::bad_request(e.to_string()),
        }
    }
}

fn accepted(uuid: &str, base: &str) -> Response {
    (
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("{base}/v1/nodes/{uuid}/states"))],
    )
        .into_response()
}

/// Ironic's `MIN_VERB_VERSIONS` for the verbs gated here: the rescue
/// interface came with API 1.38.
fn min_minor(event: Event) -> u32 {
    match event {
        Event::Rescue | Event::Unrescue => 38,
        _ => 0,
    }
}

pub async fn provision(
    State(state): State<AppState>,
    Extension(Requested(version)): Extension<Requested>,
    Path(ident): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let body: Map<String, Value> = parse_body(&body)?;
    let target = body
        .get("target")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("Missing mandatory field: target"))?;
    let event = Event::from_target(target).ok_or_else(|| {
        ApiError::bad_request(format!(
            "Invalid input for field/attribute target. Value: '{target}'. Value should be one of: {}",
            fsm::API_TARGETS.join(", ")
        ))
    })?;
    if version.minor < min_minor(event) {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "Request not acceptable.",
        ));
    }
    // Parsed once here; the text is never logged (`RescuePassword` hides it).
    let rescue_password = match body.get("rescue_password") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(RescuePassword::new(text)),
        Some(_) => {
            return Err(ApiError::bad_request(
                "Invalid input for field/attribute rescue_password. Value should be a string",
            ))
        }
    };
    if rescue_password.is_some() && event != Event::Rescue {
        return Err(ApiError::bad_request(
            "\"rescue_password\" is only valid when setting target provision state to rescue",
        ));
    }
    let mut configdrive = body.get("configdrive").filter(|v| !v.is_null()).cloned();
    if configdrive.is_some() && !matches!(event, Event::Deploy | Event::Rebuild) {
        return Err(ApiError::bad_request(
            "Adding a config drive is only supported when setting provision state to active or rebuild",
        ));
    }
    if let Some(cd) = &configdrive {
        crate::configdrive::validate(cd).map_err(|e| ApiError::bad_request(e.to_string()))?;
        // A JSON config drive becomes the ISO the agent writes, as Ironic builds it.
        if let Value::Object(map) = cd {
            let node = state.store.get_node(&ident).await?;
            let map = map.clone();
            let built =
                tokio::task::spawn_blocking(move || crate::configdrive::build(&node.uuid, &map))
                    .await
                    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
                    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            configdrive = Some(Value::String(built));
        }
    }
    let clean_steps = match body.get("clean_steps") {
        None | Some(Value::Null) => None,
        Some(Value::Array(steps)) => Some(steps.clone()),
        Some(_) => return Err(ApiError::bad_request("clean_steps must be a list")),
    };
    match (event, &clean_steps) {
        (Event::Clean, None) => {
            return Err(ApiError::bad_request(
                "\"clean_steps\" is required when setting target provision state to clean",
            ))
        }
        (Event::Clean, Some(steps)) => validate_clean_steps(steps)?,
        (_, Some(_)) => {
            return Err(ApiError::bad_request(
                "\"clean_steps\" is only valid when setting target provision state to clean",
            ))
        }
        _ => {}
    }
    let deploy_steps = deploy_steps_arg(&body, target, version.minor)?;
    let args = ActionArgs {
        configdrive,
        clean_steps,
        rescue_password: rescue_password.flatten(),
        deploy_steps,
    };
    let node = state.flows.request(&ident, event, args).await?;
    Ok(accepted(&node.uuid, &state.config.public_url()))
}

/// `deploy_steps` (API 1.69), checked as Ironic's API does: a list, only
/// with `active`/`rebuild`, then the schema. An empty list is no list.
fn deploy_steps_arg(
    body: &Map<String, Value>,
    target: &str,
    minor: u32,
) -> ApiResult<Option<Vec<Value>>> {
    let steps = match body.get("deploy_steps") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(steps)) if steps.is_empty() => return Ok(None),
        Some(Value::Array(steps)) => steps,
        Some(other) => {
            let shown = match other {
                Value::String(s) => s.clone(),
                v => crate::pyrepr::repr(v),
            };
            return Err(ApiError::bad_request(format!(
                "Expected types <class 'NoneType'>, <class 'list'> for deploy_steps: {shown}"
            )));
        }
    };
    if minor < 69 {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "Request not acceptable. The minimal required API version should be 1.69",
        ));
    }
    // Ironic compares the target itself: the `deploy` alias is refused.
    if !matches!(target, "active" | "rebuild") {
        return Err(ApiError::bad_request(
            "\"deploy_steps\" is only valid when setting target provision state to active or rebuild",
        ));
    }
    super::deploy_steps::check(steps).map_err(ApiError::bad_request)?;
    Ok(Some(super::deploy_steps::normalize(steps)))
}

/// Ironic's clean step schema: interface and step required, args an object.
fn validate_clean_steps(steps: &[Value]) -> ApiResult<()> {
    for s in steps {
        let obj = s.as_object().ok_or_else(|| {
            ApiError::bad_request(format!("Invalid clean step {s}: not an object"))
        })?;
        let interface = obj.get("interface").and_then(Value::as_str);
        if !matches!(
            interface,
            Some("power" | "management" | "deploy" | "bios" | "raid" | "firmware")
        ) {
            return Err(ApiError::bad_request(format!(
                "Invalid clean step {s}: 'interface' must be one of power, management, deploy, bios, raid, firmware"
            )));
        }
        if obj
            .get("step")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(ApiError::bad_request(format!(
                "Invalid clean step {s}: 'step' is a required property"
            )));
        }
        if obj.get("args").is_some_and(|a| !a.is_object()) {
            return Err(ApiError::bad_request(format!(
                "Invalid clean step {s}: 'args' must be an object"
            )));
        }
    }
    Ok(())
}

pub async fn power(
    State(state): State<AppState>,
    Path(ident): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let body: Map<String, Value> = parse_body(&body)?;
    let target = body
        .get("target")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let action = PowerAction::from_target(target).ok_or_else(|| {
        ApiError::bad_request(format!(
            "Invalid input for field/attribute target. Value: '{target}'. Value should be one of: power on, power off, rebooting, soft power off, soft rebooting"
        ))
    })?;
    let node = state.flows.request_power(&ident, action).await?;
    Ok(accepted(&node.uuid, &state.config.public_url()))
}

pub async fn get_boot_device(
    State(state): State<AppState>,
    Path(ident): Path<String>,
) -> ApiResult<Json<Value>> {
    let node = state.store.get_node(&ident).await?;
    let current = node
        .driver_internal_info
        .get("boot_device")
        .cloned()
        .unwrap_or(json!({"boot_device": null, "persistent": null}));
    Ok(Json(current))
}

pub async fn set_boot_device(
    State(state): State<AppState>,
    Path(ident): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let body: Map<String, Value> = parse_body(&body)?;
    let name = body
        .get("boot_device")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let device = BootDevice::parse(name).ok_or_else(|| {
        ApiError::bad_request(format!(
            "Invalid boot device {name}, valid boot devices are: pxe, disk, cdrom, bios, safe"
        ))
    })?;
    let persistent = body
        .get("persistent")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    state
        .flows
        .request_boot_device(&ident, device, persistent)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/nodes/{id}/validate`: per interface `{result, reason}`.
pub async fn validate(
    State(state): State<AppState>,
    Path(ident): Path<String>,
) -> ApiResult<Json<Value>> {
    let node = state.store.get_node(&ident).await?;
    let ok = || json!({"result": true});
    let bad = |reason: String| json!({"result": false, "reason": reason});
    let power = match PowerDriver::for_node(&node) {
        Ok(_) => ok(),
        Err(e) => bad(e.to_string()),
    };
    let deploy = match crate::flows::validate_deploy(&node, &state.config.file_url_allowed_paths) {
        Ok(()) => ok(),
        Err(e) => bad(e),
    };
    let boot = if node.driver_info.get("deploy_kernel").is_some()
        || state
            .config
            .boot_dir()
            .join(crate::boot::KERNEL_FILE)
            .exists()
    {
        ok()
    } else {
        bad(format!(
            "Cannot validate PXE bootloader: no driver_info deploy_kernel/deploy_ramdisk and no {} in {}",
            crate::boot::KERNEL_FILE,
            state.config.boot_dir().display()
        ))
    };
    let unsupported = |what: &str| json!({"result": null, "reason": format!("not supported: {what} interface is no-{what}")});
    Ok(Json(json!({
        "boot": boot,
        "console": unsupported("console"),
        "deploy": deploy,
        "inspect": ok(),
        "management": power.clone(),
        "network": ok(),
        "power": power,
        "raid": ok(),
        "rescue": if node.rescue_interface.as_deref() == Some(crate::drivers::AGENT_RESCUE) {
            match crate::boot::images::rescue_references(&node, &state.config) {
                Ok(_) => ok(),
                Err(missing) => bad(missing),
            }
        } else {
            unsupported("rescue")
        },
        "storage": ok(),
        "bios": unsupported("bios"),
    })))
}

/// `PUT /v1/nodes/{id}/maintenance` (`{"reason": ...}`) and `DELETE`.
pub async fn set_maintenance(
    State(state): State<AppState>,
    Path(ident): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let body: Map<String, Value> = if body.is_empty() {
        Map::new()
    } else {
        parse_body(&body)?
    };
    let reason = body
        .get("reason")
        .and_then(Value::as_str)
        .map(str::to_string);
    state
        .store
        .update_node::<StoreError, _>(&ident, |n| {
            n.maintenance = true;
            n.maintenance_reason = reason;
            Ok(())
        })
        .await?;
    Ok(StatusCode::ACCEPTED)
}

pub async fn unset_maintenance(
    State(state): State<AppState>,
    Path(ident): Path<String>,
) -> ApiResult<StatusCode> {
    state
        .store
        .update_node::<StoreError, _>(&ident, |n| {
            n.maintenance = false;
            n.maintenance_reason = None;
            n.fault = None;
            Ok(())
        })
        .await?;
    Ok(StatusCode::ACCEPTED)
}
