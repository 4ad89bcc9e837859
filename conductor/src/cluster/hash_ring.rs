//! The consistent hash ring that maps nodes to conductors, answer for answer
//! as tooz 9.1.0 `tooz/hashring.py` under Ironic 39's
//! `ironic/common/hash_ring.py`, so a fleet shared with (or migrated from)
//! Ironic splits the same way. Checked against tooz's own answers in
//! tests/fixtures/hash_ring.json (scripts/gen-ring-fixture).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use md5::{Digest, Md5};

/// Ironic's `hash_partition_exponent` default (ironic/conf/default.py).
pub const DEFAULT_PARTITION_EXPONENT: u32 = 5;

/// tooz's `HashRing` with md5 and weight 1, which is how Ironic builds it.
#[derive(Debug, Clone)]
pub struct HashRing {
    /// The hosts, sorted: index into this from `owners`.
    hosts: Vec<String>,
    /// The ring's positions, sorted (tooz's `_partitions`).
    keys: Vec<u128>,
    /// `owners[i]` is the index in `hosts` of the host at `keys[i]`.
    owners: Vec<usize>,
}

impl HashRing {
    /// A ring of `2^exponent` positions per host. Duplicate hosts count once,
    /// as tooz's `add_nodes(set(nodes))`.
    pub fn new<I, S>(hosts: I, exponent: u32) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let hosts: Vec<String> = hosts
            .into_iter()
            .map(Into::into)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let partitions = 1usize << exponent;
        let mut ring = BTreeMap::new();
        for (index, host) in hosts.iter().enumerate() {
            // tooz seeds the digest with the name (`md5(key)`) and then feeds
            // the name in again P times: position i is md5 of the name
            // repeated i+2 times (not i+1, nor md5 of "name-i").
            let mut digest = Md5::new_with_prefix(host.as_bytes());
            for _ in 0..partitions {
                digest.update(host.as_bytes());
                // An md5 collision between two hosts would make the later one
                // win in tooz's dict, in an order set by Python's string hash;
                // at 2^-128 per pair this is left unmatched.
                ring.insert(to_int(digest.clone().finalize().into()), index);
            }
        }
        let (keys, owners) = ring.into_iter().unzip();
        HashRing {
            hosts,
            keys,
            owners,
        }
    }

    /// The hosts on the ring, sorted.
    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }

    /// The number of positions (tooz's `len(ring)`).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// tooz's `_get_partition`: the first position strictly above the key's
    /// hash (`bisect_right`), wrapping to 0 past the end.
    fn partition(&self, data: &[u8]) -> usize {
        let hashed = to_int(Md5::digest(data).into());
        let position = self.keys.partition_point(|k| *k <= hashed);
        if position < self.keys.len() {
            position
        } else {
            0
        }
    }

    /// tooz's `get_nodes`: walking forward from the key's partition, the first
    /// `min(replicas, hosts not ignored)` distinct hosts not in `ignore`, in
    /// the order met (tooz returns them as a set).
    pub fn get_nodes(&self, data: &[u8], ignore: &[&str], replicas: usize) -> Vec<&str> {
        let candidates = self
            .hosts
            .iter()
            .filter(|h| !ignore.contains(&h.as_str()))
            .count();
        let wanted = replicas.min(candidates);
        let mut found: Vec<&str> = Vec::with_capacity(wanted);
        if wanted == 0 {
            return found;
        }
        let mut partition = self.partition(data);
        // Each candidate owns at least one position, so one lap finds them all.
        while found.len() < wanted {
            let host = self.hosts[self.owners[partition]].as_str();
            if !ignore.contains(&host) && !found.contains(&host) {
                found.push(host);
            }
            partition = if partition + 1 < self.keys.len() {
                partition + 1
            } else {
                0
            };
        }
        found
    }

    /// The one conductor that owns a node: Ironic 39 asks with replicas=1 and
    /// the UUID's utf-8 bytes (base_manager.py `_mapped_to_this_conductor`).
    pub fn owner(&self, node_uuid: &str) -> Option<&str> {
        self.get_nodes(node_uuid.as_bytes(), &[], 1)
            .first()
            .copied()
    }
}

fn to_int(digest: [u8; 16]) -> u128 {
    // tooz: int(hexdigest, 16), i.e. the digest read big-endian.
    u128::from_be_bytes(digest)
}

/// One live conductor, as the rings need it: Ironic's
/// `get_active_hardware_type_dict` joins conductors with their hardware types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConductorEntry {
    pub hostname: String,
    /// `""` for the default group, as Ironic stores it (never NULL).
    pub conductor_group: String,
    pub hardware_types: Vec<String>,
}

