//! Periodic tasks, as Ironic's periodics run them: one round at a time,
//! rounds spaced by the period even after a slow one (no catch-up burst),
//! and a failed round logged and retried at the next tick.

use std::future::Future;
use std::time::Duration;

use tracing::warn;

/// Run `round` every `period`, the first time after `first`.
pub fn spawn_every<F, Fut>(what: &'static str, first: Duration, period: Duration, mut round: F)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + first, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = round().await {
                warn!(error = %format!("{e:#}"), "{what} failed");
            }
        }
    });
}
