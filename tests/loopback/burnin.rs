//! Burn-in steps through the agent's API. `burnin_memory` runs in a child
//! process and its verdict is the step's, with small sizes so the host is
//! never pressed for memory. `burnin_disk` runs on loop devices only.

use std::os::unix::fs::FileExt;
use std::process::Command;

use ferrite_tests::images::{run, LoopDevice};
use ferrite_tests::Pair;
use serde_json::{json, Value};

fn step(driver_info: Value) -> Value {
    named_step("burnin_memory", driver_info)
}

fn named_step(name: &str, driver_info: Value) -> Value {
    json!({
    "step": {"step": name, "interface": "deploy", "priority": 0},
    "node": {"driver_info": driver_info}, "ports": [],
    "clean_version": {"generic_hardware_manager": "1.2"}})
}

#[tokio::test(flavor = "multi_thread")]
async fn burnin_memory_verifies_its_workers_and_reports_what_it_cannot_do() {
    let pair = Pair::start(&[], "52:54:00:b1:00:01", &[]).await;
    let api = pair.api();
    let out = tempfile::tempdir().unwrap();
    let outputfile = out.path().join("vm.log");

    let passed = api
        .run(
            "clean.execute_clean_step",
            step(
                json!({"agent_burnin_vm_vm": 2, "agent_burnin_vm_vm-bytes": "16m",
                        "agent_burnin_vm_timeout": 1,
                        "agent_burnin_vm_outputfile": outputfile.display().to_string()}),
            ),
        )
        .await;
    assert_eq!(passed["command_status"], "SUCCEEDED", "{passed}");
    let log = std::fs::read_to_string(&outputfile).expect("the output file");
    let report: Value = serde_json::from_str(log.lines().nth(1).expect("the report line")).unwrap();
    let workers = report["workers"].as_array().expect("workers");
    assert_eq!(workers.len(), 2, "{log}");
    for w in workers {
        let ok = &w["Ok"];
        assert!(ok["passes"].as_u64().unwrap() >= 1, "{log}");
        assert_eq!(
            ok["bytes_verified"].as_u64().unwrap() % (16 << 20),
            0,
            "{log}"
        );
        assert_eq!(ok["errors"], 0, "{log}");
    }

    // More than the address space: the child cannot map it, the step says so.
    let refused = api
        .run(
            "clean.execute_clean_step",
            step(
                json!({"agent_burnin_vm_vm": 1, "agent_burnin_vm_vm-bytes": "1048576g",
                        "agent_burnin_vm_timeout": 1}),
            ),
        )
        .await;
    assert_eq!(refused["command_status"], "FAILED", "{refused}");
    assert_eq!(refused["command_error"]["type"], "CommandExecutionError");
    let details = refused["command_error"]["details"].as_str().unwrap();
    assert!(
        details
            .starts_with("memory burn-in (vm) failed: worker 0: mapping 1125899906842624 bytes:"),
        "{details}"
    );

    let bad = api
        .run(
            "clean.execute_clean_step",
            step(json!({"agent_burnin_vm_vm-bytes": "lots"})),
        )
        .await;
    assert_eq!(bad["command_status"], "FAILED", "{bad}");
    assert_eq!(
        bad["command_error"]["type"], "InvalidCommandParamsError",
        "{bad}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn burnin_disk_writes_and_verifies_every_block_of_every_disk() {
    let dir = tempfile::tempdir().unwrap();
    let a = LoopDevice::new(dir.path(), "a.loop", 24 << 20, true);
    let b = LoopDevice::new(dir.path(), "b.loop", 16 << 20, true);
    let allow = format!("ferrite-disks={},{}", a.path.display(), b.path.display());
    let pair = Pair::start(&[], "52:54:00:b1:00:02", &[&allow]).await;
    let api = pair.api();
    let outputfile = dir.path().join("fio.json");
    let passed = api
        .run(
            "clean.execute_clean_step",
            named_step(
                "burnin_disk",
                json!({"agent_burnin_fio_disk_loops": 2,
                       "agent_burnin_fio_disk_outputfile": outputfile.display().to_string()}),
            ),
        )
        .await;
    assert_eq!(passed["command_status"], "SUCCEEDED", "{passed}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&outputfile).unwrap()).unwrap();
    let disks = report["disks"].as_array().expect("disks");
    assert_eq!(disks.len(), 2, "{report}");
    for (dev, size) in [(&a, 24u64 << 20), (&b, 16 << 20)] {
        let d = disks
            .iter()
            .find(|d| d["device"] == dev.path.display().to_string())
            .unwrap_or_else(|| panic!("{report}"));
        assert_eq!(d["bytes_per_pass"], size, "{d}");
        assert_eq!(d["loops_completed"], 2, "{d}");
        assert_eq!(d["bytes_written"], 2 * size, "{d}");
        assert_eq!(d["bytes_verified"], 2 * size, "{d}");
        assert_eq!(d["verify_errors"], 0, "{d}");
        // The last pass's pattern is on the disk, in every block.
        let f = std::fs::File::open(dev.backing()).unwrap();
        for at in [0, size / 2, size - 4096] {
            let mut block = [0u8; 4096];
            f.read_exact_at(&mut block, at).unwrap();
            assert_eq!(&block[..8], b"FERBURN1");
            assert_eq!(block[8..16], at.to_le_bytes());
            assert_eq!(block[16..24], 2u64.to_le_bytes());
        }
    }

    // SMART self-tests are not done natively: refused before any write.
    let before = std::fs::read(a.backing()).unwrap();
    let refused = api
        .run(
            "clean.execute_clean_step",
            named_step(
                "burnin_disk",
                json!({"agent_burnin_fio_disk_smart_test": true}),
            ),
        )
        .await;
    assert_eq!(refused["command_status"], "FAILED", "{refused}");
    assert!(refused["command_error"]["details"]
        .as_str()
        .unwrap()
        .contains("agent_burnin_fio_disk_smart_test is not supported"));
    assert!(
        std::fs::read(a.backing()).unwrap() == before,
        "a disk was written"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn burnin_disk_fails_on_a_disk_it_cannot_write() {
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("ro");
    std::fs::write(&backing, vec![7u8; 8 << 20]).unwrap();
    let out = run(Command::new("losetup")
        .args(["--find", "--show", "--read-only"])
        .arg(&backing));
    let ro = out.trim().to_string();
    let allow = format!("ferrite-disks={ro}");
    let pair = Pair::start(&[], "52:54:00:b1:00:03", &[&allow]).await;
    let failed = pair
        .api()
        .run(
            "clean.execute_clean_step",
            named_step("burnin_disk", json!({"agent_burnin_fio_disk_loops": 1})),
        )
        .await;
    let _ = Command::new("losetup").arg("-d").arg(&ro).status();
    assert_eq!(failed["command_status"], "FAILED", "{failed}");
    assert_eq!(failed["command_error"]["type"], "CommandExecutionError");
    let details = failed["command_error"]["details"].as_str().unwrap();
    assert!(
        details.starts_with(&format!(
            "disk burn-in (fio) failed: {ro}: writing at offset 0:"
        )),
        "{details}"
    );
    assert_eq!(std::fs::read(&backing).unwrap(), vec![7u8; 8 << 20]);
}
