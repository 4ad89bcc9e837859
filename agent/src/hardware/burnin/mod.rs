//! Burn-in, natively instead of through stress-ng and fio: the CPU
//! (`burnin_cpu`), the memory (`burnin_memory`) and the disks
//! (`burnin_disk`).

pub mod cpu;
pub mod disk;
pub mod memory;

pub use cpu::burn_cpu;
