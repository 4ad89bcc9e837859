//! `rescue.finalize_rescue`: its parameters and the crypt(3) hashes the
//! rescue password travels and rests in. Ironic hashes the tenant's
//! password (`[conductor]rescue_password_hash_algorithm`, SHA-256 crypt by
//! default) and sends only the hash with `hashed: true`; IPA writes it for
//! the ramdisk's rescue user, hashing a plain one itself (SHA-256 crypt).

use serde::{Deserialize, Serialize};
use sha_crypt::password_hash::{PasswordHasher, PasswordVerifier};
use sha_crypt::{Algorithm, ShaCrypt};

pub const COMMAND: &str = "rescue.finalize_rescue";

/// Salt bytes per hash: 12 bytes are the 16 salt characters Python's
/// `crypt.mksalt` makes.
pub const SALT_LEN: usize = 12;

/// `params` of `rescue.finalize_rescue`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalizeRescue {
    #[serde(default)]
    pub rescue_password: String,
    #[serde(default)]
    pub hashed: bool,
}

/// Never print the password, hashed or not.
impl std::fmt::Debug for FinalizeRescue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FinalizeRescue")
            .field("rescue_password", &"***")
            .field("hashed", &self.hashed)
            .finish()
    }
}

/// `rescue_password_hash_algorithm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HashAlgorithm {
    #[default]
    Sha256,
    Sha512,
}

impl HashAlgorithm {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "sha256" => Some(Self::Sha256),
            "sha512" => Some(Self::Sha512),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("crypt hashing failed: {0}")]
pub struct CryptError(String);

/// The crypt(3) string (`$5$<salt>$<hash>` or `$6$...`) of `password`
/// with `salt` (random bytes from the caller, [`SALT_LEN`] of them).
pub fn crypt_hash(
    password: &str,
    salt: &[u8],
    algorithm: HashAlgorithm,
) -> Result<String, CryptError> {
    let hasher = match algorithm {
        HashAlgorithm::Sha256 => ShaCrypt::SHA256,
        HashAlgorithm::Sha512 => ShaCrypt::SHA512,
    };
    hasher
        .hash_password_with_salt(password.as_bytes(), salt)
        .map(|h| h.to_string())
        .map_err(|e| CryptError(e.to_string()))
}

/// Does `hash` (a SHA-crypt string) match `password`?
pub fn crypt_verify(password: &str, hash: &str) -> bool {
    let verifier = if hash.starts_with("$6$") {
        ShaCrypt::new(Algorithm::Sha512Crypt, Default::default())
    } else {
        ShaCrypt::SHA256
    };
    verifier.verify_password(password.as_bytes(), hash).is_ok()
}

/// Looks like a SHA-crypt hash (what `hashed: true` promises).
pub fn is_crypt_hash(text: &str) -> bool {
    (text.starts_with("$5$") || text.starts_with("$6$")) && text.matches('$').count() >= 3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_hide_the_password() {
        for (alg, prefix) in [
            (HashAlgorithm::Sha256, "$5$"),
            (HashAlgorithm::Sha512, "$6$"),
        ] {
            let h = crypt_hash("s3cret pass", &[7u8; SALT_LEN], alg).unwrap();
            assert!(h.starts_with(prefix), "{h}");
            assert!(!h.contains("s3cret"));
            assert!(is_crypt_hash(&h));
            assert!(crypt_verify("s3cret pass", &h));
            assert!(!crypt_verify("s3cret pas", &h));
        }
        // Made by glibc's crypt(3) (Python's `crypt.crypt`), as Ironic's are.
        let glibc = "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5";
        assert!(crypt_verify("Hello world!", glibc));
        assert!(!crypt_verify("Hello world", glibc));
        let p = FinalizeRescue {
            rescue_password: "s3cret".into(),
            hashed: true,
        };
        assert!(!format!("{p:?}").contains("s3cret"));
    }
}
