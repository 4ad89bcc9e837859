//! The generic hardware manager: steps that work on any machine. Steps are
//! listed only once they are implemented, so a conductor never schedules a
//! step this agent cannot run.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ferrite_protocol::steps::Step;
use serde_json::Value;
use tracing::info;

use super::burnin::{burn_cpu, disk, memory};
use super::erasure;
use super::inject_files;
use super::manager::{HardwareManager, StepCall, StepDef, StepKind};
use super::uefi_nvram;
use crate::errors::RestError;

/// IPA's `agent_burnin_cpu_timeout` default: one day.
const DEFAULT_BURNIN_SECS: u64 = 86_400;

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
    let message = crate::deploy::prepare_image(
        &call.ctx,
        &call.node,
        image_info,
        call.args.get("configdrive"),
        &call.progress,
    )?;
    Ok(serde_json::json!({ "result": format!("prepare_image: {message}") }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// IPA also lists `delete_configuration`/`create_configuration` (clean)
    /// and `apply_configuration` (deploy) on the `raid` interface. They are
    /// software RAID (mdadm) steps this agent does not implement; listing
    /// them would let Ironic's agent RAID interface schedule them, so they
    /// must stay out until they exist.
    #[test]
    fn advertised_clean_steps() {
        let steps: Vec<(String, i64, String)> = GenericHardwareManager::new(&Default::default())
            .steps()
            .into_iter()
            .filter(|d| d.kinds.contains(&StepKind::Clean))
            .map(|d| (d.step.step, d.step.priority, d.step.interface))
            .collect();
        assert!(steps.contains(&("erase_pstore".into(), 0, "deploy".into())));
        assert!(steps.iter().all(|(_, _, iface)| iface == "deploy"));
    }
}
