//! Burn-in, natively instead of through stress-ng and fio: the CPU
//! (`burnin_cpu`), the memory (`burnin_memory`) and the disks
//! (`burnin_disk`) and the network between two nodes (`burnin_network`).

pub mod cpu;
pub mod disk;
pub mod memory;
pub mod network;
pub mod pairing;

pub use cpu::burn_cpu;
