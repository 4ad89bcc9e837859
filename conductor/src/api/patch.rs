//! JSON Patch (RFC 6902) on API resources, with Ironic's rules about which
//! top-level attributes a client may touch, and bounds on what a patch may
//! build.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::error::{parse_body, ApiError, ApiResult};

/// Deepest nesting a stored resource may reach. serde_json refuses to parse
/// documents nested deeper than 128 levels, so a record must stay well under
/// that or reading it back (listing, start-up) would fail; Ironic's own
/// fields nest a handful of levels.
pub const MAX_DEPTH: usize = 32;
/// Largest a stored resource may grow (serialized JSON). `copy` can double a
/// document per operation; one MiB holds any real node (Ironic's largest
/// fields, config drives, are capped at 64 MiB only as gzip'd ISOs that this
/// conductor keeps out of the node record's hot path) and keeps listing a
/// thousand nodes within memory.
pub const MAX_BYTES: usize = 1 << 20;

/// Apply the patch in `body` to `resource`. `patchable` lists the top-level
/// attributes clients may change; any other existing one is internal.
/// `mask` hides the resource's secrets as the API shows it: no operation may
/// read a masked value (`test`, or `copy`/`move` from it).
pub fn apply<T: Serialize + DeserializeOwned>(
    resource: &T,
    body: &[u8],
    patchable: &[&str],
    mask: fn(&mut Value),
) -> ApiResult<T> {
    let ops: json_patch::Patch = parse_body(body)?;
    if ops.0.is_empty() {
        return Err(ApiError::bad_request("The patch is empty"));
    }
    let mut doc =
        serde_json::to_value(resource).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let mut masked = doc.clone();
    mask(&mut masked);
    for op in &ops.0 {
        let (path, from, reads) = op_pointers(op);
        check_pointer(&doc, &path, patchable)?;
        if let Some(from) = &from {
            check_pointer(&doc, from, patchable)?;
        }
        // What an operation reads must not be (or contain) a secret.
        for read in reads.iter().filter_map(|p| p.as_deref()) {
            if doc.pointer(read) != masked.pointer(read) {
                return Err(ApiError::bad_request(format!(
                    "'{read}' holds a secret and can not be read by a patch"
                )));
            }
        }
    }
    json_patch::patch(&mut doc, &ops)
        .map_err(|e| ApiError::bad_request(format!("Invalid patch: {e}")))?;
    drop_top_level_nulls(&mut doc);
    check_bounds(&doc)?;
    serde_json::from_value(doc)
        .map_err(|e| ApiError::bad_request(format!("Invalid value in patch: {e}")))
}

/// The operation's `path`, its `from` (copy, move) and the pointers whose
/// values it reveals (test's path, copy's and move's from).
fn op_pointers(op: &json_patch::PatchOperation) -> (String, Option<String>, [Option<String>; 2]) {
    use json_patch::PatchOperation as P;
    match op {
        P::Add(o) => (o.path.to_string(), None, [None, None]),
        P::Remove(o) => (o.path.to_string(), None, [None, None]),
        P::Replace(o) => (o.path.to_string(), None, [None, None]),
        P::Move(o) => (
            o.path.to_string(),
            Some(o.from.to_string()),
            [Some(o.from.to_string()), None],
        ),
        P::Copy(o) => (
            o.path.to_string(),
            Some(o.from.to_string()),
            [Some(o.from.to_string()), None],
        ),
        P::Test(o) => (o.path.to_string(), None, [Some(o.path.to_string()), None]),
    }
}

/// Ironic's rule for a pointer: its top-level attribute must be writable.
fn check_pointer(doc: &Value, pointer: &str, patchable: &[&str]) -> ApiResult<()> {
    let top = pointer
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default();
    if patchable.contains(&top) {
        return Ok(());
    }
    let msg = if doc.get(top).is_some() {
        format!("'/{top}' is an internal attribute and can not be updated")
    } else {
        format!("Adding a new attribute (/{top}) to the root of the resource is not allowed")
    };
    Err(ApiError::bad_request(msg))
}

/// Refuse a result that would be too deep or too large to store and read back.
pub fn check_bounds(doc: &Value) -> ApiResult<()> {
    if depth(doc, 0) > MAX_DEPTH {
        return Err(ApiError::bad_request(format!(
            "The resource would be nested deeper than {MAX_DEPTH} levels"
        )));
    }
    let size = serde_json::to_vec(doc)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > MAX_BYTES {
        return Err(ApiError::bad_request(format!(
            "The resource would be {size} bytes, more than the {MAX_BYTES} allowed"
        )));
    }
    Ok(())
}

/// Nesting depth, stopping as soon as the limit is passed.
fn depth(v: &Value, level: usize) -> usize {
    if level > MAX_DEPTH {
        return level;
    }
    let children: Box<dyn Iterator<Item = &Value> + '_> = match v {
        Value::Array(a) => Box::new(a.iter()),
        Value::Object(o) => Box::new(o.values()),
        _ => return level,
    };
    children
        .map(|c| depth(c, level + 1))
        .max()
        .unwrap_or(level + 1)
}

/// `remove` of a dict attribute means "empty it" in Ironic; serde's
/// defaults do that once the key is gone, so drop explicit nulls on maps.
fn drop_top_level_nulls(doc: &mut Value) {
    if let Value::Object(map) = doc {
        map.retain(|_, v| !v.is_null());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn no_mask(_: &mut Value) {}

    fn hide(v: &mut Value) {
        v["a"]["secret"] = json!("******");
    }

    fn run(doc: Value, ops: Value, mask: fn(&mut Value)) -> ApiResult<Value> {
        apply(&doc, ops.to_string().as_bytes(), &["a", "b"], mask)
    }

    #[test]
    fn from_follows_the_path_rules() {
        let doc = json!({"a": {}, "internal": {"token": "t"}});
        let err = run(
            doc,
            json!([{"op": "copy", "from": "/internal/token", "path": "/a/x"}]),
            no_mask,
        )
        .unwrap_err();
        assert!(
            err.message.contains("internal attribute"),
            "{}",
            err.message
        );
    }

    #[test]
    fn secrets_can_not_be_read() {
        let doc = json!({"a": {"secret": "pw"}, "b": {}});
        for ops in [
            json!([{"op": "test", "path": "/a/secret", "value": "pw"}]),
            json!([{"op": "copy", "from": "/a/secret", "path": "/b/x"}]),
            json!([{"op": "copy", "from": "/a", "path": "/b/x"}]),
            json!([{"op": "move", "from": "/a", "path": "/b/x"}]),
        ] {
            let err = run(doc.clone(), ops.clone(), hide).unwrap_err();
            assert!(err.message.contains("secret"), "{ops}: {}", err.message);
        }
        run(
            doc,
            json!([{"op": "test", "path": "/b", "value": {}}]),
            hide,
        )
        .unwrap();
    }

    #[test]
    fn doubling_copies_hit_the_bounds() {
        let mut doc = json!({"a": {"x": 1}, "b": {}});
        let mut refused = None;
        for i in 0..64 {
            match run(
                doc.clone(),
                json!([{"op": "copy", "from": "/a", "path": "/a/x"}]),
                no_mask,
            ) {
                Ok(next) => doc = next,
                Err(e) => {
                    refused = Some((i, e.message));
                    break;
                }
            }
        }
        let (_, msg) = refused.expect("the bound is reached");
        assert!(msg.contains("nested deeper"), "{msg}");
        assert!(depth(&doc, 0) <= MAX_DEPTH);
    }
}
