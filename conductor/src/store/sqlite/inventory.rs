//! In-band inspection results (Ironic's node_inventory table).

use rusqlite::{params, OptionalExtension};
use serde_json::Value;

use super::{q, Db};
use crate::store::rows::{inventory_from_text, sql, StoredInventory};
use crate::store::StoreResult;

impl Db {
    pub fn save_inventory(
        &self,
        node_uuid: &str,
        inventory: &Value,
        plugin_data: &Value,
        created_at: &str,
    ) -> StoreResult<()> {
        self.conn().execute(
            &q(sql::SAVE_INVENTORY),
            params![
                node_uuid,
                serde_json::to_string(inventory)?,
                serde_json::to_string(plugin_data)?,
                created_at
            ],
        )?;
        Ok(())
    }

    pub fn save_agent_certificate(&self, node_uuid: &str, pem: &str) -> StoreResult<()> {
        self.conn()
            .execute(&q(sql::SAVE_AGENT_CERTIFICATE), params![node_uuid, pem])?;
        Ok(())
    }

    pub fn agent_certificate(&self, node_uuid: &str) -> StoreResult<Option<String>> {
        Ok(self
            .conn()
            .query_row(&q(sql::AGENT_CERTIFICATE), params![node_uuid], |r| r.get(0))
            .optional()?)
    }

    pub fn get_inventory(&self, node_uuid: &str) -> StoreResult<Option<StoredInventory>> {
        let row: Option<(String, String, String)> = self
            .conn()
            .query_row(&q(sql::GET_INVENTORY), params![node_uuid], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?;
        row.map(|(inv, plugin, created_at)| inventory_from_text(&inv, &plugin, created_at))
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
        let store = Db::in_memory().unwrap();
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
