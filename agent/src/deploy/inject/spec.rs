//! The files to inject, as IPA's `_validate_files` accepts them: the node's
//! `properties.inject_files` followed by the step's `files` argument. Every
//! entry is checked (and inline content decoded, URL templates rendered)
//! before anything is mounted, so a bad entry fails the step with nothing
//! written.

use std::path::{Component, Path, PathBuf};

use base64::Engine;
use serde_json::{Map, Value};

use super::template;

/// The keys IPA accepts in one entry.
const KNOWN_KEYS: [&str; 8] = [
    "path",
    "partition",
    "content",
    "deleted",
    "mode",
    "dirmode",
    "owner",
    "group",
];

/// Where the file lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Partition {
    /// Partition `n` of the OS install disk.
    Number(u32),
    /// A device path, mounted as given.
    Device(PathBuf),
    /// The first partition of the install disk whose filesystem holds the
    /// path's first directory (`etc` for `/etc/hosts`).
    Detect,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    Bytes(Vec<u8>),
    /// An http(s) URL, already rendered with the node and ports.
    Url(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Write {
        content: Content,
        mode: Option<u32>,
        /// Applied to the leaf directory only, and only if it was created.
        dirmode: Option<u32>,
        owner: Option<u32>,
        group: Option<u32>,
    },
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    /// The path as given, for messages.
    pub path: String,
    /// Inside the filesystem: normal components only, never empty.
    pub relative: PathBuf,
    pub partition: Partition,
    pub action: Action,
}

impl FileSpec {
    /// With `Partition::Detect`: the directory that identifies the
    /// filesystem (`etc` for `/etc/hosts`).
    pub fn first_directory(&self) -> PathBuf {
        self.relative
            .components()
            .next()
            .map(|c| PathBuf::from(c.as_os_str()))
            .unwrap_or_default()
    }
}

