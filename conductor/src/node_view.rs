//! The node as it may leave the conductor: secrets masked as Ironic masks
//! them. Shared by the REST API's views and by the flows that hand the
//! node to an agent, so neither imports the other.

use ferrite_protocol::node::Node;
use serde_json::{Map, Value};

pub const MASK: &str = "******";

/// Hide what Ironic hides: passwords in `driver_info`, the agent token,
/// image URLs and config drives in `instance_info`.
pub fn mask_node_secrets(node: &mut Map<String, Value>) {
    if let Some(Value::Object(info)) = node.get_mut("driver_info") {
        for (key, value) in info.iter_mut() {
            if key.contains("password") || key.ends_with("_key") {
                *value = Value::String(MASK.into());
            }
        }
    }
    if let Some(Value::Object(dii)) = node.get_mut("driver_internal_info") {
        if dii.contains_key(crate::agent_session::TOKEN) {
            dii.insert(
                crate::agent_session::TOKEN.into(),
                Value::String(MASK.into()),
            );
        }
    }
    if let Some(Value::Object(ii)) = node.get_mut("instance_info") {
        for key in [
            "image_url",
            "configdrive",
            "rescue_password",
            "hashed_rescue_password",
        ] {
            if ii.contains_key(key) {
                ii.insert(key.into(), Value::String(MASK.into()));
            }
        }
    }
}

/// The node as the agent command API receives it (`node.as_dict(secure=True)`).
pub fn node_secure_dict(node: &Node) -> Value {
    let mut map = match serde_json::to_value(node) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    mask_node_secrets(&mut map);
    // Ironic hands agents `node.as_dict()`, where traits are a versioned
    // object list, not the REST API's list of names.
    let traits: Vec<Value> = node
        .traits
        .iter()
        .map(|t| serde_json::json!({"trait": t, "node_id": Value::Null}))
        .collect();
    map.insert("traits".into(), serde_json::json!({ "objects": traits }));
    Value::Object(map)
}
