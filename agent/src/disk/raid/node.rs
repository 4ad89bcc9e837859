//! What software RAID reads from the Ironic node: the boot mode and the
//! partition table type (IPA's `get_node_boot_mode`,
//! `get_partition_table_type_from_specs`, `parse_capabilities`) and the
//! RAID volume names on the skip list (`get_skip_list_from_node_for_raids`).

use serde_json::{Map, Value};

use super::plan::BootMode;
use crate::disk::layout::Label;

/// `capabilities` of `root` (`properties` or `instance_info`): an object, a
/// JSON string of one, or `key1:value1,key2:value2`; anything else is none.
pub fn capabilities(root: &Value) -> Map<String, Value> {
    match root.get("capabilities") {
        Some(Value::Object(m)) => m.clone(),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(m)) => m,
            Ok(_) => Map::new(),
            Err(_) => s
                .split(',')
                .filter_map(|kv| match kv.split(':').collect::<Vec<_>>()[..] {
                    [k, v] if !k.is_empty() && !v.is_empty() => {
                        Some((k.to_string(), Value::String(v.to_string())))
                    }
                    _ => None,
                })
                .collect(),
        },
        _ => Map::new(),
    }
}

/// Python's `str(value).lower()` for the scalars capabilities hold.
fn lower(v: &Value) -> String {
    match v {
        Value::String(s) => s.to_lowercase(),
        other => other.to_string().to_lowercase(),
    }
}

/// The deploy boot mode: UEFI under secure boot, else
/// `instance_info.deploy_boot_mode`, the `boot_mode` capability,
/// `driver_internal_info.deploy_boot_mode`, and the ramdisk's own, in that
/// order; a value that is neither `bios` nor `uefi` means the ramdisk's.
pub fn boot_mode(node: &Value, ramdisk: BootMode) -> BootMode {
    let null = Value::Null;
    let ii_caps = capabilities(node.get("instance_info").unwrap_or(&null));
    let node_caps = capabilities(node.get("properties").unwrap_or(&null));
    let secure = ii_caps
        .get("secure_boot")
        .or_else(|| node_caps.get("secure_boot"))
        .is_some_and(|v| lower(v) == "true");
    if secure {
        return BootMode::Uefi;
    }
    let chosen = node
        .pointer("/instance_info/deploy_boot_mode")
        .or_else(|| node_caps.get("boot_mode"))
        .or_else(|| node.pointer("/driver_internal_info/deploy_boot_mode"));
    match chosen.map(lower).as_deref() {
        Some("uefi") => BootMode::Uefi,
        Some("bios") => BootMode::Bios,
        _ => ramdisk,
    }
}

/// The holders' table: GPT for UEFI, else the `disk_label` capability
/// (`instance_info` before `properties`), msdos unless it says `gpt`.
pub fn table_label(node: &Value, boot: BootMode) -> Label {
    if boot == BootMode::Uefi {
        return Label::Gpt;
    }
    let null = Value::Null;
    let ii_caps = capabilities(node.get("instance_info").unwrap_or(&null));
    let node_caps = capabilities(node.get("properties").unwrap_or(&null));
    let label = ii_caps
        .get("disk_label")
        .or_else(|| node_caps.get("disk_label"));
    match label {
        Some(Value::String(s)) if s == "gpt" => Label::Gpt,
        _ => Label::Msdos,
    }
}

/// `volume_name`s in `properties.skip_block_devices`.
pub fn raid_skip_list(node: &Value) -> Vec<String> {
    let mut names: Vec<String> = node
        .pointer("/properties/skip_block_devices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|hint| hint.get("volume_name")?.as_str().map(str::to_string))
        .collect();
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn capabilities_in_all_three_forms() {
        let want = json!({"boot_mode": "uefi", "disk_label": "gpt"});
        let want = want.as_object().unwrap();
        assert_eq!(&capabilities(&json!({"capabilities": want})), want);
        assert_eq!(
            &capabilities(
                &json!({"capabilities": "{\"boot_mode\": \"uefi\", \"disk_label\": \"gpt\"}"})
            ),
            want
        );
        assert_eq!(
            &capabilities(&json!({"capabilities": "boot_mode:uefi,disk_label:gpt,junk,a:b:c,:x"})),
            want
        );
        assert!(capabilities(&json!({"capabilities": "[1]"})).is_empty());
        assert!(capabilities(&json!({})).is_empty());
    }

    #[test]
    fn boot_mode_priority() {
        let bios = BootMode::Bios;
        assert_eq!(boot_mode(&json!({}), bios), bios, "the ramdisk's own");
        assert_eq!(boot_mode(&json!({}), BootMode::Uefi), BootMode::Uefi);
        let node = json!({
            "instance_info": {"deploy_boot_mode": "bios"},
            "properties": {"capabilities": "boot_mode:uefi"},
            "driver_internal_info": {"deploy_boot_mode": "uefi"},
        });
        assert_eq!(boot_mode(&node, BootMode::Uefi), BootMode::Bios);
        let node = json!({
            "properties": {"capabilities": "boot_mode:UEFI"},
            "driver_internal_info": {"deploy_boot_mode": "bios"},
        });
        assert_eq!(boot_mode(&node, bios), BootMode::Uefi);
        let node = json!({"driver_internal_info": {"deploy_boot_mode": "uefi"}});
        assert_eq!(boot_mode(&node, bios), BootMode::Uefi);
        let node = json!({"instance_info": {"deploy_boot_mode": "pxe"}});
        assert_eq!(boot_mode(&node, bios), bios, "unknown means the ramdisk's");
        let secure = json!({
            "instance_info": {"deploy_boot_mode": "bios",
                              "capabilities": {"secure_boot": true}},
        });
        assert_eq!(boot_mode(&secure, bios), BootMode::Uefi);
        let not = json!({
            "instance_info": {"capabilities": {"secure_boot": "false"}},
            "properties": {"capabilities": "secure_boot:true"},
        });
        assert_eq!(
            boot_mode(&not, bios),
            bios,
            "instance_info's secure_boot wins"
        );
    }

    #[test]
    fn table_labels() {
        let gpt_props = json!({"properties": {"capabilities": "disk_label:gpt"}});
        assert_eq!(table_label(&gpt_props, BootMode::Bios), Label::Gpt);
        assert_eq!(table_label(&json!({}), BootMode::Bios), Label::Msdos);
        assert_eq!(table_label(&json!({}), BootMode::Uefi), Label::Gpt);
        let ii_wins = json!({
            "instance_info": {"capabilities": {"disk_label": "msdos"}},
            "properties": {"capabilities": "disk_label:gpt"},
        });
        assert_eq!(table_label(&ii_wins, BootMode::Bios), Label::Msdos);
    }

    #[test]
    fn skip_list_volume_names() {
        let node = json!({"properties": {"skip_block_devices": [
            {"name": "/dev/sda"}, {"volume_name": "data"}, {"volume_name": "data"},
            {"volume_name": "keep"}]}});
        assert_eq!(raid_skip_list(&node), ["data", "keep"]);
        assert!(raid_skip_list(&json!({})).is_empty());
    }
}
