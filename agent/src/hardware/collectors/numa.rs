//! IPA's `numa-topology` collector: per NUMA node its memory, its cores
//! (with their thread siblings) and the NICs attached to it, from
//! `/sys/devices/system/node/node<N>` and `/sys/class/net/<nic>/device`.
//! Like IPA, any unreadable part voids the whole key.

use std::path::Path;

use serde::Serialize;
use tracing::debug;

use super::{list_dir, read_attr, read_bounded, CollectorError, ATTR_LIMIT};

/// The NUMA nodes, under the sysfs root.
pub const NODES_DIR: &str = "devices/system/node";
/// The NICs, under the sysfs root.
pub const NET_DIR: &str = "class/net";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NumaTopology {
    pub ram: Vec<NodeRam>,
    pub cpus: Vec<NodeCpu>,
    pub nics: Vec<NodeNic>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeRam {
    pub numa_node: u32,
    pub size_kb: u64,
}

/// One physical core of a node and the logical CPUs (threads) on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeCpu {
    pub cpu: u32,
    pub numa_node: u32,
    pub thread_siblings: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeNic {
    pub name: String,
    pub numa_node: i64,
}

/// `node3` → 3 (any `node<digits>` directory).
fn node_id(name: &str) -> Option<u32> {
    name.strip_prefix("node")?.parse().ok()
}

/// `Node 0 MemTotal:  1560000 kB` → 1560000 (kB, KB, MB and GB as IPA's
/// unit table: binary multiples of kB).
fn mem_total_kb(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.contains("MemTotal"))?;
    let value = line.split_once(':')?.1.trim();
    let (number, unit) = value
        .split_once(char::is_whitespace)
        .unwrap_or((value, "kB"));
    let number: u64 = number.trim().parse().ok()?;
    let factor = match unit.trim() {
        "kB" | "KB" => 1,
        "MB" => 1024,
        "GB" => 1024 * 1024,
        _ => return None,
    };
    number.checked_mul(factor)
}

