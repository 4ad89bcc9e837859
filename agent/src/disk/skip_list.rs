//! The node's `properties.skip_block_devices` (IPA's
//! `list_block_devices_check_skip_list`): disks that cleaning must not
//! touch and a deploy must not choose. Each entry is a root-device-hint
//! dict and skips every disk it matches; an entry with `volume_name` names
//! a RAID volume to keep instead.

use serde_json::{Map, Value};
use tracing::warn;

use super::hints::RootDeviceHints;
use super::BlockDevice;

#[derive(Debug, Default)]
pub struct SkipList {
    hints: Vec<(String, RootDeviceHints)>,
    volumes: Vec<String>,
}

impl SkipList {
    /// Parse `node.properties.skip_block_devices`; a missing or null list
    /// skips nothing. A malformed list is an error: guessing could erase a
    /// disk the operator meant to keep.
    pub fn from_node(node: &Map<String, Value>) -> Result<Self, String> {
        match node.get("properties").and_then(Value::as_object) {
            Some(properties) => Self::from_properties(properties),
            None => Ok(Self::default()),
        }
    }

    /// [`SkipList::from_node`] from the node's typed `properties`.
    pub fn from_properties(properties: &Map<String, Value>) -> Result<Self, String> {
        let raw = properties
            .get("skip_block_devices")
            .filter(|v| !v.is_null());
        let Some(raw) = raw else {
            return Ok(Self::default());
        };
        let entries = raw
            .as_array()
            .ok_or_else(|| format!("skip_block_devices must be a list, not {raw}"))?;
        let mut list = Self::default();
        for entry in entries {
            let dict = entry
                .as_object()
                .ok_or_else(|| format!("skip_block_devices entries must be dicts, not {entry}"))?;
            if let Some(volume) = dict.get("volume_name") {
                let volume = volume
                    .as_str()
                    .ok_or_else(|| format!("volume_name must be a string, not {volume}"))?;
                list.volumes.push(volume.to_string());
                continue;
            }
            let hints = RootDeviceHints::parse(dict)
                .map_err(|e| format!("skip_block_devices entry {entry}: {e}"))?;
            if hints.is_empty() {
                return Err(format!(
                    "skip_block_devices entry {entry} names no device property"
                ));
            }
            list.hints.push((entry.to_string(), hints));
        }
        Ok(list)
    }

    /// The RAID volumes to keep (`volume_name` entries).
    pub fn volume_names(&self) -> &[String] {
        &self.volumes
    }

    /// The entry that skips `dev`, if one does.
    pub fn skipping(&self, dev: &BlockDevice) -> Option<&str> {
        self.hints
            .iter()
            .find(|(_, h)| h.matches(dev))
            .map(|(text, _)| text.as_str())
    }

    /// `devices` without the skipped ones (each skip logged, as IPA does).
    pub fn apply(&self, devices: Vec<BlockDevice>) -> Vec<BlockDevice> {
        devices
            .into_iter()
            .filter(|d| match self.skipping(d) {
                Some(hint) => {
                    warn!(hint, device = %d.path.display(), "skip_block_devices: skipping device");
                    false
                }
                None => true,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn disk(name: &str, serial: &str, size_gib: u64) -> BlockDevice {
        BlockDevice {
            name: name.into(),
            path: format!("/dev/{name}").into(),
            size: size_gib << 30,
            serial: Some(serial.into()),
            model: "QEMU HARDDISK".into(),
            ..Default::default()
        }
    }

    fn node(skip: Value) -> Map<String, Value> {
        json!({"properties": {"skip_block_devices": skip}})
            .as_object()
            .unwrap()
            .clone()
    }

    #[test]
    fn each_entry_skips_what_it_matches() {
        let list = SkipList::from_node(&node(json!([
            {"serial": "KEEP-1"},
            {"name": "/dev/sdc"},
            {"size": ">= 100", "model": "QEMU HARDDISK"},
            {"volume_name": "root"},
        ])))
        .unwrap();
        let disks = vec![
            disk("sda", "KEEP-1", 10),
            disk("sdb", "ERASE", 10),
            disk("sdc", "X", 10),
            disk("sdd", "Y", 200),
        ];
        let kept: Vec<String> = list.apply(disks).into_iter().map(|d| d.name).collect();
        assert_eq!(kept, vec!["sdb"]);
        assert_eq!(list.volume_names(), ["root"]);
    }

    #[test]
    fn no_list_skips_nothing_and_a_bad_list_is_an_error() {
        let empty = Map::new();
        assert!(SkipList::from_node(&empty)
            .unwrap()
            .skipping(&disk("sda", "s", 1))
            .is_none());
        assert!(SkipList::from_node(&node(Value::Null)).is_ok());
        for bad in [
            json!("sda"),
            json!(["sda"]),
            json!([{}]),
            json!([{"size": "big"}]),
        ] {
            assert!(SkipList::from_node(&node(bad.clone())).is_err(), "{bad}");
        }
    }
}
