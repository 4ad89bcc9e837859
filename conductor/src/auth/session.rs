//! Console sessions: a browser that logged in with an htpasswd user and
//! password holds a random token in an HttpOnly cookie instead of
//! resending the password on every request (and can log out, which
//! basic authentication cannot). Tokens live only in this process's
//! memory, kept as SHA-256 hashes, so a restart logs everyone out and
//! the table never holds a usable secret. The table is bounded: when
//! full, expired sessions go first, then the one closest to expiry.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use sha2::{Digest, Sha256};

/// The cookie that carries the token; scoped to the console's path.
pub const COOKIE: &str = "ferrite_console";

/// A session ends after this long without a request...
const IDLE: Duration = Duration::from_secs(60 * 60);
/// ...and after this long in any case.
const LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);
/// Sessions held at once, over all users.
const CAPACITY: usize = 1024;

struct Session {
    user: String,
    created: Instant,
    last_used: Instant,
}

pub struct Sessions {
    table: Mutex<HashMap<[u8; 32], Session>>,
    idle: Duration,
    capacity: usize,
}

impl Default for Sessions {
    fn default() -> Self {
        Self::with_limits(IDLE, CAPACITY)
    }
}

fn key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Sessions {
    fn with_limits(idle: Duration, capacity: usize) -> Self {
        Self {
            table: Mutex::new(HashMap::new()),
            idle,
            capacity,
        }
    }

    fn expires(&self, s: &Session) -> Instant {
        (s.last_used + self.idle).min(s.created + LIFETIME)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        // A panic elsewhere while holding it leaves a table that is still
        // whole (every change is one insert or remove).
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new session for `user`; the token goes to the browser only.
    pub fn open(&self, user: &str) -> String {
        let token =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        let now = Instant::now();
        let mut table = self.lock();
        if table.len() >= self.capacity {
            table.retain(|_, s| self.expires(s) > now);
        }
        if table.len() >= self.capacity {
            if let Some(oldest) = table
                .iter()
                .min_by_key(|(_, s)| self.expires(s))
                .map(|(k, _)| *k)
            {
                table.remove(&oldest);
            }
        }
        table.insert(
            key(&token),
            Session {
                user: user.to_string(),
                created: now,
                last_used: now,
            },
        );
        token
    }

    /// The session's user, if the token is live; a live session's idle
    /// clock restarts.
    pub fn user(&self, token: &str) -> Option<String> {
        let now = Instant::now();
        let k = key(token);
        let mut table = self.lock();
        let live = {
            let s = table.get_mut(&k)?;
            if (s.last_used + self.idle).min(s.created + LIFETIME) > now {
                s.last_used = now;
                Some(s.user.clone())
            } else {
                None
            }
        };
        if live.is_none() {
            table.remove(&k);
        }
        live
    }

    pub fn close(&self, token: &str) {
        self.lock().remove(&key(token));
    }

    /// Sessions held (expired ones included until swept); for tests.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// The session token in a request's `Cookie` headers, if any.
pub fn token(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == COOKIE)
        .map(|c| c.value().to_string())
}

/// The `Set-Cookie` value that hands a browser its token: HttpOnly (no
/// script reads it), SameSite=Strict (no other site's page sends it),
/// scoped to the console, and Secure when the API is served over TLS.
pub fn set_cookie(token: &str, secure: bool) -> String {
    cookie::Cookie::build((COOKIE, token.to_string()))
        .path("/console")
        .http_only(true)
        .same_site(cookie::SameSite::Strict)
        .secure(secure)
        .max_age(cookie::time::Duration::seconds(LIFETIME.as_secs() as i64))
        .build()
        .to_string()
}

/// The `Set-Cookie` value that makes a browser forget its token.
pub fn clear_cookie(secure: bool) -> String {
    cookie::Cookie::build((COOKIE, ""))
        .path("/console")
        .http_only(true)
        .same_site(cookie::SameSite::Strict)
        .secure(secure)
        .max_age(cookie::time::Duration::ZERO)
        .build()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{header, HeaderMap, HeaderValue};

    #[test]
    fn a_token_names_its_user_until_closed() {
        let s = Sessions::default();
        let t = s.open("admin");
        assert_eq!(s.user(&t).as_deref(), Some("admin"));
        assert_eq!(s.user("not-a-token"), None);
        s.close(&t);
        assert_eq!(s.user(&t), None);
    }

    #[test]
    fn an_idle_session_ends() {
        let s = Sessions::with_limits(Duration::ZERO, 8);
        let t = s.open("admin");
        assert_eq!(s.user(&t), None);
        assert_eq!(s.len(), 0, "the expired session is dropped");
    }

    #[test]
    fn the_table_is_bounded() {
        let s = Sessions::with_limits(IDLE, 4);
        let tokens: Vec<String> = (0..10).map(|i| s.open(&format!("u{i}"))).collect();
        assert_eq!(s.len(), 4);
        assert_eq!(
            s.user(&tokens[9]).as_deref(),
            Some("u9"),
            "the newest stays"
        );
    }

    #[test]
    fn the_cookie_is_found_among_others_and_scoped() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; ferrite_console=tok; b=2"),
        );
        assert_eq!(token(&h).as_deref(), Some("tok"));
        assert_eq!(token(&HeaderMap::new()), None);
        let c = set_cookie("tok", false);
        for part in [
            "ferrite_console=tok",
            "HttpOnly",
            "SameSite=Strict",
            "Path=/console",
        ] {
            assert!(c.contains(part), "{c}");
        }
        assert!(!c.contains("Secure"));
        assert!(set_cookie("tok", true).contains("Secure"));
        assert!(clear_cookie(false).contains("Max-Age=0"));
    }
}