/// The topology, or why it cannot be had; `Ok(None)` when the machine has
/// no NUMA directory at all (IPA only warns then).
pub fn collect(sysfs: &Path) -> Result<Option<NumaTopology>, CollectorError> {
    let root = sysfs.join(NODES_DIR);
    if !root.is_dir() {
        return Ok(None);
    }
    let mut nodes = Vec::new();
    for name in list_dir(&root)? {
        let dir = root.join(&name);
        if !name.starts_with("node") || !dir.is_dir() {
            continue;
        }
        let id = node_id(&name)
            .ok_or_else(|| CollectorError::format(&dir, "not a node<N> directory"))?;
        nodes.push((id, dir));
    }
    let mut ram = Vec::new();
    for (id, dir) in &nodes {
        let path = dir.join("meminfo");
        let text = read_bounded(&path, 16 * ATTR_LIMIT)?;
        let size_kb = mem_total_kb(&text)
            .ok_or_else(|| CollectorError::format(&path, "no readable MemTotal"))?;
        debug!(node = id, size_kb, "NUMA node memory");
        ram.push(NodeRam {
            numa_node: *id,
            size_kb,
        });
    }
    let mut cpus: Vec<NodeCpu> = Vec::new();
    for (id, dir) in &nodes {
        for name in list_dir(dir)? {
            let thread_dir = dir.join(&name);
            if !name.starts_with("cpu") || !thread_dir.is_dir() {
                continue;
            }
            let thread: u32 = name[3..]
                .parse()
                .map_err(|_| CollectorError::format(&thread_dir, "not a cpu<N> directory"))?;
            let core_path = thread_dir.join("topology/core_id");
            let core: u32 = read_attr(&core_path)?
                .parse()
                .map_err(|_| CollectorError::format(&core_path, "not a core number"))?;
            match cpus
                .iter_mut()
                .find(|c| c.numa_node == *id && c.cpu == core)
            {
                Some(c) if !c.thread_siblings.contains(&thread) => c.thread_siblings.push(thread),
                Some(_) => {}
                None => cpus.push(NodeCpu {
                    cpu: core,
                    numa_node: *id,
                    thread_siblings: vec![thread],
                }),
            }
        }
    }
    let net = sysfs.join(NET_DIR);
    if !net.is_dir() {
        return Err(CollectorError::format(&net, "no network device directory"));
    }
    let mut nics = Vec::new();
    for name in list_dir(&net)? {
        let path = net.join(&name).join("device/numa_node");
        if !path.is_file() {
            continue;
        }
        let numa_node: i64 = read_attr(&path)?
            .parse()
            .map_err(|_| CollectorError::format(&path, "not a node number"))?;
        nics.push(NodeNic { name, numa_node });
    }
    Ok(Some(NumaTopology { ram, cpus, nics }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn fixture() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hardware/ferrite-ci-host/sys")
    }

    #[test]
    fn reads_a_captured_machine() {
        let t = collect(&fixture())
            .unwrap()
            .expect("the host has NUMA nodes");
        assert!(!t.ram.is_empty());
        assert!(t.ram.iter().all(|r| r.size_kb > 0), "{t:?}");
        assert!(!t.cpus.is_empty());
        let threads: usize = t.cpus.iter().map(|c| c.thread_siblings.len()).sum();
        let logical = fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/hardware/ferrite-ci-host/proc/cpuinfo"),
        )
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
        assert_eq!(threads, logical, "{t:?}");
        let json = serde_json::to_value(&t).unwrap();
        assert!(json["ram"][0]["size_kb"].is_u64());
        assert!(json["cpus"][0]["thread_siblings"].is_array());
        assert!(json["nics"].is_array());
    }

    fn node(root: &Path, id: u32, kb: &str, threads: &[(u32, u32)]) {
        let dir = root.join(format!("{NODES_DIR}/node{id}"));
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("meminfo"),
            format!("Node {id} MemTotal:       {kb}\nNode {id} MemFree: 1 kB\n"),
        )
        .unwrap();
        fs::write(dir.join("cpulist"), "0-3\n").unwrap();
        for (thread, core) in threads {
            let t = dir.join(format!("cpu{thread}/topology"));
            fs::create_dir_all(&t).unwrap();
            fs::write(t.join("core_id"), format!("{core}\n")).unwrap();
        }
    }

    #[test]
    fn two_nodes_with_hyperthreads() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path();
        node(sys, 0, "1560000 kB", &[(0, 0), (1, 1), (4, 0), (5, 1)]);
        node(sys, 1, "2 GB", &[(2, 0), (6, 0)]);
        fs::create_dir_all(sys.join(format!("{NODES_DIR}/possible-not-a-dir"))).ok();
        let nic = sys.join("class/net/eth0/device");
        fs::create_dir_all(&nic).unwrap();
        fs::write(nic.join("numa_node"), "1\n").unwrap();
        fs::create_dir_all(sys.join("class/net/lo")).unwrap();
        let t = collect(sys).unwrap().unwrap();
        assert_eq!(
            t.ram,
            [
                NodeRam {
                    numa_node: 0,
                    size_kb: 1_560_000
                },
                NodeRam {
                    numa_node: 1,
                    size_kb: 2 * 1024 * 1024
                }
            ]
        );
        let cores: Vec<(u32, u32, Vec<u32>)> = t
            .cpus
            .iter()
            .map(|c| (c.numa_node, c.cpu, c.thread_siblings.clone()))
            .collect();
        assert_eq!(
            cores,
            [(0, 0, vec![0, 4]), (0, 1, vec![1, 5]), (1, 0, vec![2, 6])]
        );
        assert_eq!(
            t.nics,
            [NodeNic {
                name: "eth0".into(),
                numa_node: 1
            }]
        );
    }

    #[test]
    fn broken_parts_void_the_topology() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(collect(dir.path()).unwrap(), None, "no NUMA directory");
        node(dir.path(), 0, "lots", &[(0, 0)]);
        fs::create_dir_all(dir.path().join("class/net")).unwrap();
        assert!(collect(dir.path()).is_err(), "unreadable MemTotal");
        node(dir.path(), 0, "1024 kB", &[(0, 0)]);
        fs::write(
            dir.path()
                .join(format!("{NODES_DIR}/node0/cpu0/topology/core_id")),
            "x\n",
        )
        .unwrap();
        assert!(collect(dir.path()).is_err(), "unreadable core id");
    }
}
