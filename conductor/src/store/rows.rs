//! What both engines share: the SQL text, and how a stored row becomes a
//! record. Statements are written once with PostgreSQL's `$N` parameters;
//! the SQLite engine reads them as `?N` ([`super::sqlite`]).

use ferrite_protocol::node::{Node, Port};
use serde::Serialize;
use serde_json::Value;

use super::node_query::{self, Param};
use super::{StoreError, StoreResult};

/// `maintenance_reason`/`fault` of a node whose stored record cannot be read.
pub const CORRUPT_FAULT: &str = "corrupt record";

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

/// How many nodes are in one combination of states ([`sql::NODE_STATE_COUNTS`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateCount {
    pub provision_state: String,
    pub power_state: Option<String>,
    pub maintenance: bool,
    pub nodes: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredInventory {
    pub inventory: Value,
    pub plugin_data: Value,
    pub created_at: String,
}

/// One conductor in the `conductors` table (Ironic's, with its hardware
/// types inline): what the hash ring is built from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConductorRecord {
    pub hostname: String,
    pub conductor_group: String,
    pub hardware_types: Vec<String>,
    /// Where its API answers, for operators and forwarding.
    pub api_url: Option<String>,
    /// Cleared by a clean shutdown.
    pub online: bool,
    pub created_at: String,
    pub updated_at: String,
    /// `updated_at` as microseconds since the epoch, for liveness queries.
    pub updated_us: i64,
}

/// Schema changes from version 4 on: one text for both engines (SQLite
/// reads `BIGINT` as an integer). Versions 1–3 predate PostgreSQL and have
/// a twin per engine.
pub mod schema {
    pub const V4_CONDUCTORS: &str = "CREATE TABLE conductors (
        hostname TEXT PRIMARY KEY,
        conductor_group TEXT NOT NULL,
        hardware_types TEXT NOT NULL,
        api_url TEXT,
        online BIGINT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        updated_us BIGINT NOT NULL
    );
    CREATE INDEX nodes_reservation ON nodes(reservation);";
    /// The certificate each agent sent, so that any conductor can verify
    /// it (files in the data dir are only a local cache).
    pub const V5_AGENT_CERTIFICATES: &str = "CREATE TABLE agent_certificates (
        node_uuid TEXT PRIMARY KEY REFERENCES nodes(uuid) ON DELETE CASCADE,
        pem TEXT NOT NULL
    );";
    /// The fields nodes are listed, filtered and sorted by, as columns
    /// beside the document ([`super::node_query`]). NULL `driver` marks a
    /// row written before them, filled when the store opens.
    pub const V6_NODE_COLUMNS: &str = "ALTER TABLE nodes ADD COLUMN driver TEXT;
    ALTER TABLE nodes ADD COLUMN maintenance BIGINT;
    ALTER TABLE nodes ADD COLUMN resource_class TEXT;
    ALTER TABLE nodes ADD COLUMN conductor_group TEXT;
    ALTER TABLE nodes ADD COLUMN fault TEXT;
    ALTER TABLE nodes ADD COLUMN owner TEXT;
    ALTER TABLE nodes ADD COLUMN lessee TEXT;
    ALTER TABLE nodes ADD COLUMN retired BIGINT;
    ALTER TABLE nodes ADD COLUMN power_state TEXT;
    ALTER TABLE nodes ADD COLUMN provision_updated_at TEXT;
    ALTER TABLE nodes ADD COLUMN created_at TEXT;
    ALTER TABLE nodes ADD COLUMN updated_at TEXT;
    CREATE INDEX nodes_provision_state ON nodes(provision_state);
    CREATE INDEX nodes_driver ON nodes(driver);";
}

