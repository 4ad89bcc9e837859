//! Ironic's `http_basic_auth_user_file`: Apache htpasswd lines
//! `user:<bcrypt hash>`. Only bcrypt (`$2a$`, `$2b$`, `$2y$`) is accepted,
//! as in Ironic; anything else refuses the whole file at start.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

const BCRYPT_PREFIXES: &[&str] = &["$2a$", "$2b$", "$2y$"];

#[derive(Debug, thiserror::Error)]
pub enum HtpasswdError {
    #[error("cannot read the htpasswd file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the htpasswd file {0} has no users; create one with `ferrite-conductor htpasswd USER >> {0}`")]
    Empty(PathBuf),
    #[error("{path} line {line}: expected `user:bcrypt-hash`")]
    Malformed { path: PathBuf, line: usize },
    #[error("{path}: only bcrypt digested passwords ($2a$/$2b$/$2y$) are supported; refused the entry for user {user:?}")]
    NotBcrypt { path: PathBuf, user: String },
    #[error("bcrypt: {0}")]
    Hash(#[from] bcrypt::BcryptError),
}

/// Users and their bcrypt hashes.
#[derive(Debug, Clone, Default)]
pub struct Users(HashMap<String, String>);

impl Users {
    pub fn load(path: &Path) -> Result<Self, HtpasswdError> {
        let text = std::fs::read_to_string(path).map_err(|source| HtpasswdError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, HtpasswdError> {
        let mut users = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':').filter(|(u, _)| !u.is_empty()) else {
                return Err(HtpasswdError::Malformed {
                    path: path.to_path_buf(),
                    line: n + 1,
                });
            };
            // A bcrypt prefix on something that is not a bcrypt hash would
            // only fail at the first login: check the whole hash now.
            if !BCRYPT_PREFIXES.iter().any(|p| hash.starts_with(p))
                || bcrypt::HashParts::from_str(hash).is_err()
            {
                return Err(HtpasswdError::NotBcrypt {
                    path: path.to_path_buf(),
                    user: user.to_string(),
                });
            }
            users.insert(user.to_string(), hash.to_string());
        }
        if users.is_empty() {
            return Err(HtpasswdError::Empty(path.to_path_buf()));
        }
        Ok(Self(users))
    }

    /// The highest bcrypt cost among the entries.
    pub fn cost(&self) -> u32 {
        self.0
            .values()
            .filter_map(|h| bcrypt::HashParts::from_str(h).ok())
            .map(|p| p.get_cost())
            .max()
            .unwrap_or(bcrypt::DEFAULT_COST)
    }

    pub fn hash_of(&self, user: &str) -> Option<&str> {
        self.0.get(user).map(String::as_str)
    }
}

/// One htpasswd line for `user` (what `htpasswd -nbB` prints).
pub fn line(user: &str, password: &str, cost: u32) -> Result<String, HtpasswdError> {
    Ok(format!("{user}:{}", bcrypt::hash(password, cost)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_bcrypt_refuses_others_naming_the_user() {
        let good = line("admin", "pw", 4).unwrap();
        let users = Users::parse(&format!("\n{good}\n\n"), Path::new("f")).unwrap();
        assert!(users.hash_of("admin").is_some());
        let err = Users::parse(&format!("{good}\nfoo:{{SHA}}abc\n"), Path::new("f")).unwrap_err();
        assert!(err.to_string().contains("\"foo\""), "{err}");
        assert!(!err.to_string().contains("SHA"), "{err}");
        assert!(Users::parse("bob:$2y$garbage", Path::new("f")).is_err());
        assert!(matches!(
            Users::parse("\n\n", Path::new("f")),
            Err(HtpasswdError::Empty(_))
        ));
    }
}
