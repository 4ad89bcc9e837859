//! A recording proxy between a conductor and an agent, for interop runs with
//! the real Ironic and the real IPA: every request either side sends, and the
//! reply it gets, is kept in order (the protocol fixtures come from here).
//!
//! The agent is given `api_url` as its Ironic API. Its heartbeats are
//! rewritten on the way through so that the conductor calls the agent back
//! through the recorder: `callback_url` becomes the recorder's own URL and
//! `agent_verify_ca` its own certificate, while the recorder talks to the
//! real agent trusting the agent's certificate. The recording keeps the
//! bodies as the agent sent them.
//!
//! Loopback tests also use it to spoil one agent command's reply
//! ([`CommandFault`]) between the real conductor and the real agent.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::response::Response;
use axum::Router;
use serde::Serialize;
use serde_json::Value;

/// What the recorder does to the conductor's call of one agent command.
#[derive(Debug, Clone)]
pub enum CommandFault {
    /// Relay it, then put this in place of the reply's `command_result`
    /// (the recording keeps what the agent sent).
    ReplaceResult(Value),
    /// Relay nothing and close the connection without an answer, as an
    /// agent that died (its body fails at once, so the server never sends
    /// the status line).
    Hangup,
}

/// One request and its reply.
#[derive(Debug, Clone, Serialize)]
pub struct Exchange {
    /// Seconds since the recorder started.
    pub t: f64,
    /// Who sent the request: `agent` or `conductor`.
    pub from: &'static str,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: BTreeMap<String, String>,
    pub body: Value,
    pub status: u16,
    pub response: Value,
}

struct Upstream {
    url: String,
    client: reqwest::Client,
}

struct Shared {
    conductor: String,
    started: Instant,
    exchanges: Mutex<Vec<Exchange>>,
    agent: Mutex<Option<Arc<Upstream>>>,
    https_callback: String,
    http_callback: String,
    pem: String,
    plain: reqwest::Client,
    faults: Mutex<HashMap<String, CommandFault>>,
}

pub struct Recorder {
    /// The Ironic API URL to give the agent.
    pub api_url: String,
    shared: Arc<Shared>,
    handle: axum_server::Handle<std::net::SocketAddr>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Headers that belong to one hop, not to the message.
const HOP: [&str; 5] = [
    "host",
    "content-length",
    "connection",
    "transfer-encoding",
    "accept-encoding",
];

fn kept_headers(headers: &HeaderMap) -> Vec<(HeaderName, String)> {
    headers
        .iter()
        .filter(|(k, _)| !HOP.contains(&k.as_str()))
        .filter_map(|(k, v)| Some((k.clone(), v.to_str().ok()?.to_string())))
        .collect()
}

fn as_json(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
    }
}

impl Recorder {
    /// Record between the agent(s) and the Ironic API at `conductor_url`.
    pub async fn start(conductor_url: &str) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()])
            .expect("recorder certificate");
        let pem = cert.cert.pem();
        let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let plain_cb = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tls_cb = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let shared = Arc::new(Shared {
            conductor: conductor_url.trim_end_matches('/').to_string(),
            started: Instant::now(),
            exchanges: Mutex::new(Vec::new()),
            agent: Mutex::new(None),
            https_callback: format!("https://{}", tls_cb.local_addr().unwrap()),
            http_callback: format!("http://{}", plain_cb.local_addr().unwrap()),
            pem: pem.clone(),
            plain: reqwest::Client::builder()
                .use_rustls_tls()
                .build()
                .expect("client"),
            faults: Mutex::new(HashMap::new()),
        });
        let api_url = format!("http://{}", api.local_addr().unwrap());
        let to_conductor = Router::new()
            .fallback(agent_to_conductor)
            .with_state(shared.clone());
        let to_agent = Router::new()
            .fallback(conductor_to_agent)
            .with_state(shared.clone());
        let tls = axum_server::tls_rustls::RustlsConfig::from_pem(
            pem.into_bytes(),
            cert.signing_key.serialize_pem().into_bytes(),
        )
        .await
        .expect("recorder TLS");
        let handle = axum_server::Handle::new();
        tls_cb.set_nonblocking(true).unwrap();
        let server = axum_server::from_tcp_rustls(tls_cb, tls)
            .expect("recorder TLS listener")
            .handle(handle.clone())
            .serve(to_agent.clone().into_make_service());
        let tasks = vec![
            tokio::spawn(async move {
                let _ = axum::serve(api, to_conductor).await;
            }),
            tokio::spawn(async move {
                let _ = axum::serve(plain_cb, to_agent).await;
            }),
            tokio::spawn(async move {
                let _ = server.await;
            }),
        ];
        Self {
            api_url,
            shared,
            handle,
            tasks,
        }
    }

    /// From now on, apply `fault` to every call of the agent command `name`
    /// (e.g. `log.collect_system_logs`).
    pub fn fault_command(&self, name: &str, fault: CommandFault) {
        self.shared
            .faults
            .lock()
            .unwrap()
            .insert(name.to_string(), fault);
    }

    pub fn exchanges(&self) -> Vec<Exchange> {
        self.shared.exchanges.lock().unwrap().clone()
    }

    /// Write the recording as pretty JSON.
    pub fn save(&self, path: &Path) {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("recording dir");
        }
        let text = serde_json::to_string_pretty(&self.exchanges()).expect("recording");
        std::fs::write(path, text + "\n").expect("writing the recording");
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.handle.shutdown();
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Send `req` to `base` with `client`; record it; return the reply.
async fn relay(
    shared: &Shared,
    from: &'static str,
    client: &reqwest::Client,
    base: &str,
    req: Request,
    rewrite: impl FnOnce(&mut Value),
    rewrite_reply: impl FnOnce(&mut Value),
) -> Result<Response, (StatusCode, String)> {
    let (parts, body) = req.into_parts();
    let bytes = to_bytes(body, 256 << 20)
        .await
        .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
    let recorded = as_json(&bytes);
    let mut sent = recorded.clone();
    rewrite(&mut sent);
    let out_body = if sent == recorded {
        bytes.to_vec()
    } else {
        serde_json::to_vec(&sent).expect("json")
    };
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut out = client.request(parts.method.clone(), format!("{base}{path_and_query}"));
    let headers = kept_headers(&parts.headers);
    for (k, v) in &headers {
        out = out.header(k, v);
    }
    let reply = out
        .body(out_body)
        .send()
        .await
        .map_err(|e| (StatusCode::BAD_GATEWAY, format!("{base}: {e}")))?;
    let status = reply.status();
    let reply_headers = kept_headers(reply.headers());
    let reply_body = reply
        .bytes()
        .await
        .map_err(|e| (StatusCode::BAD_GATEWAY, e.to_string()))?;
    shared.exchanges.lock().unwrap().push(Exchange {
        t: shared.started.elapsed().as_secs_f64(),
        from,
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        body: recorded,
        status: status.as_u16(),
        response: as_json(&reply_body),
    });
    let reply_json = as_json(&reply_body);
    let mut spoiled = reply_json.clone();
    rewrite_reply(&mut spoiled);
    let reply_body = if spoiled == reply_json {
        reply_body.to_vec()
    } else {
        serde_json::to_vec(&spoiled).expect("json")
    };
    let mut resp = Response::builder().status(status.as_u16());
    for (k, v) in reply_headers {
        resp = resp.header(k, v);
    }
    Ok(resp.body(Body::from(reply_body)).expect("response"))
}

