//! `rescue.finalize_rescue` (sync): write the rescue user's password hash
//! and the marker, reply, then close the API and stop heartbeating for
//! good (IPA sets `serve_api = False`). The process stays: under PID 1 it
//! waits while the rescue service runs (see `init::rescue`).

use ferrite_protocol::rescue::FinalizeRescue;
use serde_json::Value;
use tracing::{info, warn};

use crate::api::registry::{Mode, Params, Registry};
use crate::errors::RestError;

pub fn register(reg: &mut Registry) {
    reg.blocking(
        "rescue",
        "finalize_rescue",
        Mode::Sync,
        |ctx, params, _progress| {
            let params = parse(&params)?;
            let hash = crate::rescue::hash_for_file(&params)
                .map_err(|e| RestError::invalid_params(e.to_string()))?;
            crate::rescue::write_files(&ctx.config.rescue_root, &hash).map_err(|e| {
                warn!(error = %format!("{e:#}"), "rescue failed");
                RestError::command_execution(format!(
                    "Rescue Operation failed when writing the hashed rescue password to the password file. Error {e:#}"
                ))
            })?;
            info!("rescue finalized: the agent API closes now; the rescue user may log in");
            ctx.enter_rescue();
            Ok(Value::Null)
        },
    );
}

/// The parameters, typed (`rescue_password` a string, `hashed` a boolean).
fn parse(params: &Params) -> Result<FinalizeRescue, RestError> {
    serde_json::from_value(Value::Object(params.clone())).map_err(|_| {
        RestError::invalid_params("rescue_password must be a string and hashed a boolean")
    })
}
