//! In-band inspection, API level (Ironic's `ContinueInspectionController`):
//! the ramdisk's data checked against Ironic's schema, its MACs, and the
//! stored inventory's endpoint. Finding the node and Ironic's hooks are the
//! domain's (`crate::inspection`); state transitions are the flows'.

use axum::extract::{Path, State};
use axum::{Extension, Json};
use ferrite_protocol::node::normalize_mac;
use ferrite_protocol::ApiVersion;
use serde_json::{json, Value};
use tracing::warn;

use super::error::{ApiError, ApiResult};
use super::version::Requested;
use super::AppState;
use crate::inspection::InspectionError;
/// Python's `repr` of a JSON value, as jsonschema quotes it in messages.
use crate::pyrepr::repr as py_repr;

/// `GET /v1/nodes/{id}/inventory` appeared at 1.81.
const NODE_INVENTORY: ApiVersion = ApiVersion::new(1, 81);

fn not_found() -> ApiError {
    ApiError::not_found("The resource could not be found.")
}

impl From<InspectionError> for ApiError {
    fn from(e: InspectionError) -> Self {
        match e {
            InspectionError::NotFound => not_found(),
            InspectionError::Store(s) => s.into(),
        }
    }
}

fn schema_error(message: String) -> ApiError {
    ApiError::bad_request(format!("Schema error for data: {message}"))
}

/// Ironic's `DATA_VALIDATOR`: a minimal acceptable inventory; anything
/// else in the body is allowed.
pub fn validate(data: &Value) -> ApiResult<()> {
    let Some(body) = data.as_object() else {
        return Err(schema_error(format!(
            "{} is not of type 'object'",
            py_repr(data)
        )));
    };
    let Some(inventory) = body.get("inventory") else {
        return Err(schema_error("'inventory' is a required property".into()));
    };
    let Some(inventory) = inventory.as_object() else {
        return Err(schema_error(format!(
            "{} is not of type 'object'",
            py_repr(inventory)
        )));
    };
    for key in ["bmc_address", "bmc_v6address"] {
        if let Some(v) = inventory
            .get(key)
            .filter(|v| !v.is_null() && !v.is_string())
        {
            return Err(schema_error(format!(
                "{} is not of type 'string', 'null'",
                py_repr(v)
            )));
        }
    }
    let Some(interfaces) = inventory.get("interfaces") else {
        return Err(schema_error("'interfaces' is a required property".into()));
    };
    let Some(list) = interfaces.as_array() else {
        return Err(schema_error(format!(
            "{} is not of type 'array'",
            py_repr(interfaces)
        )));
    };
    if list.is_empty() {
        return Err(schema_error("[] should be non-empty".into()));
    }
    for iface in list {
        let Some(obj) = iface.as_object() else {
            return Err(schema_error(format!(
                "{} is not of type 'object'",
                py_repr(iface)
            )));
        };
        match obj.get("mac_address") {
            None => return Err(schema_error("'mac_address' is a required property".into())),
            Some(Value::String(_)) => {}
            Some(other) => {
                return Err(schema_error(format!(
                    "{} is not of type 'string'",
                    py_repr(other)
                )))
            }
        }
    }
    Ok(())
}

/// The valid, normalized MACs of the inventory's interfaces.
pub fn inventory_macs(inventory: &Value) -> Vec<String> {
    let mut macs = Vec::new();
    for iface in inventory["interfaces"].as_array().into_iter().flatten() {
        match iface["mac_address"].as_str().and_then(normalize_mac) {
            Some(mac) if !macs.contains(&mac) => macs.push(mac),
            Some(_) => {}
            None => warn!(mac = %iface["mac_address"], "ignoring an invalid MAC address"),
        }
    }
    macs
}

/// `GET /v1/nodes/{id}/inventory`.
pub async fn get_inventory(
    State(state): State<AppState>,
    Extension(Requested(version)): Extension<Requested>,
    Path(ident): Path<String>,
) -> ApiResult<Json<Value>> {
    if version < NODE_INVENTORY {
        return Err(not_found());
    }
    let node = state.store.get_node(&ident).await?;
    let stored = state
        .store
        .get_inventory(&node.uuid)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "Node inventory record for node {} could not be found.",
                node.uuid
            ))
        })?;
    Ok(Json(json!({
        "inventory": stored.inventory,
        "plugin_data": stored.plugin_data,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(v: Value) -> String {
        validate(&v).unwrap_err().message
    }

    #[test]
    fn schema_errors_read_like_ironics() {
        assert_eq!(
            err(json!({})),
            "Schema error for data: 'inventory' is a required property"
        );
        assert_eq!(
            err(json!({"inventory": {}})),
            "Schema error for data: 'interfaces' is a required property"
        );
        assert_eq!(
            err(json!({"inventory": {"interfaces": []}})),
            "Schema error for data: [] should be non-empty"
        );
        assert_eq!(
            err(json!({"inventory": {"interfaces": [{"name": "eth0"}]}})),
            "Schema error for data: 'mac_address' is a required property"
        );
        assert_eq!(
            err(json!({"inventory": {"interfaces": [{"mac_address": 5}]}})),
            "Schema error for data: 5 is not of type 'string'"
        );
        assert_eq!(
            err(json!({"inventory": {"interfaces": [{"mac_address": "a"}], "bmc_address": ["x"]}})),
            "Schema error for data: ['x'] is not of type 'string', 'null'"
        );
        assert_eq!(
            err(json!([1])),
            "Schema error for data: [1] is not of type 'object'"
        );
        validate(&json!({"inventory": {"interfaces": [{"mac_address": "a"}],
            "bmc_address": null}, "extra": 1}))
        .unwrap();
    }
}