/// Parse and check every entry; all problems are reported at once, in
/// IPA's words where IPA has them.
pub fn parse(
    from_properties: Option<&Value>,
    from_args: Option<&Value>,
    node: &Map<String, Value>,
    ports: &[Value],
) -> Result<Vec<FileSpec>, String> {
    let list = |v: Option<&Value>, what: &str| -> Result<Vec<Value>, String> {
        match v {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => Ok(a.clone()),
            Some(other) => Err(format!("{what} must be a list, got {}", kind(other))),
        }
    };
    let mut entries = list(from_properties, "The `inject_files` node property")?;
    entries.extend(list(from_args, "The `files` argument")?);
    let mut files = Vec::new();
    let mut failures = Vec::new();
    for entry in &entries {
        match parse_one(entry, node, ports) {
            Ok(f) => files.push(f),
            Err(mut problems) => failures.append(&mut problems),
        }
    }
    if failures.is_empty() {
        Ok(files)
    } else {
        Err(format!(
            "Validation of files failed: {}",
            failures.join("; ")
        ))
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

fn parse_one(
    entry: &Value,
    node: &Map<String, Value>,
    ports: &[Value],
) -> Result<FileSpec, Vec<String>> {
    let Some(fl) = entry.as_object() else {
        return Err(vec![format!("expected an object, got {entry}")]);
    };
    let mut failures = Vec::new();
    let unknown: Vec<&str> = fl
        .keys()
        .map(String::as_str)
        .filter(|k| !KNOWN_KEYS.contains(k))
        .collect();
    if !unknown.is_empty() {
        failures.push(format!(
            "unexpected fields in {entry}: {}",
            unknown.join(", ")
        ));
    }
    let path = match fl.get("path") {
        Some(Value::String(p)) if !p.is_empty() => Some(p.clone()),
        _ => {
            failures.push(format!("expected a path in {entry}"));
            None
        }
    };
    let partition = match fl.get("partition") {
        None | Some(Value::Null) => Some(Partition::Detect),
        Some(Value::String(s)) if s.is_empty() => Some(Partition::Detect),
        Some(v) => match parse_partition(v) {
            Ok(p) => Some(p),
            Err(e) => {
                failures.push(format!("{e} in {entry}"));
                None
            }
        },
    };
    let relative = path.as_deref().and_then(|p| match relative_path(p) {
        Ok(r) => Some(r),
        Err(e) => {
            failures.push(format!("{e} in {entry}"));
            None
        }
    });
    if let (Some(rel), Some(Partition::Detect)) = (&relative, &partition) {
        if rel.components().count() < 2 {
            failures.push(format!("{entry} in root directory requires \"partition\""));
        }
    }
    let deleted = match fl.get("deleted") {
        None | Some(Value::Null) => false,
        Some(v) => ferrite_protocol::loose::value_as_bool(v).unwrap_or_else(|| {
            failures.push(format!("deleted must be a boolean in {entry}"));
            false
        }),
    };
    let content = fl.get("content").filter(|v| !v.is_null());
    let has_content = match content {
        Some(Value::String(s)) => !s.is_empty(),
        Some(_) => true,
        None => false,
    };
    if has_content && deleted {
        failures.push(format!("content cannot be used with deleted in {entry}"));
    }
    let mut number = |field: &str, max: i64| -> Option<u32> {
        match fl.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => match n.as_i64() {
                // -1 leaves the owner or group as it is, as chown(2) does.
                Some(-1) if matches!(field, "owner" | "group") => None,
                Some(v) if (0..=max).contains(&v) => Some(v as u32),
                _ => {
                    failures.push(format!("{field} is out of range in {entry}"));
                    None
                }
            },
            Some(_) => {
                failures.push(format!("{field} must be a number in {entry}"));
                None
            }
        }
    };
    let mode = number("mode", 0o7777);
    let dirmode = number("dirmode", 0o7777);
    let owner = number("owner", i64::from(u32::MAX - 1));
    let group = number("group", i64::from(u32::MAX - 1));
    let action = if deleted {
        Some(Action::Delete)
    } else {
        let content = match content {
            None => {
                failures.push(format!("expected content or deleted in {entry}"));
                None
            }
            Some(Value::String(s)) if s.contains("://") => match render_url(s, node, ports) {
                Ok(url) => Some(Content::Url(url)),
                Err(e) => {
                    failures.push(format!("{e} in {entry}"));
                    None
                }
            },
            Some(Value::String(s)) => match decode_base64(s) {
                Ok(bytes) => Some(Content::Bytes(bytes)),
                Err(e) => {
                    failures.push(format!("content is not valid base64 ({e}) in {entry}"));
                    None
                }
            },
            Some(other) => {
                failures.push(format!(
                    "content must be a string, got {} in {entry}",
                    kind(other)
                ));
                None
            }
        };
        content.map(|content| Action::Write {
            content,
            mode,
            dirmode,
            owner,
            group,
        })
    };
    match (path, relative, partition, action) {
        (Some(path), Some(relative), Some(partition), Some(action)) if failures.is_empty() => {
            Ok(FileSpec {
                path,
                relative,
                partition,
                action,
            })
        }
        _ => Err(failures),
    }
}

/// IPA takes an integer (or a string of one) as a partition number of the
/// install disk, and anything else as a device path.
fn parse_partition(v: &Value) -> Result<Partition, String> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .filter(|n| (1..=u64::from(u32::MAX)).contains(n))
            .map(|n| Partition::Number(n as u32))
            .ok_or_else(|| format!("partition {n} is not a partition number")),
        Value::String(s) => match s.trim().parse::<u32>() {
            Ok(0) => Err("partition 0 is not a partition number".into()),
            Ok(n) => Ok(Partition::Number(n)),
            Err(_) if s.starts_with('/') => Ok(Partition::Device(PathBuf::from(s))),
            Err(_) => Err(format!(
                "partition {s:?} is neither a number nor a device path"
            )),
        },
        other => Err(format!(
            "partition must be a number or a device path, got {other}"
        )),
    }
}

/// IPA strips the leading slashes and normalises; a `..` that would leave
/// the filesystem is refused here rather than trusted.
fn relative_path(path: &str) -> Result<PathBuf, String> {
    if path.ends_with('/') {
        return Err("directories not supported".into());
    }
    let mut out = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                return Err(format!("path {path:?} must not contain \"..\""));
            }
            Component::Prefix(_) => return Err(format!("path {path:?} is not a Unix path")),
        }
    }
    if out.as_os_str().is_empty() {
        return Err(format!("path {path:?} names no file"));
    }
    Ok(out)
}

/// Python's `b64decode`, which skips line breaks and spaces.
fn decode_base64(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(compact)
}

