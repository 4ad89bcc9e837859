//! Burn-in, natively instead of through stress-ng and fio: the CPU
//! (`burnin_cpu`) and the memory (`burnin_memory`).

pub mod cpu;
pub mod memory;

pub use cpu::burn_cpu;
