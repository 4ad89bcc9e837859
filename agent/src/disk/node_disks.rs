//! What a node asks of its disks, read from its typed fields: the root
//! device hints (`instance_info.root_device`, else
//! `properties.root_device`) and `properties.skip_block_devices`.

use ferrite_protocol::LookupNode;
use serde_json::{Map, Value};

use super::skip_list::SkipList;

#[derive(Debug, Default)]
pub struct NodeDisks {
    /// The raw hints: a miss names them as Ironic sent them.
    pub hints: Option<Map<String, Value>>,
    pub skip: SkipList,
}

impl NodeDisks {
    /// A malformed skip list is an error (guessing could pick a disk the
    /// operator meant to keep).
    pub fn read(
        properties: &Map<String, Value>,
        instance_info: &Map<String, Value>,
    ) -> Result<Self, String> {
        let hints = [instance_info, properties]
            .into_iter()
            .filter_map(|m| m.get("root_device")?.as_object())
            .find(|h| !h.is_empty())
            .cloned();
        Ok(Self {
            hints,
            skip: SkipList::from_properties(properties)?,
        })
    }

    pub fn of(node: &LookupNode) -> Result<Self, String> {
        Self::read(&node.properties, &node.instance_info)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn instance_hints_win_and_empty_ones_do_not_count() {
        let props = map(json!({"root_device": {"name": "/dev/sdb"}}));
        let read = |ii: Value| NodeDisks::read(&props, &map(ii)).unwrap().hints;
        assert_eq!(
            read(json!({"root_device": {"serial": "x"}})),
            Some(map(json!({"serial": "x"})))
        );
        assert_eq!(
            read(json!({"root_device": {}})),
            Some(map(json!({"name": "/dev/sdb"})))
        );
        assert_eq!(
            NodeDisks::read(&Map::new(), &Map::new()).unwrap().hints,
            None
        );
        let bad = map(json!({"skip_block_devices": "sda"}));
        assert!(NodeDisks::read(&bad, &Map::new()).is_err());
    }
}
