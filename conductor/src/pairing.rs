//! Network burn-in pairing: the coordination IPA agents get from a tooz
//! backend (a group and a lock), kept by the conductor instead. Agents of
//! a group ask to be paired; the first two waiting members of a group
//! pair, the one that waited (first) as the writer, the newcomer as the
//! reader. A member that stops asking, or leaves, is forgotten.
//!
//! The state is in memory: a pairing lives for seconds to minutes, only
//! agents that are running their step need it, and losing it in a
//! restart costs a retry, not a node. With several conductors (issue 17)
//! the agents of one group must ask the same conductor.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

/// The longest one request waits for a partner; agents ask again.
pub const MAX_WAIT: Duration = Duration::from_secs(25);
/// A member that has not asked for this long after its last answer is
/// gone (its agent died or gave up without leaving).
pub const MEMBER_TTL: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Writer,
    Reader,
}

/// One side of a pair, as its agent is told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pairing {
    pub role: Role,
    /// The address the partner's agent reported: where to connect.
    pub partner: IpAddr,
    pub partner_node: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Answer {
    Paired(Pairing),
    /// No partner within this request's wait: ask again.
    Waiting,
}

struct Member {
    node: String,
    address: IpAddr,
    seen: Instant,
}

#[derive(Default)]
struct Group {
    waiting: VecDeque<Member>,
    /// Writers paired while they were not asking, until they collect.
    ready: HashMap<String, (Pairing, Instant)>,
}

impl Group {
    fn forget_stale(&mut self, now: Instant) {
        self.waiting
            .retain(|m| now.duration_since(m.seen) < MEMBER_TTL);
        self.ready
            .retain(|_, (_, at)| now.duration_since(*at) < MEMBER_TTL);
    }

    fn is_empty(&self) -> bool {
        self.waiting.is_empty() && self.ready.is_empty()
    }
}

/// The groups, and a generation counter long-polls wait on.
pub struct Registry {
    groups: Mutex<HashMap<String, Group>>,
    changed: watch::Sender<u64>,
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            groups: Mutex::default(),
            changed: watch::channel(0).0,
        }
    }
}

impl Registry {
    /// Join `group` (or stay in it) and wait up to `wait` for a partner.
    pub async fn pair(&self, group: &str, node: &str, address: IpAddr, wait: Duration) -> Answer {
        let deadline = tokio::time::Instant::now() + wait.min(MAX_WAIT);
        let mut changes = self.changed.subscribe();
        loop {
            changes.borrow_and_update();
            if let Some(answer) = self.step(group, node, address) {
                return Answer::Paired(answer);
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                self.touch(group, node);
                return Answer::Waiting;
            }
        }
    }

    /// Leave `group`: a waiting member is forgotten, an uncollected
    /// pairing dropped. Whether it was there.
    pub fn leave(&self, group: &str, node: &str) -> bool {
        let mut groups = self.lock();
        let Some(g) = groups.get_mut(group) else {
            return false;
        };
        let before = g.waiting.len() + g.ready.len();
        g.waiting.retain(|m| m.node != node);
        g.ready.remove(node);
        let left = g.waiting.len() + g.ready.len() < before;
        if g.is_empty() {
            groups.remove(group);
        }
        left
    }

    /// One look under the lock: collect a pairing made for us, pair with
    /// the first other waiting member, or wait in line.
    fn step(&self, group: &str, node: &str, address: IpAddr) -> Option<Pairing> {
        let now = Instant::now();
        let mut groups = self.lock();
        // Every group, not just this one: a group nobody asks in again
        // must not keep its silent members forever.
        groups.retain(|_, g| {
            g.forget_stale(now);
            !g.is_empty()
        });
        let g = groups.entry(group.to_string()).or_default();
        if let Some((pairing, _)) = g.ready.remove(node) {
            if g.is_empty() {
                groups.remove(group);
            }
            return Some(pairing);
        }
        if let Some(me) = g.waiting.iter_mut().find(|m| m.node == node) {
            me.seen = now;
            me.address = address;
            return None;
        }
        let Some(first) = g.waiting.pop_front() else {
            g.waiting.push_back(Member {
                node: node.to_string(),
                address,
                seen: now,
            });
            return None;
        };
        tracing::info!(group, writer = %first.node, reader = %node, "network burn-in pair");
        g.ready.insert(
            first.node.clone(),
            (
                Pairing {
                    role: Role::Writer,
                    partner: address,
                    partner_node: node.to_string(),
                },
                now,
            ),
        );
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
        Some(Pairing {
            role: Role::Reader,
            partner: first.address,
            partner_node: first.node,
        })
    }

