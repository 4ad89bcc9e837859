//! The conductors sharing this database.

use rusqlite::params;

use super::{q, Db};
use crate::store::rows::{decode_or_degraded, sql, ConductorRecord, NodeRow};
use crate::store::StoreResult;
use ferrite_protocol::node::Node;

impl Db {
    pub fn register_conductor(&self, c: &ConductorRecord) -> StoreResult<()> {
        self.conn().execute(
            &q(sql::REGISTER_CONDUCTOR),
            params![
                c.hostname,
                c.conductor_group,
                serde_json::to_string(&c.hardware_types)?,
                c.api_url,
                c.updated_at,
                c.updated_us
            ],
        )?;
        Ok(())
    }

    pub fn touch_conductor(&self, hostname: &str, at: &str, at_us: i64) -> StoreResult<bool> {
        let n = self
            .conn()
            .execute(&q(sql::TOUCH_CONDUCTOR), params![hostname, at, at_us])?;
        Ok(n == 1)
    }

    pub fn conductor_offline(&self, hostname: &str) -> StoreResult<()> {
        self.conn()
            .execute(&q(sql::CONDUCTOR_OFFLINE), params![hostname])?;
        Ok(())
    }

    pub fn list_conductors(&self) -> StoreResult<Vec<ConductorRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(sql::LIST_CONDUCTORS)?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, i64>(7)?,
            ))
        })?;
        rows.map(|row| {
            let (
                hostname,
                conductor_group,
                types,
                api_url,
                online,
                created_at,
                updated_at,
                updated_us,
            ) = row?;
            Ok(ConductorRecord {
                hostname,
                conductor_group,
                hardware_types: serde_json::from_str(&types)?,
                api_url,
                online: online != 0,
                created_at,
                updated_at,
                updated_us,
            })
        })
        .collect()
    }

    pub fn release_orphan(
        &self,
        uuid: &str,
        holder: &str,
        alive_after_us: i64,
    ) -> StoreResult<bool> {
        let n = self.conn().execute(
            &q(sql::RELEASE_ORPHAN),
            params![uuid, holder, alive_after_us],
        )?;
        Ok(n == 1)
    }

    pub fn reserved_nodes(&self) -> StoreResult<Vec<Node>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(sql::RESERVED_NODES)?;
        let rows = stmt.query_map([], |r| {
            Ok(NodeRow {
                data: r.get(0)?,
                reservation: r.get(1)?,
                uuid: r.get(2)?,
                name: r.get(3)?,
                instance_uuid: r.get(4)?,
                provision_state: r.get(5)?,
            })
        })?;
        rows.map(|r| Ok(decode_or_degraded(r?))).collect()
    }
}
