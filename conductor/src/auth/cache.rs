//! Recently verified credentials, so that bursts (the CLI, our tests, a
//! polling operator) pay bcrypt's deliberate cost once per few minutes
//! rather than once per request. Entries are keyed hashes of
//! (user, password, stored hash): the password is never kept, and a key
//! is useless outside this process (the hash key is random per start).
//! Only successes are cached, so a guesser always pays full price.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

pub struct VerifiedCache {
    key: [u8; 32],
    ttl: Duration,
    capacity: usize,
    entries: Mutex<VecDeque<([u8; 32], Instant)>>,
}

impl VerifiedCache {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            key: rand::random(),
            ttl,
            capacity,
            entries: Mutex::new(VecDeque::with_capacity(capacity)),
        }
    }

    pub fn fingerprint(&self, user: &str, password: &[u8], stored_hash: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.key);
        for part in [user.as_bytes(), password, stored_hash.as_bytes()] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        h.finalize().into()
    }

    pub fn contains(&self, fp: &[u8; 32]) -> bool {
        let Ok(mut entries) = self.entries.lock() else {
            return false;
        };
        let now = Instant::now();
        entries.retain(|(_, at)| now.duration_since(*at) < self.ttl);
        entries.iter().any(|(k, _)| k == fp)
    }

    pub fn insert(&self, fp: [u8; 32]) {
        if self.capacity == 0 {
            return;
        }
        if let Ok(mut entries) = self.entries.lock() {
            entries.retain(|(k, _)| k != &fp);
            if entries.len() >= self.capacity {
                entries.pop_front();
            }
            entries.push_back((fp, Instant::now()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_expiring() {
        let c = VerifiedCache::new(2, Duration::from_millis(50));
        let a = c.fingerprint("u", b"a", "h");
        let b = c.fingerprint("u", b"b", "h");
        let d = c.fingerprint("u", b"d", "h");
        c.insert(a);
        c.insert(b);
        c.insert(d);
        assert!(!c.contains(&a) && c.contains(&b) && c.contains(&d));
        std::thread::sleep(Duration::from_millis(60));
        assert!(!c.contains(&d));
    }
}
