//! finit_module(2) for one module file. Compressed modules (`.ko.xz`,
//! `.ko.zst`, `.ko.gz`, as distributions ship them) are handed to the
//! kernel to decompress where it can (`MODULE_INIT_COMPRESSED_FILE`,
//! Linux 6.4+), else decompressed here and loaded with init_module(2).

use std::fs::File;
use std::io::Read;
use std::path::Path;

use nix::errno::Errno;
use nix::kmod::{finit_module, init_module, ModuleInitFlags};

/// Linux's `MODULE_INIT_COMPRESSED_FILE` (include/uapi/linux/module.h).
const MODULE_INIT_COMPRESSED_FILE: libc::c_uint = 4;
/// The largest module accepted once decompressed (the largest in Debian's
/// kernel is under 16 MiB): a corrupt file cannot exhaust memory.
const MAX_MODULE_BYTES: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("opening {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("decompressing {path}: {reason}")]
    Decompress { path: String, reason: String },
    #[error("the kernel refused {path}: {errno}")]
    Kernel { path: String, errno: Errno },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Xz,
    Zstd,
    Gzip,
}

fn compression(path: &Path) -> Compression {
    match path.extension().and_then(|e| e.to_str()) {
        Some("xz") => Compression::Xz,
        Some("zst") => Compression::Zstd,
        Some("gz") => Compression::Gzip,
        _ => Compression::None,
    }
}

/// Load one module file; `Ok(false)` if the kernel already has it.
pub fn load_file(path: &Path) -> Result<bool, LoadError> {
    let shown = path.display().to_string();
    let file = File::open(path).map_err(|source| LoadError::Open {
        path: shown.clone(),
        source,
    })?;
    let kernel = |errno| LoadError::Kernel {
        path: shown.clone(),
        errno,
    };
    let kind = compression(path);
    if kind == Compression::None {
        return match finit_module(&file, c"", ModuleInitFlags::empty()) {
            Ok(()) => Ok(true),
            Err(Errno::EEXIST) => Ok(false),
            Err(e) => Err(kernel(e)),
        };
    }
    let flags = ModuleInitFlags::from_bits_retain(MODULE_INIT_COMPRESSED_FILE);
    match finit_module(&file, c"", flags) {
        Ok(()) => return Ok(true),
        Err(Errno::EEXIST) => return Ok(false),
        // Older kernels reject the flag (EINVAL), or lack the decompressor
        // for this format (EOPNOTSUPP): decompress here.
        Err(Errno::EINVAL | Errno::EOPNOTSUPP | Errno::ENOEXEC) => {}
        Err(e) => return Err(kernel(e)),
    }
    let image = decompress(file, kind).map_err(|reason| LoadError::Decompress {
        path: shown.clone(),
        reason,
    })?;
    match init_module(&image, c"") {
        Ok(()) => Ok(true),
        Err(Errno::EEXIST) => Ok(false),
        Err(e) => Err(kernel(e)),
    }
}

fn decompress(file: File, kind: Compression) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let limit = MAX_MODULE_BYTES + 1;
    let read = match kind {
        Compression::Xz => liblzma::read::XzDecoder::new(file)
            .take(limit)
            .read_to_end(&mut out),
        Compression::Zstd => {
            zstd::stream::read::Decoder::new(file).and_then(|d| d.take(limit).read_to_end(&mut out))
        }
        Compression::Gzip => flate2::read::GzDecoder::new(file)
            .take(limit)
            .read_to_end(&mut out),
        Compression::None => std::io::BufReader::new(file)
            .take(limit)
            .read_to_end(&mut out),
    };
    read.map_err(|e| e.to_string())?;
    if out.len() as u64 > MAX_MODULE_BYTES {
        return Err(format!("larger than {MAX_MODULE_BYTES} bytes"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn roundtrip(kind: Compression, name: &str, packed: Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, packed).unwrap();
        assert_eq!(compression(&path), kind);
        let out = decompress(File::open(&path).unwrap(), kind).unwrap();
        assert_eq!(out, b"\x7fELF module bytes");
    }

    #[test]
    fn compressed_modules_decompress() {
        let plain: &[u8] = b"\x7fELF module bytes";
        let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 6);
        xz.write_all(plain).unwrap();
        roundtrip(Compression::Xz, "a.ko.xz", xz.finish().unwrap());
        roundtrip(
            Compression::Zstd,
            "a.ko.zst",
            zstd::stream::encode_all(plain, 3).unwrap(),
        );
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(plain).unwrap();
        roundtrip(Compression::Gzip, "a.ko.gz", gz.finish().unwrap());
        assert_eq!(compression(Path::new("a.ko")), Compression::None);
    }

    #[test]
    fn corrupt_compressed_modules_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.ko.xz");
        std::fs::write(&path, b"not xz at all").unwrap();
        assert!(decompress(File::open(&path).unwrap(), Compression::Xz).is_err());
    }
}
