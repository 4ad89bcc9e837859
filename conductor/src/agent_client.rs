//! Talking to a deploy agent (ferrite-agent or IPA): `POST /v1/commands/`
//! and polling results, like Ironic's `agent_client.py`. HTTPS is verified
//! against the certificate the agent sent in its heartbeat.

use std::time::{Duration, Instant};

use ferrite_protocol::steps::CleanStepsResult;
use ferrite_protocol::{CommandList, CommandRequest, CommandResult, CommandStatus, FaultBody};
use reqwest::StatusCode;
use serde_json::{json, Map, Value};
use tracing::{debug, warn};

use crate::agent_clients::Outcomes;
use crate::config::ConductorConfig;

#[derive(Debug, thiserror::Error)]
pub enum AgentClientError {
    #[error("node has no agent_url: the agent has not heartbeated yet")]
    NoAgentUrl,
    #[error("cannot set up TLS towards the agent: {0}")]
    Tls(String),
    #[error("agent unreachable at {url}: {detail}")]
    Connection { url: String, detail: String },
    #[error("agent is busy: {0}")]
    InProgress(String),
    #[error("agent API error {status}: {faultstring}")]
    Api {
        status: StatusCode,
        faultstring: String,
    },
    #[error("agent sent an unreadable reply: {0}")]
    Decode(String),
    #[error("agent command {name} failed: {detail}")]
    CommandFailed { name: String, detail: String },
    #[error("agent command {0} did not finish in time")]
    Timeout(String),
    #[error("the agent's reply is larger than the {limit} byte limit")]
    TooLarge { limit: usize },
}

impl AgentClientError {
    /// A metric label for the kind of failure.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoAgentUrl => "no_agent_url",
            Self::Tls(_) => "tls",
            Self::Connection { .. } => "connection",
            Self::InProgress(_) => "busy",
            Self::Api { .. } => "api_error",
            Self::Decode(_) => "decode",
            Self::CommandFailed { .. } => "command_failed",
            Self::Timeout(_) => "timeout",
            Self::TooLarge { .. } => "too_large",
        }
    }
}

pub struct AgentClient {
    http: reqwest::Client,
    commands_url: String,
    token: Option<String>,
    timeout: Duration,
    max_attempts: u32,
    wait_interval: Duration,
    wait_attempts: u32,
    outcomes: Outcomes,
}

impl AgentClient {
    /// Built by [`crate::agent_clients::AgentClients`], which owns the
    /// shared `http` client.
    pub(crate) fn new(
        http: reqwest::Client,
        config: &ConductorConfig,
        agent_url: &str,
        token: Option<String>,
        outcomes: Outcomes,
    ) -> Self {
        Self {
            http,
            commands_url: format!("{}/v1/commands/", agent_url.trim_end_matches('/')),
            token,
            timeout: config.agent_command_timeout(),
            max_attempts: config.agent_max_command_attempts.max(1),
            wait_interval: Duration::from_secs(config.agent_command_wait_interval),
            wait_attempts: config.agent_command_wait_attempts.max(1),
            outcomes,
        }
    }

    /// One try per request, no retries on connection failures.
    pub fn once(mut self) -> Self {
        self.max_attempts = 1;
        self
    }

