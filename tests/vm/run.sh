#!/usr/bin/env bash
# Boots a throwaway VM whose kernel has what this machine's lacks (fs-verity,
# dm-verity; with EROFS and overlayfs) and runs the integrity tests inside it
# (tests/vm_guest.rs, `--ignored`). Passes iff the guest prints "VMTEST: PASS".
#
#   tests/vm/run.sh [TEST-FILTER...]        (as root; `make test-vm`)
#   tests/vm/run.sh --bench                 (`make bench-integrity`: a table)
#
# The kernel is Debian's (bookworm-backports, 6.12), unpacked from its .deb,
# which is kept in $VM_CACHE between runs; the initramfs is busybox, the test
# binary and the tools it calls, with their shared libraries. qemu runs with
# software emulation (KVM is used only where it really works). Host packages
# come from scripts/deps.sh. Adapted from a recipe of this project's shared
# reference material; nothing here reads it.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)
VM_CACHE=${VM_CACHE:-/var/cache/erofs-snapshotter/vm}
W=${VM_WORK:-$TOP/target/vm}
TIMEOUT=${VM_TIMEOUT:-600}
MEM=${VM_MEM:-1536}
t0=$(date +%s%N)
phase() { local ms=$((($(date +%s%N) - t0) / 1000000)); printf '[vm %4d.%03ds] %s\n' $((ms / 1000)) $((ms % 1000)) "$*"; }

BENCH=0
if [ "${1:-}" = --bench ]; then BENCH=1; shift; fi
[ "$(id -u)" = 0 ] || { echo "tests/vm/run.sh: run as root (it unpacks a kernel and builds an initramfs)" >&2; exit 1; }
for t in qemu-system-x86_64 busybox cpio modinfo fsverity mke2fs veritysetup fsck.erofs; do
    command -v "$t" >/dev/null || { echo "tests/vm/run.sh: $t missing; run scripts/deps.sh" >&2; exit 1; }
done
if ldd "$(command -v busybox)" >/dev/null 2>&1; then
    echo "tests/vm/run.sh: busybox must be the static one (busybox-static); run scripts/deps.sh" >&2
    exit 1
fi

