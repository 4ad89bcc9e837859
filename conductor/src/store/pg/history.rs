//! Per-node event history.

use super::Db;
use crate::store::rows::{sql, HistoryEvent};
use crate::store::StoreResult;

impl Db {
    pub async fn record_event(&self, event: &HistoryEvent, node_uuid: &str) -> StoreResult<()> {
        self.client()
            .await?
            .execute(
                sql::INSERT_EVENT,
                &[
                    &event.uuid,
                    &node_uuid,
                    &event.created_at,
                    &event.severity,
                    &event.event_type,
                    &event.event,
                    &event.conductor,
                ],
            )
            .await?;
        Ok(())
    }

    pub async fn history(&self, node_uuid: &str) -> StoreResult<Vec<HistoryEvent>> {
        let rows = self
            .client()
            .await?
            .query(sql::HISTORY, &[&node_uuid])
            .await?;
        rows.iter()
            .map(|r| {
                Ok(HistoryEvent {
                    uuid: r.try_get(0)?,
                    created_at: r.try_get(1)?,
                    severity: r.try_get(2)?,
                    event_type: r.try_get(3)?,
                    event: r.try_get(4)?,
                    conductor: r.try_get(5)?,
                    user: r.try_get(6)?,
                })
            })
            .collect()
    }
}