    fn query(&self, wait: Option<bool>) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        if let Some(w) = wait {
            q.push(("wait", w.to_string()));
        }
        if let Some(t) = &self.token {
            q.push(("agent_token", t.clone()));
        }
        q
    }

    /// Run a command. `wait` makes the agent answer only once it is done.
    pub async fn run(
        &self,
        name: &str,
        params: Map<String, Value>,
        wait: bool,
    ) -> Result<CommandResult, AgentClientError> {
        self.run_inner(name, params, wait, None).await
    }

    /// [`AgentClient::run`] reading at most `limit` bytes of reply (for
    /// commands whose result is large, as `log.collect_system_logs`).
    pub async fn run_limited(
        &self,
        name: &str,
        params: Map<String, Value>,
        wait: bool,
        limit: usize,
    ) -> Result<CommandResult, AgentClientError> {
        self.run_inner(name, params, wait, Some(limit)).await
    }

    async fn run_inner(
        &self,
        name: &str,
        params: Map<String, Value>,
        wait: bool,
        limit: Option<usize>,
    ) -> Result<CommandResult, AgentClientError> {
        let started = Instant::now();
        let result = self.send_command(name, params, wait, limit).await;
        let failure = match &result {
            Ok(r) if r.command_status == CommandStatus::Failed => Some("command_failed"),
            Ok(_) => None,
            Err(e) => Some(e.reason()),
        };
        self.outcomes
            .metrics
            .observe(name, started.elapsed(), failure);
        result
    }

    async fn send_command(
        &self,
        name: &str,
        params: Map<String, Value>,
        wait: bool,
        limit: Option<usize>,
    ) -> Result<CommandResult, AgentClientError> {
        let body = CommandRequest::new(name, params);
        let mut last = String::new();
        let mut unreachable = false;
        for attempt in 1..=self.max_attempts {
            let sent = self
                .http
                .post(&self.commands_url)
                .query(&self.query(Some(wait)))
                .timeout(self.timeout)
                .json(&body)
                .send()
                .await;
            match sent {
                Ok(resp) => {
                    self.outcomes.reached();
                    return decode_command(resp, limit).await;
                }
                Err(e) => {
                    unreachable = no_answer(&e);
                    // A failed connection sent nothing: no command can be running.
                    let connected = !e.is_connect();
                    last = describe(e);
                    warn!(command = name, attempt, error = %last, "agent command request failed");
                    // The reply may be lost while the command runs: Ironic's guard.
                    if connected {
                        if let Ok(cmds) = self.fetch_commands().await {
                            self.outcomes.reached();
                            if let Some(current) = cmds.last() {
                                if short_command_name(&current.command_name)
                                    == short_command_name(name)
                                    && current.command_status == CommandStatus::Running
                                {
                                    return Ok(current.clone());
                                }
                            }
                        }
                    }
                }
            }
        }
        Err(self.failed(last, unreachable))
    }

    /// `GET /v1/commands/`: every command the agent ran, oldest first.
    pub async fn commands(&self) -> Result<Vec<CommandResult>, AgentClientError> {
        let got = self.fetch_commands().await;
        match &got {
            Err(AgentClientError::Connection { .. }) => {}
            _ => self.outcomes.reached(),
        }
        got
    }

    async fn fetch_commands(&self) -> Result<Vec<CommandResult>, AgentClientError> {
        let started = Instant::now();
        let result = self.list_commands().await;
        let failure = result.as_ref().err().map(AgentClientError::reason);
        self.outcomes
            .metrics
            .observe("commands.list", started.elapsed(), failure);
        result
    }

    async fn list_commands(&self) -> Result<Vec<CommandResult>, AgentClientError> {
        let mut last = String::new();
        let mut unreachable = false;
        for _ in 0..self.max_attempts {
            match self
                .http
                .get(&self.commands_url)
                .query(&self.query(None))
                .timeout(self.timeout)
                .send()
                .await
            {
                Ok(resp) => {
                    let resp = check(resp).await?;
                    let list: CommandList = resp
                        .json()
                        .await
                        .map_err(|e| AgentClientError::Decode(describe(e)))?;
                    return Ok(list.commands);
                }
                Err(e) => {
                    unreachable = no_answer(&e);
                    last = describe(e);
                }
            }
        }
        Err(self.failed(last, unreachable))
    }

    /// The error after the last attempt; an agent that did not answer at
    /// all is left alone for a while (see [`AgentClients::backing_off`]).
    ///
    /// [`AgentClients::backing_off`]: crate::agent_clients::AgentClients::backing_off
    fn failed(&self, detail: String, unreachable: bool) -> AgentClientError {
        if unreachable {
            let window = self.outcomes.unreachable();
            debug!(url = %self.commands_url, window_s = window.as_secs(), "agent unreachable: heartbeats leave it alone for this long");
        }
        AgentClientError::Connection {
            url: self.commands_url.clone(),
            detail,
        }
    }

    /// Start `name` asynchronously and poll until it ends (Ironic's `poll=True`).
    pub async fn run_and_poll(
        &self,
        name: &str,
        params: Map<String, Value>,
    ) -> Result<CommandResult, AgentClientError> {
        let started = self.run(name, params, false).await?;
        if started.command_status != CommandStatus::Running {
            return finished(name, started);
        }
        for _ in 0..self.wait_attempts {
            tokio::time::sleep(self.wait_interval).await;
            let cmds = self.commands().await?;
            if let Some(current) = cmds.iter().rev().find(|c| c.id == started.id) {
                if current.command_status != CommandStatus::Running {
                    return finished(name, current.clone());
                }
                debug!(command = name, "still running");
            }
        }
        Err(AgentClientError::Timeout(name.to_string()))
    }

    pub async fn get_clean_steps(
        &self,
        node: Value,
        ports: Vec<Value>,
    ) -> Result<CleanStepsResult, AgentClientError> {
        let params = json!({"node": node, "ports": ports});
        let result = finished(
            "clean.get_clean_steps",
            self.run("clean.get_clean_steps", as_map(params), true)
                .await?,
        )?;
        serde_json::from_value(result.command_result.unwrap_or(Value::Null))
            .map_err(|e| AgentClientError::Decode(format!("get_clean_steps result: {e}")))
    }
}

