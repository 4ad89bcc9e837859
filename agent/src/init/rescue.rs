//! PID 1's side of rescue mode. Once the agent finalized a rescue (the
//! marker `/etc/.rescued` and the rescue user's hash in
//! `/etc/ipa-rescue-config/ipa-rescue-password`, see `crate::rescue`), the
//! agent holds still and PID 1 starts the rescue service: the `rescue`
//! profile's ssh server, with a `rescue` user whose password is that hash.
//!
//! HOOK: [`RescueWatch::start_service`] is where the ssh server starts (and
//! is respawned from `reaped`, as the debug shell is). The ramdisk has no
//! ssh server yet; until it does, PID 1 only says so on the console.

use std::path::PathBuf;

use tracing::{info, warn};

pub struct RescueWatch {
    root: PathBuf,
    started: bool,
}

impl RescueWatch {
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            started: false,
        }
    }

    /// Called from PID 1's loop: start the rescue service once the marker
    /// appears.
    pub fn tick(&mut self) {
        if !self.started && crate::rescue::is_rescued(&self.root) {
            self.started = true;
            self.start_service();
        }
    }

    fn start_service(&mut self) {
        let hash = crate::rescue::password_file(&self.root);
        info!(
            "rescue mode: the agent API is closed; rescue password hash in {}",
            hash.display()
        );
        warn!("rescue mode: this ramdisk has no ssh server yet; the rescue user cannot log in");
    }
}
