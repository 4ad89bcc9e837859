//! Domain errors as IPA's wire errors: the one place where a deploy's or
//! a disk's failure becomes the `type` and `details` Ironic sees.

use crate::bootloader::BootloaderError;
use crate::deploy::DeployError;
use crate::errors::RestError;

impl From<DeployError> for RestError {
    fn from(e: DeployError) -> Self {
        match e {
            DeployError::ImageInfo(e) => RestError::invalid_params(e.to_string()),
            DeployError::InvalidParams(details) => RestError::invalid_params(details),
            DeployError::NoDevice(e) => RestError::device_not_found(e.0),
            DeployError::Download { image, reason } => RestError::image_download(&image, reason),
            DeployError::DownloadTimeout { image, reason } => {
                RestError::image_download_timeout(&image, reason)
            }
            DeployError::Checksum {
                image,
                location,
                expected,
                actual,
            } => RestError::image_checksum(&image, &location, &expected, &actual),
            DeployError::Write { device, reason } => RestError::image_write(&device, reason),
            DeployError::InvalidImage(details) => RestError::invalid_image(details),
            DeployError::Deployment(details) => RestError::deployment(details),
            DeployError::Internal(details) => RestError::command_execution(details),
        }
    }
}

impl From<BootloaderError> for RestError {
    fn from(e: BootloaderError) -> Self {
        match e {
            BootloaderError::InvalidParams(details) => RestError::invalid_params(details),
            BootloaderError::NoDevice(details) => RestError::device_not_found(details),
            BootloaderError::InvalidImage(details) => RestError::invalid_image(details),
            BootloaderError::Failed(details) => RestError::command_execution(details),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire text is the domain error's text, under IPA's type.
    #[test]
    fn each_case_keeps_ipas_type_and_text() {
        let cases = [
            (
                DeployError::download("img", "connection refused"),
                "ImageDownloadError",
                "Download of image img failed: connection refused",
            ),
            (
                DeployError::Checksum {
                    image: "img".into(),
                    location: "http://h/i".into(),
                    expected: "aa".into(),
                    actual: "bb".into(),
                },
                "ImageChecksumError",
                "Image failed to verify against checksum. location: http://h/i; image ID: img; \
                 image checksum: aa; verification checksum: bb",
            ),
            (
                DeployError::write("/dev/sda", "short write"),
                "ImageWriteError",
                "Writing image to device /dev/sda failed: short write",
            ),
            (
                DeployError::NoDevice(crate::disk::root::DeviceNotFound("none fits".into())),
                "DeviceNotFound",
                "none fits",
            ),
            (
                DeployError::ImageInfo(ferrite_protocol::image_info::ImageInfoError::NoId),
                "InvalidCommandParamsError",
                "Image is missing 'id' field.",
            ),
        ];
        for (domain, kind, details) in cases {
            assert_eq!(domain.to_string(), details);
            let wire = RestError::from(domain);
            assert_eq!((wire.kind, wire.details.as_str()), (kind, details));
        }
    }
}
