//! The `deploy_steps` argument of `PUT .../states/provision` (API 1.69):
//! Ironic's `_DEPLOY_STEPS_SCHEMA` (`api_utils.DEPLOY_STEP_SCHEMA` per
//! item), checked as `jsonschema.validate` does and refused with its text:
//! the best-matching error (jsonschema 4's `best_match`), the schema part
//! and the instance part, as Python prints them.

use serde_json::Value;

use crate::pyrepr::{pformat, repr};

/// `DEPLOYING_INTERFACE_PRIORITY`, in its order (the `enum` of `interface`).
pub const INTERFACES: &[&str] = &[
    "vendor",
    "power",
    "management",
    "firmware",
    "deploy",
    "bios",
    "raid",
];
const PROPERTIES: &[&str] = &["args", "interface", "priority", "step"];
const REQUIRED: &[&str] = &["interface", "step", "args", "priority"];

// The schema's parts as jsonschema prints them (pprint, width 72).
const ITEM: &str = r#"{'type': 'object',
 'properties': {'args': {'type': 'object'},
                'interface': {'type': 'string',
                              'enum': ['vendor',
                                       'power',
                                       'management',
                                       'firmware',
                                       'deploy',
                                       'bios',
                                       'raid']},
                'priority': {'anyOf': [{'type': 'integer',
                                        'minimum': 0},
                                       {'type': 'string',
                                        'minLength': 1,
                                        'pattern': '^[0-9]+$'}]},
                'step': {'type': 'string', 'minLength': 1}},
 'required': ['interface', 'step', 'args', 'priority'],
 'additionalProperties': False}"#;
const ARGS: &str = r#"{'type': 'object'}"#;
const INTERFACE: &str = r#"{'type': 'string',
 'enum': ['vendor',
          'power',
          'management',
          'firmware',
          'deploy',
          'bios',
          'raid']}"#;
const PRIORITY: &str = r#"{'anyOf': [{'type': 'integer', 'minimum': 0},
           {'type': 'string', 'minLength': 1, 'pattern': '^[0-9]+$'}]}"#;
const PRIORITY_INT: &str = r#"{'type': 'integer', 'minimum': 0}"#;
const PRIORITY_STR: &str = r#"{'type': 'string', 'minLength': 1, 'pattern': '^[0-9]+$'}"#;
const STEP: &str = r#"{'type': 'string', 'minLength': 1}"#;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum PathElem {
    Index(usize),
    Key(&'static str),
}

/// One jsonschema `ValidationError`.
#[derive(Debug, Clone)]
struct SchemaError {
    message: String,
    validator: &'static str,
    /// `relative_path`: where in the instance.
    path: Vec<PathElem>,
    /// `format_as_index("schema", relative_schema_path[:-1])`.
    schema_at: String,
    schema: &'static str,
    instance: Value,
    /// `_matches_type()`: the instance has the type its schema names.
    matches_type: bool,
    /// anyOf's branch errors, in order.
    context: Vec<SchemaError>,
}

/// `by_relevance()`'s key; `best_match` takes the maximum.
type Relevance = (i64, Vec<PathElem>, bool, bool, bool);

fn relevance(e: &SchemaError) -> Relevance {
    (
        -(e.path.len() as i64),
        e.path.clone(),
        e.validator != "anyOf" && e.validator != "oneOf",
        false,
        !e.matches_type,
    )
}

/// jsonschema's `is_integer`: floats with no fraction count.
fn is_integer(v: &Value) -> bool {
    v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0)
}

fn type_name_error(v: &Value, wanted: &str) -> String {
    format!("{} is not of type '{wanted}'", repr(v))
}

fn priority_branches(v: &Value) -> Vec<SchemaError> {
    let sub = |message: String, validator, branch: usize, matches_type| SchemaError {
        message,
        validator,
        path: Vec::new(),
        schema_at: format!("schema[{branch}]"),
        schema: if branch == 0 {
            PRIORITY_INT
        } else {
            PRIORITY_STR
        },
        instance: v.clone(),
        matches_type,
        context: Vec::new(),
    };
    let mut errors = Vec::new();
    if !is_integer(v) || v.is_boolean() {
        errors.push(sub(type_name_error(v, "integer"), "type", 0, false));
    } else if v.as_f64().is_some_and(|n| n < 0.0) {
        errors.push(sub(
            format!("{} is less than the minimum of 0", repr(v)),
            "minimum",
            0,
            true,
        ));
    }
    match v.as_str() {
        None => errors.push(sub(type_name_error(v, "string"), "type", 1, false)),
        Some(s) => {
            if s.is_empty() {
                errors.push(sub(
                    format!("{} should be non-empty", repr(v)),
                    "minLength",
                    1,
                    true,
                ));
            }
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                errors.push(sub(
                    format!("{} does not match '^[0-9]+$'", repr(v)),
                    "pattern",
                    1,
                    true,
                ));
            }
        }
    }
    errors
}

