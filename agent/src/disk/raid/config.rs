//! Ironic's `target_raid_config` for software RAID, parsed once into types
//! and checked the way IPA's `validate_configuration` checks it, with its
//! messages: one or two logical disks, all `controller: software`, the
//! first RAID-1, at most one `MAX` and one root volume, `physical_disks` as
//! lists of at least two device-hint objects.

use serde_json::{Map, Value};

use crate::disk::md::{superblock::NAME_LEN, Level};
use crate::disk::RootDeviceHints;
use ferrite_protocol::loose::value_as_bool;

/// `size_gb`: GiB, or the rest of the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    Gib(u64),
    Max,
}

/// One of `physical_disks`: device hints, with the text Ironic sent (for messages).
#[derive(Debug, Clone, PartialEq)]
pub struct PhysicalDisk {
    pub hints: RootDeviceHints,
    pub raw: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogicalDisk {
    pub size: Size,
    pub level: Level,
    pub volume_name: Option<String>,
    /// `None` when not given: IPA maps only an explicit value.
    pub is_root_volume: Option<bool>,
    /// `None`: span every disk.
    pub physical_disks: Option<Vec<PhysicalDisk>>,
}

/// A validated software RAID configuration: one or two logical disks.
#[derive(Debug, Clone, PartialEq)]
pub struct SoftwareRaid {
    pub logical_disks: Vec<LogicalDisk>,
}

/// What the node carries that validation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeContext<'a> {
    pub uuid: &'a str,
    /// `properties.skip_block_devices` names RAID volumes (IPA's
    /// `get_skip_list_from_node_for_raids` is not empty).
    pub raid_skip_list: bool,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RaidConfigError {
    #[error("RAID config contains no logical disks")]
    NoLogicalDisks,
    #[error("Could not validate Software RAID config for {node}: {}", .errors.join("; "))]
    Invalid { node: String, errors: Vec<String> },
}

/// `create_configuration`'s view: nothing to do (no config, or no logical
/// disk on the `software` controller) is `Ok(None)`; anything else must validate.
pub fn for_create(
    raid_config: &Value,
    node: NodeContext<'_>,
) -> Result<Option<SoftwareRaid>, RaidConfigError> {
    let any_software = raid_config
        .get("logical_disks")
        .and_then(Value::as_array)
        .is_some_and(|lds| {
            lds.iter()
                .any(|ld| ld.get("controller").and_then(Value::as_str) == Some("software"))
        });
    if !any_software {
        return Ok(None);
    }
    validate(raid_config, node)
}

/// `validate_configuration` (also the first step of `apply_configuration`):
/// an empty config is `Ok(None)`, as IPA returns without raising.
pub fn validate(
    raid_config: &Value,
    node: NodeContext<'_>,
) -> Result<Option<SoftwareRaid>, RaidConfigError> {
    let empty = match raid_config {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        _ => false,
    };
    if empty {
        return Ok(None);
    }
    let lds = match raid_config.get("logical_disks").and_then(Value::as_array) {
        Some(l) if !l.is_empty() => l,
        _ => return Err(RaidConfigError::NoLogicalDisks),
    };
    let mut errors = Vec::new();
    if !(1..=2).contains(&lds.len()) {
        errors.push("Software RAID configuration requires one or two logical disks".into());
    }
    let mut volume_names: Vec<&str> = Vec::new();
    let mut root_selected = false;
    let mut parsed = Vec::new();
    for (i, ld) in lds.iter().enumerate() {
        let Some(ld) = ld.as_object() else {
            errors.push(format!("logical disk {i} is not an object"));
            continue;
        };
        if ld.get("controller").and_then(Value::as_str) != Some("software") {
            errors.push(
                "Software RAID configuration requires all logical disks to have \
                 'controller'='software'"
                    .into(),
            );
        }
        match ld.get("volume_name") {
            None | Some(Value::Null) => {
                if node.raid_skip_list {
                    errors.push(
                        "All logical disks are required to have a volume name specified as a \
                         volume name is mentioned in the property skip block devices."
                            .into(),
                    );
                }
            }
            Some(Value::String(name)) => {
                if volume_names.contains(&name.as_str()) {
                    errors.push(format!(
                        "Duplicate software RAID device name {name} detected"
                    ));
                } else {
                    volume_names.push(name);
                }
            }
            Some(other) => errors.push(format!("volume_name must be a string, got {other}")),
        }
        let is_root = match ld.get("is_root_volume") {
            None | Some(Value::Null) => None,
            Some(v) => match value_as_bool(v) {
                Some(b) => Some(b),
                None => {
                    errors.push(format!("is_root_volume must be a boolean, got {v}"));
                    None
                }
            },
        };
        if is_root == Some(true) {
            if root_selected {
                errors.push(
                    "Software RAID configuration allows only one logical disk to be marked \
                     as is_root_volume"
                        .into(),
                );
            }
            root_selected = true;
        }
        let physical_disks = physical_disks(ld, &mut errors);
        let size = size(i, ld, &mut errors);
        let level = level(i, ld, &mut errors);
        let volume_name = ld
            .get("volume_name")
            .and_then(Value::as_str)
            .map(str::to_string);
        if let Some(name) = &volume_name {
            // mdadm refuses what does not fit the superblock's set name.
            if name.is_empty() || name.len() > NAME_LEN || name.contains(':') {
                errors.push(format!(
                    "volume_name {name:?} must be 1 to {NAME_LEN} bytes without ':'"
                ));
            }
        }
        parsed.push((size, level, volume_name, is_root, physical_disks));
    }
    let raw_level = |i: usize| lds[i].get("raid_level").and_then(Value::as_str);
    if raw_level(0) != Some("1") {
        errors
            .push("Software RAID Configuration requires RAID-1 for the first logical disk".into());
    }
    if lds.len() == 2 {
        let max = |i: usize| lds[i].get("size_gb").and_then(Value::as_str) == Some("MAX");
        if max(0) && max(1) {
            errors.push("Software RAID can have only one RAID device with size 'MAX'".into());
        }
    }
    if !errors.is_empty() {
        return Err(RaidConfigError::Invalid {
            node: node.uuid.to_string(),
            errors,
        });
    }
    let logical_disks = parsed
        .into_iter()
        .filter_map(
            |(size, level, volume_name, is_root_volume, physical_disks)| {
                Some(LogicalDisk {
                    size: size?,
                    level: level?,
                    volume_name,
                    is_root_volume,
                    physical_disks,
                })
            },
        )
        .collect();
    Ok(Some(SoftwareRaid { logical_disks }))
}

fn size(i: usize, ld: &Map<String, Value>, errors: &mut Vec<String>) -> Option<Size> {
    let size = match ld.get("size_gb") {
        Some(Value::String(s)) if s == "MAX" => Some(Size::Max),
        // IPA takes int(size_gb), so a string of digits is a size too.
        Some(Value::String(s)) => s.trim().parse().ok().map(Size::Gib),
        Some(Value::Number(n)) => n.as_u64().map(Size::Gib),
        _ => None,
    };
    if size.is_none() {
        errors.push(format!(
            "logical disk {i}: size_gb must be a whole number of GiB or 'MAX', got {}",
            ld.get("size_gb").unwrap_or(&Value::Null)
        ));
    }
    size
}

fn level(i: usize, ld: &Map<String, Value>, errors: &mut Vec<String>) -> Option<Level> {
    let raw = ld.get("raid_level");
    let level = match raw.and_then(Value::as_str) {
        Some("0") => Some(Level::Raid0),
        Some("1") => Some(Level::Raid1),
        Some("1+0") => Some(Level::Raid10),
        _ => None,
    };
    // The first logical disk's level is checked as IPA checks it: RAID-1 or bust.
    if level.is_none() && i > 0 {
        // IPA also builds RAID-5 and 6 with mdadm; native metadata covers 0, 1 and 1+0.
        let shown = match raw {
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => format!("(none for logical disk {i})"),
        };
        errors.push(format!(
            "Software RAID configuration does not support RAID level {shown}"
        ));
    }
    level
}

fn physical_disks(ld: &Map<String, Value>, errors: &mut Vec<String>) -> Option<Vec<PhysicalDisk>> {
    let raw = match ld.get("physical_disks") {
        None | Some(Value::Null) => return None,
        Some(v) => v,
    };
    let items = raw.as_array().map(Vec::as_slice).unwrap_or_default();
    if !raw.is_array() || items.len() < 2 {
        errors.push(
            "The physical_disks parameter for software RAID must be a list with at least 2 \
             items, each specifying a disk in the device hints format"
                .into(),
        );
    }
    if items.iter().any(|item| !item.is_object()) {
        errors.push(
            "The physical_disks parameter for software RAID must be a list of device hints \
             (dictionaries)"
                .into(),
        );
        return None;
    }
    let mut disks = Vec::new();
    for item in items {
        match item.as_object().map(RootDeviceHints::parse) {
            Some(Ok(hints)) => disks.push(PhysicalDisk {
                hints,
                raw: item.clone(),
            }),
            Some(Err(e)) => errors.push(e),
            None => {}
        }
    }
    Some(disks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NODE: NodeContext<'static> = NodeContext {
        uuid: "1be26c0b-03f2-4d2e-ae87-c02d7f33c123",
        raid_skip_list: false,
    };

    fn errors(config: Value, node: NodeContext<'_>) -> Vec<String> {
        match validate(&config, node) {
            Err(RaidConfigError::Invalid { errors, .. }) => errors,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    fn ld(level: &str, size: Value) -> Value {
        json!({"raid_level": level, "size_gb": size, "controller": "software"})
    }

    #[test]
    fn parses_ironics_two_volume_example() {
        let config = json!({"logical_disks": [
            {"size_gb": 100, "raid_level": "1", "controller": "software",
             "is_root_volume": true, "volume_name": "root",
             "physical_disks": [{"name": "/dev/sda"}, {"name": "/dev/sdb"}]},
            {"size_gb": "MAX", "raid_level": "1+0", "controller": "software"},
        ]});
        let raid = validate(&config, NODE).unwrap().unwrap();
        let [root, data] = raid.logical_disks.as_slice() else {
            panic!("two logical disks")
        };
        assert_eq!(root.size, Size::Gib(100));
        assert_eq!(root.level, Level::Raid1);
        assert_eq!(root.volume_name.as_deref(), Some("root"));
        assert_eq!(root.is_root_volume, Some(true));
        assert_eq!(root.physical_disks.as_ref().map(Vec::len), Some(2));
        assert_eq!(data.size, Size::Max);
        assert_eq!(data.level, Level::Raid10);
        assert_eq!(data.is_root_volume, None);
        assert_eq!(data.physical_disks, None);
    }

    #[test]
    fn nothing_to_validate_or_create() {
        assert_eq!(validate(&json!({}), NODE), Ok(None));
        assert_eq!(validate(&Value::Null, NODE), Ok(None));
        assert_eq!(for_create(&json!({}), NODE), Ok(None));
        let hardware = json!({"logical_disks": [
            {"size_gb": 10, "raid_level": "1", "controller": "RAID.Integrated.1-1"}]});
        assert_eq!(
            for_create(&hardware, NODE),
            Ok(None),
            "no software controller"
        );
        assert!(validate(&hardware, NODE).is_err(), "apply validates first");
        assert_eq!(
            validate(&json!({"logical_disks": []}), NODE),
            Err(RaidConfigError::NoLogicalDisks)
        );
    }

    #[test]
    fn ipas_messages_joined_for_the_node() {
        let err = validate(
            &json!({"logical_disks": [
                {"size_gb": "MAX", "raid_level": "0", "controller": "hardware"},
                ld("1", json!("MAX")),
            ]}),
            NODE,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Could not validate Software RAID config for 1be26c0b-03f2-4d2e-ae87-c02d7f33c123: \
             Software RAID configuration requires all logical disks to have \
             'controller'='software'; \
             Software RAID Configuration requires RAID-1 for the first logical disk; \
             Software RAID can have only one RAID device with size 'MAX'"
        );
    }

    #[test]
    fn counts_volumes_roots_and_names() {
        let three =
            json!({"logical_disks": [ld("1", json!(1)), ld("0", json!(1)), ld("0", json!(1))]});
        assert_eq!(
            errors(three, NODE),
            ["Software RAID configuration requires one or two logical disks"]
        );
        let mut a = ld("1", json!(10));
        a["is_root_volume"] = json!(true);
        a["volume_name"] = json!("v");
        let b = a.clone();
        assert_eq!(
            errors(json!({"logical_disks": [a, b]}), NODE),
            [
                "Duplicate software RAID device name v detected",
                "Software RAID configuration allows only one logical disk to be marked as \
                 is_root_volume"
            ]
        );
        let skip = NodeContext {
            raid_skip_list: true,
            ..NODE
        };
        assert_eq!(
            errors(json!({"logical_disks": [ld("1", json!(10))]}), skip),
            [
                "All logical disks are required to have a volume name specified as a volume \
              name is mentioned in the property skip block devices."
            ]
        );
        let mut long = ld("1", json!(10));
        long["volume_name"] = json!("x".repeat(33));
        assert_eq!(errors(json!({"logical_disks": [long]}), NODE).len(), 1);
    }

    #[test]
    fn physical_disks_are_lists_of_two_hint_objects() {
        let with = |pd: Value| {
            let mut l = ld("1", json!(10));
            l["physical_disks"] = pd;
            json!({"logical_disks": [l]})
        };
        let too_few = "The physical_disks parameter for software RAID must be a list with at \
                       least 2 items, each specifying a disk in the device hints format";
        let not_dicts = "The physical_disks parameter for software RAID must be a list of \
                         device hints (dictionaries)";
        assert_eq!(errors(with(json!([{"name": "sda"}])), NODE), [too_few]);
        assert_eq!(errors(with(json!("sda")), NODE), [too_few]);
        assert_eq!(errors(with(json!(["sda", "sdb"])), NODE), [not_dicts]);
        assert_eq!(
            errors(with(json!([{"name": "sda"}, {"colour": "red"}])), NODE),
            ["unknown root device hint \"colour\""]
        );
        assert!(validate(&with(json!([{"name": "sda"}, {"size": ">= 10"}])), NODE).is_ok());
    }

    #[test]
    fn sizes_and_levels() {
        let one = |l: Value| json!({"logical_disks": [ld("1", json!(8)), l]});
        let ok = |c: Value| validate(&c, NODE).unwrap().unwrap().logical_disks;
        assert_eq!(ok(one(ld("0", json!("20"))))[1].size, Size::Gib(20));
        assert_eq!(ok(one(ld("1+0", json!("MAX"))))[1].level, Level::Raid10);
        assert_eq!(
            errors(one(ld("5", json!(1))), NODE),
            ["Software RAID configuration does not support RAID level 5"]
        );
        assert_eq!(
            errors(one(ld("0", json!(-1))), NODE),
            ["logical disk 1: size_gb must be a whole number of GiB or 'MAX', got -1"]
        );
        assert_eq!(errors(one(ld("0", json!("max"))), NODE).len(), 1);
        assert_eq!(errors(one(ld("0", json!(1.5))), NODE).len(), 1);
    }
}
