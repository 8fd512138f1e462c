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

# What to run, from the kernel command line (tests/vm/run.sh):
# vmtest.mode=tests|powercut-write|powercut-check, vmtest.config=...
mode=tests config=default
for w in $(cat /proc/cmdline); do
    case "$w" in
        vmtest.mode=*) mode=${w#vmtest.mode=} ;;
        vmtest.config=*) config=${w#vmtest.config=} ;;
    esac
done
mkdir -p /mnt/disk /mnt/plain
export EROFS_VM_DISK=/dev/vda EROFS_VM_DISK_MNT=/mnt/disk EROFS_VM_CONFIG=$config RUST_BACKTRACE=1
cd /
case "$mode" in
bench)
    /usr/bin/mke2fs -q -F -t ext4 -b 4096 -O verity /dev/vda || exit 1
    mount -t ext4 /dev/vda /mnt/disk || exit 1
    mkdir -p /mnt/disk/tmp
    TMPDIR=/mnt/disk/tmp /usr/bin/vm_guest --ignored --nocapture --test-threads=1 --exact bench_integrity 2>&1 &&
        result=PASS
    ;;
powercut-write)
    /usr/bin/mke2fs -q -F -t ext4 -b 4096 /dev/vda || exit 1
    mount -t ext4 /dev/vda /mnt/disk || exit 1
    # Runs until the host cuts the power.
    TMPDIR=/tmp /usr/bin/vm_guest --ignored --nocapture --test-threads=1 --exact powercut_write 2>&1
    ;;
powercut-check)
    # The journal of the ext4 is replayed by this mount, as after any crash.
    mount -t ext4 /dev/vda /mnt/disk || exit 1
    TMPDIR=/tmp /usr/bin/vm_guest --ignored --nocapture --test-threads=1 --exact powercut_check 2>&1 &&
        result=PASS
    ;;
tests)
    # The roots of the tests: ext4 with the verity feature (4 KiB blocks,
    # the page size, as fs-verity on ext4 requires) ...
    /usr/bin/mke2fs -q -F -t ext4 -b 4096 -O verity /dev/vda || exit 1
    mount -t ext4 /dev/vda /mnt/disk || exit 1
    mkdir -p /mnt/disk/tmp
    # ... and an ext4 without it, on a loop device.
    truncate -s 64M /tmp/plain.img
    /usr/bin/mke2fs -q -F -t ext4 /tmp/plain.img || exit 1
    mount -t ext4 -o loop /tmp/plain.img /mnt/plain || exit 1
    filters=$(grep -v '^$' /filters || true)
    # shellcheck disable=SC2086 # the filters are words
    TMPDIR=/mnt/disk/tmp EROFS_VM_PLAIN=/mnt/plain \
        /usr/bin/vm_guest --ignored --test-threads=1 --skip powercut_ --skip bench_ $filters 2>&1 && result=PASS
    ;;
*)
    echo "VMTEST: unknown vmtest.mode=$mode"
    ;;
esac
