//! Ironic's root device hints (IPA's `device_hints.py`): which keys exist,
//! their types, and the oslo `specs_matcher` operators (`s==`, `<in>`,
//! `<or>`, `>=`, ... where a bare `=` means `>=`).

use serde_json::{Map, Value};

use super::BlockDevice;
use ferrite_protocol::loose::value_as_bool;

const STRING_KEYS: &[&str] = &[
    "model",
    "wwn",
    "serial",
    "vendor",
    "wwn_with_extension",
    "wwn_vendor_extension",
    "name",
    "hctl",
    "by_path",
    "tran",
];

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    /// Numeric comparison (`==`, `!=`, `>=`, `<=`, `>`, `<`, `=`).
    Num(&'static str, f64),
    /// String comparison (`s==`, `s!=`, `s>=`, `s<=`, `s>`, `s<`).
    Str(&'static str, String),
    /// `<in> text`: substring.
    In(String),
    /// `<or> a <or> b`: any of.
    Or(Vec<String>),
    Bool(bool),
}

#[derive(Debug, Clone, PartialEq)]
pub struct RootDeviceHints {
    hints: Vec<(String, Expr)>,
}

fn parse_expr(key: &str, raw: &str, numeric: bool) -> Result<Expr, String> {
    let raw = raw.trim();
    if let Some(rest) = raw.strip_prefix("<or>") {
        let values = rest
            .split("<or>")
            .map(|v| v.trim().to_ascii_lowercase())
            .filter(|v| !v.is_empty())
            .collect();
        return Ok(Expr::Or(values));
    }
    if let Some(rest) = raw.strip_prefix("<in>") {
        return Ok(Expr::In(rest.trim().to_ascii_lowercase()));
    }
    const STR_OPS: &[&str] = &["s==", "s!=", "s>=", "s<=", "s>", "s<"];
    const NUM_OPS: &[&str] = &["==", "!=", ">=", "<=", ">", "<", "="];
    for op in STR_OPS {
        if let Some(rest) = raw.strip_prefix(op) {
            return Ok(Expr::Str(op, rest.trim().to_ascii_lowercase()));
        }
    }
    for op in NUM_OPS {
        if let Some(rest) = raw.strip_prefix(op) {
            let n = rest
                .trim()
                .parse()
                .map_err(|_| format!("root device hint {key}: {rest:?} is not a number"))?;
            return Ok(Expr::Num(op, n));
        }
    }
    if numeric {
        let n = raw
            .parse()
            .map_err(|_| format!("root device hint {key}: {raw:?} is not a number"))?;
        return Ok(Expr::Num("==", n));
    }
    Ok(Expr::Str("s==", raw.to_ascii_lowercase()))
}

impl RootDeviceHints {
    /// `instance_info.root_device` / `properties.root_device`.
    pub fn parse(raw: &Map<String, Value>) -> Result<Self, String> {
        let mut hints = Vec::new();
        for (key, value) in raw {
            let expr = match key.as_str() {
                "size" => match value {
                    Value::Number(n) => Expr::Num("==", n.as_f64().unwrap_or(-1.0)),
                    Value::String(s) => parse_expr(key, s, true)?,
                    _ => {
                        return Err(format!(
                            "root device hint size must be a number, got {value}"
                        ))
                    }
                },
                "rotational" => Expr::Bool(value_as_bool(value).ok_or_else(|| {
                    format!("root device hint rotational must be a boolean, got {value}")
                })?),
                k if STRING_KEYS.contains(&k) => {
                    let s = match value {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        _ => {
                            return Err(format!(
                                "root device hint {key} must be a string, got {value}"
                            ))
                        }
                    };
                    let mut expr = parse_expr(key, &s, false)?;
                    if key == "name" {
                        // A bare kernel name means /dev/<name>.
                        let dev = |v: &mut String| {
                            if !v.starts_with("/dev/") {
                                *v = format!("/dev/{v}");
                            }
                        };
                        match &mut expr {
                            Expr::Str(_, v) => dev(v),
                            Expr::Or(vs) => vs.iter_mut().for_each(dev),
                            _ => {}
                        }
                    }
                    expr
                }
                other => return Err(format!("unknown root device hint {other:?}")),
            };
            hints.push((key.clone(), expr));
        }
        Ok(Self { hints })
    }

    pub fn is_empty(&self) -> bool {
        self.hints.is_empty()
    }

    fn device_strings(dev: &BlockDevice, key: &str) -> Vec<String> {
        let v: Vec<Option<String>> = match key {
            "model" => vec![Some(dev.model.clone())],
            "vendor" => vec![Some(dev.vendor.clone())],
            "serial" => vec![dev.serial.clone()],
            "wwn" => vec![dev.wwn.clone()],
            "wwn_with_extension" => vec![dev.wwn_with_extension.clone()],
            "wwn_vendor_extension" => vec![dev.wwn_vendor_extension.clone()],
            "name" => vec![Some(dev.path.to_string_lossy().into_owned())],
            "hctl" => vec![dev.hctl.clone()],
            "by_path" => vec![dev.by_path.clone()],
            "tran" => vec![dev.tran.clone()],
            _ => vec![],
        };
        v.into_iter()
            .flatten()
            .map(|s| s.to_ascii_lowercase())
            .collect()
    }

    pub fn matches(&self, dev: &BlockDevice) -> bool {
        self.hints.iter().all(|(key, expr)| match expr {
            Expr::Bool(b) => key == "rotational" && dev.rotational == *b,
            Expr::Num(op, n) => {
                let value = if key == "size" {
                    Some((dev.size >> 30) as f64)
                } else {
                    Self::device_strings(dev, key)
                        .first()
                        .and_then(|s| s.parse().ok())
                };
                value.is_some_and(|v| compare_num(op, v, *n))
            }
            _ => Self::device_strings(dev, key).iter().any(|v| match expr {
                Expr::Str(op, s) => compare_str(op, v, s),
                Expr::In(s) => v.contains(s.as_str()),
                Expr::Or(list) => list.iter().any(|s| s == v),
                _ => false,
            }),
        })
    }
}

fn compare_num(op: &str, v: f64, n: f64) -> bool {
    match op {
        "==" => v == n,
        "!=" => v != n,
        ">=" | "=" => v >= n,
        "<=" => v <= n,
        ">" => v > n,
        "<" => v < n,
        _ => false,
    }
}

fn compare_str(op: &str, v: &str, s: &str) -> bool {
    match op {
        "s==" => v == s,
        "s!=" => v != s,
        "s>=" => v >= s,
        "s<=" => v <= s,
        "s>" => v > s,
        "s<" => v < s,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn dev(name: &str, gib: u64) -> BlockDevice {
        BlockDevice {
            name: name.into(),
            path: format!("/dev/{name}").into(),
            size: gib << 30,
            model: "PERC H740P".into(),
            vendor: "DELL".into(),
            serial: Some(format!("SER-{name}")),
            wwn: Some("0x5000c500a1b2c3d4".into()),
            hctl: Some("0:2:0:0".into()),
            by_path: Some(format!("/dev/disk/by-path/pci-0000:18:00.0-{name}")),
            rotational: true,
            ..BlockDevice::default()
        }
    }

    fn hints(v: Value) -> RootDeviceHints {
        RootDeviceHints::parse(v.as_object().unwrap()).unwrap()
    }

    #[test]
    fn operators() {
        let d = dev("sda", 100);
        for (h, want) in [
            (json!({"size": 100}), true),
            (json!({"size": ">= 50"}), true),
            (json!({"size": "<= 50"}), false),
            (json!({"size": "= 99"}), true),
            (json!({"size": "!= 100"}), false),
            (json!({"model": "perc h740p"}), true),
            (json!({"model": "<in> H740"}), true),
            (json!({"vendor": "<or> HP <or> DELL"}), true),
            (json!({"serial": "s!= SER-sda"}), false),
            (json!({"name": "sda"}), true),
            (json!({"name": "/dev/sdb"}), false),
            (json!({"rotational": false}), false),
            (
                json!({"rotational": "true", "wwn": "0x5000C500A1B2C3D4"}),
                true,
            ),
            (json!({"hctl": "0:2:0:0", "size": 100}), true),
            (
                json!({"by_path": "/dev/disk/by-path/pci-0000:18:00.0-sda"}),
                true,
            ),
        ] {
            assert_eq!(hints(h.clone()).matches(&d), want, "{h}");
        }
    }

    #[test]
    fn bad_hints_are_errors() {
        for h in [
            json!({"colour": "red"}),
            json!({"size": "big"}),
            json!({"rotational": "maybe"}),
            json!({"model": ["a"]}),
        ] {
            assert!(
                RootDeviceHints::parse(h.as_object().unwrap()).is_err(),
                "{h}"
            );
        }
    }
}
