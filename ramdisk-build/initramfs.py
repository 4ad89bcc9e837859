#!/usr/bin/env python3
"""Helpers for ramdisk-build/build (stdlib only, deterministic output).

  initramfs.py modules KROOT KVER PROFILE_DIR PROFILE ROOTFS [FIRMWARE_ROOT...]
      Copy the modules the profile PROFILE_DIR/PROFILE.list names (and
      everything they depend on) from an unpacked kernel package into
      ROOTFS/lib/modules/KVER, decompressed, with depmod-format modules.dep,
      modules.alias and modules.softdep; write the base list's modules (loaded
      at every boot) to ROOTFS/etc/ferrite/modules.list; copy the firmware
      files the shipped modules name from FIRMWARE_ROOTs to ROOTFS/lib/firmware.
  initramfs.py profile-firmware PROFILE_DIR PROFILE
      Print the Debian firmware packages the profile names.
  initramfs.py profile-files PROFILE_DIR PROFILE
      Print the profile's `@file <package> <path>` lines (files copied from
      Debian packages of the target architecture, e.g. a static busybox).
  initramfs.py layer-base PROFILE_DIR PROFILE
      Print the profile PROFILE is a layer over: its only lines are one
      `@include <base>` and `@file` lines, so its ramdisk is the base's plus
      those files. Fails (exit 1, with the reason) for any other profile.
  initramfs.py cpio ROOTFS OUT
      Write ROOTFS as a newc cpio archive: sorted paths, owner 0:0, mtime
      $SOURCE_DATE_EPOCH, normalised modes, plus /dev/console and /dev/null
      (the kernel opens /dev/console for init before anything is mounted).
  initramfs.py cpio-layer ROOTFS OUT
      The same without the standard entries: an archive appended to a full
      one (the kernel unpacks concatenated archives in order).
"""
import lzma
import os
import struct
import shutil
import stat
import subprocess
import sys

EXTS = (".ko.xz", ".ko.zst", ".ko.gz", ".ko")


def mod_name(path):
    base = os.path.basename(path)
    for ext in EXTS:
        if base.endswith(ext):
            base = base[: -len(ext)]
            break
    return base.replace("-", "_")


def read_module(path):
    if path.endswith(".xz"):
        with lzma.open(path) as f:
            return f.read()
    if path.endswith(".zst"):
        return subprocess.run(["zstd", "-dc", path], check=True, capture_output=True).stdout
    if path.endswith(".gz"):
        import gzip

        with gzip.open(path) as f:
            return f.read()
    with open(path, "rb") as f:
        return f.read()


