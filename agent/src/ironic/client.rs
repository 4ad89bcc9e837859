//! HTTP client for the Ironic API. `ipa-api-url` may list several
//! endpoints: on a connection error the next is tried, and the one that
//! answered moves to the front (IPA's `APIClient._request`).

use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use ferrite_protocol::ironic_api::IronicRoot;
use ferrite_protocol::version::{REQUEST_ID_HEADER, VERSION_HEADER};
use ferrite_protocol::{ApiVersion, HeartbeatRequest, IronicErrorBody, LookupResponse};
use reqwest::{Method, StatusCode};
use tracing::{debug, warn};
use url::Url;

use crate::config::Config;

/// Lookup uses at most this microversion (the token arrives at 1.62).
const LOOKUP_MAX_VERSION: ApiVersion = ApiVersion::AGENT_TOKEN;
/// Heartbeat uses at most this microversion (agent_verify_ca).
const HEARTBEAT_MAX_VERSION: ApiVersion = ApiVersion::AGENT_VERIFY_CA;

#[derive(Debug, thiserror::Error)]
pub enum IronicError {
    #[error("cannot reach any Ironic API endpoint: {0}")]
    Connection(String),
    #[error("Ironic answered {status}: {message}")]
    Status { status: StatusCode, message: String },
    #[error("Ironic sent an unreadable reply: {0}")]
    Decode(String),
}

impl IronicError {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

pub struct IronicClient {
    urls: Mutex<Vec<Url>>,
    http: reqwest::Client,
    request_id: Option<String>,
    version: ApiVersion,
}

impl IronicClient {
    /// Build the client and negotiate the API version (or take the pinned one).
    pub async fn connect(config: &Config) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .danger_accept_invalid_certs(config.insecure)
            .timeout(config.http_request_timeout)
            .connect_timeout(config.http_request_timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(2)
            // Below the conductor's header-read timeout (10 s), which also
            // closes idle connections: never reuse one as it is closed.
            .pool_idle_timeout(Duration::from_secs(5));
        if let Some(cafile) = &config.cafile {
            for ca in crate::tls::read_cafile(cafile)? {
                builder = builder.add_root_certificate(ca);
            }
        }
        let http = builder.build().context("building the Ironic HTTP client")?;
        let mut client = Self {
            urls: Mutex::new(config.api_urls.clone()),
            http,
            request_id: config.global_request_id.clone(),
            version: ApiVersion::IPA_MINIMUM,
        };
        client.version = match config.ironic_api_version {
            Some(pinned) => pinned,
            None => client.negotiate().await,
        };
        Ok(client)
    }

    pub fn version(&self) -> ApiVersion {
        self.version
    }

    /// `GET /` and read `default_version.version`; IPA falls back to 1.31.
    async fn negotiate(&self) -> ApiVersion {
        match self.send::<()>(Method::GET, "/", None, None).await {
            Ok(resp) => match resp.json::<IronicRoot>().await {
                Ok(root) => {
                    debug!(version = %root.default_version.version, "Ironic API version detected");
                    return root.default_version.version;
                }
                Err(e) => warn!(error = %e, "cannot parse the Ironic root document"),
            },
            Err(e) => warn!(error = %e, "cannot detect the Ironic API version"),
        }
        ApiVersion::IPA_MINIMUM
    }

    pub async fn lookup(
        &self,
        macs: &[String],
        node_uuid: Option<&str>,
    ) -> Result<LookupResponse, IronicError> {
        let mut path = format!("/v1/lookup?addresses={}", macs.join(","));
        if let Some(uuid) = node_uuid {
            path.push_str(&format!("&node_uuid={uuid}"));
        }
        let version = self.version.min(LOOKUP_MAX_VERSION);
        let resp = self
            .send::<()>(Method::GET, &path, Some(version), None)
            .await?;
        let resp = check(resp).await?;
        let lookup: LookupResponse = resp
            .json()
            .await
            .map_err(|e| IronicError::Decode(e.to_string()))?;
        if lookup.node.uuid.is_empty() {
            return Err(IronicError::Decode("lookup reply has no node uuid".into()));
        }
        Ok(lookup)
    }

    pub async fn heartbeat(
        &self,
        node_uuid: &str,
        body: &HeartbeatRequest,
    ) -> Result<(), IronicError> {
        let version = self.version.min(HEARTBEAT_MAX_VERSION);
        let resp = self
            .send(
                Method::POST,
                &format!("/v1/heartbeat/{node_uuid}"),
                Some(version),
                Some(body),
            )
            .await?;
        check(resp).await.map(|_| ())
    }

    /// Which fields the heartbeat may carry at the negotiated version.
    pub fn heartbeat_version(&self) -> ApiVersion {
        self.version.min(HEARTBEAT_MAX_VERSION)
    }

    /// The first endpoint, for discovering our own address towards it.
    pub fn primary_url(&self) -> Option<Url> {
        self.urls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .first()
            .cloned()
    }

    async fn send<B: serde::Serialize>(
        &self,
        method: Method,
        path: &str,
        version: Option<ApiVersion>,
        body: Option<&B>,
    ) -> Result<reqwest::Response, IronicError> {
        let urls = self.urls.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut last_error = String::from("no API URL configured");
        for (index, base) in urls.iter().enumerate() {
            let url = format!("{}{}", base.as_str().trim_end_matches('/'), path);
            let mut req = self
                .http
                .request(method.clone(), &url)
                .header(reqwest::header::ACCEPT, "application/json");
            if let Some(v) = version {
                req = req.header(VERSION_HEADER, v.to_string());
            }
            if let Some(id) = &self.request_id {
                req = req.header(REQUEST_ID_HEADER, id);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            match req.send().await {
                Ok(resp) => {
                    if index > 0 {
                        self.promote(base);
                    }
                    return Ok(resp);
                }
                Err(e) => {
                    // The causes say why: refused, timed out, or which
                    // certificate check failed (ipa-cafile, ipa-insecure).
                    let e = with_causes(&e);
                    debug!(url = %url, error = %e, "Ironic endpoint unreachable");
                    last_error = format!("{url}: {e}");
                }
            }
        }
        Err(IronicError::Connection(last_error))
    }

    fn promote(&self, url: &Url) {
        let mut urls = self.urls.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(pos) = urls.iter().position(|u| u == url) {
            let u = urls.remove(pos);
            urls.insert(0, u);
        }
    }
}

/// An error and its sources, `a: b: c`.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Turn non-2xx replies into errors carrying Ironic's `faultstring`.
async fn check(resp: reqwest::Response) -> Result<reqwest::Response, IronicError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let text = resp.text().await.unwrap_or_default();
    let message = serde_json::from_str::<IronicErrorBody>(&text)
        .map(|b| b.faultstring())
        .unwrap_or(text);
    Err(IronicError::Status { status, message })
}
