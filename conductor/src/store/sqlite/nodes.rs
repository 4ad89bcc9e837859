//! Node records.

use ferrite_protocol::node::Node;
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, params_from_iter, OptionalExtension, Row, TransactionBehavior};

use super::{constraint, q, Db};
use crate::store::node_query::{self, NodeQuery, Param};
use crate::store::rows::{
    decode, decode_or_degraded, duplicate_node, encode_update, fill_params, node_not_found,
    node_params, sql, NodeRow, StateCount,
};
use crate::store::{StoreError, StoreResult};

fn bind(params: Vec<Param>) -> impl rusqlite::Params {
    params_from_iter(params.into_iter().map(|p| match p {
        Param::Text(Some(t)) => SqlValue::Text(t),
        Param::Text(None) => SqlValue::Null,
        Param::Int(i) => SqlValue::Integer(i),
    }))
}

fn node_from_row(row: &Row<'_>) -> rusqlite::Result<NodeRow> {
    Ok(NodeRow {
        data: row.get(0)?,
        reservation: row.get(1)?,
        uuid: row.get(2)?,
        name: row.get(3)?,
        instance_uuid: row.get(4)?,
        provision_state: row.get(5)?,
    })
}

impl Db {
    pub fn create_node(&self, node: &Node) -> StoreResult<()> {
        let data = serde_json::to_string(node)?;
        self.conn()
            .execute(&q(sql::INSERT_NODE), bind(node_params(node, data)))
            .map_err(|e| constraint(e, || duplicate_node(node)))?;
        Ok(())
    }

    pub fn get_node(&self, ident: &str) -> StoreResult<Node> {
        let row = self
            .conn()
            .query_row(&q(sql::NODE_BY_IDENT), params![ident], node_from_row)
            .optional()?;
        Ok(decode_or_degraded(
            row.ok_or_else(|| node_not_found(ident))?,
        ))
    }

    pub fn list_nodes(&self, query: &NodeQuery) -> StoreResult<Vec<Node>> {
        let (text, params) = node_query::select(query);
        let conn = self.conn();
        let mut stmt = conn.prepare(&q(&text))?;
        let rows = stmt.query_map(bind(params), node_from_row)?;
        let mut nodes = Vec::new();
        for row in rows {
            nodes.push(decode_or_degraded(row?));
        }
        Ok(nodes)
    }

