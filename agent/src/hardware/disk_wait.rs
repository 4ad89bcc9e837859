//! Waiting for the root disk (IPA's `GenericHardwareManager.wait_for_disks`
//! and `hardware.cache_node`). Disks behind slow controllers, or attached
//! late, appear after the agent starts; neither inspection nor a deploy can
//! succeed without one. IPA's rules, kept here:
//!
//! * "a disk" means the disk a deploy would pick now: the one the node's
//!   root device hints name, else the smallest disk of at least 4 GiB;
//! * `ipa-disk-wait-attempts` looks (0: no wait), `ipa-disk-wait-delay`
//!   apart, no pause after the last one;
//! * when the looks run out the agent logs a warning and goes on;
//! * it waits when the hardware managers start (no node yet) and again
//!   whenever it is given a different node than the one it has (after
//!   lookup, and on a step command for another node): that node's hints
//!   may name another disk.
//!
//! An agent that may touch no disk at all (`ferrite-disks` unset outside
//! a ramdisk) does not wait: nothing it could find would be usable.

use std::path::PathBuf;
use std::time::Duration;

use ferrite_protocol::LookupNode;
use serde_json::{Map, Value};
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::disk::install_target::install_device;
use crate::disk::node_disks::NodeDisks;
use crate::disk::{BlockDevice, DiskPolicy};
use crate::state::AgentContext;

/// How many looks, and the pause between two of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskWait {
    pub attempts: u32,
    pub delay: Duration,
}

impl DiskWait {
    pub fn from_config(cfg: &Config) -> Self {
        Self {
            attempts: cfg.disk_wait_attempts,
            delay: cfg.disk_wait_delay,
        }
    }

    /// The longest the wait sleeps: a pause between each two looks.
    pub fn budget(&self) -> Duration {
        self.delay
            .checked_mul(self.attempts.saturating_sub(1))
            .unwrap_or(Duration::MAX)
    }
}

/// How a wait ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitOutcome {
    /// `ipa-disk-wait-attempts=0`.
    Disabled,
    /// The agent may touch no disk; nothing to wait for.
    NoDisksAllowed,
    /// The root disk was there at this look (1 = at once).
    Found { device: PathBuf, attempt: u32 },
    /// Every look failed; the agent goes on (IPA's warning).
    NotFound { attempts: u32, waited: Duration },
}

/// The wait itself: `probe` is one look for the root disk, `sleep` the
/// pause (tests count it instead of sleeping).
pub fn wait_with(
    wait: DiskWait,
    mut probe: impl FnMut() -> Result<BlockDevice, String>,
    mut sleep: impl FnMut(Duration),
) -> WaitOutcome {
    if wait.attempts == 0 {
        debug!("ipa-disk-wait-attempts=0: not waiting for the root device");
        return WaitOutcome::Disabled;
    }
    for attempt in 1..=wait.attempts {
        match probe() {
            Ok(device) => {
                if attempt > 1 {
                    info!(device = %device.path.display(), attempt, "the root device appeared");
                }
                return WaitOutcome::Found {
                    device: device.path,
                    attempt,
                };
            }
            Err(e) => {
                info!(
                    attempt,
                    attempts = wait.attempts,
                    reason = %e,
                    "Still waiting for the root device to appear"
                );
                if attempt < wait.attempts {
                    sleep(wait.delay);
                }
            }
        }
    }
    let waited = wait.budget();
    if wait.attempts > 1 {
        warn!(
            "The root device was not detected in {} seconds",
            waited.as_secs()
        );
    } else {
        warn!("The root device was not detected");
    }
    WaitOutcome::NotFound {
        attempts: wait.attempts,
        waited,
    }
}

/// The disk a deploy would pick now (IPA's `get_os_install_device`).
fn root_disk(cfg: &Config, node: Option<&LookupNode>) -> Result<BlockDevice, String> {
    let disks = match node {
        Some(node) => NodeDisks::of(node)?,
        None => NodeDisks::default(),
    };
    let policy = cfg.disk_policy();
    install_device(crate::deploy::target::install_scope(cfg, &policy), &disks)
        .map_err(|e| e.to_string())
}

/// Wait (blocking) for the root disk of `node`, or with no node for any
/// disk a deploy could use.
pub fn wait_for_disks(cfg: &Config, node: Option<&LookupNode>) -> WaitOutcome {
    if matches!(cfg.disk_policy(), DiskPolicy::Only(ref list) if list.is_empty()) {
        debug!(
            "no disk may be used (ferrite-disks is unset outside a ramdisk): not waiting for one"
        );
        return WaitOutcome::NoDisksAllowed;
    }
    wait_with(
        DiskWait::from_config(cfg),
        || root_disk(cfg, node),
        std::thread::sleep,
    )
}

