//! Who may use the API: Ironic's standalone `auth_strategy` — `http_basic`
//! (htpasswd with bcrypt entries, the default) or an explicit `noauth`.
//! The routes the ramdisk and the firmware need stay open, as in Ironic.
//! Keystone would be one more [`AuthStrategy`] whose middleware validates
//! `X-Auth-Token` against keystone; the open-route rule stays the same.

pub mod cache;
pub mod htpasswd;
pub mod session;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use clap::ValueEnum;
use tokio::sync::Semaphore;

use cache::VerifiedCache;
use htpasswd::{HtpasswdError, Users};
use session::Sessions;

/// Ironic's `[DEFAULT]auth_strategy` (keystone is not offered yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthStrategy {
    #[value(name = "http_basic")]
    HttpBasic,
    #[value(name = "noauth")]
    Noauth,
}

/// What Ironic answers in `WWW-Authenticate`.
pub const REALM: &str = "Basic realm=\"Baremetal API\"";

/// Routes Ironic leaves unauthenticated (its `public_api_routes`), plus
/// what firmware and the ramdisk fetch from the boot server: iPXE
/// scripts and boot files (firmware cannot authenticate), and instance
/// images (Ironic's `http_url` server is a plain web server with no auth).
pub fn is_public(path: &str) -> bool {
    // One optional trailing slash, as Ironic's route patterns allow.
    let trimmed = match path.strip_suffix('/') {
        Some(p) if p.starts_with('/') && !p.ends_with('/') => p,
        _ => path,
    };
    matches!(
        trimmed,
        "/" | "/v1"
            | "/v1/lookup"
            | "/v1/continue_inspection"
            // Authenticated by the agent token, as heartbeats are.
            | "/v1/ferrite/network-burnin/pair"
            | "/v1/ferrite/network-burnin/leave"
    ) || trimmed
        .strip_prefix("/v1/heartbeat/")
        .is_some_and(|node| !node.is_empty() && !node.contains('/'))
        || path.starts_with("/boot/")
        || path.starts_with("/images/")
}

pub struct BasicAuth {
    users: Users,
    /// bcrypt is slow on purpose: a few at a time, off the async threads.
    verifiers: Semaphore,
    cache: VerifiedCache,
    /// Verified for unknown users, so that timing does not list users.
    dummy_hash: String,
    /// The console's logged-in browsers.
    pub sessions: Sessions,
}

impl BasicAuth {
    pub fn load(path: &Path) -> Result<Self, HtpasswdError> {
        let users = Users::load(path)?;
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let dummy_hash = bcrypt::hash(rand::random::<u64>().to_string(), users.cost())?;
        Ok(Self {
            users,
            dummy_hash,
            verifiers: Semaphore::new(cpus),
            cache: VerifiedCache::new(64, Duration::from_secs(300)),
            sessions: Sessions::default(),
        })
    }

    /// Whether `user` and `password` are an htpasswd entry (the console's
    /// login form; the API's basic credentials take the same path).
    pub async fn check(&self, user: &str, password: Vec<u8>) -> bool {
        let Some(hash) = self.users.hash_of(user) else {
            let _ = self.verify(password, self.dummy_hash.clone()).await;
            return false;
        };
        let fp = self.cache.fingerprint(user, &password, hash);
        if self.cache.contains(&fp) {
            return true;
        }
        let ok = self.verify(password, hash.to_string()).await;
        if ok {
            self.cache.insert(fp);
        }
        ok
    }

    async fn verify(&self, password: Vec<u8>, hash: String) -> bool {
        let Ok(_permit) = self.verifiers.acquire().await else {
            return false;
        };
        tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
            .await
            .unwrap_or(false)
    }
}

/// Ironic's auth failure body: `{"error": {"message", "code"}}`.
fn fault(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({"error": {"message": message, "code": status.as_u16()}});
    let mut resp = (status, axum::Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(REALM));
    }
    resp
}

