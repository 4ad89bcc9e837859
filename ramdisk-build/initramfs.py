#!/usr/bin/env python3
"""Helpers for ramdisk-build/build (stdlib only, deterministic output).

  initramfs.py modules KROOT KVER LIST ROOTFS
      Copy the modules named in LIST (and everything they depend on) from an
      unpacked kernel package into ROOTFS/lib/modules/KVER, decompressed, with
      a depmod-format modules.dep; write the resolved list to
      ROOTFS/etc/ferrite/modules.list.
  initramfs.py cpio ROOTFS OUT
      Write ROOTFS as a newc cpio archive: sorted paths, owner 0:0, mtime
      $SOURCE_DATE_EPOCH, normalised modes, plus /dev/console and /dev/null
      (the kernel opens /dev/console for init before anything is mounted).
"""
import lzma
import os
import re
import shutil
import stat
import subprocess
import sys

DEPENDS = re.compile(rb"(?:^|\0)depends=([^\0]*)\0")
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


def modules(kroot, kver, list_path, rootfs):
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
    with open(list_path) as f:
        wanted = [l.split("#")[0].strip() for l in f]
    wanted = [mod_name(w) for w in wanted if w]

    data, deps = {}, {}

    def visit(name, stack):
        if name in deps or name in builtin:
            return
        if name in stack:
            sys.exit(f"module dependency cycle through {name}")
        if name not in index:
            raise KeyError(name)
        blob = read_module(os.path.join(moddir, index[name]))
        m = DEPENDS.search(blob)
        direct = [mod_name(d) for d in m.group(1).decode().split(",") if d] if m else []
        for d in direct:
            visit(d, stack + [name])
        data[name] = blob
        deps[name] = direct

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
    with open(os.path.join(dest, "modules.dep"), "w") as f:
        for name in sorted(deps, key=plain):
            f.write(f"{plain(name)}:{''.join(' ' + plain(d) for d in closure(name, []))}\n")
    if os.path.exists(bpath):
        shutil.copyfile(bpath, os.path.join(dest, "modules.builtin"))
    os.makedirs(os.path.join(rootfs, "etc/ferrite"), exist_ok=True)
    with open(os.path.join(rootfs, "etc/ferrite/modules.list"), "w") as f:
        f.write("# resolved by ramdisk-build from initramfs/etc/ferrite/modules.list\n")
        f.writelines(w + "\n" for w in resolved)
    print(f"modules: {len(resolved)} listed -> {len(data)} files "
          f"({sum(map(len, data.values()))} bytes); built in: {' '.join(inkernel) or '-'}")
    if missing:
        print(f"modules: not in kernel {kver}, skipped: {' '.join(missing)}")


def cpio(rootfs, out):
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
    if len(sys.argv) == 6 and sys.argv[1] == "modules":
        modules(*sys.argv[2:])
    elif len(sys.argv) == 4 and sys.argv[1] == "cpio":
        cpio(*sys.argv[2:])
    else:
        sys.exit(__doc__)