    /// The member is still there at the end of its wait.
    fn touch(&self, group: &str, node: &str) {
        if let Some(m) = self
            .lock()
            .get_mut(group)
            .and_then(|g| g.waiting.iter_mut().find(|m| m.node == node))
        {
            m.seen = Instant::now();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Group>> {
        self.groups.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[tokio::test]
    async fn the_first_two_pair_and_the_first_writes() {
        let reg = Arc::new(Registry::default());
        let r = reg.clone();
        let first =
            tokio::spawn(async move { r.pair("g", "a", ip(1), Duration::from_secs(5)).await });
        // Let "a" get in line first.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let second = reg.pair("g", "b", ip(2), Duration::from_secs(5)).await;
        assert_eq!(
            second,
            Answer::Paired(Pairing {
                role: Role::Reader,
                partner: ip(1),
                partner_node: "a".into()
            })
        );
        assert_eq!(
            first.await.unwrap(),
            Answer::Paired(Pairing {
                role: Role::Writer,
                partner: ip(2),
                partner_node: "b".into()
            })
        );
        // Both collected: the group is gone, a third waits alone.
        assert!(reg.lock().is_empty());
        let third = reg.pair("g", "c", ip(3), Duration::from_millis(50)).await;
        assert_eq!(third, Answer::Waiting);
    }

    #[tokio::test]
    async fn groups_are_separate_and_a_node_never_pairs_with_itself() {
        let reg = Registry::default();
        let wait = Duration::from_millis(30);
        assert_eq!(reg.pair("g1", "a", ip(1), wait).await, Answer::Waiting);
        assert_eq!(reg.pair("g2", "b", ip(2), wait).await, Answer::Waiting);
        assert_eq!(reg.pair("g1", "a", ip(1), wait).await, Answer::Waiting);
        let Answer::Paired(p) = reg.pair("g1", "c", ip(3), wait).await else {
            panic!("c should pair with a");
        };
        assert_eq!((p.role, p.partner_node.as_str()), (Role::Reader, "a"));
    }

    #[tokio::test]
    async fn a_member_that_left_is_not_paired() {
        let reg = Registry::default();
        let wait = Duration::from_millis(30);
        assert_eq!(reg.pair("g", "a", ip(1), wait).await, Answer::Waiting);
        assert!(reg.leave("g", "a"));
        assert!(!reg.leave("g", "a"));
        assert_eq!(reg.pair("g", "b", ip(2), wait).await, Answer::Waiting);
    }

    #[tokio::test]
    async fn a_member_that_stopped_asking_is_forgotten() {
        let reg = Registry::default();
        assert_eq!(
            reg.pair("g", "a", ip(1), Duration::from_millis(10)).await,
            Answer::Waiting
        );
        // Age "a" past the TTL instead of sleeping through it.
        for m in reg.lock().get_mut("g").unwrap().waiting.iter_mut() {
            m.seen = Instant::now() - MEMBER_TTL - Duration::from_secs(1);
        }
        assert_eq!(
            reg.pair("g", "b", ip(2), Duration::from_millis(10)).await,
            Answer::Waiting
        );
    }

    #[tokio::test]
    async fn silent_members_of_other_groups_are_forgotten_too() {
        let reg = Registry::default();
        let wait = Duration::from_millis(10);
        assert_eq!(reg.pair("old", "a", ip(1), wait).await, Answer::Waiting);
        for m in reg.lock().get_mut("old").unwrap().waiting.iter_mut() {
            m.seen = Instant::now() - MEMBER_TTL - Duration::from_secs(1);
        }
        assert_eq!(reg.pair("new", "b", ip(2), wait).await, Answer::Waiting);
        assert!(!reg.lock().contains_key("old"));
    }
}
