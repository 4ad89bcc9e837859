//! Port records.

use ferrite_protocol::node::Port;

use super::{constraint, Db};
use crate::store::rows::{decode_port, duplicate_port, port_not_found, sql};
use crate::store::StoreResult;

impl Db {
    pub async fn create_port(&self, port: &Port) -> StoreResult<()> {
        let data = serde_json::to_string(port)?;
        self.client()
            .await?
            .execute(
                sql::INSERT_PORT,
                &[&port.uuid, &port.address, &port.node_uuid, &data],
            )
            .await
            .map_err(|e| constraint(e, || duplicate_port(port)))?;
        Ok(())
    }

    pub async fn get_port(&self, uuid: &str) -> StoreResult<Port> {
        let row = self
            .client()
            .await?
            .query_opt(sql::PORT_BY_UUID, &[&uuid])
            .await?
            .ok_or_else(|| port_not_found(uuid))?;
        decode_port(row.try_get(0)?)
    }

    pub async fn port_by_address(&self, address: &str) -> StoreResult<Option<Port>> {
        let row = self
            .client()
            .await?
            .query_opt(sql::PORT_BY_ADDRESS, &[&address])
            .await?;
        row.map(|r| decode_port(r.try_get(0)?)).transpose()
    }

    pub async fn list_ports(&self, node_uuid: Option<&str>) -> StoreResult<Vec<Port>> {
        let client = self.client().await?;
        let rows = match node_uuid {
            Some(node) => client.query(sql::LIST_NODE_PORTS, &[&node]).await?,
            None => client.query(sql::LIST_PORTS, &[]).await?,
        };
        rows.iter().map(|r| decode_port(r.try_get(0)?)).collect()
    }

    pub async fn update_port(&self, port: &Port) -> StoreResult<()> {
        let data = serde_json::to_string(port)?;
        let n = self
            .client()
            .await?
            .execute(
                sql::UPDATE_PORT,
                &[&port.uuid, &port.address, &port.node_uuid, &data],
            )
            .await
            .map_err(|e| constraint(e, || duplicate_port(port)))?;
        if n == 0 {
            return Err(port_not_found(&port.uuid));
        }
        Ok(())
    }

    pub async fn delete_port(&self, uuid: &str) -> StoreResult<()> {
        let n = self
            .client()
            .await?
            .execute(sql::DELETE_PORT, &[&uuid])
            .await?;
        if n == 0 {
            return Err(port_not_found(uuid));
        }
        Ok(())
    }
}
