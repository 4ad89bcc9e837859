//! The generic hardware manager: steps that work on any machine. Steps are
//! listed only once they are implemented, so a conductor never schedules a
//! step this agent cannot run.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ferrite_protocol::steps::Step;
use serde_json::Value;
use tracing::info;

use super::burnin::network::{self, Role};
use super::burnin::{burn_cpu, disk, memory};
use super::erasure;
use super::inject_files;
use super::manager::{HardwareManager, StepCall, StepDef, StepKind};
use super::raid;
use super::uefi_nvram;
use crate::errors::RestError;

/// IPA's `agent_burnin_cpu_timeout` default: one day.
const DEFAULT_BURNIN_SECS: u64 = 86_400;
/// IPA's `agent_burnin_fio_network_runtime` default: six hours a direction.
const DEFAULT_NETWORK_RUNTIME_SECS: u64 = 21_600;
/// IPA's `agent_burnin_fio_network_pairing_timeout` default; also how
/// long the two sides wait to connect (IPA's reader retries forever).
const DEFAULT_PAIRING_TIMEOUT_SECS: u64 = 900;
/// No byte moving on a network burn-in stream for this long fails it.
const NETWORK_STALL: Duration = Duration::from_secs(30);

pub struct GenericHardwareManager {
    /// `ipa-inject-files-priority` (0: the step runs only when asked for).
    inject_files_priority: i64,
}

impl GenericHardwareManager {
    pub fn new(config: &crate::config::Config) -> Self {
        Self {
            inject_files_priority: i64::from(config.inject_files_priority),
        }
    }
}

impl HardwareManager for GenericHardwareManager {
    fn name(&self) -> &'static str {
        "generic_hardware_manager"
    }

    fn class_name(&self) -> &'static str {
        "GenericHardwareManager"
    }

    fn version(&self) -> &'static str {
        "1.2"
    }

    fn support(&self) -> u8 {
        1
    }

    fn steps(&self) -> Vec<StepDef> {
        vec![
            StepDef {
                step: step("burnin_cpu", 0, "deploy"),
                kinds: &[StepKind::Clean, StepKind::Service],
                run: Arc::new(burnin_cpu),
            },
            StepDef {
                step: step("burnin_memory", 0, "deploy"),
                kinds: &[StepKind::Clean, StepKind::Service],
                run: Arc::new(burnin_memory),
            },
            StepDef {
                step: step("burnin_disk", 0, "deploy"),
                kinds: &[StepKind::Clean, StepKind::Service],
                run: Arc::new(burnin_disk),
            },
            StepDef {
                step: step("burnin_network", 0, "deploy"),
                kinds: &[StepKind::Clean, StepKind::Service],
                run: Arc::new(burnin_network),
            },
            StepDef {
                step: step("erase_devices_metadata", 99, "deploy"),
                kinds: &[StepKind::Clean],
                run: Arc::new(erasure::erase_devices_metadata),
            },
            StepDef {
                step: step("erase_devices_metadata", 0, "deploy"),
                kinds: &[StepKind::Deploy],
                run: Arc::new(erasure::erase_devices_metadata),
            },
            StepDef {
                step: step("erase_devices", 10, "deploy"),
                kinds: &[StepKind::Clean],
                run: Arc::new(|call| erasure::erase_devices(call, false)),
            },
            StepDef {
                step: step("erase_devices_express", 0, "deploy"),
                kinds: &[StepKind::Clean],
                run: Arc::new(|call| erasure::erase_devices(call, true)),
            },
            StepDef {
                step: Step {
                    argsinfo: Some(uefi_nvram::argsinfo()),
                    ..step("clean_uefi_nvram", 0, "deploy")
                },
                kinds: &[StepKind::Clean, StepKind::Deploy],
                run: Arc::new(uefi_nvram::clean_uefi_nvram),
            },
            StepDef {
                step: step("delete_configuration", 0, "raid"),
                kinds: &[StepKind::Clean],
                run: Arc::new(raid::delete_configuration),
            },
            StepDef {
                step: step("create_configuration", 0, "raid"),
                kinds: &[StepKind::Clean],
                run: Arc::new(raid::create_configuration),
            },
            StepDef {
                step: Step {
                    argsinfo: Some(raid_apply_argsinfo()),
                    ..step("apply_configuration", 0, "raid")
                },
                kinds: &[StepKind::Deploy],
                run: Arc::new(raid::apply_configuration),
            },
            StepDef {
                step: step("erase_pstore", 0, "deploy"),
                kinds: &[StepKind::Clean],
                run: Arc::new(erase_pstore),
            },
            StepDef {
                step: step("write_image", 0, "deploy"),
                kinds: &[StepKind::Deploy, StepKind::Service],
                run: Arc::new(write_image),
            },
            StepDef {
                step: Step {
                    argsinfo: Some(inject_files::argsinfo()),
                    ..step("inject_files", self.inject_files_priority, "deploy")
                },
                kinds: &[StepKind::Deploy, StepKind::Service],
                run: Arc::new(inject_files::inject_files),
            },
        ]
    }
}

