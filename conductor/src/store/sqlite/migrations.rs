//! Schema versions. Append new migrations; never edit a released one.

use rusqlite_migration::{Migrations, M};

use crate::store::rows::schema;

pub fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(
            "CREATE TABLE nodes (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            uuid TEXT NOT NULL UNIQUE,
            name TEXT UNIQUE,
            instance_uuid TEXT UNIQUE,
            provision_state TEXT NOT NULL,
            reservation TEXT,
            data TEXT NOT NULL
        );
        CREATE TABLE ports (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            uuid TEXT NOT NULL UNIQUE,
            address TEXT NOT NULL UNIQUE,
            node_uuid TEXT NOT NULL REFERENCES nodes(uuid) ON DELETE CASCADE,
            data TEXT NOT NULL
        );
        CREATE INDEX ports_node_uuid ON ports(node_uuid);",
        ),
        // In-band inspection results (Ironic's node_inventory table): the
        // latest inventory and the rest of the ramdisk's data per node.
        M::up(
            "CREATE TABLE node_inventory (
            node_uuid TEXT PRIMARY KEY REFERENCES nodes(uuid) ON DELETE CASCADE,
            inventory TEXT NOT NULL,
            plugin_data TEXT NOT NULL,
            created_at TEXT NOT NULL
        );",
        ),
        // Per-node event history (`GET /v1/nodes/{id}/history`).
        M::up(
            "CREATE TABLE node_history (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            uuid TEXT NOT NULL UNIQUE,
            node_uuid TEXT NOT NULL REFERENCES nodes(uuid) ON DELETE CASCADE,
            created_at TEXT NOT NULL,
            severity TEXT NOT NULL,
            event_type TEXT NOT NULL,
            event TEXT NOT NULL,
            conductor TEXT,
            user TEXT
        );
        CREATE INDEX node_history_node ON node_history(node_uuid);",
        ),
        // Conductors sharing a database: registration and liveness, from
        // which each builds the hash ring.
        M::up(schema::V4_CONDUCTORS),
        M::up(schema::V5_AGENT_CERTIFICATES),
        M::up(schema::V6_NODE_COLUMNS),
    ])
}

#[cfg(test)]
mod tests {
    #[test]
    fn migrations_are_valid() {
        super::migrations().validate().unwrap();
    }
}
