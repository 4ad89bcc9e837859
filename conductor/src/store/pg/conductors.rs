//! The conductors sharing this database.

use ferrite_protocol::node::Node;

use super::Db;
use crate::store::rows::{decode_or_degraded, sql, ConductorRecord, NodeRow};
use crate::store::StoreResult;

impl Db {
    pub async fn register_conductor(&self, c: &ConductorRecord) -> StoreResult<()> {
        let types = serde_json::to_string(&c.hardware_types)?;
        self.client()
            .await?
            .execute(
                sql::REGISTER_CONDUCTOR,
                &[
                    &c.hostname,
                    &c.conductor_group,
                    &types,
                    &c.api_url,
                    &c.updated_at,
                    &c.updated_us,
                ],
            )
            .await?;
        Ok(())
    }

    pub async fn touch_conductor(&self, hostname: &str, at: &str, at_us: i64) -> StoreResult<bool> {
        let n = self
            .client()
            .await?
            .execute(sql::TOUCH_CONDUCTOR, &[&hostname, &at, &at_us])
            .await?;
        Ok(n == 1)
    }

    pub async fn conductor_offline(&self, hostname: &str) -> StoreResult<()> {
        self.client()
            .await?
            .execute(sql::CONDUCTOR_OFFLINE, &[&hostname])
            .await?;
        Ok(())
    }

    pub async fn list_conductors(&self) -> StoreResult<Vec<ConductorRecord>> {
        let rows = self
            .client()
            .await?
            .query(sql::LIST_CONDUCTORS, &[])
            .await?;
        rows.iter()
            .map(|r| {
                let types: String = r.try_get(2)?;
                Ok(ConductorRecord {
                    hostname: r.try_get(0)?,
                    conductor_group: r.try_get(1)?,
                    hardware_types: serde_json::from_str(&types)?,
                    api_url: r.try_get(3)?,
                    online: r.try_get::<_, i64>(4)? != 0,
                    created_at: r.try_get(5)?,
                    updated_at: r.try_get(6)?,
                    updated_us: r.try_get(7)?,
                })
            })
            .collect()
    }

    pub async fn release_orphan(
        &self,
        uuid: &str,
        holder: &str,
        alive_after_us: i64,
    ) -> StoreResult<bool> {
        let n = self
            .client()
            .await?
            .execute(sql::RELEASE_ORPHAN, &[&uuid, &holder, &alive_after_us])
            .await?;
        Ok(n == 1)
    }

    pub async fn reserved_nodes(&self) -> StoreResult<Vec<Node>> {
        let rows = self.client().await?.query(sql::RESERVED_NODES, &[]).await?;
        rows.iter()
            .map(|r| {
                Ok(decode_or_degraded(NodeRow {
                    data: r.try_get(0)?,
                    reservation: r.try_get(1)?,
                    uuid: r.try_get(2)?,
                    name: r.try_get(3)?,
                    instance_uuid: r.try_get(4)?,
                    provision_state: r.try_get(5)?,
                }))
            })
            .collect()
    }
}
