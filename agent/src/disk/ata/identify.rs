//! IDENTIFY DEVICE data (ACS-4, 7.12.7): the security words.

use std::time::Duration;

/// The security feature set's state (word 128), and what erasing costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Security {
    pub supported: bool,
    pub enabled: bool,
    pub locked: bool,
    pub frozen: bool,
    pub count_expired: bool,
    pub enhanced_erase: bool,
    /// The drive's own estimate (words 89 and 90), when it gives one.
    pub erase_time: Option<Duration>,
    pub enhanced_erase_time: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identify {
    pub model: String,
    pub serial: String,
    pub security: Security,
}

impl Identify {
    pub fn parse(data: &[u8; 512]) -> Self {
        let word = |i: usize| u16::from_le_bytes([data[2 * i], data[2 * i + 1]]);
        // Word 128 bit 0, as `hdparm -I` (IPA's source) reads it; a word
        // reading 0xffff is a device that does not fill it in.
        let w128 = word(128);
        let supported = w128 != 0xffff && w128 & 0x0001 != 0;
        let bit = |b: u16| supported && w128 & (1 << b) != 0;
        Self {
            serial: ata_string(data, 10, 20),
            model: ata_string(data, 27, 47),
            security: Security {
                supported,
                enabled: bit(1),
                locked: bit(2),
                frozen: bit(3),
                count_expired: bit(4),
                enhanced_erase: bit(5),
                erase_time: erase_time(word(89)),
                enhanced_erase_time: erase_time(word(90)),
            },
        }
    }
}

/// Words 89/90: bit 15 set means bits 14:0 count 2-minute units (ACS-3
/// and later), else bits 7:0 do; 0 is "not given", the largest value is
/// "longer than that", which is also no estimate.
fn erase_time(w: u16) -> Option<Duration> {
    let units = if w & 0x8000 != 0 {
        w & 0x7fff
    } else {
        w & 0x00ff
    };
    let max = if w & 0x8000 != 0 { 0x7fff } else { 0xff };
    (units != 0 && units != max).then(|| Duration::from_secs(u64::from(units) * 120))
}

/// ATA strings are byte-swapped within each word.
fn ata_string(data: &[u8; 512], from_word: usize, to_word: usize) -> String {
    let mut bytes = Vec::with_capacity((to_word - from_word) * 2);
    for w in from_word..to_word {
        bytes.push(data[2 * w + 1]);
        bytes.push(data[2 * w]);
    }
    String::from_utf8_lossy(&bytes).trim().to_string()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// IDENTIFY data with word 128 set to `w128` and the model "QEMU HARDDISK".
    pub fn identify_data(w128: u16, w89: u16, w90: u16) -> [u8; 512] {
        let mut d = [0u8; 512];
        let mut put = |i: usize, v: u16| d[2 * i..2 * i + 2].copy_from_slice(&v.to_le_bytes());
        put(89, w89);
        put(90, w90);
        put(128, w128);
        let model = b"QEMU HARDDISK                           ";
        for (i, pair) in model.chunks(2).enumerate().take(20) {
            d[2 * (27 + i)] = pair[1];
            d[2 * (27 + i) + 1] = pair[0];
        }
        d
    }

    #[test]
    fn security_bits_and_strings() {
        let id = Identify::parse(&identify_data(0x0029, 0x0005, 0x8010));
        assert_eq!(id.model, "QEMU HARDDISK");
        let s = id.security;
        assert!(s.supported && s.frozen && s.enhanced_erase);
        assert!(!s.enabled && !s.locked && !s.count_expired);
        assert_eq!(s.erase_time, Some(Duration::from_secs(600)));
        assert_eq!(s.enhanced_erase_time, Some(Duration::from_secs(16 * 120)));
    }

    #[test]
    fn no_feature_set_means_nothing_else_is_read() {
        let s = Identify::parse(&identify_data(0x000e, 0, 0xff)).security;
        assert!(!s.supported && !s.locked && !s.frozen && !s.enabled);
        assert_eq!(s.enhanced_erase_time, None);
        let s = Identify::parse(&identify_data(0xffff, 0, 0)).security;
        assert!(!s.supported);
    }
}
