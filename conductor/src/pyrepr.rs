//! JSON values written as Python writes them (`repr`, and `pprint.pformat`
//! with sorted-dict off), for error texts that quote user input the way
//! Ironic's do. Objects come out in serde_json's key order (sorted), where
//! Python keeps the request's order.

use serde_json::Value;

/// Python's `repr` of a string: single quotes unless the text has a single
/// quote and no double quote.
fn str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Python's `repr` of the value as `json.loads` would give it.
pub fn repr(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => str_repr(s),
        Value::Array(a) => format!("[{}]", a.iter().map(repr).collect::<Vec<_>>().join(", ")),
        Value::Object(o) => format!(
            "{{{}}}",
            o.iter()
                .map(|(k, v)| format!("{}: {}", str_repr(k), repr(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `pprint.pformat(v, width=72, sort_dicts=False)`. Long strings stay on
/// one line (pprint would split them into implicitly joined pieces).
pub fn pformat(v: &Value) -> String {
    format(v, 0, 0)
}

const WIDTH: usize = 72;

fn format(v: &Value, indent: usize, allowance: usize) -> String {
    let rep = repr(v);
    if rep.chars().count() + indent + allowance <= WIDTH {
        return rep;
    }
    match v {
        Value::Object(o) if !o.is_empty() => {
            let inner = indent + 1;
            let last = o.len() - 1;
            let items: Vec<String> = o
                .iter()
                .enumerate()
                .map(|(i, (k, v))| {
                    let key = str_repr(k);
                    let allow = if i == last { allowance + 1 } else { 1 };
                    let value = format(v, inner + key.chars().count() + 2, allow);
                    format!("{key}: {value}")
                })
                .collect();
            format!("{{{}}}", items.join(&format!(",\n{}", " ".repeat(inner))))
        }
        Value::Array(a) if !a.is_empty() => {
            let inner = indent + 1;
            let last = a.len() - 1;
            let items: Vec<String> = a
                .iter()
                .enumerate()
                .map(|(i, v)| format(v, inner, if i == last { allowance + 1 } else { 1 }))
                .collect();
            format!("[{}]", items.join(&format!(",\n{}", " ".repeat(inner))))
        }
        _ => rep,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn as_python_writes_it() {
        assert_eq!(
            repr(&json!({"a": [1, true, null, "it's"], "b": "x"})),
            r#"{'a': [1, True, None, "it's"], 'b': 'x'}"#
        );
        // Checked against CPython 3.11's pprint.pformat(width=72, sort_dicts=False).
        let v = json!({"args": {}, "extra": 1, "interface": "deploy", "priority": 5, "step": "x"});
        assert_eq!(
            pformat(&v),
            "{'args': {},\n 'extra': 1,\n 'interface': 'deploy',\n 'priority': 5,\n 'step': 'x'}"
        );
        let nested = json!({"args": {"files": [{"path": "/etc/hostname-long-name", "content": "aGVsbG8gd29ybGQ="}]}});
        assert_eq!(
            pformat(&nested),
            "{'args': {'files': [{'content': 'aGVsbG8gd29ybGQ=',\n                     'path': '/etc/hostname-long-name'}]}}"
        );
    }
}
