//! The command registry: IPA extensions (`standby`, `clean`, `deploy`, `log`,
//! `system`, ...) each register named commands here.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::command_progress::CommandProgress;
use crate::errors::RestError;
use crate::state::AgentContext;

pub type Params = Map<String, Value>;
pub type CommandFuture = Pin<Box<dyn Future<Output = Result<Value, RestError>> + Send>>;
pub type Handler =
    Arc<dyn Fn(Arc<AgentContext>, Params, CommandProgress) -> CommandFuture + Send + Sync>;
/// Checks run before a command is accepted; failures are HTTP 400 and the
/// command is not recorded (IPA's `async_command` validators).
pub type Validator = fn(&Params) -> Result<(), RestError>;

/// Sync commands finish inside the request; async ones return RUNNING at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Sync,
    Async,
}

#[derive(Clone)]
pub struct CommandSpec {
    pub mode: Mode,
    pub validator: Option<Validator>,
    pub handler: Handler,
}

/// A resolved `<extension>.<command>`.
pub struct Resolved<'a> {
    pub extension: &'a str,
    pub command: &'a str,
    pub spec: &'a CommandSpec,
}

#[derive(Default, Clone)]
pub struct Registry {
    extensions: BTreeMap<String, BTreeMap<String, CommandSpec>>,
}

impl Registry {
    /// Register a command whose body blocks (disk, CPU): it runs on the
    /// blocking pool so the API stays responsive.
    pub fn blocking<F>(&mut self, ext: &str, name: &str, mode: Mode, f: F) -> &mut Self
    where
        F: Fn(Arc<AgentContext>, Params, CommandProgress) -> Result<Value, RestError>
            + Send
            + Sync
            + 'static,
    {
        let f = Arc::new(f);
        let handler: Handler = Arc::new(move |ctx, params, progress| {
            let f = f.clone();
            Box::pin(async move {
                tokio::task::spawn_blocking(move || f(ctx, params, progress))
                    .await
                    .unwrap_or_else(|e| {
                        Err(RestError::command_execution(format!(
                            "command crashed: {e}"
                        )))
                    })
            })
        });
        self.insert(ext, name, mode, None, handler)
    }

    pub fn insert(
        &mut self,
        ext: &str,
        name: &str,
        mode: Mode,
        validator: Option<Validator>,
        handler: Handler,
    ) -> &mut Self {
        self.extensions.entry(ext.to_string()).or_default().insert(
            name.to_string(),
            CommandSpec {
                mode,
                validator,
                handler,
            },
        );
        self
    }

    /// Attach a validator to an already registered command. Naming one
    /// that is not registered is a bug in the agent's own wiring (a
    /// misspelt name would leave the command unvalidated), so it panics at
    /// registration, which every test of the API runs, rather than pass
    /// quietly.
    pub fn validate_with(&mut self, ext: &str, name: &str, validator: Validator) -> &mut Self {
        let Some(spec) = self.extensions.get_mut(ext).and_then(|e| e.get_mut(name)) else {
            panic!("validate_with: no command {ext}.{name} is registered");
        };
        spec.validator = Some(validator);
        self
    }

    /// IPA's resolution: bad shape → 400, unknown extension → 404,
    /// unknown command in a known extension → 400.
    pub fn resolve<'a>(&'a self, full_name: &'a str) -> Result<Resolved<'a>, RestError> {
        let (ext, cmd) = full_name
            .split_once('.')
            .filter(|(e, c)| !e.is_empty() && !c.is_empty())
            .ok_or_else(|| RestError::invalid_command(format!("Invalid command: {full_name}")))?;
        let commands = self
            .extensions
            .get(ext)
            .ok_or_else(|| RestError::not_found("Extension", ext))?;
        let spec = commands
            .get(cmd)
            .ok_or_else(|| RestError::invalid_command(format!("Unknown command: {cmd}")))?;
        Ok(Resolved {
            extension: ext,
            command: cmd,
            spec,
        })
    }

    pub fn command_names(&self) -> Vec<String> {
        self.extensions
            .iter()
            .flat_map(|(ext, cmds)| cmds.keys().map(move |c| format!("{ext}.{c}")))
            .collect()
    }
}

/// Fetch a required parameter as a JSON object.
pub fn object_param<'a>(
    params: &'a Params,
    key: &str,
) -> Result<&'a Map<String, Value>, RestError> {
    match params.get(key) {
        Some(Value::Object(m)) => Ok(m),
        Some(_) => Err(RestError::invalid_params(format!(
            "{key} must be an object"
        ))),
        None => Err(RestError::invalid_params(format!(
            "missing required parameter {key}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(_: &Params) -> Result<(), RestError> {
        Ok(())
    }

    fn registry() -> Registry {
        let mut reg = Registry::default();
        reg.blocking("standby", "power_off", Mode::Async, |_, _, _| {
            Ok(Value::Null)
        });
        reg
    }

    #[test]
    fn a_validator_attaches_to_a_registered_command() {
        let mut reg = registry();
        reg.validate_with("standby", "power_off", ok);
        let spec = reg.resolve("standby.power_off").expect("resolved").spec;
        assert!(spec.validator.is_some());
    }

    #[test]
    #[should_panic(expected = "no command standby.power_of is registered")]
    fn a_validator_for_an_unknown_command_fails_loudly() {
        registry().validate_with("standby", "power_of", ok);
    }
}
