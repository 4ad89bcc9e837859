//! In-band inspection results (Ironic's node_inventory table).

use serde_json::Value;

use super::Db;
use crate::store::rows::{inventory_from_text, sql, StoredInventory};
use crate::store::StoreResult;

impl Db {
    pub async fn save_inventory(
        &self,
        node_uuid: &str,
        inventory: &Value,
        plugin_data: &Value,
        created_at: &str,
    ) -> StoreResult<()> {
        let inventory = serde_json::to_string(inventory)?;
        let plugin_data = serde_json::to_string(plugin_data)?;
        self.client()
            .await?
            .execute(
                sql::SAVE_INVENTORY,
                &[&node_uuid, &inventory, &plugin_data, &created_at],
            )
            .await?;
        Ok(())
    }

    pub async fn save_agent_certificate(&self, node_uuid: &str, pem: &str) -> StoreResult<()> {
        self.client()
            .await?
            .execute(sql::SAVE_AGENT_CERTIFICATE, &[&node_uuid, &pem])
            .await?;
        Ok(())
    }

    pub async fn agent_certificate(&self, node_uuid: &str) -> StoreResult<Option<String>> {
        let row = self
            .client()
            .await?
            .query_opt(sql::AGENT_CERTIFICATE, &[&node_uuid])
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    pub async fn get_inventory(&self, node_uuid: &str) -> StoreResult<Option<StoredInventory>> {
        let row = self
            .client()
            .await?
            .query_opt(sql::GET_INVENTORY, &[&node_uuid])
            .await?;
        row.map(|r| {
            let inventory: String = r.try_get(0)?;
            let plugin_data: String = r.try_get(1)?;
            inventory_from_text(&inventory, &plugin_data, r.try_get(2)?)
        })
        .transpose()
    }
}