async fn agent_to_conductor(
    State(shared): State<Arc<Shared>>,
    req: Request,
) -> Result<Response, (StatusCode, String)> {
    let heartbeat = req.uri().path().starts_with("/v1/heartbeat/");
    let base = shared.conductor.clone();
    let client = shared.plain.clone();
    relay(
        &shared,
        "agent",
        &client,
        &base,
        req,
        |body| {
            if heartbeat {
                divert_callback(&shared, body);
            }
        },
        |_| {},
    )
    .await
}

/// Point the conductor at the recorder instead of the agent, and remember
/// the agent (before the heartbeat goes on: the conductor may call back
/// while the heartbeat is still being answered).
fn divert_callback(shared: &Shared, body: &mut Value) {
    let Some(callback) = body
        .get("callback_url")
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        return;
    };
    let mut builder = reqwest::Client::builder().use_rustls_tls();
    if let Some(pem) = body.get("agent_verify_ca").and_then(Value::as_str) {
        // Pinned, as ferrite-conductor trusts agents (IPA signs its
        // certificate with ECDSA-SHA512, which webpki cannot check).
        let tls =
            ferrite_conductor::agent_tls::pinned_client_config(pem.as_bytes()).expect("agent PEM");
        builder = builder.use_preconfigured_tls(tls);
        body["agent_verify_ca"] = Value::String(shared.pem.clone());
    }
    let upstream = Upstream {
        url: callback.clone(),
        client: builder.build().expect("agent client"),
    };
    let ours = if callback.starts_with("https://") {
        &shared.https_callback
    } else {
        &shared.http_callback
    };
    body["callback_url"] = Value::String(ours.clone());
    *shared.agent.lock().unwrap() = Some(Arc::new(upstream));
}

async fn conductor_to_agent(
    State(shared): State<Arc<Shared>>,
    req: Request,
) -> Result<Response, (StatusCode, String)> {
    let upstream = shared.agent.lock().unwrap().clone().ok_or((
        StatusCode::BAD_GATEWAY,
        "no agent has heartbeated yet".to_string(),
    ))?;
    // The command's name, to find a fault for it.
    let (parts, body) = req.into_parts();
    let bytes = to_bytes(body, 256 << 20)
        .await
        .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
    let name = as_json(&bytes)["name"].as_str().map(str::to_string);
    let fault = name.and_then(|n| shared.faults.lock().unwrap().get(&n).cloned());
    if let Some(CommandFault::Hangup) = fault {
        let cut = futures_util::stream::once(async {
            Err::<bytes::Bytes, _>(std::io::Error::other("the agent hung up"))
        });
        return Ok(Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(Body::from_stream(cut))
            .expect("response"));
    }
    let req = Request::from_parts(parts, Body::from(bytes));
    relay(
        &shared,
        "conductor",
        &upstream.client,
        upstream.url.trim_end_matches('/'),
        req,
        |_| {},
        |reply| {
            if let Some(CommandFault::ReplaceResult(v)) = fault {
                reply["command_result"] = v;
            }
        },
    )
    .await
}