/// Every error `iter_errors` yields for one item, in its order.
fn item_errors(i: usize, item: &Value, out: &mut Vec<SchemaError>) {
    let at = |key: &'static str| vec![PathElem::Index(i), PathElem::Key(key)];
    let property = |key: &'static str| format!("schema['items']['properties']['{key}']");
    let Some(obj) = item.as_object() else {
        out.push(SchemaError {
            message: type_name_error(item, "object"),
            validator: "type",
            path: vec![PathElem::Index(i)],
            schema_at: "schema['items']".into(),
            schema: ITEM,
            instance: item.clone(),
            matches_type: false,
            context: Vec::new(),
        });
        return;
    };
    let error = |message, validator, key, schema, value: &Value, matches_type| SchemaError {
        message,
        validator,
        path: at(key),
        schema_at: property(key),
        schema,
        instance: value.clone(),
        matches_type,
        context: Vec::new(),
    };
    for &key in PROPERTIES {
        let Some(v) = obj.get(key) else { continue };
        match key {
            "args" if !v.is_object() => out.push(error(
                type_name_error(v, "object"),
                "type",
                key,
                ARGS,
                v,
                false,
            )),
            "interface" => {
                if !v.is_string() {
                    out.push(error(
                        type_name_error(v, "string"),
                        "type",
                        key,
                        INTERFACE,
                        v,
                        false,
                    ));
                }
                if !v.as_str().is_some_and(|s| INTERFACES.contains(&s)) {
                    let list: Vec<String> = INTERFACES.iter().map(|s| format!("'{s}'")).collect();
                    out.push(error(
                        format!("{} is not one of [{}]", repr(v), list.join(", ")),
                        "enum",
                        key,
                        INTERFACE,
                        v,
                        v.is_string(),
                    ));
                }
            }
            "priority" => {
                let context = priority_branches(v);
                let failed = |branch: &str| context.iter().any(|e| e.schema_at == branch);
                let valid = !failed("schema[0]") || !failed("schema[1]");
                if !valid {
                    let mut e = error(
                        format!("{} is not valid under any of the given schemas", repr(v)),
                        "anyOf",
                        key,
                        PRIORITY,
                        v,
                        true,
                    );
                    e.context = context;
                    out.push(e);
                }
            }
            "step" => match v.as_str() {
                None => out.push(error(
                    type_name_error(v, "string"),
                    "type",
                    key,
                    STEP,
                    v,
                    false,
                )),
                Some("") => out.push(error(
                    format!("{} should be non-empty", repr(v)),
                    "minLength",
                    key,
                    STEP,
                    v,
                    true,
                )),
                Some(_) => {}
            },
            _ => {}
        }
    }
    let item_error = |message, validator| SchemaError {
        message,
        validator,
        path: vec![PathElem::Index(i)],
        schema_at: "schema['items']".into(),
        schema: ITEM,
        instance: item.clone(),
        matches_type: true,
        context: Vec::new(),
    };
    for &key in REQUIRED {
        if !obj.contains_key(key) {
            out.push(item_error(
                format!("'{key}' is a required property"),
                "required",
            ));
        }
    }
    let mut extras: Vec<&String> = obj
        .keys()
        .filter(|k| !PROPERTIES.contains(&k.as_str()))
        .collect();
    extras.sort();
    if !extras.is_empty() {
        let verb = if extras.len() == 1 { "was" } else { "were" };
        let names: Vec<String> = extras
            .iter()
            .map(|k| repr(&Value::String((*k).clone())))
            .collect();
        out.push(item_error(
            format!(
                "Additional properties are not allowed ({} {verb} unexpected)",
                names.join(", ")
            ),
            "additionalProperties",
        ));
    }
}

/// `best_match`: the most relevant error (the first of equals), then down
/// anyOf's branches while one of them stands out.
fn best_match(errors: Vec<SchemaError>) -> Option<SchemaError> {
    let mut best: Option<SchemaError> = None;
    for e in errors {
        if best.as_ref().is_none_or(|b| relevance(&e) > relevance(b)) {
            best = Some(e);
        }
    }
    let mut best = best?;
    while !best.context.is_empty() {
        let mut context = best.context.clone();
        context.sort_by_key(relevance);
        if context.len() >= 2 && relevance(&context[0]) == relevance(&context[1]) {
            return Some(best);
        }
        best = context.swap_remove(0);
    }
    Some(best)
}

fn instance_at(path: &[PathElem]) -> String {
    let mut text = "instance".to_string();
    for p in path {
        match p {
            PathElem::Index(i) => text.push_str(&format!("[{i}]")),
            PathElem::Key(k) => text.push_str(&format!("['{k}']")),
        }
    }
    text
}

fn indented(text: &str) -> String {
    text.replace('\n', "\n    ")
}

/// Ironic's `_check_deploy_steps` schema part: `Invalid deploy_steps: ...`.
pub fn check(steps: &[Value]) -> Result<(), String> {
    let mut errors = Vec::new();
    for (i, item) in steps.iter().enumerate() {
        item_errors(i, item, &mut errors);
    }
    let Some(e) = best_match(errors) else {
        return Ok(());
    };
    Err(format!(
        "Invalid deploy_steps: {}\n\nFailed validating '{}' in {}:\n    {}\n\nOn {}:\n    {}",
        e.message,
        e.validator,
        e.schema_at,
        indented(e.schema),
        instance_at(&e.path),
        indented(&pformat(&e.instance))
    ))
}

