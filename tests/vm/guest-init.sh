#!/bin/sh
# PID 1 of the VM of tests/vm/run.sh: loads the modules, makes the disks the
# tests use, runs the integrity tests, prints "VMTEST: PASS" or "VMTEST: FAIL"
# on the console and powers off.
export PATH=/usr/bin:/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp

result=FAIL
finish() {
    echo "VMTEST kernel $(uname -r), uptime $(cut -d' ' -f1 /proc/uptime)s"
    echo "VMTEST: $result"
    sync
    poweroff -f
}
trap finish EXIT

while read -r m; do
    insmod "/lib/modules/$m" 2>/dev/null || echo "VMTEST info: insmod $m failed (built in?)"
done </modules.list
for _ in $(seq 100); do [ -b /dev/vda ] && break; sleep 0.1; done
[ -b /dev/vda ] || { echo "VMTEST: no disk /dev/vda"; exit 1; }

# The roots of the tests: ext4 with the verity feature (4 KiB blocks, the
# page size, as fs-verity on ext4 requires).
mkdir -p /mnt/disk /mnt/plain
/usr/bin/mke2fs -q -F -t ext4 -b 4096 -O verity /dev/vda || exit 1
mount -t ext4 /dev/vda /mnt/disk || exit 1
mkdir -p /mnt/disk/tmp
# And an ext4 without it, on a loop device.
truncate -s 64M /tmp/plain.img
/usr/bin/mke2fs -q -F -t ext4 /tmp/plain.img || exit 1
mount -t ext4 -o loop /tmp/plain.img /mnt/plain || exit 1

filters=$(grep -v '^$' /filters || true)
cd /
# shellcheck disable=SC2086 # the filters are words
TMPDIR=/mnt/disk/tmp EROFS_VM_DISK=/dev/vda EROFS_VM_DISK_MNT=/mnt/disk EROFS_VM_PLAIN=/mnt/plain \
    RUST_BACKTRACE=1 /usr/bin/vm_guest --ignored --test-threads=1 $filters 2>&1
[ $? = 0 ] && result=PASS
