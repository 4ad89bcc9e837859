//! Port records.

use ferrite_protocol::node::Port;
use rusqlite::{params, OptionalExtension};

use super::{unique_violation, Store, StoreError, StoreResult};

fn decode(data: String) -> StoreResult<Port> {
    Ok(serde_json::from_str(&data)?)
}

impl Store {
    pub fn create_port(&self, port: &Port) -> StoreResult<()> {
        let data = serde_json::to_string(port)?;
        self.conn()
            .execute(
                "INSERT INTO ports (uuid, address, node_uuid, data) VALUES (?1, ?2, ?3, ?4)",
                params![port.uuid, port.address, port.node_uuid, data],
            )
            .map_err(|e| {
                unique_violation(e, || {
                    format!("A port with MAC address {} already exists.", port.address)
                })
            })?;
        Ok(())
    }

    pub fn get_port(&self, uuid: &str) -> StoreResult<Port> {
        let data: Option<String> = self
            .conn()
            .query_row(
                "SELECT data FROM ports WHERE uuid = ?1",
                params![uuid],
                |r| r.get(0),
            )
            .optional()?;
        decode(
            data.ok_or_else(|| StoreError::NotFound(format!("Port {uuid} could not be found.")))?,
        )
    }

    pub fn port_by_address(&self, address: &str) -> StoreResult<Option<Port>> {
        let data: Option<String> = self
            .conn()
            .query_row(
                "SELECT data FROM ports WHERE address = ?1",
                params![address],
                |r| r.get(0),
            )
            .optional()?;
        data.map(decode).transpose()
    }

    /// All ports, or those of one node, in creation order.
    pub fn list_ports(&self, node_uuid: Option<&str>) -> StoreResult<Vec<Port>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT data FROM ports WHERE ?1 IS NULL OR node_uuid = ?1 ORDER BY id")?;
        let rows = stmt.query_map(params![node_uuid], |r| r.get::<_, String>(0))?;
        rows.map(|r| decode(r?)).collect()
    }

    pub fn update_port(&self, port: &Port) -> StoreResult<()> {
        let data = serde_json::to_string(port)?;
        let n = self
            .conn()
            .execute(
                "UPDATE ports SET address = ?2, node_uuid = ?3, data = ?4 WHERE uuid = ?1",
                params![port.uuid, port.address, port.node_uuid, data],
            )
            .map_err(|e| {
                unique_violation(e, || {
                    format!("A port with MAC address {} already exists.", port.address)
                })
            })?;
        if n == 0 {
            return Err(StoreError::NotFound(format!(
                "Port {} could not be found.",
                port.uuid
            )));
        }
        Ok(())
    }

    pub fn delete_port(&self, uuid: &str) -> StoreResult<()> {
        let n = self
            .conn()
            .execute("DELETE FROM ports WHERE uuid = ?1", params![uuid])?;
        if n == 0 {
            return Err(StoreError::NotFound(format!(
                "Port {uuid} could not be found."
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrite_protocol::node::Node;

    #[test]
    fn ports_belong_to_nodes_and_macs_are_unique() {
        let store = Store::in_memory().unwrap();
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
