//! Schema versions. Append new migrations; never edit a released one.

use rusqlite_migration::{Migrations, M};

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
        M::up(
            "CREATE TABLE conductors (
            hostname TEXT PRIMARY KEY,
            conductor_group TEXT NOT NULL,
            hardware_types TEXT NOT NULL,
            api_url TEXT,
            online INTEGER NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            updated_us INTEGER NOT NULL
        );
        CREATE INDEX nodes_reservation ON nodes(reservation);",
        ),
        // The certificate each agent sent, so that any conductor can
        // verify it (files in the data dir are only a local cache).
        M::up(
            "CREATE TABLE agent_certificates (
            node_uuid TEXT PRIMARY KEY REFERENCES nodes(uuid) ON DELETE CASCADE,
            pem TEXT NOT NULL
        );",
        ),
    ])
}

#[cfg(test)]
mod tests {
    #[test]
    fn migrations_are_valid() {
        super::migrations().validate().unwrap();
    }
}
