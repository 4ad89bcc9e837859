//! `PUT /v1/nodes/{ident}/states/raid` (API 1.12): the node's
//! `target_raid_config`, checked against Ironic's `raid_config_schema.json`
//! before it is stored; `{}` clears it. The agent's RAID steps read it.

use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use super::error::{parse_body, ApiError, ApiResult};
use super::node_lock::update_unlocked;
use super::version::Requested;
use super::AppState;
use ferrite_protocol::ApiVersion;

const RAID_CONFIG: ApiVersion = ApiVersion::new(1, 12);

const RAID_LEVELS: [&str; 8] = ["0", "1", "2", "5", "6", "1+0", "5+0", "6+0"];

fn invalid(detail: String) -> ApiError {
    ApiError::bad_request(format!("RAID config validation error: {detail}"))
}

/// One logical disk against the schema (required fields, types, enums,
/// no unknown keys).
fn check_logical_disk(i: usize, ld: &Value) -> Result<(), ApiError> {
    let Some(ld) = ld.as_object() else {
        return Err(invalid(format!("logical_disks[{i}] is not an object")));
    };
    for required in ["raid_level", "size_gb"] {
        if !ld.contains_key(required) {
            return Err(invalid(format!(
                "'{required}' is a required property of logical_disks[{i}]"
            )));
        }
    }
    for (key, v) in ld {
        let ok = match key.as_str() {
            "raid_level" => v.as_str().is_some_and(|l| RAID_LEVELS.contains(&l)),
            "size_gb" => v.as_u64().is_some() || v == "MAX",
            "volume_name" | "controller" => v.is_string(),
            "is_root_volume" | "share_physical_disks" => v.is_boolean(),
            "disk_type" => matches!(v.as_str(), Some("hdd" | "ssd")),
            "interface_type" => matches!(v.as_str(), Some("sata" | "scsi" | "sas")),
            "number_of_physical_disks" => v.as_u64().is_some_and(|n| n >= 1),
            "physical_disks" => v.is_array(),
            other => {
                return Err(invalid(format!(
                    "Additional properties are not allowed ('{other}' was unexpected) in logical_disks[{i}]"
                )))
            }
        };
        if !ok {
            return Err(invalid(format!(
                "{v} is not valid for '{key}' in logical_disks[{i}]"
            )));
        }
    }
    Ok(())
}

/// The config as Ironic accepts it: `{}` or `{"logical_disks": [...]}`.
pub fn check(config: &Map<String, Value>) -> Result<(), ApiError> {
    if config.is_empty() {
        return Ok(());
    }
    if let Some(other) = config.keys().find(|k| *k != "logical_disks") {
        return Err(invalid(format!(
            "Additional properties are not allowed ('{other}' was unexpected)"
        )));
    }
    let lds = config["logical_disks"]
        .as_array()
        .ok_or_else(|| invalid("'logical_disks' must be a list".into()))?;
    if lds.is_empty() {
        return Err(invalid("'logical_disks' must not be empty".into()));
    }
    lds.iter()
        .enumerate()
        .try_for_each(|(i, ld)| check_logical_disk(i, ld))
}

pub async fn set_target(
    State(state): State<AppState>,
    Extension(Requested(version)): Extension<Requested>,
    Path(ident): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    if version < RAID_CONFIG {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            format!(
                "Request not acceptable. The minimal required API version should be {RAID_CONFIG}"
            ),
        ));
    }
    let config: Map<String, Value> = parse_body(&body)?;
    check(&config)?;
    update_unlocked(&state, &ident, |n| {
        n.target_raid_config = config.clone();
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(v: Value) -> Result<(), String> {
        check(v.as_object().unwrap()).map_err(|e| format!("{e:?}"))
    }

    #[test]
    fn ironic_schema() {
        run(json!({})).unwrap();
        run(
            json!({"logical_disks": [{"size_gb": "MAX", "raid_level": "1",
            "controller": "software", "is_root_volume": true, "volume_name": "root",
            "physical_disks": [{"name": "/dev/vda"}]}]}),
        )
        .unwrap();
        for (bad, text) in [
            (json!({"logical_disks": []}), "must not be empty"),
            (
                json!({"logical_disks": [{"size_gb": 10}]}),
                "'raid_level' is a required property",
            ),
            (
                json!({"logical_disks": [{"size_gb": 10, "raid_level": "7"}]}),
                "is not valid for 'raid_level'",
            ),
            (
                json!({"logical_disks": [{"size_gb": "ALL", "raid_level": "1"}]}),
                "is not valid for 'size_gb'",
            ),
            (
                json!({"logical_disks": [{"size_gb": 1, "raid_level": "1", "colour": "red"}]}),
                "'colour' was unexpected",
            ),
            (json!({"disks": []}), "'disks' was unexpected"),
        ] {
            let e = run(bad).unwrap_err();
            assert!(e.contains(text), "{e}");
            assert!(e.contains("RAID config validation error"), "{e}");
        }
    }
}
