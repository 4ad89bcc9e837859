//! The server's host key: a fresh ed25519 key for each start of the
//! server, never written anywhere. Its SHA256 fingerprint goes to the
//! console, where the tenant (or the operator's console log) can check
//! what `ssh` shows on first connect.

use rand::RngCore;
use russh::keys::ssh_key::private::{Ed25519Keypair, KeypairData};
use russh::keys::{HashAlg, PrivateKey};

#[derive(Debug, thiserror::Error)]
#[error("making the ed25519 host key: {0}")]
pub struct HostKeyError(String);

/// A new ed25519 key from the system's random source.
pub fn generate() -> Result<PrivateKey, HostKeyError> {
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    let pair = Ed25519Keypair::from_seed(&seed);
    seed.fill(0);
    PrivateKey::new(KeypairData::Ed25519(pair), "ferrite rescue")
        .map_err(|e| HostKeyError(e.to_string()))
}

/// `SHA256:<base64>`, as `ssh` and `ssh-keygen -l` print it.
pub fn fingerprint(key: &PrivateKey) -> String {
    key.public_key().fingerprint(HashAlg::Sha256).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_keys_with_openssh_fingerprints() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_eq!(a.algorithm(), russh::keys::Algorithm::Ed25519);
        let (fa, fb) = (fingerprint(&a), fingerprint(&b));
        assert!(fa.starts_with("SHA256:") && fa.len() == 7 + 43, "{fa}");
        assert_ne!(fa, fb, "each start makes a new key");
    }
}
