#!/usr/bin/env python3
"""Run IPA 13's own StandbyExtension.prepare_image once, for scripts/bench-image.

Usage (with build/ipa-venv/bin/python):
  ipa-prepare-image.py --url URL --format raw|qcow2 --sha256 HEX --device /dev/loopN

What runs is IPA's real code path, unchanged: the `prepare_image` async
command with its validator (_validate_image_info), ImageDownload (requests,
1 MiB chunks, hashlib sha256 on the fly), for raw with stream_raw_images the
buffered stream onto the device, for qcow2 the download to
tempfile.gettempdir()/<id> (the caller points TMPDIR at tmpfs, as in the
ramdisk), the format inspector's safety check, destroy_disk_metadata (wipefs,
dd, sgdisk -Z on the device), `qemu-img convert -O host_device -t directsync
-S 0 -f qcow2 -W` under IPA's prlimit, trigger_device_rescan (sync, udevadm
settle, partprobe, sgdisk -v), fix_gpt_partition, _validate_partitioning
(partprobe, parted print) and the disk identifier (hexdump).

Stubbed, only at the hardware edge:
  - hardware.dispatch_to_managers: 'get_os_install_device' returns the loop
    device the bench created; any other dispatch raises (none happens for a
    whole-disk image).  This avoids loading the hardware managers, which
    would list and probe the host's own disks.
  - no agent/conductor (agent=None): no heartbeat after the command.

After the command, the device is fsync()ed inside the timed region: IPA's raw
stream writes through the page cache and never syncs, so without it the raw
case would stop the clock with dirty pages still to write.  (The qcow2 path
already ran `sync`; the extra fsync costs nothing there.)

Prints one JSON line: seconds (prepare_image + fsync); the peak RSS of this
Python process (getrusage, exact); the peak of the process tree, i.e. the sum
of PSS over this process and all its descendants (qemu-img, oslo's prlimit
wrapper...), sampled every 10 ms; all in KiB; and the size of the spooled
file if any.  PSS, not RSS, and not the children's getrusage peak: oslo's
processutils forks with a preexec_fn, so a child shares the interpreter's
pages until exec, and summing RSS would count them twice.  Exits non-zero
with IPA's error if the command did not succeed.
"""
import argparse
import json
import logging
import os
import resource
import sys
import tempfile
import threading
import time


def _pss_kib(pid):
    try:
        with open('/proc/%d/smaps_rollup' % pid) as f:
            for line in f:
                if line.startswith('Pss:'):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid):
    out = []
    try:
        for tid in os.listdir('/proc/%d/task' % pid):
            with open('/proc/%d/task/%s/children' % (pid, tid)) as f:
                out.extend(int(c) for c in f.read().split())
    except OSError:
        pass
    return out


class TreeRss(threading.Thread):
    """Peak of the summed PSS of this process and its descendants."""

    def __init__(self, interval=0.01):
        super().__init__(daemon=True)
        self.interval = interval
        self.peak = 0
        self.stop = threading.Event()

    def run(self):
        me = os.getpid()
        while not self.stop.is_set():
            total, todo = 0, [me]
            while todo:
                pid = todo.pop()
                total += _pss_kib(pid)
                todo.extend(_children(pid))
            self.peak = max(self.peak, total)
            self.stop.wait(self.interval)


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--url', required=True)
    p.add_argument('--format', required=True, choices=['raw', 'qcow2'])
    p.add_argument('--sha256', required=True)
    p.add_argument('--device', required=True)
    p.add_argument('--image-id', default='ferrite-bench-image')
    p.add_argument('--debug', action='store_true')
    args = p.parse_args()

    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        stream=sys.stderr,
        format='%(asctime)s %(levelname)s %(name)s: %(message)s')

    from oslo_config import cfg
    from ironic_python_agent import config as ipa_config
    from ironic_python_agent import hardware
    from ironic_python_agent.extensions import base
    from ironic_python_agent.extensions import standby

    assert ipa_config.CONF is cfg.CONF  # importing config registered the opts
    cfg.CONF([], project='ironic-python-agent', default_config_files=[],
             default_config_dirs=[])

    device = args.device

    def dispatch_to_managers(method, *a, **kw):
        if method == 'get_os_install_device':
            return device
        raise RuntimeError('bench stub: unexpected hardware dispatch %r; '
                           'refusing to touch real hardware' % method)

    hardware.dispatch_to_managers = dispatch_to_managers

    image_info = {
        'id': args.image_id,
        'urls': [args.url],
        'disk_format': args.format,
        'container_format': 'bare',
        'os_hash_algo': 'sha256',
        'os_hash_value': args.sha256,
        'checksum': args.sha256,
        'stream_raw_images': True,
        'image_type': 'whole-disk',
    }

    spool = os.path.join(tempfile.gettempdir(), args.image_id)
    if os.path.exists(spool):
        os.unlink(spool)  # a stale spool from an earlier failed run
    ext = standby.StandbyExtension(agent=None)

    sampler = TreeRss()
    sampler.start()
    t0 = time.monotonic()
    cmd = ext.prepare_image(image_info=image_info, configdrive=None)
    cmd.join()
    if cmd.command_status != base.AgentCommandStatus.SUCCEEDED:
        err = cmd.command_error
        print('IPA prepare_image %s: %s' % (cmd.command_status,
                                            getattr(err, 'details', err)),
              file=sys.stderr)
        sys.exit(1)
    fd = os.open(device, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    secs = time.monotonic() - t0
    sampler.stop.set()
    sampler.join()

    spooled = os.path.getsize(spool) if os.path.exists(spool) else 0
    if spooled:
        os.unlink(spool)  # IPA leaves it in place; the bench cleans up
    out = {
        'seconds': secs,
        'self_rss_kib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        'tree_rss_kib': sampler.peak,
        'spooled_bytes': spooled,
        'result': cmd.command_result and cmd.command_result.get('result'),
    }
    print(json.dumps(out))


if __name__ == '__main__':
    main()