pub mod sql {
    /// The metrics scrape's node gauges: one row per combination of states.
    pub const NODE_STATE_COUNTS: &str =
        "SELECT provision_state, power_state, COALESCE(maintenance, 0), COUNT(*) FROM nodes \
         GROUP BY provision_state, power_state, COALESCE(maintenance, 0)";
    /// By UUID, or by name when the ident is not a known UUID.
    pub const NODE_BY_IDENT: &str =
        "SELECT data, reservation, uuid, name, instance_uuid, provision_state FROM nodes \
         WHERE uuid = $1 OR name = $1 ORDER BY uuid = $1 DESC LIMIT 1";
    /// `$6..$17` are [`super::node_query::columns`].
    pub const INSERT_NODE: &str =
        "INSERT INTO nodes (uuid, name, instance_uuid, provision_state, data, \
         driver, maintenance, resource_class, conductor_group, fault, owner, lessee, retired, \
         power_state, provision_updated_at, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)";
    pub const UPDATE_NODE: &str =
        "UPDATE nodes SET name = $2, instance_uuid = $3, provision_state = $4, data = $5, \
         driver = $6, maintenance = $7, resource_class = $8, conductor_group = $9, fault = $10, \
         owner = $11, lessee = $12, retired = $13, power_state = $14, provision_updated_at = $15, \
         created_at = $16, updated_at = $17 WHERE uuid = $1";
    /// Rows from before schema version 6, whose columns are still empty.
    pub const UNFILLED_NODES: &str =
        "SELECT data, reservation, uuid, name, instance_uuid, provision_state FROM nodes WHERE driver IS NULL";
    pub const SET_NODE_COLUMNS: &str = "UPDATE nodes SET driver = $2, maintenance = $3, resource_class = $4, \
         conductor_group = $5, fault = $6, owner = $7, lessee = $8, retired = $9, power_state = $10, \
         provision_updated_at = $11, created_at = $12, updated_at = $13 WHERE uuid = $1";
    pub const DELETE_NODE: &str = "DELETE FROM nodes WHERE uuid = $1";
    /// The lock is one atomic statement: one changed row means it was won.
    pub const RESERVE: &str =
        "UPDATE nodes SET reservation = $2 WHERE uuid = $1 AND reservation IS NULL";
    pub const RELEASE: &str =
        "UPDATE nodes SET reservation = NULL WHERE uuid = $1 AND reservation = $2";
    pub const RELEASE_ALL: &str = "UPDATE nodes SET reservation = NULL WHERE reservation = $1";

    pub const INSERT_PORT: &str =
        "INSERT INTO ports (uuid, address, node_uuid, data) VALUES ($1, $2, $3, $4)";
    pub const PORT_BY_UUID: &str = "SELECT data FROM ports WHERE uuid = $1";
    pub const PORT_BY_ADDRESS: &str = "SELECT data FROM ports WHERE address = $1";
    pub const LIST_PORTS: &str = "SELECT data FROM ports ORDER BY id";
    pub const LIST_NODE_PORTS: &str = "SELECT data FROM ports WHERE node_uuid = $1 ORDER BY id";
    pub const UPDATE_PORT: &str =
        "UPDATE ports SET address = $2, node_uuid = $3, data = $4 WHERE uuid = $1";
    pub const DELETE_PORT: &str = "DELETE FROM ports WHERE uuid = $1";

    pub const INSERT_EVENT: &str = "INSERT INTO node_history (uuid, node_uuid, created_at, severity, event_type, event, conductor) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)";
    pub const HISTORY: &str =
        "SELECT uuid, created_at, severity, event_type, event, conductor, \"user\" \
         FROM node_history WHERE node_uuid = $1 ORDER BY id";

    pub const REGISTER_CONDUCTOR: &str = "INSERT INTO conductors \
         (hostname, conductor_group, hardware_types, api_url, online, created_at, updated_at, updated_us) \
         VALUES ($1, $2, $3, $4, 1, $5, $5, $6) \
         ON CONFLICT (hostname) DO UPDATE SET conductor_group = excluded.conductor_group, \
         hardware_types = excluded.hardware_types, api_url = excluded.api_url, online = 1, \
         updated_at = excluded.updated_at, updated_us = excluded.updated_us";
    pub const TOUCH_CONDUCTOR: &str =
        "UPDATE conductors SET online = 1, updated_at = $2, updated_us = $3 WHERE hostname = $1";
    pub const CONDUCTOR_OFFLINE: &str = "UPDATE conductors SET online = 0 WHERE hostname = $1";
    pub const LIST_CONDUCTORS: &str =
        "SELECT hostname, conductor_group, hardware_types, api_url, online, \
         created_at, updated_at, updated_us FROM conductors ORDER BY hostname";
    /// The takeover's compare-and-set: only while the holder still holds
    /// it, and is still dead (no live row newer than the cutoff).
    pub const RELEASE_ORPHAN: &str = "UPDATE nodes SET reservation = NULL \
         WHERE uuid = $1 AND reservation = $2 AND NOT EXISTS \
         (SELECT 1 FROM conductors WHERE hostname = $2 AND online = 1 AND updated_us >= $3)";
    pub const RESERVED_NODES: &str =
        "SELECT data, reservation, uuid, name, instance_uuid, provision_state \
         FROM nodes WHERE reservation IS NOT NULL ORDER BY id";

    pub const SAVE_AGENT_CERTIFICATE: &str = "INSERT INTO agent_certificates (node_uuid, pem) \
         VALUES ($1, $2) ON CONFLICT (node_uuid) DO UPDATE SET pem = excluded.pem";
    pub const AGENT_CERTIFICATE: &str = "SELECT pem FROM agent_certificates WHERE node_uuid = $1";

