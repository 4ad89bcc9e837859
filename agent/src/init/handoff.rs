//! What PID 1 tells the agent it supervises. PID 1 starts the agent at
//! once, so that the agent finds its disks and makes its TLS key while
//! DHCP runs; the agent waits for this file before it calls Ironic.
//! PID 1 writes it once an address is applied (and the clock is set), with
//! one line naming the interface and address, for the operator.

use std::path::Path;
use std::time::Duration;

use tracing::warn;

/// Written by PID 1 when the API is reachable; /run is PID 1's tmpfs.
pub const NETWORK_READY: &str = "/run/ferrite/network-ready";
/// How often the agent looks for it: a boot should not lose more.
const POLL: Duration = Duration::from_millis(10);

/// PID 1: the network is up. Written whole (temp file and rename) so the
/// agent never reads half of it.
pub fn announce_network(path: &Path, summary: &str) {
    let tmp = path.with_extension("tmp");
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let done =
        std::fs::write(&tmp, format!("{summary}\n")).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = done {
        warn!(
            "telling the agent the network is up ({}): {e}",
            path.display()
        );
    }
}

/// The agent: wait for PID 1's word, at most `budget`; true if it came.
/// Past the budget the agent goes on: its lookup retries until a lease
/// comes.
pub async fn wait_network(path: &Path, budget: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + budget;
    loop {
        if path.exists() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_agent_sees_the_word_or_gives_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/network-ready");
        assert!(!wait_network(&path, Duration::from_millis(50)).await);
        let writer = path.clone();
        let waiter =
            tokio::spawn(async move { wait_network(&writer, Duration::from_secs(10)).await });
        tokio::time::sleep(Duration::from_millis(30)).await;
        announce_network(&path, "eth0 10.0.2.15");
        assert!(waiter.await.unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "eth0 10.0.2.15\n");
    }
}
