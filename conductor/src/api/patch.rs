//! JSON Patch (RFC 6902) on API resources, with Ironic's rules about which
//! top-level attributes a client may touch.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::error::{parse_body, ApiError, ApiResult};

/// Apply the patch in `body` to `resource`. `patchable` lists the top-level
/// attributes clients may change; any other existing one is internal.
pub fn apply<T: Serialize + DeserializeOwned>(
    resource: &T,
    body: &[u8],
    patchable: &[&str],
) -> ApiResult<T> {
    let ops: json_patch::Patch = parse_body(body)?;
    if ops.0.is_empty() {
        return Err(ApiError::bad_request("The patch is empty"));
    }
    let mut doc =
        serde_json::to_value(resource).map_err(|e| ApiError::bad_request(e.to_string()))?;
    for op in &ops.0 {
        let path = op_path(op);
        let top = path
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default();
        if !patchable.contains(&top) {
            let msg = if doc.get(top).is_some() {
                format!("'/{top}' is an internal attribute and can not be updated")
            } else {
                format!(
                    "Adding a new attribute (/{top}) to the root of the resource is not allowed"
                )
            };
            return Err(ApiError::bad_request(msg));
        }
    }
    json_patch::patch(&mut doc, &ops)
        .map_err(|e| ApiError::bad_request(format!("Invalid patch: {e}")))?;
    drop_top_level_nulls(&mut doc);
    serde_json::from_value(doc)
        .map_err(|e| ApiError::bad_request(format!("Invalid value in patch: {e}")))
}

fn op_path(op: &json_patch::PatchOperation) -> String {
    use json_patch::PatchOperation as P;
    match op {
        P::Add(o) => o.path.to_string(),
        P::Remove(o) => o.path.to_string(),
        P::Replace(o) => o.path.to_string(),
        P::Move(o) => o.path.to_string(),
        P::Copy(o) => o.path.to_string(),
        P::Test(o) => o.path.to_string(),
    }
}

/// `remove` of a dict attribute means "empty it" in Ironic; serde's
/// defaults do that once the key is gone, so drop explicit nulls on maps.
fn drop_top_level_nulls(doc: &mut Value) {
    if let Value::Object(map) = doc {
        map.retain(|_, v| !v.is_null());
    }
}
