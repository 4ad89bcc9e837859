#!/bin/sh
# Runs with TARGET_DIR as $1. The ramdisk needs only /init (ferrite-agent)
# and the directories it mounts on; drop buildroot's default init bits so
# nothing else claims PID 1.
set -eu
TARGET_DIR=$1
mkdir -p "$TARGET_DIR/proc" "$TARGET_DIR/sys" "$TARGET_DIR/dev" \
	"$TARGET_DIR/run" "$TARGET_DIR/tmp" "$TARGET_DIR/etc/ferrite"
rm -f "$TARGET_DIR/sbin/init" "$TARGET_DIR/linuxrc"
# Drivers are built into the kernel (linux.fragment): an empty module list.
: > "$TARGET_DIR/etc/ferrite/modules.list"
