//! Inspection data per node (Ironic's `node_inventory`): one row, replaced
//! by each successful inspection, deleted with the node.

use rusqlite::{params, OptionalExtension};
use serde_json::Value;

use super::{Store, StoreResult};

/// What `GET /v1/nodes/{id}/inventory` returns.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredInventory {
    pub inventory: Value,
    pub plugin_data: Value,
    pub created_at: String,
}

impl Store {
    pub fn save_inventory(
        &self,
        node_uuid: &str,
        inventory: &Value,
        plugin_data: &Value,
        created_at: &str,
    ) -> StoreResult<()> {
        self.conn().execute(
            "INSERT INTO node_inventory (node_uuid, inventory, plugin_data, created_at)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(node_uuid) DO UPDATE SET inventory = ?2, plugin_data = ?3, created_at = ?4",
            params![
                node_uuid,
                serde_json::to_string(inventory)?,
                serde_json::to_string(plugin_data)?,
                created_at
            ],
        )?;
        Ok(())
    }

    pub fn get_inventory(&self, node_uuid: &str) -> StoreResult<Option<StoredInventory>> {
        let row: Option<(String, String, String)> = self
            .conn()
            .query_row(
                "SELECT inventory, plugin_data, created_at FROM node_inventory WHERE node_uuid = ?1",
                params![node_uuid],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        row.map(|(inv, plugin, created_at)| {
            Ok(StoredInventory {
                inventory: serde_json::from_str(&inv)?,
                plugin_data: serde_json::from_str(&plugin)?,
                created_at,
            })
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use ferrite_protocol::node::Node;
    use serde_json::json;

    use super::*;

    #[test]
    fn saved_replaced_and_deleted_with_the_node() {
        let store = Store::in_memory().unwrap();
        let node = Node {
            uuid: "1be26c0b-03f2-4d2e-ae87-c02d7f33c123".into(),
            ..Node::default()
        };
        store.create_node(&node).unwrap();
        assert_eq!(store.get_inventory(&node.uuid).unwrap(), None);
        store
            .save_inventory(&node.uuid, &json!({"a": 1}), &json!({}), "t1")
            .unwrap();
        store
            .save_inventory(&node.uuid, &json!({"a": 2}), &json!({"x": true}), "t2")
            .unwrap();
        let got = store.get_inventory(&node.uuid).unwrap().unwrap();
        assert_eq!(got.inventory, json!({"a": 2}));
        assert_eq!(got.plugin_data, json!({"x": true}));
        store.delete_node(&node.uuid).unwrap();
        assert_eq!(store.get_inventory(&node.uuid).unwrap(), None);
        // A row for an unknown node is refused.
        assert!(store
            .save_inventory("nope", &json!({}), &json!({}), "t")
            .is_err());
    }
}
