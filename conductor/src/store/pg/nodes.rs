//! Node records.

use ferrite_protocol::node::Node;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::{constraint, Db};
use crate::store::node_query::{self, NodeQuery, Param};
use crate::store::rows::{
    decode, decode_or_degraded, duplicate_node, encode_update, fill_params, node_not_found,
    node_params, sql, NodeRow, StateCount,
};
use crate::store::{StoreError, StoreResult};

/// Generated statements' values, typed for the driver.
fn bind(params: Vec<Param>) -> Vec<Box<dyn ToSql + Sync + Send>> {
    params
        .into_iter()
        .map(|p| -> Box<dyn ToSql + Sync + Send> {
            match p {
                Param::Text(t) => Box::new(t),
                Param::Int(i) => Box::new(i),
            }
        })
        .collect()
}

fn refs(values: &[Box<dyn ToSql + Sync + Send>]) -> Vec<&(dyn ToSql + Sync)> {
    values
        .iter()
        .map(|v| v.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

fn node_row(row: &Row) -> StoreResult<NodeRow> {
    Ok(NodeRow {
        data: row.try_get(0)?,
        reservation: row.try_get(1)?,
        uuid: row.try_get(2)?,
        name: row.try_get(3)?,
        instance_uuid: row.try_get(4)?,
        provision_state: row.try_get(5)?,
    })
}

impl Db {
    pub async fn create_node(&self, node: &Node) -> StoreResult<()> {
        let data = serde_json::to_string(node)?;
        let values = bind(node_params(node, data));
        self.client()
            .await?
            .execute(sql::INSERT_NODE, &refs(&values))
            .await
            .map_err(|e| constraint(e, || duplicate_node(node)))?;
        Ok(())
    }

    pub async fn get_node(&self, ident: &str) -> StoreResult<Node> {
        let row = self
            .client()
            .await?
            .query_opt(sql::NODE_BY_IDENT, &[&ident])
            .await?
            .ok_or_else(|| node_not_found(ident))?;
        Ok(decode_or_degraded(node_row(&row)?))
    }

    pub async fn list_nodes(&self, query: &NodeQuery) -> StoreResult<Vec<Node>> {
        let (text, params) = node_query::select(query);
        let values = bind(params);
        let rows = self.client().await?.query(&text, &refs(&values)).await?;
        rows.iter()
            .map(|row| Ok(decode_or_degraded(node_row(row)?)))
            .collect()
    }

    pub async fn node_state_counts(&self) -> StoreResult<Vec<StateCount>> {
        let rows = self
            .client()
            .await?
            .query(sql::NODE_STATE_COUNTS, &[])
            .await?;
        rows.iter()
            .map(|r| {
                Ok(StateCount {
                    provision_state: r.try_get(0)?,
                    power_state: r.try_get(1)?,
                    maintenance: r.try_get::<_, i64>(2)? != 0,
                    nodes: r.try_get::<_, i64>(3)?.max(0) as u64,
                })
            })
            .collect()
    }

    pub async fn list_node_heads(&self, query: &NodeQuery) -> StoreResult<Vec<Node>> {
        let (text, params) = node_query::select_heads(query);
        let values = bind(params);
        let rows = self.client().await?.query(&text, &refs(&values)).await?;
        rows.iter()
            .map(|r| {
                Ok(node_query::head(
                    r.try_get(0)?,
                    r.try_get(1)?,
                    r.try_get(2)?,
                    r.try_get(3)?,
                    r.try_get(4)?,
                    r.try_get(5)?,
                    r.try_get(6)?,
                    r.try_get(7)?,
                    r.try_get(8)?,
                    r.try_get(9)?,
                ))
            })
            .collect()
    }

    /// Fill the columns of rows written before schema version 6.
    pub(super) async fn fill_node_columns(&self) -> StoreResult<usize> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let rows = tx.query(sql::UNFILLED_NODES, &[]).await?;
        for row in &rows {
            let values = bind(fill_params(node_row(row)?));
            tx.execute(sql::SET_NODE_COLUMNS, &refs(&values)).await?;
        }
        tx.commit().await?;
        Ok(rows.len())
    }

    /// Read-modify-write one node in a transaction that holds its row lock.
    pub async fn update_node<E, F>(&self, ident: &str, update: F) -> Result<Node, E>
    where
        E: From<StoreError>,
        F: FnOnce(&mut Node) -> Result<(), E>,
    {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(StoreError::from)?;
        let row = tx
            .query_opt(&format!("{} FOR UPDATE", sql::NODE_BY_IDENT), &[&ident])
            .await
            .map_err(StoreError::from)?
            .ok_or_else(|| node_not_found(ident))?;
        let mut node = decode(node_row(&row)?)?;
        let uuid = node.uuid.clone();
        update(&mut node)?;
        node.uuid = uuid;
        let data = encode_update(&mut node)?;
        let values = bind(node_params(&node, data));
        tx.execute(sql::UPDATE_NODE, &refs(&values))
            .await
            .map_err(|e| constraint(e, || duplicate_node(&node)))?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(node)
    }

    pub async fn delete_node(&self, uuid: &str) -> StoreResult<()> {
        let n = self
            .client()
            .await?
            .execute(sql::DELETE_NODE, &[&uuid])
            .await?;
        if n == 0 {
            return Err(node_not_found(uuid));
        }
        Ok(())
    }

    pub async fn try_reserve(&self, uuid: &str, host: &str) -> StoreResult<bool> {
        // READ COMMITTED makes a concurrent UPDATE wait for the row and
        // re-check `reservation IS NULL`: exactly one taker wins.
        let n = self
            .client()
            .await?
            .execute(sql::RESERVE, &[&uuid, &host])
            .await?;
        Ok(n == 1)
    }

    pub async fn release(&self, uuid: &str, host: &str) -> StoreResult<()> {
        self.client()
            .await?
            .execute(sql::RELEASE, &[&uuid, &host])
            .await?;
        Ok(())
    }

    pub async fn release_all(&self, host: &str) -> StoreResult<usize> {
        let n = self
            .client()
            .await?
            .execute(sql::RELEASE_ALL, &[&host])
            .await?;
        Ok(n as usize)
    }
}
