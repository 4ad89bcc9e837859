//! The ramdisk's boot timeline: PID 1 and the agent mark each milestone,
//! and the agent prints the story after its first heartbeat. The test
//! checks the story is told and hangs together; `scripts/bench-boot` runs
//! the ignored benchmark below for the numbers (kernel → /init → first
//! heartbeat), which never belong in a timed test.

use std::path::PathBuf;
use std::time::Duration;

use ferrite_tests::Conductor;
use serde_json::json;

use crate::qemu::{ramdisk, virtual_ramdisk, vm_slot, Vm, MAC};

/// The numbers of a `boot timeline:` line: the kernel's share (to /init)
/// and /init to the first heartbeat, in seconds; with the steps between.
#[derive(Debug)]
struct Timeline {
    kernel: f64,
    to_heartbeat: f64,
    steps: Vec<(String, f64)>,
}

fn parse(serial: &str) -> Option<Timeline> {
    let line = serial.lines().find(|l| l.contains("boot timeline: "))?;
    let story = line.split_once("boot timeline: ")?.1;
    let mut parts = story.split(" | ");
    let kernel = parts
        .next()?
        .strip_prefix("kernel → /init ")?
        .strip_suffix(" s")?
        .parse()
        .ok()?;
    let mut steps = Vec::new();
    let mut to_heartbeat = None;
    for part in parts {
        if let Some(total) = part.strip_prefix("/init → first heartbeat ") {
            to_heartbeat = total.strip_suffix(" s")?.parse().ok();
        } else {
            let (name, secs) = part.rsplit_once(" +")?;
            steps.push((name.to_string(), secs.parse().ok()?));
        }
    }
    Some(Timeline {
        kernel,
        to_heartbeat: to_heartbeat?,
        steps,
    })
}

/// Boot `ramdisk` once (virtio NIC and disk, BOOTIF as PXE sets it) and
/// return its timeline.
async fn boot_once(ramdisk: &(PathBuf, PathBuf), tag: &str) -> Timeline {
    let _vm_slot = vm_slot().await;
    let conductor = Conductor::start(&["--fast-track", "true"]).await;
    let node = conductor
        .create_node(json!({"driver": "fake-hardware", "name": tag}))
        .await;
    let uuid = node["uuid"].as_str().unwrap().to_string();
    conductor.create_port(&uuid, MAC).await;
    let port: u16 = conductor.url.rsplit(':').next().unwrap().parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let keep_as = format!("boot-timeline-{tag}.log");
    let mut vm = Vm::boot_virtio(dir.path(), port, ramdisk, 512, &keep_as);
    vm.wait_heartbeat(&conductor, &uuid, Duration::from_secs(180))
        .await;
    // The line follows the heartbeat's answer by a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let serial = vm.proc.log_text();
        if let Some(t) = parse(&serial) {
            return t;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no boot timeline in the serial log:\n{serial}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_boot_timeline_is_printed_and_adds_up() {
    let t = boot_once(virtual_ramdisk(), "virtual").await;
    eprintln!("{t:?}");
    // Every milestone PID 1 and the agent pass, in the order they happen.
    let names: Vec<&str> = t.steps.iter().map(|(n, _)| n.as_str()).collect();
    let position = |prefix: &str| {
        names
            .iter()
            .position(|n| n.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} step in {names:?}"))
    };
    assert!(position("drivers") < position("agent started"), "{names:?}");
    assert!(
        position("address (eth0 10.0.2.15") < position("network ready"),
        "{names:?}"
    );
    assert!(position("network ready") < position("lookup"), "{names:?}");
    assert_eq!(names.last(), Some(&"first heartbeat"), "{names:?}");
    // The steps are the total, split (each rounded to a millisecond).
    let sum: f64 = t.steps.iter().map(|(_, s)| s).sum();
    assert!(
        (sum - t.to_heartbeat).abs() < 0.001 * (names.len() as f64 + 1.0),
        "{t:?}"
    );
    assert!(t.kernel > 0.0 && t.to_heartbeat > 0.0, "{t:?}");
}

/// `scripts/bench-boot`: boots each profile `FERRITE_BENCH_BOOTS` times
/// (default 3) and prints the medians.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run by scripts/bench-boot"]
async fn bench_boot_timeline() {
    let boots: usize = std::env::var("FERRITE_BENCH_BOOTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    for (profile, ramdisk) in [("virtual", virtual_ramdisk()), ("server", ramdisk())] {
        let mut runs = Vec::new();
        for i in 0..boots {
            let t = boot_once(ramdisk, &format!("bench-{profile}-{i}")).await;
            println!(
                "{profile} boot {i}: kernel → /init {:.3} s, /init → first heartbeat {:.3} s; {}",
                t.kernel,
                t.to_heartbeat,
                t.steps
                    .iter()
                    .map(|(n, s)| format!("{n} +{s:.3}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            runs.push(t);
        }
        let median = |f: &dyn Fn(&Timeline) -> f64| {
            let mut v: Vec<f64> = runs.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (kernel, init) = (median(&|t| t.kernel), median(&|t| t.to_heartbeat));
        println!(
            "{profile}: median of {boots}: kernel → /init {kernel:.3} s, /init → first heartbeat \
             {init:.3} s ({:.2}× the 1 s goal), kernel start → first heartbeat {:.3} s",
            init / 1.0,
            kernel + init
        );
    }
}

#[test]
fn timeline_lines_parse() {
    let t = parse(
        "[  3.1] x\n  4.2 INFO boot timeline: kernel → /init 2.500 s | drivers +0.100 \
         | address (eth0 10.0.2.15) +0.500 | first heartbeat +0.300 \
         | /init → first heartbeat 0.900 s\n",
    )
    .unwrap();
    assert_eq!(t.kernel, 2.5);
    assert_eq!(t.to_heartbeat, 0.9);
    assert_eq!(t.steps[1], ("address (eth0 10.0.2.15)".to_string(), 0.5));
    assert!(parse("no timeline here").is_none());
}
