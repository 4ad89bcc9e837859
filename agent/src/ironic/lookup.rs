//! Finding our node: `GET /v1/lookup` retried with randomized exponential
//! backoff until the lookup budget runs out (IPA's `lookup_node`).

use std::time::Duration;

use anyhow::bail;
use ferrite_protocol::LookupResponse;
use rand::Rng;
use reqwest::StatusCode;
use tokio::time::Instant;
use tracing::{info, warn};

use super::client::IronicClient;

/// Longest single wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Extra pauses after 409 (node locked), escalating.
const LOCK_PAUSES: [Duration; 3] = [
    Duration::from_secs(5),
    Duration::from_secs(10),
    Duration::from_secs(30),
];

pub async fn lookup_node(
    client: &IronicClient,
    macs: &[String],
    node_uuid: Option<&str>,
    budget: Duration,
    interval: Duration,
) -> anyhow::Result<LookupResponse> {
    let deadline = Instant::now() + budget;
    let mut lock_pauses = LOCK_PAUSES.iter();
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        let error = match client.lookup(macs, node_uuid).await {
            Ok(found) => {
                info!(node = %found.node.uuid, attempt, "lookup succeeded");
                return Ok(found);
            }
            Err(e) => e,
        };
        match error.status() {
            Some(StatusCode::NOT_FOUND) => {
                info!(
                    attempt,
                    "lookup: no node for these MACs in a state that allows lookup yet"
                )
            }
            Some(StatusCode::CONFLICT) => {
                let pause = *lock_pauses.next().unwrap_or(&LOCK_PAUSES[2]);
                warn!(attempt, ?pause, "lookup: node is locked, pausing");
                sleep_within(pause, deadline).await;
            }
            _ => warn!(attempt, error = %error, "lookup failed"),
        }
        let wait = backoff(attempt, interval);
        if Instant::now() + wait >= deadline {
            bail!(
                "Error getting configuration from Ironic: lookup of {} gave up after {attempt} attempts in {:?}: {error}",
                macs.join(","),
                budget
            );
        }
        tokio::time::sleep(wait).await;
    }
}

async fn sleep_within(pause: Duration, deadline: Instant) {
    let until = (Instant::now() + pause).min(deadline);
    tokio::time::sleep_until(until).await;
}

/// tenacity's `wait_random_exponential(min=interval, max=60)`: uniform in
/// `[interval, min(60, max(interval, 2^(attempt-1)))]` seconds.
pub fn backoff(attempt: u32, interval: Duration) -> Duration {
    let exp = Duration::from_secs(1u64 << attempt.saturating_sub(1).min(16));
    let high = exp.max(interval).min(MAX_BACKOFF);
    let low = interval.min(high);
    if high <= low {
        return low;
    }
    rand::rng().random_range(low..=high)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let one = Duration::from_secs(1);
        for _ in 0..200 {
            assert_eq!(backoff(1, one), one);
            let b3 = backoff(3, one);
            assert!(b3 >= one && b3 <= Duration::from_secs(4), "{b3:?}");
            let b30 = backoff(30, one);
            assert!(b30 >= one && b30 <= MAX_BACKOFF, "{b30:?}");
        }
        // Randomized: not every draw is the same.
        let draws: std::collections::BTreeSet<_> = (0..50).map(|_| backoff(8, one)).collect();
        assert!(draws.len() > 1);
    }

    #[test]
    fn backoff_respects_a_long_interval() {
        assert_eq!(backoff(1, Duration::from_secs(90)), MAX_BACKOFF);
    }
}