/// The agent gave no answer at all: the connection failed (refused, no
/// route, TLS handshake) or dropped before a reply. A slow reply (a
/// timeout) is an answer of sorts: the agent is there.
fn no_answer(e: &reqwest::Error) -> bool {
    e.is_connect() || (e.is_request() && !e.is_timeout())
}

/// A reqwest error with its causes, without the URL: its query holds the
/// agent token, and these texts reach `last_error` and the logs.
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

fn as_map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// `standby.power_off` → `power_off`: IPA lists a command by its method.
pub fn short_command_name(name: &str) -> &str {
    name.split_once('.').map(|(_, c)| c).unwrap_or(name)
}

/// A finished command: FAILED becomes an error with the agent's words.
fn finished(name: &str, result: CommandResult) -> Result<CommandResult, AgentClientError> {
    match result.command_status {
        CommandStatus::Succeeded | CommandStatus::Running => Ok(result),
        _ => Err(AgentClientError::CommandFailed {
            name: name.to_string(),
            detail: result
                .command_error
                .as_ref()
                .map(|e| e.summary().to_string())
                .unwrap_or_else(|| format!("{:?}", result.command_status)),
        }),
    }
}

async fn check(resp: reqwest::Response) -> Result<reqwest::Response, AgentClientError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let text = resp.text().await.unwrap_or_default();
    let faultstring = serde_json::from_str::<FaultBody>(&text)
        .map(|f| f.faultstring)
        .unwrap_or(text);
    if status == StatusCode::CONFLICT || faultstring.to_lowercase().contains("agent is busy") {
        return Err(AgentClientError::InProgress(faultstring));
    }
    Err(AgentClientError::Api {
        status,
        faultstring,
    })
}

async fn decode_command(
    resp: reqwest::Response,
    limit: Option<usize>,
) -> Result<CommandResult, AgentClientError> {
    let resp = check(resp).await?;
    let Some(limit) = limit else {
        return resp
            .json()
            .await
            .map_err(|e| AgentClientError::Decode(describe(e)));
    };
    let bytes = read_limited(resp, limit).await?;
    serde_json::from_slice(&bytes).map_err(|e| AgentClientError::Decode(e.to_string()))
}

/// The reply body, refused as soon as it passes `limit` bytes.
async fn read_limited(
    mut resp: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, AgentClientError> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(AgentClientError::TooLarge { limit });
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| AgentClientError::Decode(format!("reading the reply: {}", describe(e))))?
    {
        if body.len() + chunk.len() > limit {
            return Err(AgentClientError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
