//! Arbitrary bytes as a disk holding a GPT: reading it, moving its backup
//! header to the end of a bigger disk and adding a partition (what a
//! whole-disk deploy with a config drive does) must fail cleanly or
//! succeed, never panic or allocate what the header claims unchecked.

#![no_main]

use std::cell::RefCell;

use ferrite_agent::disk::gpt_edit::{Gpt, MemDisk};
use libfuzzer_sys::fuzz_target;

const SECTOR: u64 = 512;

fuzz_target!(|data: &[u8]| {
    // The first byte grows the disk past the image, as a real disk would be.
    let grow = u64::from(data.first().copied().unwrap_or(0)) * 8;
    let image_sectors = data.len() as u64 / SECTOR;
    let sectors = image_sectors + grow;
    let mut bytes = data[..(image_sectors * SECTOR) as usize].to_vec();
    bytes.resize((sectors * SECTOR) as usize, 0);
    let disk = MemDisk(RefCell::new(bytes));
    let Ok(Some(mut gpt)) = Gpt::read(&disk, SECTOR, sectors) else {
        return;
    };
    let used = gpt.used();
    if gpt.relocate_backup(sectors).is_err() {
        return;
    }
    let first = used
        .iter()
        .map(|e| e.last_lba)
        .max()
        .unwrap_or(0)
        .saturating_add(1);
    let last = gpt.last_usable();
    if first <= last {
        let _ = gpt.add(
            uuid::Uuid::from_u128(0x0fc63daf_8483_4772_8e79_3d69d8477de4),
            first,
            last,
            "config-2",
        );
    }
    if gpt.write(&disk).is_ok() {
        // What was written reads back as a valid GPT.
        let again = Gpt::read(&disk, SECTOR, sectors).expect("rewritten GPT reads back");
        assert!(again.is_some(), "rewritten GPT vanished");
    }
});
