//! Ironic's secret masking for API views (`node_sanitize`): every key that
//! `oslo_utils.strutils.mask_dict_password` treats as sensitive, at any
//! depth, in the fields that carry operator or tenant secrets; plus
//! credentials inside URLs (`http://user:pass@host/...`).

use serde_json::{Map, Value};

use super::views::MASK;

/// Substrings of key names that mark a secret (oslo.utils' `_SANITIZE_KEYS`,
/// compared case-insensitively, plus `key` and `configdrive` as Ironic's
/// node API hides them).
const SECRET_KEY_PARTS: &[&str] = &[
    "password",
    "adminpass",
    "admin_pass",
    "new_pass",
    "sys_pswd",
    "secret",
    "token",
    "passphrase",
    "key",
    "configdrive",
    "trust_id",
    "chappassword",
];

/// Node fields whose values may hold secrets.
const MASKED_FIELDS: &[&str] = &[
    "driver_info",
    "instance_info",
    "driver_internal_info",
    "deploy_step",
    "clean_step",
    "service_step",
];

pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_KEY_PARTS.iter().any(|part| key.contains(part))
}

/// Mask a node as the REST API shows it.
pub fn mask_node_view(node: &mut Map<String, Value>) {
    for field in MASKED_FIELDS {
        if let Some(v) = node.get_mut(*field) {
            mask_value(v);
        }
    }
    // Ironic hides the agent's image URL (a temp URL) from API users.
    if let Some(Value::Object(ii)) = node.get_mut("instance_info") {
        if ii.contains_key("image_url") {
            ii.insert("image_url".into(), Value::String(MASK.into()));
        }
    }
}

/// [`mask_node_view`] on a whole JSON node (for JSON Patch checks).
pub fn mask_node_value(node: &mut Value) {
    if let Value::Object(map) = node {
        mask_node_view(map);
    }
}

/// Mask secret keys and URL credentials everywhere below `v`.
pub fn mask_value(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                if is_secret_key(key) && !value.is_null() {
                    *value = Value::String(MASK.into());
                } else {
                    mask_value(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask_value),
        Value::String(s) => {
            if let Some(clean) = mask_url_credentials(s) {
                *s = clean;
            }
        }
        _ => {}
    }
}

/// `scheme://user:pass@host/...` with the user info replaced by the mask;
/// `None` when the text is not a URL with credentials.
pub fn mask_url_credentials(text: &str) -> Option<String> {
    if !text.contains('@') || !text.contains("://") {
        return None;
    }
    let mut url = url::Url::parse(text).ok()?;
    if url.password().is_none() && url.username().is_empty() {
        return None;
    }
    url.set_password(None).ok()?;
    url.set_username(MASK).ok()?;
    Some(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn masks_keys_at_any_depth_and_url_credentials() {
        let mut node = json!({
            "driver_info": {"ipmi_password": "p", "redfish_username": "u", "ssh_key": "k"},
            "instance_info": {"image_source": "http://bob:hunter2@h/i.img", "configdrive": {"user_data": "x"}},
            "deploy_step": {"args": {"image_info": {"urls": ["https://a:b@h/x"]}, "configdrive": "cd"}},
            "clean_step": {"args": {"Passphrase": "pp"}},
            "driver_internal_info": {"agent_secret_token": "t", "agent_url": "http://1.2.3.4:9999"},
            "extra": {"password": "operator's business"},
        });
        mask_node_value(&mut node);
        let text = node.to_string();
        for secret in [
            "\"p\"",
            "\"k\"",
            "hunter2",
            "bob",
            "user_data",
            "a:b",
            "\"cd\"",
            "pp",
            "\"t\"",
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert_eq!(node["driver_info"]["redfish_username"], "u");
        assert_eq!(
            node["driver_internal_info"]["agent_url"],
            "http://1.2.3.4:9999"
        );
        assert_eq!(
            node["instance_info"]["image_source"],
            "http://******@h/i.img"
        );
    }
}
