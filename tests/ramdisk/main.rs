//! The deploy ramdisk: PID 1's DHCP client against dnsmasq in a network
//! namespace, and the whole ramdisk booted in QEMU against the real
//! conductor (the hardware matrix of NIC and disk models, a BMC, a disk
//! that comes late, arm64). Both need root (namespaces; scripts/test runs
//! as root).

mod archive;
mod arm64;
mod bmc;
mod boot_timeline;
mod burnin_network;
mod capture;
mod clock_debug;
mod dhcp;
mod e2e;
mod grub;
mod hardware;
mod ipv6_only;
mod multi_nic;
mod net6;
mod ovmf_vars;
mod power;
mod qemu;
mod raid;
mod rescue;
mod slow_disk;
