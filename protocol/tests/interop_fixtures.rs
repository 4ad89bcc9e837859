//! The wire types against real traffic, recorded by tests/interop:
//! - `ironic-39-to-ferrite-agent.json`: the real Ironic 39 conductor driving
//!   ferrite-agent (deploy, cleaning, inspection);
//! - `ipa-13-to-ferrite-conductor.json`: the real ironic-python-agent 13
//!   talking to ferrite-conductor.
//!
//! Both directions: what Ironic sends must parse into our types, and what
//! IPA emits must survive our types unchanged (so we emit it the same way).

use ferrite_protocol::inspection::{InspectionData, InspectionResponse};
use ferrite_protocol::inventory::{ipa_shape_mismatches, Inventory};
use ferrite_protocol::node::{Node, Port};
use ferrite_protocol::steps::{CleanStepsResult, DeployStepsResult, Step};
use ferrite_protocol::{
    CommandList, CommandRequest, CommandResult, FaultBody, HeartbeatRequest, LookupResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

const IRONIC: &str = include_str!("../../tests/fixtures/interop/ironic-39-to-ferrite-agent.json");
const IPA: &str = include_str!("../../tests/fixtures/interop/ipa-13-to-ferrite-conductor.json");

fn exchanges(raw: &str) -> Vec<Value> {
    serde_json::from_str::<Vec<Value>>(raw).expect("recording")
}

fn parse<T: DeserializeOwned>(what: &str, v: &Value) -> T {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{what}: {e}\n{v:#}"))
}

/// Every key path `theirs` has, `ours` has too (nothing dropped).
fn keys_kept(path: &str, theirs: &Value, ours: &Value, missing: &mut Vec<String>) {
    match (theirs, ours) {
        (Value::Object(t), Value::Object(o)) => {
            for (k, tv) in t {
                match o.get(k) {
                    Some(ov) => keys_kept(&format!("{path}.{k}"), tv, ov, missing),
                    None => missing.push(format!("{path}.{k}")),
                }
            }
        }
        (Value::Array(t), Value::Array(o)) => {
            for (i, (tv, ov)) in t.iter().zip(o).enumerate() {
                keys_kept(&format!("{path}[{i}]"), tv, ov, missing);
            }
        }
        _ => {}
    }
}

/// Parse IPA's JSON into our type and back: no key may be lost.
fn round_trip<T: DeserializeOwned + Serialize>(what: &str, theirs: &Value) -> T {
    let parsed: T = parse(what, theirs);
    let ours = serde_json::to_value(&parsed).expect("serialize");
    let mut missing = Vec::new();
    keys_kept(what, theirs, &ours, &mut missing);
    assert!(
        missing.is_empty(),
        "our types drop what IPA sends: {missing:?}"
    );
    parsed
}

fn commands_sent(raw: &str) -> Vec<Value> {
    exchanges(raw)
        .into_iter()
        .filter(|e| e["from"] == "conductor" && e["method"] == "POST")
        .collect()
}

#[test]
fn what_ironic_sends_the_agent_parses() {
    let sent = commands_sent(IRONIC);
    assert!(sent.len() >= 10, "a short recording: {}", sent.len());
    let mut names = Vec::new();
    for e in &sent {
        let req: CommandRequest = parse("command request", &e["body"]);
        let (ext, cmd) = req.split_name().expect("extension.command");
        names.push(format!("{ext}.{cmd}"));
        // Ironic asks with the agent token and says whether it waits.
        let query = e["query"].as_str().unwrap_or_default();
        assert!(query.contains("agent_token="), "{query}");
        assert!(query.contains("wait="), "{query}");
        if let Some(node) = req.params.get("node") {
            let node: Node = parse("the node Ironic sends", node);
            assert!(!node.uuid.is_empty());
        }
        for port in req
            .params
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let _: Port = parse("a port Ironic sends", port);
        }
        if let Some(step) = req.params.get("step") {
            let step: Step = parse("the step Ironic sends", step);
            assert_eq!(step.interface, "deploy");
        }
        if cmd == "execute_deploy_step" {
            let info = &req.params["step"]["args"]["image_info"];
            assert!(
                info["urls"].as_array().is_some_and(|u| !u.is_empty()),
                "{info}"
            );
            assert!(info["disk_format"].is_string(), "{info}");
        }
        if cmd == "install_bootloader" {
            for key in [
                "root_uuid",
                "efi_system_part_uuid",
                "prep_boot_part_uuid",
                "target_boot_mode",
            ] {
                assert!(
                    req.params.contains_key(key),
                    "install_bootloader without {key}"
                );
            }
        }
    }
    for want in [
        "clean.get_clean_steps",
        "clean.execute_clean_step",
        "deploy.get_deploy_steps",
        "deploy.execute_deploy_step",
        "standby.get_partition_uuids",
        "image.install_bootloader",
        "standby.power_off",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} not recorded: {names:?}"
        );
    }
}