enum Credentials {
    Missing,
    Bad(&'static str),
    Unsupported(String),
    Basic(String, Vec<u8>),
}

fn credentials(value: Option<&HeaderValue>) -> Credentials {
    let Some(value) = value else {
        return Credentials::Missing;
    };
    let Ok(value) = value.to_str() else {
        return Credentials::Bad("Could not parse Authorization header");
    };
    let mut parts = value.split_whitespace();
    let (Some(scheme), Some(token)) = (parts.next(), parts.next()) else {
        return Credentials::Bad("Could not parse Authorization header");
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Credentials::Unsupported(scheme.chars().take(32).collect());
    }
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(token) else {
        return Credentials::Bad("Could not decode authorization token");
    };
    let Some(colon) = decoded.iter().position(|b| *b == b':') else {
        return Credentials::Bad("Could not decode authorization token");
    };
    let Ok(user) = String::from_utf8(decoded[..colon].to_vec()) else {
        return Credentials::Bad("Could not decode authorization token");
    };
    Credentials::Basic(user, decoded[colon + 1..].to_vec())
}

/// The console's login page and the stylesheet it uses are open: the
/// form is how a browser gets in.
fn is_console_login(path: &str) -> bool {
    matches!(path, "/console/login" | "/console/static/console.css")
}

/// Middleware: open routes pass; others need a user from the htpasswd
/// file, by basic credentials or (console pages only) a login session.
/// Neither the header, the password nor a token is ever logged.
pub async fn require(State(auth): State<Arc<BasicAuth>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if is_public(path) || is_console_login(path) {
        return next.run(req).await;
    }
    let console = path == "/console" || path.starts_with("/console/");
    if console {
        if let Some(token) = session::token(req.headers()) {
            if auth.sessions.user(&token).is_some() {
                return next.run(req).await;
            }
        }
    }
    match credentials(req.headers().get(header::AUTHORIZATION)) {
        // A browser without a session: to the login form, for a page
        // (a navigation asks for HTML); a bare 401 for the script's
        // requests, where a challenge would pop the browser's own
        // password dialog.
        Credentials::Missing if console => {
            let page = req
                .headers()
                .get(header::ACCEPT)
                .and_then(|a| a.to_str().ok())
                .is_some_and(|a| a.contains("text/html"));
            if req.method() == axum::http::Method::GET && page {
                axum::response::Redirect::to("/console/login").into_response()
            } else {
                let mut resp = fault(StatusCode::UNAUTHORIZED, "Authorization required");
                resp.headers_mut().remove(header::WWW_AUTHENTICATE);
                resp
            }
        }
        Credentials::Missing => fault(StatusCode::UNAUTHORIZED, "Authorization required"),
        Credentials::Bad(why) => fault(StatusCode::BAD_REQUEST, why),
        Credentials::Unsupported(scheme) => fault(
            StatusCode::BAD_REQUEST,
            &format!("Unsupported authorization type \"{scheme}\""),
        ),
        Credentials::Basic(user, password) => {
            if auth.check(&user, password).await {
                next.run(req).await
            } else {
                tracing::warn!(user = %user.chars().take(64).collect::<String>(), path = %req.uri().path(), "refused: incorrect username or password");
                fault(StatusCode::UNAUTHORIZED, "Incorrect username or password")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_routes_are_ironics() {
        for p in [
            "/",
            "/v1",
            "/v1/",
            "/v1/lookup",
            "/v1/heartbeat/1be26c0b-03f2-4d2e-ae87-c02d7f33c123",
            "/v1/continue_inspection",
            "/v1/ferrite/network-burnin/pair",
            "/boot/boot.ipxe",
            "/boot/files/deploy.kernel",
            "/images/disk.qcow2",
        ] {
            assert!(is_public(p), "{p}");
        }
        for p in [
            "/v1/nodes",
            "/v1/ports",
            "/v1/heartbeat/",
            "/v1/heartbeat/x/y",
            "/v1/lookupx",
            "/v1/nodes/x/states/power",
            "//",
            "/boot",
            "/console/",
            "/console/events",
            "/console/static/console.js",
        ] {
            assert!(!is_public(p), "{p}");
        }
    }
}
