//! Per-node event history.

use rusqlite::params;

use super::{q, Db};
use crate::store::rows::{sql, HistoryEvent};
use crate::store::StoreResult;

impl Db {
    pub fn record_event(&self, event: &HistoryEvent, node_uuid: &str) -> StoreResult<()> {
        self.conn().execute(
            &q(sql::INSERT_EVENT),
            params![
                event.uuid,
                node_uuid,
                event.created_at,
                event.severity,
                event.event_type,
                event.event,
                event.conductor
            ],
        )?;
        Ok(())
    }

    pub fn history(&self, node_uuid: &str) -> StoreResult<Vec<HistoryEvent>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&q(sql::HISTORY))?;
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