#[test]
fn what_ironic_answers_the_agent_parses() {
    let all = exchanges(IRONIC);
    let from_agent = |path: &str| -> Vec<&Value> {
        all.iter()
            .filter(|e| {
                e["from"] == "agent" && e["path"].as_str().is_some_and(|p| p.starts_with(path))
            })
            .collect()
    };
    let lookups = from_agent("/v1/lookup");
    assert!(!lookups.is_empty());
    let mut tokens_given = 0;
    for e in lookups.iter().filter(|e| e["status"] == 200) {
        let resp: LookupResponse = parse("Ironic's lookup response", &e["response"]);
        assert!(!resp.node.uuid.is_empty());
        let config = resp.config.expect("lookup config");
        if config.agent_token.as_deref().is_some_and(|t| t != "******") {
            tokens_given += 1;
        }
    }
    assert!(tokens_given >= 1, "Ironic never handed out a token");
    let beats = from_agent("/v1/heartbeat/");
    assert!(
        beats.iter().all(|e| e["status"] == 202),
        "a heartbeat was refused"
    );
    // ferrite-agent's heartbeats carry what Ironic needs for auto-TLS.
    for e in &beats {
        let hb: HeartbeatRequest = parse("ferrite-agent's heartbeat", &e["body"]);
        assert!(
            hb.callback_url.starts_with("https://"),
            "{}",
            hb.callback_url
        );
        assert!(hb.agent_verify_ca.is_some() && hb.agent_token.is_some());
    }
    let inspections = from_agent("/v1/continue_inspection");
    assert_eq!(inspections.len(), 1);
    let resp: InspectionResponse = parse("Ironic's inspection answer", &inspections[0]["response"]);
    assert!(resp.node_uuid().is_some());
    let _: InspectionData = round_trip("ferrite's inspection data", &inspections[0]["body"]);
}

#[test]
fn what_ipa_emits_survives_our_types() {
    let all = exchanges(IPA);
    for e in all.iter().filter(|e| e["from"] == "agent") {
        let path = e["path"].as_str().unwrap_or_default();
        if path.starts_with("/v1/heartbeat/") {
            let _: HeartbeatRequest = round_trip("IPA's heartbeat", &e["body"]);
        } else if path == "/v1/continue_inspection" {
            let data: InspectionData = round_trip("IPA's inspection data", &e["body"]);
            assert!(data.inventory.is_some_and(|i| !i.interfaces.is_empty()));
        }
    }
    for e in commands_sent(IPA) {
        let name = e["body"]["name"].as_str().unwrap_or_default();
        if e["status"] != 200 {
            let fault: FaultBody = round_trip("IPA's API error", &e["response"]);
            assert!(fault.faultstring.contains("nosuch") || !fault.faultstring.is_empty());
            continue;
        }
        let result: CommandResult = round_trip("IPA's command result", &e["response"]);
        let value = result.command_result.clone().unwrap_or(Value::Null);
        match name {
            "clean.get_clean_steps" => {
                let steps: CleanStepsResult = round_trip("IPA's clean steps", &value);
                assert!(steps
                    .clean_steps
                    .values()
                    .flatten()
                    .any(|s| s.step == "erase_devices_metadata"));
            }
            "deploy.get_deploy_steps" => {
                let _: DeployStepsResult = round_trip("IPA's deploy steps", &value);
            }
            "poll.get_hardware_info" => {
                let _: Inventory = round_trip("IPA's inventory", &value);
                // The key lists we hold for IPA are the real IPA's.
                assert_eq!(ipa_shape_mismatches(&value), Vec::<String>::new());
            }
            _ => {}
        }
    }
    let listed = all
        .iter()
        .find(|e| e["from"] == "conductor" && e["method"] == "GET")
        .expect("a command list");
    let _: CommandList = round_trip("IPA's command list", &listed["response"]);
}

/// ferrite-agent answers a command with exactly the keys IPA answers with.
#[test]
fn ferrite_agent_replies_like_ipa() {
    let shape = |v: &Value| -> Vec<String> {
        let mut keys: Vec<String> = v
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        keys.sort();
        keys
    };
    let ipa: Vec<Value> = commands_sent(IPA);
    let ferrite: Vec<Value> = commands_sent(IRONIC);
    let mut compared = 0;
    for theirs in &ipa {
        let name = &theirs["body"]["name"];
        let Some(ours) = ferrite.iter().find(|e| &e["body"]["name"] == name) else {
            continue;
        };
        assert_eq!(
            shape(&ours["response"]),
            shape(&theirs["response"]),
            "{name}"
        );
        assert_eq!(
            shape(&ours["response"]["command_result"]),
            shape(&theirs["response"]["command_result"]),
            "{name} result"
        );
        compared += 1;
    }
    assert!(compared >= 1, "no command in common between the recordings");
    for e in &ferrite {
        let _: CommandResult = parse("ferrite-agent's reply", &e["response"]);
    }
}
