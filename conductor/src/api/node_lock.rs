//! A request against a node another task holds: Ironic's NodeLocked, tried
//! again as `--node-locked-retry-attempts` and `-interval` say (the flows'
//! `LockRetry`) before it is the answer.

use ferrite_protocol::node::Node;

use super::error::{ApiError, ApiResult};
use super::AppState;

/// `store.update_node` for a request: refused while another task holds the
/// node, and tried again (`update` may run once per try).
pub async fn update_unlocked(
    state: &AppState,
    ident: &str,
    update: impl Fn(&mut Node) -> ApiResult<()> + Sync,
) -> ApiResult<Node> {
    let update = &update;
    let attempt = || {
        state.store.update_node::<ApiError, _>(ident, move |node| {
            if let Some(holder) = &node.reservation {
                return Err(ApiError::node_locked(&node.uuid, holder));
            }
            update(node)
        })
    };
    state.flows.lock_retry().run(ApiError::held, attempt).await
}

/// `node` once no task holds it: as it is when it is free, else read again
/// until it is, or NodeLocked.
pub async fn unlocked(state: &AppState, node: Node) -> ApiResult<Node> {
    let uuid = &node.uuid.clone();
    let mut known = Some(node);
    let attempt = move || {
        let known = known.take();
        async move {
            let node = match known {
                Some(node) => node,
                None => state.store.get_node(uuid).await?,
            };
            match &node.reservation {
                Some(holder) => Err(ApiError::node_locked(&node.uuid, holder)),
                None => Ok(node),
            }
        }
    };
    state.flows.lock_retry().run(ApiError::held, attempt).await
}