/// IPA's `cache_node`: `node` becomes the agent's node; if it is another
/// node than the one it had, wait for that node's root disk. Blocking.
pub fn cache_node(ctx: &AgentContext, node: LookupNode) -> Option<WaitOutcome> {
    let new_node = ctx.node().is_none_or(|cached| cached.uuid != node.uuid);
    ctx.set_node(node.clone());
    if !new_node {
        return None;
    }
    info!(node = %node.uuid, "Cached node, waiting for its root device to appear");
    Some(wait_for_disks(&ctx.config, Some(&node)))
}

/// [`cache_node`] for the node a step command carries; one without a
/// UUID (a partial node) leaves the cached node alone.
pub fn cache_command_node(ctx: &AgentContext, node: &Map<String, Value>) {
    match serde_json::from_value::<LookupNode>(Value::Object(node.clone())) {
        Ok(node) => {
            cache_node(ctx, node);
        }
        Err(e) => debug!(error = %e, "the command's node is not cached"),
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn disk(name: &str) -> BlockDevice {
        BlockDevice {
            name: name.into(),
            path: PathBuf::from(format!("/dev/{name}")),
            size: 8 << 30,
            ..BlockDevice::default()
        }
    }

    /// A disk that shows up at look `appears_at` (never if `None`); the
    /// pauses are recorded, not slept.
    fn run(wait: DiskWait, appears_at: Option<u32>) -> (WaitOutcome, u32, Vec<Duration>) {
        let looks = Cell::new(0u32);
        let mut slept = Vec::new();
        let outcome = wait_with(
            wait,
            || {
                looks.set(looks.get() + 1);
                match appears_at {
                    Some(n) if looks.get() >= n => Ok(disk("sdb")),
                    _ => Err("no disk yet".to_string()),
                }
            },
            |d| slept.push(d),
        );
        (outcome, looks.get(), slept)
    }

    const IPA_DEFAULT: DiskWait = DiskWait {
        attempts: 10,
        delay: Duration::from_secs(3),
    };

    #[test]
    fn a_disk_that_is_there_costs_one_look_and_no_pause() {
        let (outcome, looks, slept) = run(IPA_DEFAULT, Some(1));
        assert_eq!(
            outcome,
            WaitOutcome::Found {
                device: "/dev/sdb".into(),
                attempt: 1
            }
        );
        assert_eq!((looks, slept.len()), (1, 0));
    }

    #[test]
    fn a_disk_that_appears_after_some_looks_is_waited_for() {
        let mut result = None;
        let log = logged(|| result = Some(run(IPA_DEFAULT, Some(4))));
        let (outcome, looks, slept) = result.expect("ran");
        assert!(!log.contains("WARN"), "{log}");
        assert!(
            log.contains("the root device appeared device=/dev/sdb attempt=4"),
            "{log}"
        );
        assert_eq!(
            outcome,
            WaitOutcome::Found {
                device: "/dev/sdb".into(),
                attempt: 4
            }
        );
        assert_eq!(looks, 4, "no look after the disk was found");
        assert_eq!(
            slept,
            vec![Duration::from_secs(3); 3],
            "the delay between looks"
        );
    }

    /// What `f` logs, as the console would show it.
    fn logged(f: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = sink.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[test]
    fn a_disk_that_never_appears_gives_up_after_the_attempts() {
        let mut result = None;
        let log = logged(|| result = Some(run(IPA_DEFAULT, None)));
        let (outcome, looks, slept) = result.expect("ran");
        // IPA's warning, and the agent goes on.
        let warnings: Vec<&str> = log.lines().filter(|l| l.contains("WARN")).collect();
        assert_eq!(warnings.len(), 1, "{log}");
        assert!(
            warnings[0].contains("The root device was not detected in 27 seconds"),
            "{log}"
        );
        assert_eq!(
            log.matches("Still waiting for the root device to appear")
                .count(),
            10,
            "{log}"
        );
        assert_eq!(
            outcome,
            WaitOutcome::NotFound {
                attempts: 10,
                waited: Duration::from_secs(27)
            }
        );
        assert_eq!(looks, 10);
        // IPA: no pause after the last look.
        assert_eq!(slept, vec![Duration::from_secs(3); 9]);
        // Found at the very last look still counts.
        let (outcome, looks, _) = run(IPA_DEFAULT, Some(10));
        assert!(matches!(outcome, WaitOutcome::Found { attempt: 10, .. }));
        assert_eq!(looks, 10);
    }

    #[test]
    fn zero_attempts_do_not_look_and_one_attempt_does_not_pause() {
        let off = DiskWait {
            attempts: 0,
            delay: Duration::from_secs(3),
        };
        assert_eq!(run(off, Some(1)), (WaitOutcome::Disabled, 0, vec![]));
        let once = DiskWait {
            attempts: 1,
            delay: Duration::from_secs(3),
        };
        assert_eq!(
            run(once, None),
            (
                WaitOutcome::NotFound {
                    attempts: 1,
                    waited: Duration::ZERO
                },
                1,
                vec![]
            )
        );
        let no_delay = DiskWait {
            attempts: 5,
            delay: Duration::ZERO,
        };
        let (_, looks, slept) = run(no_delay, None);
        assert_eq!((looks, slept), (5, vec![Duration::ZERO; 4]));
    }

    #[test]
    fn the_budget_cannot_overflow() {
        let huge = DiskWait {
            attempts: u32::MAX,
            delay: Duration::MAX,
        };
        assert_eq!(huge.budget(), Duration::MAX);
        assert_eq!(IPA_DEFAULT.budget(), Duration::from_secs(27));
    }

    /// The real look, on a fixture sysfs: the hints decide which disk
    /// counts, and an agent that may use no disk does not wait at all.
    #[test]
    fn the_look_follows_root_device_hints_and_the_disk_policy() {
        let roots = crate::hardware::inventory::fixture("qemu-nvme-multinic");
        let cfg = Config {
            sysfs_root: roots.sysfs.clone(),
            dev_root: roots.dev.clone(),
            disks: Some(DiskPolicy::All),
            disk_wait_attempts: 3,
            disk_wait_delay: Duration::ZERO,
            ..Config::default()
        };
        let node = |hints: Value| -> LookupNode {
            serde_json::from_value(
                serde_json::json!({"uuid": "u", "properties": {"root_device": hints}}),
            )
            .unwrap()
        };
        assert!(matches!(
            wait_for_disks(&cfg, None),
            WaitOutcome::Found { attempt: 1, ref device } if device == &PathBuf::from("/dev/nvme0n1")
        ));
        assert!(matches!(
            wait_for_disks(&cfg, Some(&node(serde_json::json!({"name": "/dev/sda"})))),
            WaitOutcome::Found { attempt: 1, ref device } if device == &PathBuf::from("/dev/sda")
        ));
        assert_eq!(
            wait_for_disks(
                &cfg,
                Some(&node(serde_json::json!({"serial": "not-attached-yet"})))
            ),
            WaitOutcome::NotFound {
                attempts: 3,
                waited: Duration::ZERO
            }
        );
        let nothing_allowed = Config {
            disks: Some(DiskPolicy::Only(Vec::new())),
            ..cfg
        };
        assert_eq!(
            wait_for_disks(&nothing_allowed, None),
            WaitOutcome::NoDisksAllowed
        );
    }

    /// `cache_node` waits for a new node's disk, not for the same node
    /// again; a command's node without a UUID changes nothing.
    #[test]
    fn a_new_node_waits_for_its_root_disk_the_same_node_does_not() {
        let roots = crate::hardware::inventory::fixture("qemu-nvme-multinic");
        let cfg = Config {
            sysfs_root: roots.sysfs.clone(),
            dev_root: roots.dev.clone(),
            disks: Some(DiskPolicy::All),
            disk_wait_attempts: 2,
            disk_wait_delay: Duration::ZERO,
            ..Config::default()
        };
        let ctx = AgentContext::new(
            cfg,
            crate::logbuf::LogBuffer::default(),
            crate::hardware::HardwareManagers::new(Vec::new()),
        );
        let node = |uuid: &str, hints: Value| -> LookupNode {
            serde_json::from_value(serde_json::json!({
                "uuid": uuid, "instance_info": {"root_device": hints}}))
            .expect("a node")
        };
        let first = cache_node(&ctx, node("a", serde_json::json!({"name": "/dev/vda"})));
        assert!(
            matches!(first, Some(WaitOutcome::Found { attempt: 1, ref device }) if device == &PathBuf::from("/dev/vda")),
            "{first:?}"
        );
        // Same node, other hints: IPA keeps the newer node but does not wait.
        assert_eq!(
            cache_node(&ctx, node("a", serde_json::json!({"serial": "missing"}))),
            None
        );
        assert_eq!(
            ctx.node()
                .map(|n| n.instance_info["root_device"]["serial"].clone()),
            Some(serde_json::json!("missing"))
        );
        // Another node whose disk is missing: the wait runs out and goes on.
        assert_eq!(
            cache_node(&ctx, node("b", serde_json::json!({"serial": "missing"}))),
            Some(WaitOutcome::NotFound {
                attempts: 2,
                waited: Duration::ZERO
            })
        );
        cache_command_node(&ctx, &Map::new());
        assert_eq!(ctx.node().map(|n| n.uuid), Some("b".to_string()));
    }
}