/// The rings of a cluster: one per `"{conductor_group}:{hardware_type}"`,
/// which is Ironic's key with `use_groups=True`; the default group gives
/// `":ipmi"`.
#[derive(Debug, Clone, Default)]
pub struct Rings {
    rings: HashMap<String, HashRing>,
}

impl Rings {
    /// As `HashRingManager._load_hash_rings`: each conductor joins the ring of
    /// every hardware type it registered, within its own group.
    pub fn build<'a>(
        conductors: impl IntoIterator<Item = &'a ConductorEntry>,
        exponent: u32,
    ) -> Self {
        let mut hosts: HashMap<String, BTreeSet<&str>> = HashMap::new();
        for c in conductors {
            for hw in &c.hardware_types {
                hosts
                    .entry(ring_key(&c.conductor_group, hw))
                    .or_default()
                    .insert(&c.hostname);
            }
        }
        Rings {
            rings: hosts
                .into_iter()
                .map(|(key, hosts)| (key, HashRing::new(hosts, exponent)))
                .collect(),
        }
    }

    /// The ring a node of this group and driver hashes on; `None` is Ironic's
    /// DriverNotFound (no live conductor may take it: NoValidHost).
    pub fn ring(&self, conductor_group: &str, hardware_type: &str) -> Option<&HashRing> {
        self.rings.get(&ring_key(conductor_group, hardware_type))
    }

    /// The conductor that owns a node, if any may.
    pub fn owner(
        &self,
        conductor_group: &str,
        hardware_type: &str,
        node_uuid: &str,
    ) -> Option<&str> {
        self.ring(conductor_group, hardware_type)?.owner(node_uuid)
    }

    pub fn is_empty(&self) -> bool {
        self.rings.is_empty()
    }

    /// The ring keys, for logs (Ironic logs "available drivers are ...").
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.rings.keys().map(String::as_str)
    }
}

