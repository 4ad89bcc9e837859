//! IPA's `RESTError` family: the `type`/`code`/`message` triples a conductor
//! sees in `command_error` and in HTTP fault bodies
//! (`ironic_python_agent/errors.py`).

use ferrite_protocol::{CommandError, CommandStatus};

/// An error that ends a command, or a request, with IPA's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct RestError {
    pub kind: &'static str,
    pub code: u16,
    pub message: &'static str,
    pub details: String,
    /// Status recorded when this ends a command.
    pub status: CommandStatus,
}

impl RestError {
    const fn base(kind: &'static str, code: u16, message: &'static str) -> Self {
        Self {
            kind,
            code,
            message,
            details: String::new(),
            status: CommandStatus::Failed,
        }
    }

    fn with(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    pub fn invalid_content(details: impl Into<String>) -> Self {
        Self::base("InvalidContentError", 400, "Invalid request body").with(details)
    }

    pub fn invalid_command(details: impl Into<String>) -> Self {
        Self::base("InvalidCommandError", 400, "Invalid command").with(details)
    }

    pub fn invalid_params(details: impl Into<String>) -> Self {
        Self::base(
            "InvalidCommandParamsError",
            400,
            "Invalid command parameters",
        )
        .with(details)
    }

    pub fn not_found(type_descr: &str, id: &str) -> Self {
        Self::base("RequestedObjectNotFoundError", 404, "Not found")
            .with(format!("{type_descr} with id {id} not found."))
    }

    pub fn command_execution(details: impl Into<String>) -> Self {
        Self::base("CommandExecutionError", 500, "Command execution failed").with(details)
    }

    pub fn busy(command_name: &str) -> Self {
        Self::base("AgentIsBusy", 409, "Agent is busy")
            .with(format!("executing command {command_name}"))
    }

    pub fn method_not_found(method: &str) -> Self {
        Self::base(
            "HardwareManagerMethodNotFound",
            500,
            "No HardwareManager found to handle method",
        )
        .with(format!("Could not find method: {method}"))
    }

    pub fn version_mismatch(agent: &str, node: &str) -> Self {
        let mut e = Self::base(
            "VersionMismatch",
            409,
            "Hardware managers version mismatch, reload agent with correct version",
        )
        .with(format!(
            "Current versions: {agent}, versions used by ironic: {node}"
        ));
        e.status = CommandStatus::CleanVersionMismatch;
        e
    }

    pub fn cleaning(details: impl Into<String>) -> Self {
        Self::base("CleaningError", 500, "Clean step failed").with(details)
    }

    pub fn deployment(details: impl Into<String>) -> Self {
        Self::base("DeploymentError", 500, "Deploy step failed").with(details)
    }

    pub fn servicing(details: impl Into<String>) -> Self {
        Self::base("ServicingError", 500, "Service step failed").with(details)
    }

    pub fn device_not_found(details: impl Into<String>) -> Self {
        Self::base(
            "DeviceNotFound",
            404,
            "Error finding the disk or partition device to deploy the image onto",
        )
        .with(details)
    }

    pub fn image_download(image_id: &str, msg: impl std::fmt::Display) -> Self {
        Self::base("ImageDownloadError", 500, "Error downloading image")
            .with(format!("Download of image {image_id} failed: {msg}"))
    }

    pub fn image_download_timeout(image_id: &str, msg: impl std::fmt::Display) -> Self {
        Self::base(
            "ImageDownloadTimeoutError",
            408,
            "Timeout reached while downloading image",
        )
        .with(format!("Download of image {image_id} failed: {msg}"))
    }

    pub fn image_checksum(image_id: &str, location: &str, expected: &str, actual: &str) -> Self {
        Self::base("ImageChecksumError", 500, "Error verifying image checksum").with(format!(
            "Image failed to verify against checksum. location: {location}; image ID: {image_id}; \
             image checksum: {expected}; verification checksum: {actual}"
        ))
    }

    pub fn image_write(device: &str, msg: impl std::fmt::Display) -> Self {
        Self::base("ImageWriteError", 500, "Error writing image to device")
            .with(format!("Writing image to device {device} failed: {msg}"))
    }

    pub fn invalid_image(details: impl Into<String>) -> Self {
        Self::base(
            "InvalidImage",
            500,
            "The provided image is not valid for use",
        )
        .with(details)
    }

    pub fn block_device_erase(details: impl Into<String>) -> Self {
        Self::base("BlockDeviceEraseError", 500, "Error erasing block device").with(details)
    }

    /// IPA's `SoftwareRAIDError`.
    pub fn software_raid(details: impl Into<String>) -> Self {
        Self::base(
            "SoftwareRAIDError",
            500,
            "Software RAID caused unknown error",
        )
        .with(details)
    }

    /// IPA's `ProtectedDeviceError` (a `CleaningError`): a shared-disk
    /// filesystem was found, nothing was erased.
    pub fn protected_device(details: impl Into<String>) -> Self {
        Self::base(
            "ProtectedDeviceError",
            500,
            "Protected device located, cleaning aborted.",
        )
        .with(details)
    }

    pub fn unknown_node() -> Self {
        Self::base(
            "UnknownNodeError",
            500,
            "Agent is not associated with an Ironic node",
        )
        .with("An unexpected error occurred. Please try back later.")
    }

    /// The serialized form for `command_error`.
    pub fn to_command_error(&self) -> CommandError {
        CommandError::new(self.kind, self.code, self.message, self.details.clone())
    }
}

/// `str(exc)` in IPA: `"<message>: <details>"`, which becomes `faultstring`.
impl std::fmt::Display for RestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.message, self.details)
    }
}

impl std::error::Error for RestError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_faultstring_matches_ipa() {
        assert_eq!(
            RestError::busy("execute_clean_step").to_string(),
            "Agent is busy: executing command execute_clean_step"
        );
    }

    #[test]
    fn version_mismatch_is_special_status() {
        let e = RestError::version_mismatch("{}", "{}");
        assert_eq!(e.status, CommandStatus::CleanVersionMismatch);
        assert_eq!(e.to_command_error().kind, "VersionMismatch");
    }
}
