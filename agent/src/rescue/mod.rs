//! Rescue mode, as IPA's `rescue` extension leaves the ramdisk: the rescue
//! user's crypt hash in `/etc/ipa-rescue-config/ipa-rescue-password` and
//! the marker `/etc/.rescued`. From then on the agent serves no API and
//! sends no heartbeat (the tenant's network must not reach it), and PID 1
//! hands the machine to the rescue service (`init::rescue`).

pub mod sshd;

use std::path::{Path, PathBuf};

use anyhow::Context;
use ferrite_protocol::rescue::{self, FinalizeRescue, HashAlgorithm, SALT_LEN};
use rand::RngCore;

/// Paths under the rescue root (`/` in the ramdisk).
pub const PASSWORD_FILE: &str = "etc/ipa-rescue-config/ipa-rescue-password";
pub const MARKER: &str = "etc/.rescued";

pub fn password_file(root: &Path) -> PathBuf {
    root.join(PASSWORD_FILE)
}

pub fn marker(root: &Path) -> PathBuf {
    root.join(MARKER)
}

/// An earlier agent process of this boot finalized the rescue.
pub fn is_rescued(root: &Path) -> bool {
    marker(root).exists()
}

#[derive(Debug, thiserror::Error)]
pub enum RescueError {
    #[error("rescue_password must not be empty")]
    Empty,
    #[error("rescue_password is marked hashed but is not a SHA-crypt hash")]
    NotAHash,
    #[error(transparent)]
    Crypt(#[from] rescue::CryptError),
}

/// The crypt hash to write: Ironic's as given, a plain password hashed
/// here (SHA-256 crypt, as IPA does), so the file never holds plain text.
pub fn hash_for_file(params: &FinalizeRescue) -> Result<String, RescueError> {
    if params.rescue_password.is_empty() {
        return Err(RescueError::Empty);
    }
    if params.hashed {
        return if rescue::is_crypt_hash(&params.rescue_password) {
            Ok(params.rescue_password.clone())
        } else {
            Err(RescueError::NotAHash)
        };
    }
    let mut salt = [0u8; SALT_LEN];
    rand::rng().fill_bytes(&mut salt);
    Ok(rescue::crypt_hash(
        &params.rescue_password,
        &salt,
        HashAlgorithm::Sha256,
    )?)
}

/// Write the hash (0600: only root reads it) and the marker.
pub fn write_files(root: &Path, hash: &str) -> anyhow::Result<()> {
    let file = password_file(root);
    crate::secret_file::write_private(&file, hash.as_bytes())
        .with_context(|| format!("writing the rescue password to {}", file.display()))?;
    let marker = marker(root);
    std::fs::write(&marker, b"")
        .with_context(|| format!("creating the rescue marker {}", marker.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_always_holds_a_hash() {
        let dir = tempfile::tempdir().unwrap();
        let plain = FinalizeRescue {
            rescue_password: "tenant pw".into(),
            hashed: false,
        };
        let hash = hash_for_file(&plain).unwrap();
        assert!(hash.starts_with("$5$") && rescue::crypt_verify("tenant pw", &hash));
        write_files(dir.path(), &hash).unwrap();
        assert_eq!(
            std::fs::read_to_string(password_file(dir.path())).unwrap(),
            hash
        );
        assert!(is_rescued(dir.path()));

        let given = FinalizeRescue {
            rescue_password: "$6$abc$def".into(),
            hashed: true,
        };
        assert_eq!(hash_for_file(&given).unwrap(), "$6$abc$def");
        let lying = FinalizeRescue {
            rescue_password: "plain".into(),
            hashed: true,
        };
        assert!(matches!(hash_for_file(&lying), Err(RescueError::NotAHash)));
        let empty = FinalizeRescue {
            rescue_password: String::new(),
            hashed: false,
        };
        assert!(matches!(hash_for_file(&empty), Err(RescueError::Empty)));
    }
}
