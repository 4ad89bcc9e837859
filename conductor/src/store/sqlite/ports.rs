//! Port records.

use ferrite_protocol::node::Port;
use rusqlite::{params, OptionalExtension};

use super::{constraint, q, Db};
use crate::store::rows::{decode_port, duplicate_port, port_not_found, sql};
use crate::store::StoreResult;

impl Db {
    pub fn create_port(&self, port: &Port) -> StoreResult<()> {
        let data = serde_json::to_string(port)?;
        self.conn()
            .execute(
                &q(sql::INSERT_PORT),
                params![port.uuid, port.address, port.node_uuid, data],
            )
            .map_err(|e| constraint(e, || duplicate_port(port)))?;
        Ok(())
    }

    pub fn get_port(&self, uuid: &str) -> StoreResult<Port> {
        let data: Option<String> = self
            .conn()
            .query_row(&q(sql::PORT_BY_UUID), params![uuid], |r| r.get(0))
            .optional()?;
        decode_port(data.ok_or_else(|| port_not_found(uuid))?)
    }

    pub fn port_by_address(&self, address: &str) -> StoreResult<Option<Port>> {
        let data: Option<String> = self
            .conn()
            .query_row(&q(sql::PORT_BY_ADDRESS), params![address], |r| r.get(0))
            .optional()?;
        data.map(decode_port).transpose()
    }

    pub fn list_ports(&self, node_uuid: Option<&str>) -> StoreResult<Vec<Port>> {
        let conn = self.conn();
        let (mut stmt, args) = match node_uuid {
            Some(node) => (conn.prepare(&q(sql::LIST_NODE_PORTS))?, vec![node]),
            None => (conn.prepare(sql::LIST_PORTS)?, vec![]),
        };
        let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(0))?;
        rows.map(|r| decode_port(r?)).collect()
    }

    pub fn update_port(&self, port: &Port) -> StoreResult<()> {
        let data = serde_json::to_string(port)?;
        let n = self
            .conn()
            .execute(
                &q(sql::UPDATE_PORT),
                params![port.uuid, port.address, port.node_uuid, data],
            )
            .map_err(|e| constraint(e, || duplicate_port(port)))?;
        if n == 0 {
            return Err(port_not_found(&port.uuid));
        }
        Ok(())
    }

    pub fn delete_port(&self, uuid: &str) -> StoreResult<()> {
        let n = self.conn().execute(&q(sql::DELETE_PORT), params![uuid])?;
        if n == 0 {
            return Err(port_not_found(uuid));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;
    use ferrite_protocol::node::Node;

    #[test]
    fn ports_belong_to_nodes_and_macs_are_unique() {
        let store = Db::in_memory().unwrap();
        store
            .create_node(&Node {
                uuid: "n".into(),
                driver: "fake-hardware".into(),
                ..Node::default()
            })
            .unwrap();
        let port = Port {
            uuid: "p".into(),
            address: "52:54:00:12:34:56".into(),
            node_uuid: "n".into(),
            ..Port::default()
        };
        store.create_port(&port).unwrap();
        let dup = Port {
            uuid: "q".into(),
            ..port.clone()
        };
        assert!(matches!(
            store.create_port(&dup),
            Err(StoreError::Conflict(_))
        ));
        let orphan = Port {
            uuid: "r".into(),
            address: "52:54:00:12:34:57".into(),
            node_uuid: "missing".into(),
            ..Port::default()
        };
        assert!(store.create_port(&orphan).is_err());
        assert_eq!(
            store
                .port_by_address("52:54:00:12:34:56")
                .unwrap()
                .unwrap()
                .uuid,
            "p"
        );
        assert_eq!(store.list_ports(Some("n")).unwrap().len(), 1);
        store.delete_node("n").unwrap();
        assert!(
            store.list_ports(None).unwrap().is_empty(),
            "ports go with their node"
        );
    }
}