def modinfo(blob, what):
    """The `.modinfo` section of a module (an ELF64 little-endian object,
    as on x86_64 and arm64) as (key, value) pairs, in order."""
    if blob[:4] != b"\x7fELF" or blob[4] != 2 or blob[5] != 1:
        sys.exit(f"{what}: not an ELF64 little-endian module")
    shoff, = struct.unpack_from("<Q", blob, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", blob, 0x3A)

    def section(i):
        off = shoff + i * shentsize
        name, = struct.unpack_from("<I", blob, off)
        offset, size = struct.unpack_from("<QQ", blob, off + 0x18)
        return name, offset, size

    _, str_off, str_size = section(shstrndx)
    names = blob[str_off : str_off + str_size]
    for i in range(shnum):
        name, offset, size = section(i)
        if names[name : names.index(b"\0", name)] == b".modinfo":
            pairs = []
            for entry in blob[offset : offset + size].split(b"\0"):
                key, sep, value = entry.partition(b"=")
                if sep:
                    pairs.append((key.decode(), value.decode("utf-8", "replace")))
            return pairs
    return []


# Buses whose unmatched devices PID 1 reports with the driver they need.
UNSHIPPED_BUSES = ("pci:", "usb:", "virtio:", "scsi:")


def kernel_aliases(kroot, moddir, index):
    """Every (alias, module) of the kernel package, cached in KROOT: reading
    all of its modules takes seconds."""
    cache = os.path.join(kroot, ".ferrite-modules.alias")
    if not os.path.exists(cache):
        tmp = cache + ".tmp"
        with open(tmp, "w") as f:
            for name in sorted(index):
                blob = read_module(os.path.join(moddir, index[name]))
                for k, v in modinfo(blob, index[name]):
                    if k == "alias":
                        f.write(f"{v} {name}\n")
        os.replace(tmp, cache)
    with open(cache) as f:
        return [tuple(line.split()) for line in f if len(line.split()) == 2]


def read_profile(profile_dir, name, seen=None):
    """A profile's module names (in order, each once), the names its `base`
    include brings (loaded at every boot), and its firmware packages.
    Lines: a module name, `@include <profile>`, `@firmware <package>`,
    `@file <package> <path>`, `#` comments."""
    seen = seen if seen is not None else []
    if name in seen:
        sys.exit(f"profile include cycle: {' -> '.join(seen + [name])}")
    path = os.path.join(profile_dir, name + ".list")
    if not os.path.exists(path):
        sys.exit(f"no profile {name!r} ({path})")
    mods, boot, firmware, files = [], [], [], []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.split("#")[0].strip()
            if not line:
                continue
            if line.startswith("@"):
                word, _, arg = line.partition(" ")
                arg = arg.strip()
                if word == "@include" and arg:
                    m, b, fw, fl = read_profile(profile_dir, arg, seen + [name])
                    mods += m
                    boot += m if arg == "base" else b
                    firmware += fw
                    files += fl
                elif word == "@firmware" and arg:
                    firmware.append(arg)
                elif word == "@file" and len(arg.split()) == 2:
                    pkg, fpath = arg.split()
                    if os.path.isabs(fpath) or ".." in fpath.split("/"):
                        sys.exit(f"{path}:{n}: @file path must be relative, without '..': {fpath!r}")
                    files.append(f"{pkg} {fpath}")
                else:
                    sys.exit(f"{path}:{n}: unknown directive {line!r}")
            else:
                mods.append(mod_name(line))
    dedup = lambda xs: list(dict.fromkeys(xs))
    return dedup(mods), dedup(boot), dedup(firmware), dedup(files)


def profile_firmware(profile_dir, name):
    """Print the Debian firmware packages a profile names, one a line."""
    for pkg in read_profile(profile_dir, name)[2]:
        print(pkg)


def profile_files(profile_dir, name):
    """Print the `<package> <path>` pairs of a profile's `@file` lines."""
    for line in read_profile(profile_dir, name)[3]:
        print(line)


def layer_base(profile_dir, name):
    """The base profile of a layer profile (see the module docstring)."""
    path = os.path.join(profile_dir, name + ".list")
    read_profile(profile_dir, name)  # validates every line and the includes
    includes, others = [], []
    with open(path) as f:
        for line in f:
            line = line.split("#")[0].strip()
            if line.startswith("@include "):
                includes.append(line.split(None, 1)[1].strip())
            elif line and not line.startswith("@file "):
                others.append(line)
    if len(includes) != 1 or others:
        sys.exit(f"profile {name!r} is not a layer: a layer has exactly one @include "
                 f"and otherwise only @file lines (includes {includes}, other lines {others})")
    print(includes[0])


def modules(kroot, kver, profile_dir, profile, rootfs, *firmware_roots):
    moddir = os.path.join(kroot, "lib/modules", kver)
    index = {}
    for dirpath, _, files in os.walk(os.path.join(moddir, "kernel")):
        for fn in files:
            if fn.endswith(EXTS):
                full = os.path.join(dirpath, fn)
                index[mod_name(fn)] = os.path.relpath(full, moddir)
    builtin = set()
    bpath = os.path.join(moddir, "modules.builtin")
    if os.path.exists(bpath):
        with open(bpath) as f:
            builtin = {mod_name(l.strip()) for l in f if l.strip()}
    wanted, boot, _, _ = read_profile(profile_dir, profile)

    data, deps, info, soft = {}, {}, {}, []

    def visit(name, stack):
        if name in deps or name in builtin:
            return
        if name in stack:
            sys.exit(f"module dependency cycle through {name}")
        if name not in index:
            raise KeyError(name)
        blob = read_module(os.path.join(moddir, index[name]))
        pairs = modinfo(blob, index[name])
        direct = [mod_name(d) for k, v in pairs if k == "depends" for d in v.split(",") if d]
        for d in direct:
            visit(d, stack + [name])
        # Soft dependencies (`softdep=pre: crc32c post: ...`) ship too (the
        # loader reads them from modules.softdep); they may point back at
        # this module, so they are visited once the hard ones are done.
        for k, v in pairs:
            if k == "softdep":
                soft.extend(v.replace("pre:", " ").replace("post:", " ").split())
        data[name] = blob
        deps[name] = direct
        info[name] = pairs

    resolved, missing, inkernel = [], [], []
    for w in wanted:
        if w in builtin:
            inkernel.append(w)
            continue
        try:
            visit(w, [])
            resolved.append(w)
        except KeyError as e:
            missing.append(f"{w} (needs {e.args[0]})" if e.args[0] != w else w)
    # Soft dependencies name modules or aliases (`crc32c`, `crypto-crc32c`).
    by_alias = {}
    for pattern, name in kernel_aliases(kroot, moddir, index):
        by_alias.setdefault(pattern, []).append(name)
    while soft:
        want = soft.pop()
        for name in [mod_name(want)] if mod_name(want) in index else by_alias.get(want, []):
            try:
                visit(name, [])
            except KeyError:
                pass  # a soft dependency this kernel lacks: modprobe skips it too

    def plain(name):
        rel = index[name]
        for ext in EXTS:
            if rel.endswith(ext):
                return rel[: -len(ext)] + ".ko"
        return rel

    def closure(name, out):
        for d in deps[name]:
            if d in deps and d not in out:
                out.append(d)
                closure(d, out)
        return out

    dest = os.path.join(rootfs, "lib/modules", kver)
    for name, blob in data.items():
        path = os.path.join(dest, plain(name))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(blob)
    order = sorted(deps, key=plain)
    with open(os.path.join(dest, "modules.dep"), "w") as f:
        for name in order:
            f.write(f"{plain(name)}:{''.join(' ' + plain(d) for d in closure(name, []))}\n")
    def table(name, header, line, rows):
        """A depmod-format file: `line(module, value)` for each row."""
        with open(os.path.join(dest, name), "w") as f:
            f.write(header + "\n")
            f.writelines(line(m, v) + "\n" for m, v in rows)
        return len(rows)

    shipped = lambda key: [(m, v) for m in order for k, v in info[m] if k == key]
    # depmod's modules.alias: what PID 1 matches each device's modalias with.
    aliases = table("modules.alias", "# Aliases extracted from modules",
                    lambda m, v: f"alias {v} {m}", shipped("alias"))
    # The aliases of the kernel's other modules, for the devices a machine
    # may have that need a driver: PID 1 names the missing driver in its log.
    unshipped = table("modules.alias.unshipped",
                      "# Aliases of the kernel's modules this ramdisk does not ship",
                      lambda m, v: f"alias {v} {m}",
                      [(m, p) for p, m in kernel_aliases(kroot, moddir, index)
                       if m not in deps and p.startswith(UNSHIPPED_BUSES)])
    table("modules.softdep", "# Soft dependencies extracted from modules themselves.",
          lambda m, v: f"softdep {m} {v}", shipped("softdep"))
    if os.path.exists(bpath):
        shutil.copyfile(bpath, os.path.join(dest, "modules.builtin"))
    os.makedirs(os.path.join(rootfs, "etc/ferrite"), exist_ok=True)
    with open(os.path.join(rootfs, "etc/ferrite/modules.list"), "w") as f:
        f.write(f"# loaded at every boot (profile {profile}: ramdisk-build/profiles/base.list);\n")
        f.write("# every other module loads when a device's modalias asks for it\n")
        f.writelines(w + "\n" for w in resolved if w in boot)

    # Firmware: the files shipped modules name (`firmware=`), from the
    # profile's firmware packages. Symlinks (ice.pkg -> ice-1.3.x.pkg) are
    # resolved: the ramdisk holds the file under the name the driver asks.
    fw_found, fw_missing, fw_bytes = [], [], 0
    for name in order:
        for k, v in info[name]:
            if k != "firmware":
                continue
            src = next(
                (os.path.join(r, v) for r in firmware_roots
                 if os.path.isfile(os.path.join(r, v))),
                None,
            )
            if src is None:
                fw_missing.append(f"{v} ({name})")
                continue
            out = os.path.join(rootfs, "lib/firmware", v)
            if os.path.exists(out):
                continue
            os.makedirs(os.path.dirname(out), exist_ok=True)
            shutil.copyfile(src, out)
            fw_found.append(v)
            fw_bytes += os.path.getsize(out)

    print(f"modules: profile {profile}: {len(resolved)} listed -> {len(data)} files "
          f"({sum(map(len, data.values()))} bytes), {aliases} aliases "
          f"(+{unshipped} of modules not shipped), "
          f"{len([w for w in resolved if w in boot])} loaded at boot")
    if inkernel:
        print(f"modules: built into kernel {kver}: {' '.join(inkernel)}")
    if missing:
        print(f"modules: not in kernel {kver}, skipped: {' '.join(missing)}")
    if firmware_roots:
        print(f"firmware: {len(fw_found)} files ({fw_bytes} bytes) for the shipped modules")
        if fw_missing:
            print(f"firmware: not in the profile's packages ({len(fw_missing)}): "
                  f"{' '.join(sorted(fw_missing))}")


def cpio(rootfs, out, standard_entries=True):
    mtime = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    entries = []  # (name, mode, data, rdev)
    for dirpath, dirs, files in os.walk(rootfs):
        dirs.sort()
        for n in sorted(dirs + files):
            full = os.path.join(dirpath, n)
            rel = os.path.relpath(full, rootfs)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                entries.append((rel, stat.S_IFLNK | 0o777, os.readlink(full).encode(), (0, 0)))
            elif stat.S_ISDIR(st.st_mode):
                entries.append((rel, stat.S_IFDIR | 0o755, b"", (0, 0)))
            elif stat.S_ISREG(st.st_mode):
                perm = 0o755 if st.st_mode & 0o111 else 0o644
                with open(full, "rb") as f:
                    entries.append((rel, stat.S_IFREG | perm, f.read(), (0, 0)))
            else:
                sys.exit(f"cpio: unsupported file type: {full}")
    if standard_entries:
        names = {e[0] for e in entries}
        for d in ("dev", "proc", "sys", "run", "tmp"):
            if d not in names:
                entries.append((d, stat.S_IFDIR | 0o755, b"", (0, 0)))
        entries.append(("dev/console", stat.S_IFCHR | 0o600, b"", (5, 1)))
        entries.append(("dev/null", stat.S_IFCHR | 0o666, b"", (1, 3)))
    entries.sort(key=lambda e: e[0])

    def header(ino, name, mode, size, rdev, nlink):
        name_b = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, nlink, mtime, size, 0, 0, rdev[0], rdev[1], len(name_b), 0]
        h = b"070701" + b"".join(b"%08X" % v for v in fields) + name_b
        return h + b"\0" * (-len(h) % 4)

    with open(out, "wb") as f:
        for ino, (name, mode, data, rdev) in enumerate(entries, start=1):
            nlink = 2 if stat.S_ISDIR(mode) else 1
            f.write(header(ino, name, mode, len(data), rdev, nlink))
            f.write(data + b"\0" * (-len(data) % 4))
        f.write(header(0, "TRAILER!!!", 0, 0, (0, 0), 1))
        f.write(b"\0" * (-f.tell() % 512))


if __name__ == "__main__":
    if len(sys.argv) >= 7 and sys.argv[1] == "modules":
        modules(*sys.argv[2:])
    elif len(sys.argv) == 4 and sys.argv[1] == "profile-firmware":
        profile_firmware(*sys.argv[2:])
    elif len(sys.argv) == 4 and sys.argv[1] == "profile-files":
        profile_files(*sys.argv[2:])
    elif len(sys.argv) == 4 and sys.argv[1] == "layer-base":
        layer_base(*sys.argv[2:])
    elif len(sys.argv) == 4 and sys.argv[1] == "cpio":
        cpio(*sys.argv[2:])
    elif len(sys.argv) == 4 and sys.argv[1] == "cpio-layer":
        cpio(*sys.argv[2:], standard_entries=False)
    else:
        sys.exit(__doc__)
