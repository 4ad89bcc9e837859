//! How nodes and ports are shown: secrets masked, links added, `fields`
//! honoured.

use ferrite_protocol::node::{Link, Node, Port};
use serde_json::{json, Map, Value};

use super::error::{ApiError, ApiResult};
pub use crate::node_view::{mask_node_secrets, node_secure_dict, MASK};

/// `node list` without `detail`.
pub const NODE_LIST_FIELDS: &[&str] = &[
    "uuid",
    "name",
    "instance_uuid",
    "power_state",
    "provision_state",
    "maintenance",
];
/// `port list` without `detail`.
pub const PORT_LIST_FIELDS: &[&str] = &["uuid", "address"];

fn links(base: &str, kind: &str, id: &str, sub: &str) -> Value {
    let tail = if sub.is_empty() {
        id.to_string()
    } else {
        format!("{id}/{sub}")
    };
    json!([
        Link::new(format!("{base}/v1/{kind}/{tail}"), "self"),
        Link::new(format!("{base}/{kind}/{tail}"), "bookmark"),
    ])
}

pub fn parse_fields(
    raw: Option<&str>,
    known: &Map<String, Value>,
) -> ApiResult<Option<Vec<String>>> {
    let Some(raw) = raw else { return Ok(None) };
    let fields: Vec<String> = raw
        .split(',')
        .map(|f| f.trim().to_string())
        .filter(|f| !f.is_empty())
        .collect();
    let unknown: Vec<&str> = fields
        .iter()
        .filter(|f| !known.contains_key(f.as_str()))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        return Err(ApiError::bad_request(format!(
            "Field(s) \"{}\" are not valid",
            unknown.join(", ")
        )));
    }
    Ok(Some(fields))
}

pub fn select(full: Map<String, Value>, fields: Option<&[String]>) -> Value {
    match fields {
        None => Value::Object(full),
        Some(fields) => {
            let mut out: Map<String, Value> = fields
                .iter()
                .filter_map(|f| full.get(f).map(|v| (f.clone(), v.clone())))
                .collect();
            if let Some(links) = full.get("links") {
                out.insert("links".into(), links.clone());
            }
            Value::Object(out)
        }
    }
}

pub fn node_full(node: &Node, base: &str) -> Map<String, Value> {
    let mut map = match serde_json::to_value(node) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    mask_node_secrets(&mut map);
    super::secrets::mask_node_view(&mut map);
    let id = &node.uuid;
    map.insert("links".into(), links(base, "nodes", id, ""));
    for sub in ["ports", "portgroups", "states", "volume"] {
        map.insert(sub.into(), links(base, "nodes", id, sub));
    }
    map
}

pub fn node_view(node: &Node, base: &str, fields: Option<&[String]>) -> Value {
    select(node_full(node, base), fields)
}

pub fn port_full(port: &Port, base: &str) -> Map<String, Value> {
    let mut map = match serde_json::to_value(port) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    map.insert("links".into(), links(base, "ports", &port.uuid, ""));
    map
}

pub fn port_view(port: &Port, base: &str, fields: Option<&[String]>) -> Value {
    select(port_full(port, base), fields)
}

pub fn owned(fields: &[&str]) -> Vec<String> {
    fields.iter().map(|f| f.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rescue_images_are_shown_and_the_rescue_password_is_not() {
        let node = Node {
            uuid: "u".into(),
            driver_info: json!({"rescue_kernel": "http://h/k", "rescue_ramdisk": "r.img",
                                "deploy_kernel": "http://h/dk", "rescue_password": "pw"})
            .as_object()
            .cloned()
            .unwrap(),
            instance_info: json!({"rescue_password": "pw", "hashed_rescue_password": "$5$x"})
                .as_object()
                .cloned()
                .unwrap(),
            ..Default::default()
        };
        for view in [node_full(&node, "http://api"), {
            let Value::Object(m) = node_secure_dict(&node) else {
                panic!()
            };
            m
        }] {
            assert_eq!(view["driver_info"]["rescue_kernel"], "http://h/k");
            assert_eq!(view["driver_info"]["rescue_ramdisk"], "r.img");
            assert_eq!(view["driver_info"]["rescue_password"], MASK);
            assert_eq!(view["instance_info"]["rescue_password"], MASK);
            assert_eq!(view["instance_info"]["hashed_rescue_password"], MASK);
        }
    }
}
