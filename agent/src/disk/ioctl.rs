//! The block-device ioctls the agent needs (`<linux/fs.h>`). The request
//! type differs between glibc and musl, hence `libc::Ioctl`.

use std::fs::File;
use std::io;
use std::os::unix::io::AsRawFd;

const BLKRRPART: libc::Ioctl = 0x125f;
const BLKFLSBUF: libc::Ioctl = 0x1261;
const BLKPG: libc::Ioctl = 0x1269;
const BLKPG_ADD_PARTITION: libc::c_int = 1;
const BLKSSZGET: libc::Ioctl = 0x1268;
const BLKGETSIZE64: libc::Ioctl = 0x8008_1272_u32 as libc::Ioctl;
const BLKZEROOUT: libc::Ioctl = 0x127f;
const BLKDISCARD: libc::Ioctl = 0x1277;
const BLKSECDISCARD: libc::Ioctl = 0x127d;

/// Size in bytes.
pub fn device_size(f: &File) -> io::Result<u64> {
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer.
    if unsafe { libc::ioctl(f.as_raw_fd(), BLKGETSIZE64, &mut size as *mut u64) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(size)
}

/// Logical sector size (at least 512).
pub fn sector_size(f: &File) -> u64 {
    let mut sector: libc::c_int = 512;
    // SAFETY: BLKSSZGET writes one int through the pointer.
    if unsafe { libc::ioctl(f.as_raw_fd(), BLKSSZGET, &mut sector as *mut libc::c_int) } != 0 {
        return 512;
    }
    sector.max(512) as u64
}

/// Make `[start, start+len)` read as zeros (sector-aligned range).
pub fn zero_out(f: &File, start: u64, len: u64) -> io::Result<()> {
    let range: [u64; 2] = [start, len];
    // SAFETY: BLKZEROOUT reads a [start, len] pair of u64.
    if unsafe { libc::ioctl(f.as_raw_fd(), BLKZEROOUT, range.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Discard `[start, start+len)`; `secure` asks the device to guarantee the
/// data cannot be recovered (BLKSECDISCARD), which most devices refuse.
pub fn discard(f: &File, start: u64, len: u64, secure: bool) -> io::Result<()> {
    let range: [u64; 2] = [start, len];
    let request = if secure { BLKSECDISCARD } else { BLKDISCARD };
    // SAFETY: BLKDISCARD and BLKSECDISCARD read a [start, len] pair of u64.
    if unsafe { libc::ioctl(f.as_raw_fd(), request, range.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Ask the kernel to re-read the partition table.
pub fn reread_partitions(f: &File) -> io::Result<()> {
    // SAFETY: BLKRRPART takes no argument.
    if unsafe { libc::ioctl(f.as_raw_fd(), BLKRRPART, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Write back and drop the device's page cache, so reads see what was
/// written through another node (a partition's own device).
pub fn flush_buffers(f: &File) -> io::Result<()> {
    // SAFETY: BLKFLSBUF takes no argument.
    if unsafe { libc::ioctl(f.as_raw_fd(), BLKFLSBUF, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `<linux/blkpg.h>`: the argument of BLKPG and the partition it describes.
#[repr(C)]
struct BlkpgIoctlArg {
    op: libc::c_int,
    flags: libc::c_int,
    datalen: libc::c_int,
    data: *mut libc::c_void,
}

#[repr(C)]
struct BlkpgPartition {
    start: libc::c_longlong,
    length: libc::c_longlong,
    pno: libc::c_int,
    devname: [libc::c_char; 64],
    volname: [libc::c_char; 64],
}

/// Tell the kernel about one partition (bytes), as `partx --add` does: for
/// disks whose driver does not scan partitions itself.
pub fn add_partition(f: &File, number: u32, start: u64, len: u64) -> io::Result<()> {
    let mut part = BlkpgPartition {
        start: start as libc::c_longlong,
        length: len as libc::c_longlong,
        pno: number as libc::c_int,
        devname: [0; 64],
        volname: [0; 64],
    };
    let mut arg = BlkpgIoctlArg {
        op: BLKPG_ADD_PARTITION,
        flags: 0,
        datalen: std::mem::size_of::<BlkpgPartition>() as libc::c_int,
        data: &mut part as *mut BlkpgPartition as *mut libc::c_void,
    };
    // SAFETY: BLKPG reads the argument struct and the partition it points to, both live here.
    if unsafe { libc::ioctl(f.as_raw_fd(), BLKPG, &mut arg as *mut BlkpgIoctlArg) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
