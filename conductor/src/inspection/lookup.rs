//! Ironic's `inspect_utils.lookup_node`: which node sent this inspection
//! data, by UUID, by port MACs and by BMC address.

use std::collections::BTreeSet;

use ferrite_protocol::node::Node;
use tracing::error;

use super::InspectionError;
use crate::provision_state::{NodeStates, ProvisionState};
use crate::store::{NodeQuery, Store};

/// Ironic's `lookup_bmc_addresses` cache in `driver_internal_info`.
const LOOKUP_CACHE_FIELD: &str = "lookup_bmc_addresses";

/// Ironic accepts inspection data only while it waits for it (and in
/// `enroll` with auto-discovery, which this conductor does not do).
pub fn data_accepted(node: &Node) -> bool {
    node.state() == Ok(ProvisionState::InspectWait)
}

/// The BMC addresses a node is known by: the cache Ironic fills on
/// inspection start, else the node's `*_address` driver fields.
fn node_bmc_addresses(node: &Node) -> BTreeSet<String> {
    if let Some(cached) = node.driver_internal_info.get(LOOKUP_CACHE_FIELD) {
        return cached
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().map(str::to_string))
            .collect();
    }
    node.driver_info
        .iter()
        .filter(|(k, _)| k.ends_with("_address"))
        .filter_map(|(_, v)| v.as_str())
        .map(|addr| {
            let host = url::Url::parse(addr)
                .ok()
                .filter(|_| addr.contains("//"))
                .and_then(|u| u.host_str().map(str::to_string))
                .unwrap_or_else(|| addr.to_string());
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_string()
        })
        .collect()
}

/// Whether one of `addresses` is a BMC address of the node.
pub fn bmc_matches(node: &Node, addresses: &[String]) -> bool {
    let known = node_bmc_addresses(node);
    addresses.iter().any(|a| known.contains(a))
}

/// The node the data is from; any ambiguity or a node in the wrong state
/// is [`InspectionError::NotFound`], the reason only logged.
pub async fn lookup_node(
    store: &Store,
    macs: &[String],
    bmc_addresses: &[String],
    node_uuid: Option<&str>,
) -> Result<Node, InspectionError> {
    let mut node = match node_uuid {
        Some(uuid) => Some(
            store
                .get_node(uuid)
                .await
                .map_err(|_| InspectionError::NotFound)?,
        ),
        None => None,
    };
    if !macs.is_empty() {
        let mut owners = BTreeSet::new();
        for mac in macs {
            if let Some(port) = store.port_by_address(mac).await? {
                owners.insert(port.node_uuid);
            }
        }
        if owners.len() > 1 {
            error!(
                ?owners,
                "Conflict on inspection lookup: multiple nodes match the MACs"
            );
            return Err(InspectionError::NotFound);
        }
        if let Some(owner) = owners.into_iter().next() {
            if node.as_ref().is_some_and(|n| n.uuid != owner) {
                error!(%owner, "Conflict on inspection lookup: the MACs belong to another node");
                return Err(InspectionError::NotFound);
            }
            node = Some(store.get_node(&owner).await?);
        }
    }
    if let Some(n) = &node {
        if !data_accepted(n) {
            error!(node = %n.uuid, state = %n.provision_state,
                "node found during inspection lookup, but not waiting for inspection");
            return Err(InspectionError::NotFound);
        }
    }
    if !bmc_addresses.is_empty() {
        let query = NodeQuery::in_states(&[ProvisionState::InspectWait]);
        let by_bmc: BTreeSet<String> = store
            .list_nodes(&query)
            .await?
            .into_iter()
            .filter(|n| bmc_matches(n, bmc_addresses))
            .map(|n| n.uuid)
            .collect();
        match &node {
            Some(n) if !by_bmc.is_empty() && !by_bmc.contains(&n.uuid) => {
                error!(node = %n.uuid, ?by_bmc, "Conflict on inspection lookup: BMC and MACs disagree");
                return Err(InspectionError::NotFound);
            }
            Some(_) => {}
            None if by_bmc.len() > 1 => {
                error!(
                    ?by_bmc,
                    "several nodes match the BMC address; ports are needed"
                );
                return Err(InspectionError::NotFound);
            }
            None => {
                if let Some(uuid) = by_bmc.into_iter().next() {
                    node = Some(store.get_node(&uuid).await?);
                }
            }
        }
    }
    node.ok_or_else(|| {
        error!(
            ?macs,
            ?bmc_addresses,
            "No nodes satisfy the MACs and BMC addresses during inspection lookup"
        );
        InspectionError::NotFound
    })
}