/// IPA's `RAID_APPLY_CONFIGURATION_ARGSINFO`.
fn raid_apply_argsinfo() -> Value {
    serde_json::json!({
        "raid_config": {
            "description": "The RAID configuration to apply.",
            "required": true,
        },
        "delete_existing": {
            "description": "Setting this to 'True' indicates to delete existing RAID configuration prior to creating the new configuration. Default value is 'True'.",
            "required": false,
        },
    })
}

fn step(name: &str, priority: i64, interface: &str) -> Step {
    Step {
        step: name.into(),
        priority,
        interface: interface.into(),
        reboot_requested: false,
        abortable: true,
        argsinfo: None,
        args: None,
        requires_ramdisk: None,
    }
}

fn burnin_cpu(call: &StepCall) -> Result<Value, RestError> {
    let secs = call
        .u64_setting("agent_burnin_cpu_timeout")?
        .unwrap_or(DEFAULT_BURNIN_SECS);
    let cpus = call.u64_setting("agent_burnin_cpu_cpu")?.unwrap_or(0) as usize;
    info!(seconds = secs, cpus, "CPU burn-in started");
    let rounds = burn_cpu(Duration::from_secs(secs), cpus);
    info!(rounds, "CPU burn-in finished");
    Ok(Value::Null)
}

/// `burnin_memory`: IPA's stress-ng `--vm` burn-in, natively, in a child
/// process (see `burnin::memory`); `agent_burnin_vm_outputfile` gets the
/// per-worker results, as stress-ng's `--log-file` would get its log.
fn burnin_memory(call: &StepCall) -> Result<Value, RestError> {
    let secs = call
        .u64_setting("agent_burnin_vm_timeout")?
        .unwrap_or(DEFAULT_BURNIN_SECS);
    let workers = call.u64_setting("agent_burnin_vm_vm")?.unwrap_or(0);
    let bytes = match call.setting("agent_burnin_vm_vm-bytes") {
        None => memory::VmBytes::Percent(98.0),
        Some(Value::String(s)) => memory::VmBytes::parse(s).map_err(RestError::invalid_params)?,
        Some(Value::Number(n)) => {
            memory::VmBytes::parse(&n.to_string()).map_err(RestError::invalid_params)?
        }
        Some(other) => {
            return Err(RestError::invalid_params(format!(
                "agent_burnin_vm_vm-bytes must be a size or a percentage, got {other}"
            )))
        }
    };
    let outputfile = call
        .setting("agent_burnin_vm_outputfile")
        .and_then(Value::as_str)
        .map(std::path::PathBuf::from);
    let available = memory::mem_available(&call.ctx.config.procfs_root).map_err(|e| {
        RestError::command_execution(format!("memory burn-in: reading meminfo: {e}"))
    })?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let plan = memory::plan(workers, bytes, available, cpus, Duration::from_secs(secs));
    info!(?plan, available, "memory burn-in started");
    let exe = std::env::current_exe()
        .map_err(|e| RestError::command_execution(format!("memory burn-in: {e}")))?;
    let result = memory::run_in_child(&exe, plan);
    if let Some(path) = &outputfile {
        let text = match &result {
            Ok(report) => format!(
                "{plan:?}\n{}\n",
                serde_json::to_string(report).unwrap_or_default()
            ),
            Err(e) => format!("{plan:?}\nfailed: {e}\n"),
        };
        if let Err(e) = std::fs::write(path, text) {
            tracing::warn!(path = %path.display(), error = %e, "could not write the burn-in output file");
        }
    }
    let report = result
        .map_err(|e| RestError::command_execution(format!("memory burn-in (vm) failed: {e}")))?;
    let (passes, verified): (u64, u64) = report
        .workers
        .iter()
        .flatten()
        .fold((0, 0), |(p, b), r| (p + r.passes, b + r.bytes_verified));
    info!(passes, bytes_verified = verified, "memory burn-in passed");
    Ok(Value::Null)
}

