//! `standby.power_off` / `standby.run_image` outside the ramdisk: the agent
//! on this host is neither PID 1 nor supervised by ferrite's init, so both
//! must fail with a clear error, and the agent (and host) stay up.

use ferrite_tests::Pair;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn power_commands_are_refused_on_a_host() {
    let pair = Pair::start(&[], "52:54:00:aa:bb:01", &[]).await;
    let api = pair.api();
    for (cmd, verb) in [
        ("standby.power_off", "power off"),
        ("standby.run_image", "reboot"),
    ] {
        let res = api.run(cmd, json!({})).await;
        assert_eq!(res["command_status"], "FAILED", "{res}");
        let details = res["command_error"]["details"].as_str().unwrap_or_default();
        assert!(
            details.contains(&format!("refusing to {verb}"))
                && details.contains("ferrite-allow-power=1"),
            "{res}"
        );
    }
    // Still serving.
    let (status, _) = api.get("/v1/status").await;
    assert_eq!(status, 200);
}
