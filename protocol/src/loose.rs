//! Values as Ironic and the kernel command line write them, read loosely
//! the way oslo does: booleans as words, numbers or JSON bools.

/// oslo's boolean words (`bool_from_string`, but strict: anything
/// unrecognised is `None` rather than a silent `false`).
pub fn bool_word(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "t" | "true" | "on" | "y" | "yes" => Some(true),
        "0" | "f" | "false" | "off" | "n" | "no" => Some(false),
        _ => None,
    }
}

/// A boolean as Ironic may send it in JSON: a bool, a number or a word.
pub fn value_as_bool(value: &serde_json::Value) -> Option<bool> {
    match value {
        serde_json::Value::Bool(b) => Some(*b),
        serde_json::Value::Number(n) => n.as_i64().map(|n| n != 0),
        serde_json::Value::String(s) => bool_word(s),
        _ => None,
    }
}