/// Valid steps with their priority as a number (the schema also allows a
/// string of digits).
pub fn normalize(steps: &[Value]) -> Vec<Value> {
    steps
        .iter()
        .cloned()
        .map(|mut s| {
            if let Some(p) = s["priority"].as_str().and_then(|p| p.parse::<u64>().ok()) {
                s["priority"] = Value::from(p);
            }
            if let Some(p) = s["priority"].as_f64().filter(|_| !s["priority"].is_u64()) {
                s["priority"] = Value::from(p as u64);
            }
            s
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn first_line(steps: Value) -> String {
        let err = check(steps.as_array().unwrap()).unwrap_err();
        err.lines().next().unwrap().to_string()
    }

    /// Texts checked against jsonschema 4.26 (Ironic 39's) on CPython 3.11.
    #[test]
    fn errors_as_jsonschema_words_them() {
        let ok = json!([{"interface": "deploy", "step": "inject_files", "args": {}, "priority": 50},
                        {"interface": "raid", "step": "apply_configuration", "args": {}, "priority": "90"}]);
        assert!(check(ok.as_array().unwrap()).is_ok());
        assert_eq!(normalize(ok.as_array().unwrap())[1]["priority"], 90);

        let missing = check(
            json!([{"interface": "deploy", "step": "inject_files", "args": {}}])
                .as_array()
                .unwrap(),
        )
        .unwrap_err();
        assert_eq!(
            missing,
            format!(
                "Invalid deploy_steps: 'priority' is a required property\n\nFailed validating 'required' in schema['items']:\n    {}\n\nOn instance[0]:\n    {{'args': {{}}, 'interface': 'deploy', 'step': 'inject_files'}}",
                ITEM.replace('\n', "\n    ")
            )
        );
        assert_eq!(
            check(json!([{"interface": "foo", "step": "s", "args": {}, "priority": 5}]).as_array().unwrap()).unwrap_err(),
            "Invalid deploy_steps: 'foo' is not one of ['vendor', 'power', 'management', 'firmware', 'deploy', 'bios', 'raid']\n\nFailed validating 'enum' in schema['items']['properties']['interface']:\n    {'type': 'string',\n     'enum': ['vendor',\n              'power',\n              'management',\n              'firmware',\n              'deploy',\n              'bios',\n              'raid']}\n\nOn instance[0]['interface']:\n    'foo'"
        );
        assert_eq!(
            check(json!([{"interface": "deploy", "step": "x", "args": {}, "priority": -1}]).as_array().unwrap()).unwrap_err(),
            "Invalid deploy_steps: -1 is less than the minimum of 0\n\nFailed validating 'minimum' in schema[0]:\n    {'type': 'integer', 'minimum': 0}\n\nOn instance:\n    -1"
        );
        assert_eq!(
            first_line(json!([{"interface": "deploy", "step": "x", "args": {}, "priority": "a"}])),
            "Invalid deploy_steps: 'a' does not match '^[0-9]+$'"
        );
        assert_eq!(
            first_line(json!([{"interface": "deploy", "step": "x", "args": {}, "priority": true}])),
            "Invalid deploy_steps: True is not valid under any of the given schemas"
        );
        assert_eq!(
            first_line(json!([{"interface": "deploy", "step": "x", "args": {}, "priority": ""}])),
            "Invalid deploy_steps: '' is not valid under any of the given schemas"
        );
        assert_eq!(
            first_line(json!([{"interface": "deploy", "step": "", "args": {}, "priority": 5}])),
            "Invalid deploy_steps: '' should be non-empty"
        );
        assert_eq!(
            first_line(json!([{"interface": "deploy", "step": "x", "args": [], "priority": 5}])),
            "Invalid deploy_steps: [] is not of type 'object'"
        );
        assert_eq!(
            first_line(json!([{"interface": 5, "step": "x", "args": {}, "priority": 1}])),
            "Invalid deploy_steps: 5 is not of type 'string'"
        );
        assert_eq!(
            first_line(json!([{"interface": "deploy", "step": "x", "args": {}, "priority": 5, "extra": 1, "b": 2}])),
            "Invalid deploy_steps: Additional properties are not allowed ('b', 'extra' were unexpected)"
        );
        assert_eq!(
            first_line(json!(["x"])),
            "Invalid deploy_steps: 'x' is not of type 'object'"
        );
        assert_eq!(
            first_line(json!([{}])),
            "Invalid deploy_steps: 'interface' is a required property"
        );
        // Shallower errors win, then the later sibling.
        assert_eq!(
            first_line(json!([{"interface": "foo", "step": "x", "args": {}}])),
            "Invalid deploy_steps: 'priority' is a required property"
        );
        assert_eq!(
            first_line(json!([{"interface": "foo", "step": "", "args": {}, "priority": 1}])),
            "Invalid deploy_steps: '' should be non-empty"
        );
    }
}
