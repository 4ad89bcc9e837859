//! IPA extensions. Each module registers its commands; `registry()` is the
//! full set the agent serves.

mod image;
pub mod log;
mod rescue;
mod standby;
mod steps;
mod system;
mod wire_errors;

use crate::api::registry::Registry;
use crate::hardware::StepKind;

pub fn registry() -> Registry {
    let mut reg = Registry::default();
    steps::register(&mut reg, StepKind::Clean);
    steps::register(&mut reg, StepKind::Deploy);
    steps::register(&mut reg, StepKind::Service);
    standby::register(&mut reg);
    image::register(&mut reg);
    log::register(&mut reg);
    system::register(&mut reg);
    rescue::register(&mut reg);
    reg
}