/// Ironic's `'%s:%s' % (conductor_group, driver_name)`.
pub fn ring_key(conductor_group: &str, hardware_type: &str) -> String {
    format!("{conductor_group}:{hardware_type}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Fixture {
        tooz: String,
        uuids: Vec<String>,
        cases: Vec<Case>,
    }

    #[derive(Deserialize)]
    struct Case {
        hosts: Vec<String>,
        exponent: u32,
        ring_len: usize,
        owners: Vec<String>,
        removed: String,
        owners_without_removed: Vec<String>,
        owners_ignoring_removed: Vec<String>,
        replicas_2: Vec<Vec<String>>,
        replicas_all: Vec<Vec<String>>,
    }

    fn hosts(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("conductor-{i}")).collect()
    }

    fn sorted(mut v: Vec<&str>) -> Vec<&str> {
        v.sort_unstable();
        v
    }

    #[test]
    fn every_answer_matches_tooz() {
        let fixture: Fixture =
            serde_json::from_str(include_str!("../../../tests/fixtures/hash_ring.json"))
                .expect("fixture parses");
        assert_eq!(fixture.tooz, "9.1.0");
        assert_eq!(fixture.uuids.len(), 1000);
        assert_eq!(fixture.cases.len(), 6);
        for case in &fixture.cases {
            let what = format!("{} hosts, exponent {}", case.hosts.len(), case.exponent);
            let ring = HashRing::new(case.hosts.clone(), case.exponent);
            let smaller = HashRing::new(
                case.hosts.iter().filter(|h| **h != case.removed).cloned(),
                case.exponent,
            );
            assert_eq!(ring.len(), case.ring_len, "{what}");
            assert_eq!(case.owners.len(), fixture.uuids.len(), "{what}");
            for (i, uuid) in fixture.uuids.iter().enumerate() {
                assert_eq!(
                    ring.owner(uuid),
                    Some(case.owners[i].as_str()),
                    "{what}: {uuid}"
                );
                assert_eq!(
                    smaller.owner(uuid),
                    Some(case.owners_without_removed[i].as_str()),
                    "{what} without {}: {uuid}",
                    case.removed
                );
            }
            for (i, uuid) in fixture.uuids.iter().enumerate().take(case.replicas_2.len()) {
                let data = uuid.as_bytes();
                assert_eq!(
                    ring.get_nodes(data, &[&case.removed], 1),
                    vec![case.owners_ignoring_removed[i].as_str()],
                    "{what} ignoring {}: {uuid}",
                    case.removed
                );
                assert_eq!(
                    sorted(ring.get_nodes(data, &[], 2)),
                    case.replicas_2[i],
                    "{what} replicas=2: {uuid}"
                );
                assert_eq!(
                    sorted(ring.get_nodes(data, &[], case.hosts.len() + 5)),
                    case.replicas_all[i],
                    "{what} replicas=all: {uuid}"
                );
            }
        }
    }

    #[test]
    fn known_answers() {
        // docs/scale-plan.md §2.2, confirmed with tooz 9.1.0.
        let ring = HashRing::new(hosts(3), DEFAULT_PARTITION_EXPONENT);
        assert_eq!(ring.len(), 96);
        assert_eq!(
            ring.owner("1be26c0b-03f2-4d2e-ae87-c02d7f33c123"),
            Some("conductor-1")
        );
        assert_eq!(
            ring.owner("00000000-0000-0000-0000-000000000000"),
            Some("conductor-3")
        );
        assert_eq!(
            ring.owner("b21b7fcd-e215-40b0-abb7-7c919b1b1232"),
            Some("conductor-1")
        );
    }

    #[test]
    fn removing_a_host_moves_only_its_nodes() {
        let uuids: Vec<String> = (0..5000u32)
            .map(|i| {
                uuid::Uuid::from_u128(
                    u128::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835),
                )
                .to_string()
            })
            .collect();
        for n in [3, 10] {
            let all = hosts(n);
            let ring = HashRing::new(all.clone(), DEFAULT_PARTITION_EXPONENT);
            for gone in &all {
                let smaller = HashRing::new(
                    all.iter().filter(|h| *h != gone).cloned(),
                    DEFAULT_PARTITION_EXPONENT,
                );
                let mut moved = 0;
                for u in &uuids {
                    let before = ring.owner(u).expect("an owner");
                    let after = smaller.owner(u).expect("an owner");
                    if before == gone {
                        assert_ne!(after, gone);
                        moved += 1;
                    } else {
                        assert_eq!(before, after, "{u} moved off {before} when {gone} left");
                    }
                }
                assert!(
                    moved > 0,
                    "{gone} owned nothing of {} on {n} hosts",
                    uuids.len()
                );
            }
        }
    }

    #[test]
    fn spread_is_as_tooz_gives() {
        // §2.2: over 100k UUIDs, 3 hosts get 28,960–39,268 each; a rough
        // guard against a ring that is exact on the fixture but skewed.
        let ring = HashRing::new(hosts(3), DEFAULT_PARTITION_EXPONENT);
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for i in 0..30_000u32 {
            let u = uuid::Uuid::from_u128(u128::from(i) << 64 | 0x5eed).to_string();
            *counts.entry(ring.owner(&u).expect("an owner")).or_default() += 1;
        }
        assert_eq!(counts.len(), 3);
        assert!(
            counts.values().all(|c| (6_000..14_000).contains(c)),
            "{counts:?}"
        );
    }

    #[test]
    fn empty_and_ignored_rings_have_no_owner() {
        let empty = HashRing::new(Vec::<String>::new(), 5);
        assert!(empty.is_empty());
        assert_eq!(empty.owner("00000000-0000-0000-0000-000000000000"), None);
        let ring = HashRing::new(hosts(2), 5);
        assert!(ring
            .get_nodes(b"x", &["conductor-1", "conductor-2"], 1)
            .is_empty());
        // A host named twice is one host, as tooz's set().
        let twice = HashRing::new(["a", "a", "b"], 2);
        assert_eq!(twice.hosts(), ["a", "b"]);
        assert_eq!(twice.len(), 8);
    }

    #[test]
    fn rings_are_keyed_by_group_and_hardware_type() {
        let rows = [
            ConductorEntry {
                hostname: "c1".into(),
                conductor_group: String::new(),
                hardware_types: vec!["ipmi".into(), "redfish".into()],
            },
            ConductorEntry {
                hostname: "c2".into(),
                conductor_group: String::new(),
                hardware_types: vec!["redfish".into()],
            },
            ConductorEntry {
                hostname: "c3".into(),
                conductor_group: "rack7".into(),
                hardware_types: vec!["redfish".into()],
            },
        ];
        let rings = Rings::build(&rows, 5);
        let mut keys: Vec<&str> = rings.keys().collect();
        keys.sort_unstable();
        assert_eq!(keys, [":ipmi", ":redfish", "rack7:redfish"]);
        assert_eq!(
            rings.ring("", "redfish").expect("ring").hosts(),
            ["c1", "c2"]
        );
        assert_eq!(rings.ring("", "ipmi").expect("ring").hosts(), ["c1"]);
        assert_eq!(rings.owner("rack7", "redfish", "any"), Some("c3"));
        // No live conductor of the group may take the node: NoValidHost.
        assert!(rings.ring("rack7", "ipmi").is_none());
        assert_eq!(rings.owner("rack9", "redfish", "any"), None);
        let same = HashRing::new(["c1", "c2"], 5);
        let u = "1be26c0b-03f2-4d2e-ae87-c02d7f33c123";
        assert_eq!(rings.owner("", "redfish", u), same.owner(u));
    }
}