# ---- 1. the kernel: the .deb cached, only what is needed unpacked ------------
mkdir -p "$VM_CACHE" "$W"
kpkg=$(apt-cache depends -t bookworm-backports linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
[ -n "$kpkg" ] || { echo "tests/vm/run.sh: no linux-image-amd64 in bookworm-backports; run scripts/deps.sh" >&2; exit 1; }
deb=$(ls "$VM_CACHE/${kpkg}"_*.deb 2>/dev/null | head -n1 || true)
if [ -z "$deb" ]; then
    phase "downloading $kpkg into $VM_CACHE"
    (cd "$VM_CACHE" && apt-get download -q -t bookworm-backports "$kpkg" 2>&1 | grep -v unsandboxed || true)
    deb=$(ls "$VM_CACHE/${kpkg}"_*.deb | head -n1)
fi
K=$W/kernel
stamp=$K/.from-$(basename "$deb")
if [ ! -e "$stamp" ]; then
    rm -rf "$K"; mkdir -p "$K"
    dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$K" --wildcards './boot/*' './lib/modules/*/modules.builtin' \
        './lib/modules/*/kernel/fs/*' './lib/modules/*/kernel/drivers/block/*' './lib/modules/*/kernel/drivers/md/*' \
        './lib/modules/*/kernel/drivers/virtio/*' './lib/modules/*/kernel/lib/*' './lib/modules/*/kernel/crypto/*' \
        './lib/modules/*/kernel/arch/x86/crypto/*'
    touch "$stamp"
fi
KVER=$(ls "$K/lib/modules")
VMLINUZ=$K/boot/vmlinuz-$KVER
for opt in FS_VERITY EROFS_FS OVERLAY_FS DM_VERITY BLK_DEV_LOOP; do
    grep -qE "^CONFIG_$opt=[ym]" "$K/boot/config-$KVER" || { echo "kernel $KVER lacks CONFIG_$opt" >&2; exit 1; }
done
phase "kernel $KVER from $(basename "$deb")"

# ---- 2. the guest's test binary -------------------------------------------------
bin=$(cd "$TOP" && cargo test --release --locked --no-run --test vm_guest --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "vm_guest" and m.get("executable"):
        print(m["executable"])')
[ -x "$bin" ] || { echo "tests/vm/run.sh: building tests/vm_guest.rs failed; run: cargo test --release --no-run --test vm_guest" >&2; exit 1; }
phase "test binary $(basename "$bin")"

# ---- 3. the initramfs -----------------------------------------------------------
R=$W/root
rm -rf "$R"; mkdir -p "$R"/{bin,sbin,usr/bin,lib,lib64,proc,sys,dev,tmp,mnt,lib/modules}
cp "$(command -v busybox)" "$R/bin/busybox"
for a in $("$R/bin/busybox" --list); do [ "$a" = busybox ] || ln -sf busybox "$R/bin/$a"; done
copy_bin() { # a program and its shared libraries, called by absolute path
    install -D -m755 "$1" "$R/usr/bin/$(basename "$1")"
    ldd "$1" | grep -o '/[^ ]*' | while read -r lib; do cp -L --parents "$lib" "$R"; done
}
for b in "$bin" "$(command -v fsverity)" "$(command -v mke2fs)" "$(command -v veritysetup)" "$(command -v fsck.erofs)"; do
    copy_bin "$b"
done
mv "$R/usr/bin/$(basename "$bin")" "$R/usr/bin/vm_guest"
# containerd's dm-verity formatting, to show that its layers mount here.
(cd "$TOP/bindings/go" && CGO_ENABLED=0 go build -o "$R/usr/bin/dmverityformat" ./internal/dmverityformat) ||
    { echo "tests/vm/run.sh: building bindings/go/internal/dmverityformat failed" >&2; exit 1; }
# Modules in load order: "depends=" resolved with modinfo, no depmod.
declare -A kopath=() seen=()
while read -r f; do n=$(basename "$f"); n=${n%%.ko*}; kopath[${n//-/_}]=$f; done \
    < <(find "$K/lib/modules/$KVER/kernel" -name '*.ko*')
order=()
resolve() {
    local m=${1//-/_} d f
    [ -n "${seen[$m]:-}" ] && return 0
    seen[$m]=1
    f=${kopath[$m]:-}
    if [ -z "$f" ]; then
        grep -qE "/${m//_/[-_]}\.ko" "$K/lib/modules/$KVER/modules.builtin" && return 0
        echo "module $1 not found in $KVER" >&2
        return 1
    fi
    for d in $(modinfo -F depends "$f" | tr ',' ' '); do resolve "$d"; done
    order+=("$f")
}
# crc32c_generic: ext4's metadata checksums; the rest: what the tests use.
for m in crc32c_generic virtio_pci virtio_blk loop ext4 erofs overlay dm-verity; do resolve "$m"; done
: >"$R/modules.list"
for ko in "${order[@]}"; do
    base=$(basename "$ko"); base=${base%.xz}; base=${base%.zst}
    case "$ko" in
        *.xz) xz -dc "$ko" >"$R/lib/modules/$base" ;;
        *.zst) zstd -qdc "$ko" >"$R/lib/modules/$base" ;;
        *) cp "$ko" "$R/lib/modules/$base" ;;
    esac
    echo "$base" >>"$R/modules.list"
done
install -m755 "$HERE/guest-init.sh" "$R/init"
printf '%s\n' "$@" >"$R/filters"
(cd "$R" && find . | cpio -o -H newc --quiet | gzip -1) >"$W/initrd.img"
rm -f "$W/disk.img"; truncate -s 1G "$W/disk.img"
phase "initramfs $(du -h "$W/initrd.img" | cut -f1), modules: $(tr '\n' ' ' <"$R/modules.list")"

# ---- 4. boot ---------------------------------------------------------------------
# Only real hardware virtualisation counts: where /dev/kvm is kvm_pvm (no
# vmx/svm in cpuinfo) a stock kernel dies with "KVM internal error".
if [ -w /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo && [ ! -d /sys/module/kvm_pvm ]; then
    accel=(-accel kvm -cpu host -smp 2)
else
    accel=(-accel tcg -cpu max -smp 1)
fi

# boot LOG WORDS [CUT_MS]: boots the VM with WORDS on the kernel command
# line, its console into LOG. With CUT_MS, cuts the power (SIGKILL, no
# shutdown: what the guest had not written to its disk is lost) CUT_MS
# after the guest says the first layers are synced. Returns qemu's status.
boot() {
    local log=$1 words=$2 cut=${3:-} qemu rc
    : >"$log"
    timeout "$TIMEOUT" qemu-system-x86_64 "${accel[@]}" -machine q35 -m "$MEM" \
        -display none -monitor none -serial stdio -no-reboot -nic none \
        -kernel "$VMLINUZ" -initrd "$W/initrd.img" \
        -append "console=ttyS0 panic=-1 quiet loglevel=3 $words" \
        -drive file="$W/disk.img",if=virtio,format=raw \
        </dev/null >"$log" 2>&1 &
    qemu=$!
    if [ -n "$cut" ]; then
        while kill -0 $qemu 2>/dev/null && ! grep -q '^VMTEST synced' "$log"; do sleep 0.05; done
        sleep "$(printf '%d.%03d' $((cut / 1000)) $((cut % 1000)))"
        pkill -KILL -P "$qemu" qemu-system-x86 2>/dev/null || true
        kill -KILL "$qemu" 2>/dev/null || true
    fi
    set +e
    { wait $qemu; } 2>/dev/null
    rc=$?
    set -e
    return $rc
}

fail_with_log() {
    echo "---- console log tail ($1) ----"
    tail -n 60 "$1"
    exit 1
}

if [ "$BENCH" = 1 ]; then
    LOG=$W/bench.log
    phase "booting (${accel[1]}): the integrity benchmark, console in $LOG"
    boot "$LOG" "vmtest.mode=bench" || true
    grep -q '^VMTEST: PASS' "$LOG" || fail_with_log "$LOG"
    echo "tests/vm/run.sh --bench, $(date -u '+%Y-%m-%d %H:%M UTC'), tree $(git -C "$TOP" rev-parse --short HEAD)"
    echo "guest: $(grep -o 'VMTEST kernel [^,]*' "$LOG" | cut -d' ' -f3), qemu ${accel[*]}, ${MEM} MiB; host: $(nproc) CPUs, $(uname -r)"
    echo "medians of 3 layers of one 32 MiB file each, ext4 on virtio; emulated: compare ratios only"
    echo
    sed -n 's/^VMBENCH //p' "$LOG"
    exit 0
fi
LOG=$W/console.log
phase "booting (${accel[1]}): the integrity tests, console in $LOG"
boot "$LOG" "vmtest.mode=tests" || true
grep -E '^(test |running|failures|---- |VMTEST)|panicked' "$LOG" | grep -v '^test result' || true
grep -q '^VMTEST: PASS' "$LOG" || fail_with_log "$LOG"
phase "integrity tests passed"

# ---- 5. power cuts ---------------------------------------------------------------
# For each setting, CUTS times: commit layers until the power is cut at a
# random moment, boot again on the same disk and check every committed
# snapshot: intact, or refused with an error naming its blob; never
# mounted with other content (powercut_check fails then). Every layer found
# lost is then repaired from its tar and all must mount intact. Layers under a
# snapshot handed out before the cut (every third layer is used so) must
# come back intact, but with durable_before_use off (no_flush).
CUTS=${VM_POWERCUT_CUTS:-2}
[ $# -eq 0 ] || CUTS=0 # a filter asks for some tests only
[ "$CUTS" -gt 0 ] || exit 0
SUMMARY=$W/powercut.tsv
printf 'config\tcut\tcut_ms\treported\tintact_reported\tlost_reported\tgone\trefused\thealed\tused\tused_intact\tcommit_ms_median\tapply_ms_median\n' >"$SUMMARY"
for config in ${VM_POWERCUT_CONFIGS:-default no_flush sync_commit set_immutable}; do
    for n in $(seq "$CUTS"); do
        cut_ms=$((RANDOM % 4000))
        wlog=$W/powercut-$config-$n-write.log clog=$W/powercut-$config-$n-check.log
        boot "$wlog" "vmtest.mode=powercut-write vmtest.config=$config" "$cut_ms" || true
        grep -q '^VMTEST committed' "$wlog" || fail_with_log "$wlog"
        boot "$clog" "vmtest.mode=powercut-check vmtest.config=$config" || true
        grep -q '^VMTEST: PASS' "$clog" || fail_with_log "$clog"
        python3 - "$wlog" "$clog" "$config" "$n" "$cut_ms" >>"$SUMMARY" <<'PY' || fail_with_log "$clog"
import re, statistics, sys
wlog, clog, config, n, cut = sys.argv[1:]
w = open(wlog, errors="replace").read()
c = open(clog, errors="replace").read()
reported = {int(m) for m in re.findall(r"^VMTEST committed layer-(\d+)", w, re.M)}
synced = int(re.search(r"^VMTEST synced through layer-(\d+)", w, re.M).group(1))
commit = [int(m) / 1000 for m in re.findall(r"commit_us=(\d+)", w)]
apply_ = [int(m) / 1000 for m in re.findall(r"apply_us=(\d+)", w)]
intact = {int(m) for m in re.findall(r"^VMTEST layer-(\d+): intact", c, re.M)}
refused = len(re.findall(r"^VMTEST layer-\d+: refused", c, re.M))
present = {int(m) for m in re.findall(r"^VMTEST layer-(\d+): (?:intact|refused)", c, re.M)}
gone_reported = sorted(reported - present)
healed = len(re.findall(r"^VMTEST healed layer-\d+", c, re.M))
gone = sorted(set(range(synced + 1)) - intact)
if gone:
    sys.exit(f"{clog}: layers committed and synced before the cut are not intact: {gone}")
used = {int(m) for m in re.findall(r"^VMTEST used layer-(\d+)", w, re.M)}
below_used = set(range(max(used) + 1)) if used else set()
lost_used = sorted(below_used - intact)
if config != "no_flush" and lost_used:
    sys.exit(f"{clog}: layers under a snapshot handed out before the cut are not intact: {lost_used}")
reported -= set(range(synced + 1))
ok = len(reported & intact)
print(f"{config}\t{n}\t{cut}\t{len(reported)}\t{ok}\t{len(reported) - ok}\t{len(gone_reported)}\t{refused}\t{healed}\t"
      f"{len(below_used)}\t{len(below_used & intact)}\t"
      f"{statistics.median(commit):.1f}\t{statistics.median(apply_):.1f}")
PY
        tail -n 1 "$SUMMARY" | sed 's/^/[vm] power cut: /'
    done
done
phase "power cuts done: every committed snapshot intact or refused by name"
python3 -c 'import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
for r in rows:
    print("  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip())' "$SUMMARY"
