//! `manage` from `enroll`: check the conductor can drive the node's power
//! with its credentials (Ironic's `verifying`).

use ferrite_protocol::node::Node;

use super::transition;
use super::Flows;
use crate::fsm::Event;
use crate::power::PowerDriver;

pub async fn run(flows: &Flows, node: &Node) -> anyhow::Result<()> {
    let checked = async {
        let driver = PowerDriver::for_node(node)?;
        driver
            .get_state(node, &flows.metrics.bmc)
            .await
            .map_err(anyhow::Error::from)
    }
    .await;
    match checked {
        Ok(power) => {
            transition::fire(flows, &node.uuid, Event::Done, |n| {
                n.power_state = Some(power);
            })
            .await?;
        }
        Err(e) => {
            transition::fail(
                flows,
                &node.uuid,
                &format!(
                    "Failed to get power state for node {}. Error: {e:#}",
                    node.uuid
                ),
            )
            .await?;
        }
    }
    Ok(())
}
