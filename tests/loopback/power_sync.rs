//! The power-state sync loop against sushy-tools' Redfish emulator: a
//! machine powered off behind the conductor's back is powered back on; a
//! BMC that stops answering puts the node into maintenance with a power
//! failure after `max_retries + 1` rounds; when it answers again, the
//! recovery task ends the maintenance. Short intervals via the flags.

use std::time::{Duration, Instant};

use ferrite_tests::{wait_for, Conductor};
use serde_json::{json, Value};

use crate::redfish::{start_emulator, system, Emulator, SYSTEM};

const INTERVAL: u64 = 2;

async fn emulator_power(e: &Emulator) -> String {
    system(e).await["PowerState"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn wait_node(
    c: &Conductor,
    uuid: &str,
    what: &str,
    within: u64,
    ok: fn(&Value) -> bool,
) -> Value {
    wait_for(what, Duration::from_secs(within), || {
        let n = c.node(uuid);
        async move {
            let n = n.await;
            ok(&n).then_some(n)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn power_sync_restores_power_and_fences_a_dead_bmc() {
    let mut emulator = start_emulator().await;
    let interval = INTERVAL.to_string();
    let c = Conductor::start(&[
        "--sync-power-state-interval",
        &interval,
        "--power-failure-recovery-interval",
        &interval,
        "--power-state-sync-max-retries",
        "3",
    ])
    .await;
    let node = c
        .create_node(json!({"driver": "redfish", "name": "sync-0", "driver_info": {
            "redfish_address": emulator.url, "redfish_system_id": format!("/redfish/v1/Systems/{SYSTEM}"),
            "redfish_username": "admin", "redfish_password": "password"}}))
        .await;
    let uuid = node["uuid"].as_str().unwrap().to_string();
    assert_eq!(c.act(&uuid, json!({"target": "manage"})).await.0, 202);
    c.wait_state(&uuid, "manageable", Duration::from_secs(60))
        .await;
    assert_eq!(c.set_power(&uuid, "power on").await, 202);
    wait_node(&c, &uuid, "power on", 90, |n| {
        n["power_state"] == "power on" && n["target_power_state"].is_null()
    })
    .await;

    // Behind the conductor's back: the BMC powers the machine off.
    let r = reqwest::Client::new()
        .post(format!(
            "{}/redfish/v1/Systems/{SYSTEM}/Actions/ComputerSystem.Reset",
            emulator.url
        ))
        .json(&json!({"ResetType": "ForceOff"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "ForceOff: {}", r.status());
    wait_for("the machine off", Duration::from_secs(30), || {
        let e = &emulator;
        async move { (emulator_power(e).await == "Off").then_some(()) }
    })
    .await;
    // force_power_state_during_sync (default true): back to the record.
    wait_for(
        "the sync to power it back on",
        Duration::from_secs(60),
        || {
            let e = &emulator;
            async move { (emulator_power(e).await == "On").then_some(()) }
        },
    )
    .await;
    let n = wait_node(&c, &uuid, "the power action to finish", 30, |n| {
        n["target_power_state"].is_null()
    })
    .await;
    assert_eq!(n["power_state"], "power on", "{n}");
    assert_eq!(n["maintenance"], false, "{n}");
    let log = c.proc.log_text();
    assert!(
        log.contains("does not match expected state. Changing hardware state to 'power on'"),
        "no forced power action in the log"
    );

    // A round that finds the states matching resets the failure count
    // (Ironic counts the forced round as a try): wait for one, then
    // the BMC goes away: 3 failed rounds only warn, the 4th fences.
    let rounds = |log: &str| log.matches("power state sync done").count();
    let seen = rounds(&c.proc.log_text());
    wait_for(
        "a sync round after the power action",
        Duration::from_secs(30),
        || {
            let log = c.proc.log_text();
            async move { (rounds(&log) >= seen + 2).then_some(()) }
        },
    )
    .await;
    emulator.stop();
    let stopped = Instant::now();
    let n = wait_node(&c, &uuid, "maintenance for a power failure", 60, |n| {
        n["maintenance"] == true
    })
    .await;
    let took = stopped.elapsed();
    assert!(
        took >= Duration::from_secs(3 * INTERVAL),
        "fenced after {took:?}, before max_retries + 1 rounds"
    );
    assert_eq!(n["fault"], "power failure", "{n}");
    assert!(n["power_state"].is_null(), "{n}");
    let reason = n["maintenance_reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        reason.starts_with(&format!(
            "During sync_power_state, max retries exceeded for node {uuid}, node state None does not match expected state 'power on'. Updating DB state to 'None' Switching node to maintenance mode. Error: "
        )),
        "{reason}"
    );
    assert_eq!(n["last_error"], reason.as_str());
    let log = c.proc.log_text();
    for attempt in 1..=3 {
        assert!(
            log.contains(&format!("attempt {attempt} of 3")),
            "no warning for attempt {attempt}"
        );
    }
    let history: Value = c
        .request(
            reqwest::Method::GET,
            &format!("/v1/nodes/{uuid}/history?detail=true"),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let events = history["history"].as_array().unwrap();
    let last = events.last().expect("a history event");
    assert_eq!(last["event"], reason.as_str(), "{history}");
    assert_eq!(last["event_type"], "monitoring", "{history}");
    assert_eq!(last["severity"], "ERROR", "{history}");
    assert_eq!(last["conductor"], "test-conductor", "{history}");

    // The BMC is back (the machine still on): recovery ends the maintenance,
    // and the next matching sync clears the error.
    emulator.restart().await;
    let n = wait_node(&c, &uuid, "recovery from the power failure", 60, |n| {
        n["maintenance"] == false
    })
    .await;
    assert!(n["fault"].is_null(), "{n}");
    assert!(n["maintenance_reason"].is_null(), "{n}");
    assert_eq!(n["power_state"], "power on", "{n}");
    wait_node(
        &c,
        &uuid,
        "last_error cleared by a matching sync",
        30,
        |n| n["last_error"].is_null(),
    )
    .await;
    assert_eq!(emulator_power(&emulator).await, "On");
}
