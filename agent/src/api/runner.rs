//! Runs commands and keeps their results: one command at a time, results
//! in start order (the conductor reads the last one as "current").

use std::sync::{Arc, Mutex, MutexGuard};

use ferrite_protocol::{CommandResult, CommandStatus};
use serde_json::{json, Value};
use tokio::sync::watch;
use tracing::{error, info};

use super::registry::{Mode, Params, Registry};
use crate::command_progress::{CommandProgress, ProgressSink};
use crate::errors::RestError;
use crate::state::AgentContext;

/// One command's life: its result, and a flag that flips when it ends.
pub struct CommandRecord {
    result: Mutex<CommandResult>,
    done: watch::Sender<bool>,
}

impl CommandRecord {
    pub fn snapshot(&self) -> CommandResult {
        lock(&self.result).clone()
    }

    pub fn id(&self) -> String {
        lock(&self.result).id.clone()
    }

    fn is_running(&self) -> bool {
        lock(&self.result).command_status.is_running()
    }

    /// Resolve once the command has ended.
    pub async fn wait(&self) {
        let mut rx = self.done.subscribe();
        let _ = rx.wait_for(|done| *done).await;
    }

    fn finish(&self, update: impl FnOnce(&mut CommandResult)) {
        update(&mut lock(&self.result));
        self.done.send_replace(true);
    }
}

/// A running command's interim results (progress): what
/// `GET /v1/commands/<id>` shows while the status is still RUNNING.
impl ProgressSink for CommandRecord {
    fn report(&self, value: Value) {
        let mut r = lock(&self.result);
        if r.command_status.is_running() {
            r.command_result = Some(value);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Default)]
pub struct CommandRunner {
    records: Mutex<Vec<Arc<CommandRecord>>>,
}

impl CommandRunner {
    pub fn list(&self) -> Vec<CommandResult> {
        lock(&self.records).iter().map(|r| r.snapshot()).collect()
    }

    pub fn get(&self, id: &str) -> Option<Arc<CommandRecord>> {
        lock(&self.records).iter().find(|r| r.id() == id).cloned()
    }

    /// Validate and start `name`. Errors here are HTTP errors and leave no
    /// record; a command that fails while running is recorded as FAILED.
    pub fn start(
        &self,
        ctx: &Arc<AgentContext>,
        registry: &Registry,
        name: &str,
        params: Params,
    ) -> Result<Arc<CommandRecord>, RestError> {
        let resolved = registry.resolve(name)?;
        if let Some(validate) = resolved.spec.validator {
            validate(&params)?;
        }
        let record = {
            let mut records = lock(&self.records);
            if let Some(last) = records.last().filter(|r| r.is_running()) {
                return Err(RestError::busy(&last.snapshot().command_name));
            }
            let record = Arc::new(CommandRecord {
                result: Mutex::new(CommandResult {
                    id: uuid::Uuid::new_v4().to_string(),
                    command_name: resolved.command.to_string(),
                    command_status: CommandStatus::Running,
                    command_error: None,
                    command_result: None,
                }),
                done: watch::channel(false).0,
            });
            records.push(record.clone());
            record
        };
        info!(command = name, id = %record.id(), "executing command");

        let mode = resolved.spec.mode;
        let short_name = resolved.command.to_string();
        let full_name = name.to_string();
        let progress = CommandProgress::to(&record);
        let work = tokio::spawn((resolved.spec.handler)(ctx.clone(), params, progress));
        let ctx = ctx.clone();
        let rec = record.clone();
        tokio::spawn(async move {
            let outcome = work.await.unwrap_or_else(|e| {
                Err(RestError::command_execution(format!(
                    "command crashed: {e}"
                )))
            });
            rec.finish(|r| match outcome {
                Ok(value) => {
                    r.command_status = CommandStatus::Succeeded;
                    r.command_result = wrap_result(mode, &short_name, value);
                }
                Err(err) => {
                    error!(command = %full_name, error = %err, "command failed");
                    r.command_status = err.status;
                    r.command_error = Some(err.to_command_error());
                    // IPA records a synchronous failure under the dotted name.
                    if mode == Mode::Sync {
                        r.command_name = full_name.clone();
                    }
                }
            });
            info!(command = %full_name, status = ?rec.snapshot().command_status, "command finished");
            if mode == Mode::Async {
                ctx.force_heartbeat();
            }
        });
        Ok(record)
    }
}

/// IPA wraps bare strings: `{"result": "<cmd>: <text>"}` for async commands,
/// `{"result": "<text>"}` for sync ones; `null` stays `null`.
fn wrap_result(mode: Mode, command: &str, value: Value) -> Option<Value> {
    match value {
        Value::Null => None,
        Value::String(text) if mode == Mode::Async => {
            Some(json!({"result": format!("{command}: {text}")}))
        }
        Value::String(text) => Some(json!({ "result": text })),
        other => Some(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_results_are_wrapped_like_ipa() {
        assert_eq!(
            wrap_result(Mode::Async, "prepare_image", json!("done")),
            Some(json!({"result": "prepare_image: done"}))
        );
        assert_eq!(
            wrap_result(Mode::Sync, "sync", json!("ok")),
            Some(json!({"result": "ok"}))
        );
        assert_eq!(wrap_result(Mode::Sync, "x", Value::Null), None);
        assert_eq!(
            wrap_result(Mode::Sync, "x", json!({"a": 1})),
            Some(json!({"a": 1}))
        );
    }
}