/// A URL template as a deploy template writes it, e.g.
/// `http://server/{node[uuid]}/hosts`; only http(s) results are fetched.
fn render_url(
    template: &str,
    node: &Map<String, Value>,
    ports: &[Value],
) -> Result<String, String> {
    let node = Value::Object(node.clone());
    let ports = Value::Array(ports.to_vec());
    let url = template::render(template, &[("node", &node), ("ports", &ports)])?;
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(url)
    } else {
        Err(format!("content URL {url:?} is not http(s)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(entry: Value) -> Result<FileSpec, String> {
        let node = json!({"uuid": "1be26c0b", "properties": {}});
        let ports = vec![json!({"address": "52:54:00:12:34:56"})];
        parse(
            None,
            Some(&json!([entry])),
            node.as_object().unwrap(),
            &ports,
        )
        .map(|mut v| v.remove(0))
    }

    #[test]
    fn properties_come_first_then_arguments() {
        let node = Map::new();
        let files = parse(
            Some(&json!([{"path": "/etc/a", "content": "YQ=="}])),
            Some(&json!([{"path": "/etc/b", "deleted": true}])),
            &node,
            &[],
        )
        .unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].relative, PathBuf::from("etc/a"));
        assert_eq!(
            files[0].action,
            Action::Write {
                content: Content::Bytes(b"a".to_vec()),
                mode: None,
                dirmode: None,
                owner: None,
                group: None
            }
        );
        assert_eq!(files[1].action, Action::Delete);
        assert_eq!(files[1].first_directory(), PathBuf::from("etc"));
    }

    #[test]
    fn partitions_numbers_and_devices() {
        let f = one(json!({"path": "/hosts", "partition": 2, "content": ""})).unwrap();
        assert_eq!(f.partition, Partition::Number(2));
        let f = one(json!({"path": "/hosts", "partition": "3", "content": ""})).unwrap();
        assert_eq!(f.partition, Partition::Number(3));
        let f = one(json!({"path": "/x/y", "partition": "/dev/sdb1", "content": ""})).unwrap();
        assert_eq!(f.partition, Partition::Device("/dev/sdb1".into()));
        // An empty content writes an empty file, as IPA does.
        assert!(
            matches!(f.action, Action::Write { content: Content::Bytes(ref b), .. } if b.is_empty())
        );
    }

    #[test]
    fn url_templates_see_the_node_and_ports() {
        let f = one(json!({"path": "/etc/x",
            "content": "http://10.0.0.1/{node[uuid]}/{ports[0][address]}"}))
        .unwrap();
        assert!(
            matches!(f.action, Action::Write { content: Content::Url(ref u), .. }
            if u == "http://10.0.0.1/1be26c0b/52:54:00:12:34:56")
        );
    }

    #[test]
    fn modes_and_owners() {
        let f = one(
            json!({"path": "/etc/x", "content": "", "mode": 0o600, "dirmode": 0o700,
            "owner": 1000, "group": -1}),
        )
        .unwrap();
        assert_eq!(
            f.action,
            Action::Write {
                content: Content::Bytes(Vec::new()),
                mode: Some(0o600),
                dirmode: Some(0o700),
                owner: Some(1000),
                group: None
            }
        );
    }

    #[test]
    fn bad_entries_are_all_reported_in_ipas_words() {
        let cases = [
            (json!({"content": "YQ=="}), "expected a path in"),
            (
                json!({"path": "/hosts", "content": "YQ=="}),
                "in root directory requires \"partition\"",
            ),
            (
                json!({"path": "/etc/", "content": "YQ=="}),
                "directories not supported",
            ),
            (
                json!({"path": "/etc/a", "content": "YQ==", "deleted": true}),
                "content cannot be used with deleted",
            ),
            (
                json!({"path": "/etc/a", "content": "", "mode": "0644"}),
                "mode must be a number",
            ),
            (
                json!({"path": "/etc/a", "content": "", "mode": 0o10000}),
                "mode is out of range",
            ),
            (
                json!({"path": "/etc/a", "content": "", "size": 3}),
                "unexpected fields in",
            ),
            (
                json!({"path": "/etc/../../x", "content": ""}),
                "must not contain \"..\"",
            ),
            (
                json!({"path": "/etc/a", "content": "!!!"}),
                "content is not valid base64",
            ),
            (json!({"path": "/etc/a"}), "expected content or deleted"),
            (
                json!({"path": "/etc/a", "content": "ftp://x/{node[uuid]}"}),
                "is not http(s)",
            ),
            (
                json!({"path": "/etc/a", "content": "http://x/{node[nope]}"}),
                "node has no key \"nope\"",
            ),
            (
                json!({"path": "/a", "partition": 0, "content": ""}),
                "not a partition number",
            ),
        ];
        for (entry, want) in cases {
            let err = one(entry.clone()).unwrap_err();
            assert!(err.starts_with("Validation of files failed: "), "{err}");
            assert!(err.contains(want), "{entry}: {err}");
        }
        let node = Map::new();
        let err = parse(Some(&json!({"path": "/etc/a"})), None, &node, &[]).unwrap_err();
        assert_eq!(
            err,
            "The `inject_files` node property must be a list, got dict"
        );
    }
}
