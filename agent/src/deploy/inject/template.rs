//! The part of Python's `str.format` that IPA applies to `inject_files`
//! URLs (`content.format(node=node, ports=ports)`): `{name[key][0]...}`
//! fields over JSON values, and `{{`/`}}` for literal braces. Conversions
//! and format specs are refused rather than half-supported.

use serde_json::Value;

/// Render `template` with the named values.
pub fn render(template: &str, args: &[(&str, &Value)]) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(at) = rest.find(['{', '}']) {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("{{") {
            out.push('{');
            rest = after;
        } else if let Some(after) = tail.strip_prefix("}}") {
            out.push('}');
            rest = after;
        } else if tail.starts_with('}') {
            return Err(format!("single '}}' in URL template {template:?}"));
        } else {
            let end = tail
                .find('}')
                .ok_or_else(|| format!("unclosed '{{' in URL template {template:?}"))?;
            out.push_str(&field(&tail[1..end], args)?);
            rest = &tail[end + 1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// One replacement field: a name, then `[index]` lookups.
fn field(spec: &str, args: &[(&str, &Value)]) -> Result<String, String> {
    if spec.contains(['!', ':', '.', '{']) {
        return Err(format!(
            "URL template field {{{spec}}}: only {{name[key]...}} lookups are supported"
        ));
    }
    let (name, mut lookups) = spec.split_at(spec.find('[').unwrap_or(spec.len()));
    let mut value = args
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| *v)
        .ok_or_else(|| format!("URL template field {{{spec}}}: unknown name {name:?}"))?;
    let mut path = name.to_string();
    while !lookups.is_empty() {
        let close = lookups
            .strip_prefix('[')
            .and_then(|l| l.find(']'))
            .ok_or_else(|| format!("URL template field {{{spec}}}: malformed index"))?;
        let key = &lookups[1..close + 1];
        lookups = &lookups[close + 2..];
        // As Python: an all-digit index is an integer (a list position).
        let next = match key.parse::<usize>() {
            Ok(i) => value.as_array().and_then(|a| a.get(i)),
            Err(_) => value.as_object().and_then(|o| o.get(key)),
        };
        value = next.ok_or_else(|| format!("{path} has no key {key:?}"))?;
        path = format!("{path}[{key}]");
    }
    Ok(match value {
        Value::String(s) => s.clone(),
        // Python's str() of the other scalars.
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        other => other.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_lookups_and_escapes() {
        let node =
            json!({"uuid": "u-1", "properties": {"cpus": 8, "x": null}, "extra": {"1": "one"}});
        let ports = json!([{"address": "aa"}, {"address": "bb"}]);
        let args = [("node", &node), ("ports", &ports)];
        assert_eq!(
            render(
                "http://h/{node[uuid]}/{ports[1][address]}?c={node[properties][cpus]}",
                &args
            )
            .unwrap(),
            "http://h/u-1/bb?c=8"
        );
        assert_eq!(
            render("{{literal}}/{node[properties][x]}", &args).unwrap(),
            "{literal}/None"
        );
        for (bad, want) in [
            ("{node[nope]}", "node has no key \"nope\""),
            ("{ports[5]}", "ports has no key \"5\""),
            ("{node[extra][1]}", "node[extra] has no key \"1\""),
            ("{other}", "unknown name \"other\""),
            ("{node!r}", "only {name[key]...} lookups"),
            ("{node[uuid]:>10}", "only {name[key]...} lookups"),
            ("{node[uuid]", "unclosed '{'"),
            ("x}", "single '}'"),
            ("{node[uuid}", "malformed index"),
        ] {
            let err = render(bad, &args).unwrap_err();
            assert!(err.contains(want), "{bad}: {err}");
        }
    }
}
