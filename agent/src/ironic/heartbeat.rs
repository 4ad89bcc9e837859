//! The heartbeat loop: first beat at once, then every
//! `heartbeat_timeout × U(0.3, 0.6)`; 5–10 s after an error; forced beats
//! at the end of async commands, no closer than 5 s to the previous one.

use std::sync::Arc;
use std::time::Duration;

use ferrite_protocol::{ApiVersion, HeartbeatRequest, AGENT_VERSION};
use rand::Rng;
use reqwest::StatusCode;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::client::IronicClient;
use crate::state::AgentContext;

const FORCED_MIN_GAP: Duration = Duration::from_secs(5);

pub struct Heartbeater {
    pub client: Arc<IronicClient>,
    pub ctx: Arc<AgentContext>,
    pub node_uuid: String,
    pub callback_url: String,
    pub verify_ca: Option<String>,
    pub heartbeat_timeout: f64,
}

impl Heartbeater {
    /// Run until lockdown.
    pub async fn run(self) {
        let mut next = Instant::now();
        let mut last_sent: Option<Instant> = None;
        let mut first_through = false;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = self.ctx.heartbeat_forced() => {
                    let earliest = last_sent.map(|t| t + FORCED_MIN_GAP).unwrap_or_else(Instant::now);
                    next = next.min(earliest.max(Instant::now()));
                    continue;
                }
                _ = self.ctx.lockdown_entered() => return,
            }
            let ok = self.beat().await;
            if ok && !first_through {
                first_through = true;
                crate::timeline::mark("first heartbeat");
                if let Some(line) = crate::timeline::report() {
                    info!("boot timeline: {line}");
                }
            }
            let now = Instant::now();
            last_sent = Some(now);
            next = now
                + if ok {
                    success_interval(self.heartbeat_timeout)
                } else {
                    error_interval()
                };
        }
    }

    pub fn body(&self) -> HeartbeatRequest {
        let version = self.client.heartbeat_version();
        HeartbeatRequest {
            callback_url: self.callback_url.clone(),
            agent_token: (version >= ApiVersion::AGENT_TOKEN)
                .then(|| self.ctx.token())
                .flatten(),
            agent_version: (version >= ApiVersion::AGENT_VERSION)
                .then(|| AGENT_VERSION.to_string()),
            agent_verify_ca: (version >= ApiVersion::AGENT_VERIFY_CA)
                .then(|| self.verify_ca.clone())
                .flatten(),
            agent_status: None,
            agent_status_message: None,
        }
    }

    async fn beat(&self) -> bool {
        match self.client.heartbeat(&self.node_uuid, &self.body()).await {
            Ok(()) => {
                debug!(node = %self.node_uuid, "heartbeat sent");
                true
            }
            Err(e) if e.status() == Some(StatusCode::CONFLICT) => {
                warn!(error = %e, "ConflictError heartbeating to agent API: will retry soon");
                false
            }
            Err(e) => {
                error!(error = %e, "Error heartbeating to agent API");
                false
            }
        }
    }
}

/// The range a lookup's `heartbeat_timeout` is held to: Ironic's default is
/// 300 s; a day is far beyond any sane setting, and a huge, infinite or NaN
/// value must not overflow the interval (`Duration::from_secs_f64` panics).
/// The floor (a beat at least every 0.3 s) only stops a zero or negative
/// value from spinning; Ironic sets none, and short timeouts are legitimate
/// in tests and labs.
pub const HEARTBEAT_TIMEOUT_RANGE: (f64, f64) = (1.0, 86_400.0);

/// `heartbeat_timeout` from Ironic, within [`HEARTBEAT_TIMEOUT_RANGE`].
pub fn clamp_heartbeat_timeout(t: f64) -> f64 {
    let (lo, hi) = HEARTBEAT_TIMEOUT_RANGE;
    if t.is_nan() {
        return ferrite_protocol::lookup::DEFAULT_HEARTBEAT_TIMEOUT;
    }
    t.clamp(lo, hi)
}

pub fn success_interval(heartbeat_timeout: f64) -> Duration {
    let factor = rand::rng().random_range(0.3..=0.6);
    Duration::from_secs_f64(clamp_heartbeat_timeout(heartbeat_timeout) * factor)
}

pub fn error_interval() -> Duration {
    Duration::from_secs_f64(5.0 * rand::rng().random_range(1.0..=2.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_heartbeat_timeouts_are_clamped() {
        for t in [
            f64::MAX,
            f64::INFINITY,
            1e300,
            f64::NAN,
            -1.0,
            f64::NEG_INFINITY,
            0.0,
        ] {
            let s = success_interval(t).as_secs_f64();
            assert!((0.3..=86_400.0 * 0.6).contains(&s), "{t} -> {s}");
        }
    }

    #[test]
    fn intervals_stay_in_ipa_ranges() {
        for _ in 0..500 {
            let s = success_interval(300.0).as_secs_f64();
            assert!((90.0..=180.0).contains(&s), "{s}");
            let e = error_interval().as_secs_f64();
            assert!((5.0..=10.0).contains(&e), "{e}");
        }
    }
}
