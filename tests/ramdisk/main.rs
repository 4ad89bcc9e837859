//! The deploy ramdisk: PID 1's DHCP client against dnsmasq in a network
//! namespace, and the whole ramdisk booted in QEMU against the real
//! conductor. Both need root (namespaces; scripts/test runs as root).

mod archive;
mod arm64;
mod capture;
mod dhcp;
mod e2e;
mod grub;
mod power;
mod qemu;