/// `burnin_disk`: IPA's fio job natively (see `burnin::disk`) on every
/// disk at once; `agent_burnin_fio_disk_outputfile` gets the per-disk
/// reports as JSON.
fn burnin_disk(call: &StepCall) -> Result<Value, RestError> {
    let loops = call
        .u64_setting("agent_burnin_fio_disk_loops")?
        .unwrap_or(4);
    let runtime = call
        .u64_setting("agent_burnin_fio_disk_runtime")?
        .filter(|s| *s > 0)
        .map(Duration::from_secs);
    // smartctl's long self-test has no native equivalent here yet: refuse
    // before any disk is touched rather than skip it silently.
    if call.bool_setting("agent_burnin_fio_disk_smart_test", false)? {
        return Err(RestError::invalid_params(
            "agent_burnin_fio_disk_smart_test is not supported by ferrite-agent",
        ));
    }
    let outputfile = call
        .setting("agent_burnin_fio_disk_outputfile")
        .and_then(Value::as_str)
        .map(std::path::PathBuf::from);
    let cfg = &call.ctx.config;
    let devices =
        crate::disk::list_block_devices(&cfg.sysfs_root, &cfg.dev_root, &cfg.disk_policy());
    let plan = disk::Plan { loops, runtime };
    info!(?plan, disks = devices.len(), "disk burn-in started");
    let results: Vec<Result<disk::DiskReport, String>> = std::thread::scope(|s| {
        let workers: Vec<_> = devices
            .iter()
            .map(|d| {
                s.spawn(move || {
                    let name = d.path.display().to_string();
                    let dev = disk::DirectDisk::open(&d.path)
                        .map_err(|e| format!("{name}: opening for direct I/O: {e}"))?;
                    disk::burn(&dev, &name, plan)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err("a burn-in worker panicked".into()))
            })
            .collect()
    });
    if let Some(path) = &outputfile {
        let json: Vec<Value> = results
            .iter()
            .map(|r| match r {
                Ok(report) => serde_json::to_value(report).unwrap_or_default(),
                Err(e) => serde_json::json!({ "error": e }),
            })
            .collect();
        let text =
            serde_json::to_string_pretty(&serde_json::json!({ "disks": json })).unwrap_or_default();
        if let Err(e) = std::fs::write(path, text) {
            tracing::warn!(path = %path.display(), error = %e, "could not write the burn-in output file");
        }
    }
    let mut problems = Vec::new();
    for r in &results {
        match r {
            Ok(report) => {
                info!(?report, "disk burn-in finished");
                problems.extend(disk::verdict(report));
            }
            Err(e) => problems.push(e.clone()),
        }
    }
    if problems.is_empty() {
        Ok(Value::Null)
    } else {
        Err(RestError::command_execution(format!(
            "disk burn-in (fio) failed: {}",
            problems.join("; ")
        )))
    }
}

/// `burnin_network`: IPA's fio `net` job natively (see `burnin::network`)
/// between this node and a partner, named statically in
/// `agent_burnin_fio_network_config` or found through the conductor
/// (`ironic::pairing`). Our role's direction runs first, then the other;
/// `agent_burnin_fio_network_outputfile` gets `.writer`/`.reader` reports.
/// Ferrite-only: `agent_burnin_fio_network_port` (IPA's 9000) and
/// `agent_burnin_fio_network_connect_timeout` (how long the sides wait to
/// connect; the pairing timeout's default).
fn burnin_network(call: &StepCall) -> Result<Value, RestError> {
    let runtime = call
        .u64_setting("agent_burnin_fio_network_runtime")?
        .unwrap_or(DEFAULT_NETWORK_RUNTIME_SECS);
    let outputfile = call
        .setting("agent_burnin_fio_network_outputfile")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let port = match call.u64_setting("agent_burnin_fio_network_port")? {
        None => network::DEFAULT_PORT,
        Some(p) => u16::try_from(p).ok().filter(|p| *p > 0).ok_or_else(|| {
            RestError::invalid_params(format!(
                "agent_burnin_fio_network_port must be a TCP port, got {p}"
            ))
        })?,
    };
    let connect_within = call
        .u64_setting("agent_burnin_fio_network_connect_timeout")?
        .unwrap_or(DEFAULT_PAIRING_TIMEOUT_SECS);
    // The address the conductor hands the partner (the one Ironic calls
    // us on); the writer listens where the agent API does, on every
    // address by default, so a static partner may use any of ours.
    let local = call.ctx.advertise_ip().ok_or_else(|| {
        RestError::cleaning("fio (network): the agent does not know its own address yet")
    })?;
    let listen = call.ctx.config.listen_host;

    let (role, partner) = match call.setting("agent_burnin_fio_network_config") {
        Some(config) => static_pairing(config)?,
        None => dynamic_pairing(call, local)?,
    };
    let role = match role.as_deref().and_then(Role::parse) {
        Some(r) => r,
        None => {
            return Err(RestError::cleaning(format!(
                "fio (network) found an unknown role: {}",
                role.as_deref().unwrap_or("None")
            )))
        }
    };
    let Some(partner) = partner.filter(|p| !p.is_empty()) else {
        return Err(RestError::cleaning("fio (network) failed to find partner"));
    };
    let partner_addr = resolve(&partner, port)?;
    info!(%partner, role = role.word(), runtime, %local, %listen, port, "network burn-in started");
    let plan = network::Plan {
        runtime: Duration::from_secs(runtime),
        port,
        connect_within: Duration::from_secs(connect_within),
        stall: NETWORK_STALL,
    };
    for (order, direction) in [(1, role), (2, role.other())] {
        let result = match direction {
            Role::Writer => network::write(listen, plan),
            Role::Reader => network::read(partner_addr, plan),
        };
        if let Some(base) = &outputfile {
            let path = format!("{base}.{}", direction.word());
            write_direction_report(&path, order, direction, &result);
        }
        match result {
            // Flat fields: an operator reading the console sees the figures.
            Ok(report) => info!(
                direction = order,
                role = %report.role.word(),
                local = %report.local,
                partner = %report.partner,
                streams = report.streams,
                bytes = report.bytes,
                seconds = report.seconds,
                mib_per_s = report.mib_per_s,
                "network burn-in direction finished"
            ),
            Err(e) => {
                return Err(RestError::command_execution(format!(
                    "fio (network) failed with error: {} ({}): {e}",
                    direction.word(),
                    partner
                )))
            }
        }
    }
    Ok(Value::Null)
}

/// `agent_burnin_fio_network_config`: `{"role", "partner"}`, as an object
/// or its JSON text (the form `baremetal node set --driver-info` leaves).
fn static_pairing(config: &Value) -> Result<(Option<String>, Option<String>), RestError> {
    let parsed;
    let object = match config {
        Value::String(text) => {
            parsed = serde_json::from_str::<Value>(text).map_err(|e| {
                RestError::invalid_params(format!(
                    "agent_burnin_fio_network_config is not a JSON object: {e}"
                ))
            })?;
            &parsed
        }
        other => other,
    };
    let Some(object) = object.as_object() else {
        return Err(RestError::invalid_params(
            "agent_burnin_fio_network_config must be an object with role and partner",
        ));
    };
    let text = |key: &str| object.get(key).and_then(Value::as_str).map(str::to_string);
    Ok((text("role"), text("partner")))
}

/// Pair through the conductor the backend URL names (`ironic::pairing`).
fn dynamic_pairing(
    call: &StepCall,
    local: std::net::IpAddr,
) -> Result<(Option<String>, Option<String>), RestError> {
    use crate::hardware::burnin::pairing::{conductor_url, Member, PairingClient};
    let timeout = call
        .u64_setting("agent_burnin_fio_network_pairing_timeout")?
        .unwrap_or(DEFAULT_PAIRING_TIMEOUT_SECS);
    let group = call
        .setting("agent_burnin_fio_network_pairing_group_name")
        .and_then(Value::as_str)
        .filter(|g| !g.is_empty())
        .unwrap_or("ironic.network-burnin");
    let Some(backend) = call
        .setting("agent_burnin_fio_network_pairing_backend_url")
        .and_then(Value::as_str)
        .filter(|b| !b.is_empty())
    else {
        return Err(RestError::cleaning(
            "fio (network): dynamic pairing config is missing \
             agent_burnin_fio_network_pairing_backend_url",
        ));
    };
    let config = &call.ctx.config;
    let cleaning =
        |e: crate::hardware::burnin::pairing::PairingError| RestError::cleaning(e.to_string());
    let client = PairingClient::new(conductor_url(backend, config).map_err(cleaning)?, config)
        .map_err(cleaning)?;
    let node_uuid = call
        .ctx
        .node()
        .map(|n| n.uuid)
        .or_else(|| {
            call.node
                .get("uuid")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .ok_or_else(|| {
            RestError::cleaning("fio (network): the agent has not looked its node up")
        })?;
    let agent_token = call.ctx.token().ok_or_else(|| {
        RestError::cleaning("fio (network): no agent token to show the conductor")
    })?;
    let member = Member {
        node_uuid,
        agent_token,
        group: group.to_string(),
    };
    info!(group, backend, "dynamic pairing for network burn-in");
    let (role, partner) = tokio::runtime::Handle::current()
        .block_on(client.find_partner(&member, local, Duration::from_secs(timeout)))
        .map_err(cleaning)?;
    Ok((Some(role), Some(partner.to_string())))
}

/// The partner's address on the burn-in port (a name is resolved).
fn resolve(partner: &str, port: u16) -> Result<std::net::SocketAddr, RestError> {
    use std::net::ToSocketAddrs;
    let host = partner.trim_start_matches('[').trim_end_matches(']');
    (host, port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            RestError::cleaning(format!(
                "fio (network): cannot resolve the partner {partner}"
            ))
        })
}

/// One direction's output file; `order` says whether it ran first or second.
fn write_direction_report(
    path: &str,
    order: u8,
    role: Role,
    result: &Result<network::DirectionReport, network::NetError>,
) {
    let mut json = match result {
        Ok(report) => serde_json::to_value(report).unwrap_or_default(),
        Err(e) => serde_json::json!({ "role": role, "error": e.to_string() }),
    };
    if let Some(object) = json.as_object_mut() {
        object.insert("direction".into(), order.into());
    }
    let text = serde_json::to_string_pretty(&json).unwrap_or_default();
    if let Err(e) = std::fs::write(path, text) {
        tracing::warn!(path, error = %e, "could not write the burn-in output file");
    }
}

/// `erase_pstore`: the pstore mount is found in procfs `mounts` (a fixture
/// tree in tests), so the step never guesses a path.
fn erase_pstore(call: &StepCall) -> Result<Value, RestError> {
    // Like power: the host's own crash records are not ours to erase. A
    // fixture procfs (tests) names its own pstore directory.
    if !crate::power::in_ramdisk() && call.ctx.config.procfs_root == Path::new("/proc") {
        return Err(RestError::cleaning(
            "refusing to erase pstore: the agent is not running as the ramdisk's init (PID 1)",
        ));
    }
    let mounts_path = call.ctx.config.procfs_root.join("mounts");
    let mounts = std::fs::read_to_string(&mounts_path)
        .map_err(|e| RestError::cleaning(format!("reading {}: {e}", mounts_path.display())))?;
    let Some(root) = super::pstore::find_mount(&mounts) else {
        info!("No pstore found");
        return Ok(Value::Null);
    };
    info!(path = %root.display(), "Cleaning up pstore");
    let removed = super::pstore::erase(&root)
        .map_err(|e| RestError::cleaning(format!("erasing pstore in {}: {e}", root.display())))?;
    info!(entries = removed.len(), "pstore erased");
    Ok(Value::Null)
}

/// The `write_image` deploy step: `prepare_image` in-process; its result is
/// what the `prepare_image` command would have returned.
fn write_image(call: &StepCall) -> Result<Value, RestError> {
    let image_info = call
        .args
        .get("image_info")
        .ok_or_else(|| RestError::invalid_params("write_image needs image_info"))?;
    let info =
        crate::deploy::ImageInfo::parse(image_info, crate::deploy::stream::md5_enabled(&call.ctx))
            .map_err(crate::deploy::DeployError::from)?;
    let node: ferrite_protocol::LookupNode =
        serde_json::from_value(Value::Object(call.node.clone()))
            .map_err(|e| RestError::invalid_params(format!("write_image: the node: {e}")))?;
    let message = crate::deploy::prepare_image(
        &call.ctx,
        &node,
        &info,
        call.args.get("configdrive"),
        &call.progress,
    )?;
    Ok(serde_json::json!({ "result": format!("prepare_image: {message}") }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As IPA: the software RAID steps on the `raid` interface (clean:
    /// delete/create, deploy: apply), everything else on `deploy`.
    #[test]
    fn advertised_clean_steps() {
        let steps: Vec<(String, i64, String)> = GenericHardwareManager::new(&Default::default())
            .steps()
            .into_iter()
            .filter(|d| d.kinds.contains(&StepKind::Clean))
            .map(|d| (d.step.step, d.step.priority, d.step.interface))
            .collect();
        assert!(steps.contains(&("erase_pstore".into(), 0, "deploy".into())));
        let raid: Vec<&str> = steps
            .iter()
            .filter(|(_, _, iface)| iface == "raid")
            .map(|(name, _, _)| name.as_str())
            .collect();
        assert_eq!(raid, ["delete_configuration", "create_configuration"]);
        assert!(steps
            .iter()
            .all(|(_, _, iface)| iface == "deploy" || iface == "raid"));
        let deploy: Vec<String> = GenericHardwareManager::new(&Default::default())
            .steps()
            .into_iter()
            .filter(|d| d.kinds.contains(&StepKind::Deploy) && d.step.interface == "raid")
            .map(|d| d.step.step)
            .collect();
        assert_eq!(deploy, ["apply_configuration"]);
    }
}
