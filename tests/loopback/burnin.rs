//! `burnin_memory` through the agent's API: the burn-in runs in a child
//! process and its verdict is the step's, with small sizes so the host is
//! never pressed for memory.

use ferrite_tests::Pair;
use serde_json::{json, Value};

fn step(driver_info: Value) -> Value {
    json!({
    "step": {"step": "burnin_memory", "interface": "deploy", "priority": 0},
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
