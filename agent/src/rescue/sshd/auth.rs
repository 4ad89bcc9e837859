//! Who may log in: the user `rescue` (IPA's rescue user), by password,
//! checked against the crypt(3) hash `rescue.finalize_rescue` wrote
//! (`$5$` SHA-256 crypt, Ironic's default, or `$6$` SHA-512 crypt with
//! `rescue_password_hash_algorithm = sha512`). The hash file is read
//! once, when the server starts; a file that is missing or holds no
//! SHA-crypt hash refuses every login and says why, once per attempt. Neither the password nor the hash is ever logged.

use std::path::Path;

use ferrite_protocol::rescue::{crypt_verify, is_crypt_hash};

/// IPA's rescue user (the `rescue` element of its ramdisk).
pub const USER: &str = "rescue";
/// A hash file larger than this is not one (a `$6$` line is ~110 bytes).
const MAX_HASH_FILE: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum HashFileError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is over {limit} bytes: not a password hash")]
    TooLarge { path: String, limit: u64 },
    #[error("{path} holds no SHA-crypt ($5$/$6$) hash")]
    NotAHash { path: String },
}

/// The password check, as loaded from the hash file.
pub enum PasswordCheck {
    Hash(String),
    /// The file could not be used: every login is refused, with this reason.
    Unusable(HashFileError),
}

/// Never print the hash.
impl std::fmt::Debug for PasswordCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Hash(_) => f.write_str("PasswordCheck::Hash(***)"),
            Self::Unusable(e) => write!(f, "PasswordCheck::Unusable({e})"),
        }
    }
}

/// Why a login was refused (for the log: no secrets in it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    WrongUser,
    WrongPassword,
    NoUsableHash,
}

impl PasswordCheck {
    pub fn load(path: &Path) -> Self {
        match read_hash(path) {
            Ok(hash) => Self::Hash(hash),
            Err(e) => Self::Unusable(e),
        }
    }

    pub fn is_usable(&self) -> bool {
        matches!(self, Self::Hash(_))
    }

    /// May `user` log in with `password`? sha-crypt compares the digests
    /// in constant time (`subtle`'s `ct_eq`); the user name is not secret.
    pub fn verify(&self, user: &str, password: &str) -> Result<(), Refusal> {
        let Self::Hash(hash) = self else {
            return Err(Refusal::NoUsableHash);
        };
        // Hash even for a wrong user: the answer takes as long either way.
        let matches = crypt_verify(password, hash);
        if user != USER {
            return Err(Refusal::WrongUser);
        }
        if matches {
            Ok(())
        } else {
            Err(Refusal::WrongPassword)
        }
    }
}

fn read_hash(path: &Path) -> Result<String, HashFileError> {
    let shown = path.display().to_string();
    let read = |source| HashFileError::Read {
        path: shown.clone(),
        source,
    };
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(read)?
        .take(MAX_HASH_FILE + 1)
        .read_to_string(&mut text)
        .map_err(read)?;
    if text.len() as u64 > MAX_HASH_FILE {
        return Err(HashFileError::TooLarge {
            path: shown,
            limit: MAX_HASH_FILE,
        });
    }
    let hash = text.trim();
    if is_crypt_hash(hash) && !hash.contains(char::is_whitespace) {
        Ok(hash.to_string())
    } else {
        Err(HashFileError::NotAHash { path: shown })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrite_protocol::rescue::{crypt_hash, HashAlgorithm, SALT_LEN};

    fn check_with(dir: &Path, contents: &str) -> PasswordCheck {
        let file = dir.join("ipa-rescue-password");
        std::fs::write(&file, contents).unwrap();
        PasswordCheck::load(&file)
    }

    #[test]
    fn the_rescue_user_with_the_password_and_nobody_else() {
        let dir = tempfile::tempdir().unwrap();
        for alg in [HashAlgorithm::Sha512, HashAlgorithm::Sha256] {
            let hash = crypt_hash("tenant pw", &[3u8; SALT_LEN], alg).unwrap();
            // As written by finalize_rescue, perhaps with a newline.
            let check = check_with(dir.path(), &format!("{hash}\n"));
            assert!(check.is_usable());
            assert_eq!(check.verify("rescue", "tenant pw"), Ok(()));
            assert_eq!(
                check.verify("rescue", "tenant pw "),
                Err(Refusal::WrongPassword)
            );
            assert_eq!(check.verify("rescue", ""), Err(Refusal::WrongPassword));
            assert_eq!(check.verify("root", "tenant pw"), Err(Refusal::WrongUser));
            assert_eq!(check.verify("Rescue", "tenant pw"), Err(Refusal::WrongUser));
            assert!(!format!("{check:?}").contains(&hash));
        }
        // Made by glibc's crypt(3), as Ironic's are.
        let glibc = "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5";
        let check = check_with(dir.path(), glibc);
        assert_eq!(check.verify("rescue", "Hello world!"), Ok(()));
    }

    #[test]
    fn an_unusable_hash_file_refuses_everything() {
        let dir = tempfile::tempdir().unwrap();
        let missing = PasswordCheck::load(&dir.path().join("nothing-here"));
        assert!(matches!(
            missing,
            PasswordCheck::Unusable(HashFileError::Read { .. })
        ));
        let cases = [
            "",
            "plain text password",
            "$1$md5$notsupported",
            "$6$onlysalt",
            "$6$salt$hash trailing words",
        ];
        for contents in cases {
            let check = check_with(dir.path(), contents);
            assert!(!check.is_usable(), "{contents:?}");
            assert_eq!(
                check.verify("rescue", contents),
                Err(Refusal::NoUsableHash),
                "{contents:?}"
            );
            let shown = format!("{check:?}");
            assert!(shown.contains("holds no SHA-crypt"), "{shown}");
        }
        // A broken hash that looks right: a refusal, not a panic.
        let check = check_with(dir.path(), "$6$rounds=x$salt$hash");
        assert!(check.verify("rescue", "x").is_err());
        let big = "$6$".to_string() + &"a".repeat(5000);
        let check = check_with(dir.path(), &big);
        assert!(matches!(
            check,
            PasswordCheck::Unusable(HashFileError::TooLarge { .. })
        ));
    }
}
