//! Node history: what happened to a node, newest last (Ironic's
//! `node_history`, shown by `baremetal node history list`).

use rusqlite::params;
use serde::Serialize;

use super::{Store, StoreResult};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HistoryEvent {
    pub uuid: String,
    pub created_at: String,
    pub severity: String,
    pub event_type: String,
    pub event: String,
    pub conductor: Option<String>,
    pub user: Option<String>,
}

impl Store {
    pub fn record_event(
        &self,
        node_uuid: &str,
        severity: &str,
        event_type: &str,
        event: &str,
        conductor: &str,
    ) -> StoreResult<()> {
        self.conn().execute(
            "INSERT INTO node_history (uuid, node_uuid, created_at, severity, event_type, event, conductor)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                uuid::Uuid::new_v4().to_string(),
                node_uuid,
                crate::time::api_now(),
                severity,
                event_type,
                event,
                conductor
            ],
        )?;
        Ok(())
    }

    pub fn history(&self, node_uuid: &str) -> StoreResult<Vec<HistoryEvent>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT uuid, created_at, severity, event_type, event, conductor, user
             FROM node_history WHERE node_uuid = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map(params![node_uuid], |r| {
            Ok(HistoryEvent {
                uuid: r.get(0)?,
                created_at: r.get(1)?,
                severity: r.get(2)?,
                event_type: r.get(3)?,
                event: r.get(4)?,
                conductor: r.get(5)?,
                user: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