    pub fn node_state_counts(&self) -> StoreResult<Vec<StateCount>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(sql::NODE_STATE_COUNTS)?;
        let rows = stmt.query_map([], |r| {
            Ok(StateCount {
                provision_state: r.get(0)?,
                power_state: r.get(1)?,
                maintenance: r.get::<_, i64>(2)? != 0,
                nodes: r.get::<_, i64>(3)?.max(0) as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn list_node_heads(&self, query: &NodeQuery) -> StoreResult<Vec<Node>> {
        let (text, params) = node_query::select_heads(query);
        let conn = self.conn();
        let mut stmt = conn.prepare(&q(&text))?;
        let rows = stmt.query_map(bind(params), |r| {
            Ok(node_query::head(
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
                r.get(8)?,
                r.get(9)?,
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Fill the columns of rows written before schema version 6.
    pub(super) fn fill_node_columns(&self) -> StoreResult<usize> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let rows: Vec<NodeRow> = tx
            .prepare(sql::UNFILLED_NODES)?
            .query_map([], node_from_row)?
            .collect::<Result<_, _>>()?;
        let count = rows.len();
        for row in rows {
            tx.execute(&q(sql::SET_NODE_COLUMNS), bind(fill_params(row)))?;
        }
        tx.commit()?;
        Ok(count)
    }

    /// Read-modify-write one node atomically. `update` may refuse with an error.
    pub fn update_node<E, F>(&self, ident: &str, update: F) -> Result<Node, E>
    where
        E: From<StoreError>,
        F: FnOnce(&mut Node) -> Result<(), E>,
    {
        let mut conn = self.conn();
        // Write-locked from the start: a read-then-write transaction that
        // finds another writer (the `sqlite3` shell, a second process) has
        // committed since its read fails at once, without the busy wait.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::from)?;
        let row = tx
            .query_row(&q(sql::NODE_BY_IDENT), params![ident], node_from_row)
            .optional()
            .map_err(StoreError::from)?;
        let mut node = decode(row.ok_or_else(|| node_not_found(ident))?)?;
        let uuid = node.uuid.clone();
        update(&mut node)?;
        node.uuid = uuid;
        let data = encode_update(&mut node)?;
        tx.execute(&q(sql::UPDATE_NODE), bind(node_params(&node, data)))
            .map_err(|e| constraint(e, || duplicate_node(&node)))?;
        tx.commit().map_err(StoreError::from)?;
        Ok(node)
    }

    pub fn delete_node(&self, uuid: &str) -> StoreResult<()> {
        let n = self.conn().execute(&q(sql::DELETE_NODE), params![uuid])?;
        if n == 0 {
            return Err(node_not_found(uuid));
        }
        Ok(())
    }

    pub fn try_reserve(&self, uuid: &str, host: &str) -> StoreResult<bool> {
        let n = self.conn().execute(&q(sql::RESERVE), params![uuid, host])?;
        Ok(n == 1)
    }

    pub fn release(&self, uuid: &str, host: &str) -> StoreResult<()> {
        self.conn().execute(&q(sql::RELEASE), params![uuid, host])?;
        Ok(())
    }

    pub fn release_all(&self, host: &str) -> StoreResult<usize> {
        Ok(self.conn().execute(&q(sql::RELEASE_ALL), params![host])?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(uuid: &str, name: &str) -> Node {
        Node {
            uuid: uuid.into(),
            name: Some(name.into()),
            driver: "fake-hardware".into(),
            ..Node::default()
        }
    }

    #[test]
    fn create_get_update_delete() {
        let store = Db::in_memory().unwrap();
        store.create_node(&node("u1", "n1")).unwrap();
        assert_eq!(store.get_node("n1").unwrap().uuid, "u1");
        assert_eq!(store.get_node("u1").unwrap().name.as_deref(), Some("n1"));
        let updated = store
            .update_node::<StoreError, _>("u1", |n| {
                n.provision_state = "manageable".into();
                Ok(())
            })
            .unwrap();
        assert_eq!(updated.provision_state, "manageable");
        assert_eq!(store.get_node("u1").unwrap().provision_state, "manageable");
        store.delete_node("u1").unwrap();
        assert!(matches!(store.get_node("u1"), Err(StoreError::NotFound(_))));
    }

    #[test]
    fn duplicates_conflict_and_change_nothing() {
        let store = Db::in_memory().unwrap();
        store.create_node(&node("u1", "n1")).unwrap();
        assert!(matches!(
            store.create_node(&node("u2", "n1")),
            Err(StoreError::Conflict(_))
        ));
        store.create_node(&node("u2", "n2")).unwrap();
        let renamed = store.update_node::<StoreError, _>("u2", |n| {
            n.name = Some("n1".into());
            Ok(())
        });
        assert!(matches!(renamed, Err(StoreError::Conflict(_))));
        assert_eq!(store.get_node("u2").unwrap().name.as_deref(), Some("n2"));
    }

    #[test]
    fn reservation_is_exclusive() {
        let store = Db::in_memory().unwrap();
        store.create_node(&node("u1", "n1")).unwrap();
        assert!(store.try_reserve("u1", "a").unwrap());
        assert!(!store.try_reserve("u1", "b").unwrap());
        assert_eq!(
            store.get_node("u1").unwrap().reservation.as_deref(),
            Some("a")
        );
        store.release("u1", "b").unwrap();
        assert!(!store.try_reserve("u1", "b").unwrap());
        store.release("u1", "a").unwrap();
        assert!(store.try_reserve("u1", "b").unwrap());
    }

    #[test]
    fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        Db::open(&path)
            .unwrap()
            .create_node(&node("u1", "n1"))
            .unwrap();
        assert_eq!(Db::open(&path).unwrap().get_node("n1").unwrap().uuid, "u1");
    }
}
