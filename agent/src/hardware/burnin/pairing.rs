//! `burnin_network`'s dynamic pairing through ferrite-conductor. IPA
//! agents join a tooz group on a coordination backend; ferrite-agent asks
//! the conductor instead, when `agent_burnin_fio_network_pairing_backend_url`
//! names it: `ferrite+https://<conductor>[:port]` (or `ferrite+http://`),
//! or `ferrite://` for the Ironic API the agent already uses
//! (`ipa-api-url`). The agent long-polls
//! `POST /v1/ferrite/network-burnin/pair` with its node's UUID and agent
//! token until it is paired or its pairing timeout is over, then leaves.

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use url::Url;

use crate::config::Config;

/// The longest single long-poll (the conductor caps it at 25 s).
const POLL: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum PairingError {
    #[error(
        "fio (network): pairing backend {0:?} is not supported by ferrite-agent, which pairs \
         through ferrite-conductor: use ferrite+https://<conductor> or ferrite://"
    )]
    Unsupported(String),
    #[error("fio (network): the pairing request was refused: {0}")]
    Refused(String),
    #[error("fio (network) timed out to find partner")]
    TimedOut,
    #[error("fio (network) timed out to find partner (last error: {0})")]
    TimedOutAfter(String),
    #[error("fio (network): {0}")]
    Setup(String),
}

/// Where the pairing requests go: the conductor's API root.
pub fn conductor_url(backend: &str, config: &Config) -> Result<Url, PairingError> {
    if backend == "ferrite://" || backend == "ferrite:" {
        return config
            .api_urls
            .first()
            .cloned()
            .ok_or_else(|| PairingError::Setup("ferrite:// needs ipa-api-url".into()));
    }
    backend
        .strip_prefix("ferrite+")
        .and_then(|rest| Url::parse(rest).ok())
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
        .ok_or_else(|| PairingError::Unsupported(backend.to_string()))
}

/// Who we are, for the conductor.
#[derive(Debug, Clone, Serialize)]
pub struct Member {
    pub node_uuid: String,
    pub agent_token: String,
    pub group: String,
}

#[derive(Serialize)]
struct PairRequest<'a> {
    #[serde(flatten)]
    member: &'a Member,
    address: IpAddr,
    wait: u64,
}

/// The conductor's answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Answer {
    Paired {
        role: String,
        partner: IpAddr,
        partner_node: String,
    },
    Waiting,
}

pub struct PairingClient {
    http: reqwest::Client,
    base: Url,
}

impl PairingClient {
    pub fn new(base: Url, config: &Config) -> Result<Self, PairingError> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .danger_accept_invalid_certs(config.insecure)
            .connect_timeout(Duration::from_secs(10));
        if let Some(cafile) = &config.cafile {
            for ca in crate::tls::read_cafile(cafile)
                .map_err(|e| PairingError::Setup(format!("{e:#}")))?
            {
                builder = builder.add_root_certificate(ca);
            }
        }
        let http = builder
            .build()
            .map_err(|e| PairingError::Setup(format!("building the HTTP client: {e}")))?;
        Ok(Self { http, base })
    }

    fn endpoint(&self, what: &str) -> String {
        format!(
            "{}/v1/ferrite/network-burnin/{what}",
            self.base.as_str().trim_end_matches('/')
        )
    }

    /// Ask until paired or `timeout` is over; a member that times out
    /// leaves the group so that nobody pairs with it later.
    pub async fn find_partner(
        &self,
        member: &Member,
        address: IpAddr,
        timeout: Duration,
    ) -> Result<(String, IpAddr), PairingError> {
        let deadline = Instant::now() + timeout;
        let mut last_error = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.leave(member).await;
                return Err(match last_error {
                    Some(e) => PairingError::TimedOutAfter(e),
                    None => PairingError::TimedOut,
                });
            }
            let wait = left.min(POLL);
            let body = PairRequest {
                member,
                address,
                wait: wait.as_secs().max(1),
            };
            let sent = self
                .http
                .post(self.endpoint("pair"))
                .timeout(wait + Duration::from_secs(15))
                .json(&body)
                .send()
                .await;
            match sent {
                Ok(resp) if resp.status().is_success() => match resp.json::<Answer>().await {
                    Ok(Answer::Paired { role, partner, .. }) => return Ok((role, partner)),
                    Ok(Answer::Waiting) => {
                        tracing::info!(group = %member.group, "one member, waiting for a partner");
                    }
                    Err(e) => last_error = Some(format!("unreadable answer: {e}")),
                },
                Ok(resp) if resp.status().is_client_error() => {
                    let status = resp.status();
                    let text = resp.text().await.unwrap_or_default();
                    return Err(PairingError::Refused(format!("{status}: {text}")));
                }
                Ok(resp) => last_error = Some(format!("the conductor answered {}", resp.status())),
                Err(e) => last_error = Some(e.to_string()),
            }
            if let Some(e) = &last_error {
                tracing::warn!(error = %e, "pairing request failed; retrying");
                tokio::time::sleep(Duration::from_secs(1).min(left)).await;
            }
        }
    }

    /// Best effort: the conductor forgets silent members anyway.
    async fn leave(&self, member: &Member) {
        let sent = self
            .http
            .post(self.endpoint("leave"))
            .timeout(Duration::from_secs(10))
            .json(member)
            .send()
            .await;
        if let Err(e) = sent {
            tracing::warn!(error = %e, "could not leave the pairing group");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_urls() {
        let config = Config {
            api_urls: vec![Url::parse("https://ironic.example:6385").unwrap()],
            ..Default::default()
        };
        assert_eq!(
            conductor_url("ferrite://", &config).unwrap().as_str(),
            "https://ironic.example:6385/"
        );
        assert_eq!(
            conductor_url("ferrite+http://10.0.0.1:6385", &config)
                .unwrap()
                .as_str(),
            "http://10.0.0.1:6385/"
        );
        for unsupported in ["etcd3+http://10.0.0.1:2379", "ferrite+ftp://x", "redis://h"] {
            assert!(
                matches!(
                    conductor_url(unsupported, &config),
                    Err(PairingError::Unsupported(_))
                ),
                "{unsupported}"
            );
        }
    }

    #[test]
    fn answers() {
        let paired: Answer = serde_json::from_str(
            r#"{"status":"paired","role":"reader","partner":"10.0.0.2","partner_node":"n"}"#,
        )
        .unwrap();
        assert_eq!(
            paired,
            Answer::Paired {
                role: "reader".into(),
                partner: IpAddr::from([10, 0, 0, 2]),
                partner_node: "n".into()
            }
        );
        let waiting: Answer = serde_json::from_str(r#"{"status":"waiting"}"#).unwrap();
        assert_eq!(waiting, Answer::Waiting);
    }
}
