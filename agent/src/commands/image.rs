//! `image.install_bootloader`.

use serde_json::Value;

use crate::api::registry::{Mode, Registry};
use crate::bootloader::{install_bootloader, Environment, Request};
use crate::deploy::install_device;

pub fn register(reg: &mut Registry) {
    reg.blocking(
        "image",
        "install_bootloader",
        Mode::Async,
        |ctx, params, _progress| {
            let request = Request::from_params(&params)?;
            let disk = install_device(&ctx)?;
            let env = Environment {
                disk: &disk,
                sysfs_root: &ctx.config.sysfs_root,
                bios_install_allowed: ctx
                    .lookup_config()
                    .is_some_and(|c| c.enable_bios_bootloader_install),
                // Only where no udev manages /dev: never on a host.
                make_dev_links: crate::power::in_ramdisk(),
                load_module: &crate::init::modules::load_in_ramdisk,
            };
            Ok(install_bootloader(&env, &request).map(|_| Value::Null)?)
        },
    );
}