    pub const SAVE_INVENTORY: &str =
        "INSERT INTO node_inventory (node_uuid, inventory, plugin_data, created_at) \
         VALUES ($1, $2, $3, $4) \
         ON CONFLICT (node_uuid) DO UPDATE SET inventory = excluded.inventory, \
         plugin_data = excluded.plugin_data, created_at = excluded.created_at";
    pub const GET_INVENTORY: &str =
        "SELECT inventory, plugin_data, created_at FROM node_inventory WHERE node_uuid = $1";
}

/// One node row: the JSON document plus the columns kept beside it.
pub struct NodeRow {
    pub data: String,
    pub reservation: Option<String>,
    pub uuid: String,
    pub name: Option<String>,
    pub instance_uuid: Option<String>,
    pub provision_state: String,
}

/// The parameters of [`sql::INSERT_NODE`] and [`sql::UPDATE_NODE`].
pub fn node_params(node: &Node, data: String) -> Vec<Param> {
    let mut params = vec![
        Param::Text(Some(node.uuid.clone())),
        Param::Text(node.name.clone()),
        Param::Text(node.instance_uuid.clone()),
        Param::Text(Some(node.provision_state.clone())),
        Param::Text(Some(data)),
    ];
    params.extend(node_query::columns(node));
    params
}

/// The parameters of [`sql::SET_NODE_COLUMNS`] for a row from before the
/// columns existed: from its document, or as corrupt if that does not parse.
pub fn fill_params(row: NodeRow) -> Vec<Param> {
    let mut params = vec![Param::Text(Some(row.uuid.clone()))];
    match decode(row) {
        Ok(node) => params.extend(node_query::columns(&node)),
        Err(_) => params.extend(node_query::corrupt_columns()),
    }
    params
}

/// For writes: the record must parse, or nothing overwrites its bytes.
pub fn decode(row: NodeRow) -> StoreResult<Node> {
    let mut node: Node = serde_json::from_str(&row.data)?;
    // The lock lives only in its column, so that taking it is one atomic UPDATE.
    node.reservation = row.reservation;
    Ok(node)
}

/// For reads: a record that does not parse (written by hand, or by an older
/// bug) must not take listing or start-up down with it. It is shown from
/// its columns, in maintenance with the reason, so an operator sees it and
/// can delete it; writes still refuse it ([`decode`]), so nothing
/// overwrites the original bytes.
pub fn decode_or_degraded(row: NodeRow) -> Node {
    let columns = Node {
        uuid: row.uuid.clone(),
        name: row.name.clone(),
        instance_uuid: row.instance_uuid.clone(),
        provision_state: row.provision_state.clone(),
        reservation: row.reservation.clone(),
        ..Node::default()
    };
    match decode(row) {
        Ok(node) => node,
        Err(e) => {
            tracing::error!(node = %columns.uuid, error = %e, "stored node record is corrupt; showing it degraded");
            Node {
                maintenance: true,
                maintenance_reason: Some(format!(
                    "The stored record of this node is corrupt ({e}); delete the node and enroll it again"
                )),
                fault: Some(CORRUPT_FAULT.into()),
                ..columns
            }
        }
    }
}

/// The document written for a node, stamped with the time of the write.
pub fn encode_update(node: &mut Node) -> StoreResult<String> {
    node.updated_at = Some(crate::time::api_now());
    Ok(serde_json::to_string(node)?)
}

pub fn decode_port(data: String) -> StoreResult<Port> {
    Ok(serde_json::from_str(&data)?)
}

pub fn node_not_found(ident: &str) -> StoreError {
    StoreError::NotFound(format!("Node {ident} could not be found."))
}

pub fn port_not_found(uuid: &str) -> StoreError {
    StoreError::NotFound(format!("Port {uuid} could not be found."))
}

pub fn duplicate_node(node: &Node) -> String {
    match &node.name {
        Some(name) => format!(
            "A node with UUID {} or name {name} already exists.",
            node.uuid
        ),
        None => format!("A node with UUID {} already exists.", node.uuid),
    }
}

pub fn duplicate_port(port: &Port) -> String {
    format!("A port with MAC address {} already exists.", port.address)
}

pub fn inventory_from_text(
    inventory: &str,
    plugin_data: &str,
    created_at: String,
) -> StoreResult<StoredInventory> {
    Ok(StoredInventory {
        inventory: serde_json::from_str(inventory)?,
        plugin_data: serde_json::from_str(plugin_data)?,
        created_at,
    })
}
