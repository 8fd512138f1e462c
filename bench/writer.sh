#!/usr/bin/env bash
# Writer benchmark: the built-in EROFS writer against mkfs.erofs and against
# the floors (what no writer can beat), side by side on the same inputs in one
# run. A table, not a test: nothing is asserted but the layers' diffIDs.
#
#   bench/writer.sh            (as root; make bench-writer)
#
# Inputs, prepared once in BENCH_WRITER_CACHE: the 4 gzip layers of the
# launch benchmark's image (bench/launch.sh builds it; `make bench-launch`),
# the same layers uncompressed, a synthetic layer of about 1 GiB in 200,000
# entries (bench/gen_layer.py) as tar and as gzip, and a tree of 10,000 small
# files for the commit.
#
# Per input, BENCH_RUNS times (the modes' order rotating from run to run),
# each timed command preceded by `sync; echo 3 > /proc/sys/vm/drop_caches`
# (BENCH_DROP_CACHES=0: warm, inputs in the page cache):
#   builtin   erofs-snapshotter-ctl apply KEY FILE TYPE, default config, on a
#             fresh root (the prepare before it is not timed)
#   mkfs      the same with "mkfs_options": ["-x2"] (mkfs.erofs --tar=f --aufs)
#   cat       tar inputs: cat FILE > OUT on the same filesystem
#   sha       tar inputs: FILE read and hashed with SHA-256 (the diffID), nothing written
#   gunzip    gzip inputs: decompression (flate2 on zlib-rs, the library's
#             decoder) and SHA-256 of the output, nothing written
# No path fsyncs (the writer does not without sync_commit, mkfs.erofs does
# not, cat does not): every output goes to the page cache and is written back
# after the clock stopped (the next run's sync). Commit: an active snapshot's
# upper dir filled with the 10,000 files (not timed), then raw
# `mkfs.erofs --quiet -Enoinline_data -b4096 OUT UPPER` on it, the commit with
# the built-in writer (the library's commit call alone, timed in process:
# benches/writer_helper.rs) and the commit through mkfs.erofs ("-x2").
#
# Knobs: BENCH_RUNS (5), BENCH_INPUTS (all: 1-base.tar ... synthetic.tar.gz),
# BENCH_COMMIT (1; 0 skips the commit), BENCH_DROP_CACHES (1),
# BENCH_CACHE (/var/cache/erofs-snapshotter-bench, where bench/launch.sh keeps
# the image), BENCH_WRITER_CACHE ($BENCH_CACHE/writer), BENCH_TMPDIR (/var/tmp:
# the filesystem measured), BENCH_OUT (a copy of the report).
set -euo pipefail
export LC_ALL=C

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
BENCH_RUNS=${BENCH_RUNS:-5}
BENCH_CACHE=${BENCH_CACHE:-/var/cache/erofs-snapshotter-bench}
BENCH_WRITER_CACHE=${BENCH_WRITER_CACHE:-$BENCH_CACHE/writer}
BENCH_TMPDIR=${BENCH_TMPDIR:-/var/tmp}
BENCH_COMMIT=${BENCH_COMMIT:-1}
BENCH_DROP_CACHES=${BENCH_DROP_CACHES:-1}
BENCH_OUT=${BENCH_OUT:-/tmp/erofs-writer-bench-$(date +%Y%m%d-%H%M%S).txt}
LAYER_NAMES=(1-base 2-usr-share 3-usr-lib 4-app)
ALL_INPUTS="1-base.tar 2-usr-share.tar 3-usr-lib.tar 4-app.tar synthetic.tar"
ALL_INPUTS+=" 1-base.tar.gz 2-usr-share.tar.gz 3-usr-lib.tar.gz 4-app.tar.gz synthetic.tar.gz"
BENCH_INPUTS=${BENCH_INPUTS:-$ALL_INPUTS}
MEDIA_TAR=application/vnd.oci.image.layer.v1.tar
MEDIA_GZIP=application/vnd.oci.image.layer.v1.tar+gzip
TIME=/usr/bin/time

log() { echo "[$(date +%T)] $*" >&2; }
die() { echo "[$(date +%T)] ERROR: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (drop_caches, snapshot ownership)"
[ -x "$TIME" ] || die "$TIME (GNU time) is missing: apt-get install time"
command -v mkfs.erofs >/dev/null || die "mkfs.erofs is not on PATH"
[[ $BENCH_RUNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS: a positive number, not $BENCH_RUNS"

T_BENCH=$EPOCHREALTIME
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
W=
trap '[ -z "$W" ] || rm -rf "$W"' EXIT
trap 'exit 130' INT TERM

# --- binaries ----------------------------------------------------------------

log "building erofs-snapshotter-ctl and benches/writer_helper.rs (cargo, release)"
(cd "$REPO" && cargo build --release --locked --bin erofs-snapshotter-ctl) >&2
CTL=$REPO/target/release/erofs-snapshotter-ctl
HELPER=$(cd "$REPO" && cargo bench --locked --bench writer_helper --no-run --message-format=json 2>/dev/null |
	python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "writer_helper" and m.get("executable"):
        print(m["executable"])
')
[ -x "$HELPER" ] || die "building benches/writer_helper.rs failed (cargo bench --bench writer_helper --no-run)"

# --- inputs ------------------------------------------------------------------

C=$BENCH_WRITER_CACHE

# prepare_inputs: the layer files in $C, made once (again when the image or
# the generator changes).
# bench_image: the newest cached OCI archive of the launch benchmark's image.
bench_image() {
	find "$BENCH_CACHE" -maxdepth 1 -name 'image-*.tar' -printf '%T@ %p\n' 2>/dev/null | sort -rn | head -1 | cut -d' ' -f2-
}

prepare_inputs() {
	local image stamp t0 name
	image=$(bench_image)
	[ -n "$image" ] || die "no benchmark image (image-*.tar) in $BENCH_CACHE: run \`make bench-launch\` once (bench/launch.sh builds and caches it, a few minutes), or set BENCH_CACHE"
	stamp="$(basename "$image") $(sha256sum "$HERE/gen_layer.py" | cut -c1-16) v1"
	if [ "$(cat "$C/.stamp" 2>/dev/null)" = "$stamp" ]; then
		log "inputs: cached in $C"
		return 0
	fi
	t0=$EPOCHREALTIME
	log "inputs: preparing in $C from $image (one time, about 2 minutes)"
	rm -rf "$C"
	mkdir -p "$C"
	# The manifest's layers, bottom first, as N-name.tar.gz.
	python3 - "$image" "$C" "${LAYER_NAMES[@]}" <<-'EOF'
		import json, shutil, sys, tarfile
		image, out, names = sys.argv[1], sys.argv[2], sys.argv[3:]
		with tarfile.open(image) as t:
		    blob = lambda d: t.extractfile("blobs/sha256/" + d.split(":", 1)[1])
		    index = json.load(t.extractfile("index.json"))
		    manifest = json.load(blob(index["manifests"][0]["digest"]))
		    layers = manifest["layers"]
		    if len(layers) != len(names):
		        sys.exit(f"{image}: {len(layers)} layers, expected {len(names)}")
		    for name, layer in zip(names, layers):
		        if not layer["mediaType"].endswith("+gzip"):
		            sys.exit(f"{image}: layer {layer['digest']} is {layer['mediaType']}, expected gzip")
		        with blob(layer["digest"]) as src, open(f"{out}/{name}.tar.gz", "wb") as dst:
		            shutil.copyfileobj(src, dst, 1 << 20)
	EOF
	for name in "${LAYER_NAMES[@]}"; do
		gzip -dc "$C/$name.tar.gz" >"$C/$name.tar"
	done
	log "inputs: generating the synthetic layer (bench/gen_layer.py)"
	python3 "$HERE/gen_layer.py" synthetic "$C/synthetic.tar"
	gzip -n -6 -c "$C/synthetic.tar" >"$C/synthetic.tar.gz"
	python3 "$HERE/gen_layer.py" small "$C/small.tar"
	for name in "${LAYER_NAMES[@]}" synthetic small; do
		sha256sum "$C/$name.tar" | awk '{ print "sha256:" $1 }' >"$C/$name.diffid"
		tar -tf "$C/$name.tar" | wc -l >"$C/$name.entries"
	done
	echo "$stamp" >"$C/.stamp"
	log "inputs: ready in $(awk "BEGIN { printf \"%.0f\", $EPOCHREALTIME - $t0 }") s"
}

# --- measuring ---------------------------------------------------------------

drop_caches() {
	sync
	[ "$BENCH_DROP_CACHES" = 0 ] || echo 3 >/proc/sys/vm/drop_caches
}

# measure CMD...: drops the caches, runs CMD (stdout in $W/stdout) under GNU
# time; sets M_WALL (seconds, the shell's clock around it), M_CPU (user +
# system seconds of CMD and the children it waited for) and M_RSS (KiB, the
# largest resident set of CMD or of one of those children).
measure() {
	local t0 t1 u s
	drop_caches
	t0=$EPOCHREALTIME
	"$TIME" -f '%U %S %M' -o "$W/time" "$@" >"$W/stdout" || die "failed: $*"
	t1=$EPOCHREALTIME
	read -r u s M_RSS <"$W/time"
	M_WALL=$(awk "BEGIN { printf \"%.4f\", $t1 - $t0 }")
	M_CPU=$(awk "BEGIN { printf \"%.2f\", $u + $s }")
}

declare -A WALL CPU RSS OUT_SIZE
# record KEY: appends the last measurement to KEY's lists.
record() {
	WALL[$1]+="$M_WALL "
	CPU[$1]+="$M_CPU "
	RSS[$1]+="$M_RSS "
}

config_of() { # MODE ROOT
	case $1 in
	builtin) printf '{"root": "%s"}' "$2" ;;
	mkfs) printf '{"root": "%s", "mkfs_options": ["-x2"]}' "$2" ;;
	esac
}

# apply_run MODE INPUT: one timed apply on a fresh root.
apply_run() {
	local mode=$1 input=$2 root=$W/root-$1 cfg media=$MEDIA_TAR got want
	[[ $input != *.gz ]] || media=$MEDIA_GZIP
	rm -rf "$root"
	cfg=$(config_of "$mode" "$root")
	"$CTL" --config "$cfg" prepare k >/dev/null
	measure "$CTL" --config "$cfg" apply k "$C/$input" "$media"
	got=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["digest"])' <"$W/stdout")
	want=$(cat "$C/${input%%.tar*}.diffid")
	[ "$got" = "$want" ] || die "$mode apply of $input: diffID $got, expected $want"
	OUT_SIZE[$input:$mode]=$(stat -c %s "$root/snapshots/1/layer.erofs")
	rm -rf "$root"
}

# floor_run MODE INPUT
floor_run() {
	local mode=$1 input=$2 got want
	want=$(cat "$C/${input%%.tar*}.diffid")
	case $mode in
	cat)
		# shellcheck disable=SC2016 # expanded by that sh
		measure sh -c 'cat "$1" >"$2"' sh "$C/$input" "$W/floor.out"
		rm -f "$W/floor.out"
		return 0
		;;
	sha) measure "$HELPER" sha256 "$C/$input" ;;
	gunzip) measure "$HELPER" gunzip-sha256 "$C/$input" ;;
	esac
	got=$(cut -d' ' -f1 "$W/stdout")
	[ "$got" = "$want" ] || die "$mode of $input: $got, expected $want"
}

# overhead_run: erofs-snapshotter-ctl's fixed cost, cold: a stat on a fresh
# root (process start, open of the metadata database).
overhead_run() {
	local root=$W/root-stat cfg
	rm -rf "$root"
	cfg=$(config_of builtin "$root")
	"$CTL" --config "$cfg" prepare k >/dev/null
	measure "$CTL" --config "$cfg" stat k
	record ctl:stat
	rm -rf "$root"
}

modes_of() {
	case $1 in
	*.tar.gz) echo "builtin mkfs gunzip" ;;
	*.tar) echo "builtin mkfs cat sha" ;;
	*) die "input $1: neither .tar nor .tar.gz" ;;
	esac
}

# commit_run: the 10,000 files into two fresh active snapshots (not timed),
# then raw mkfs.erofs on the first one's upper dir and the built-in commit of
# that snapshot (in this order: the commit retires the upper dir), and the
# mkfs.erofs commit of the second (before the pair in even runs).
commit_run() {
	local mode root cfg upper
	declare -A uppers
	for mode in builtin mkfs; do
		root=$W/croot-$mode
		rm -rf "$root"
		cfg=$(config_of "$mode" "$root")
		upper=$("$CTL" --config "$cfg" prepare c | python3 -c 'import json, sys; print(json.load(sys.stdin)[-1]["source"])')
		[ -d "$upper" ] || die "prepare: no upper dir $upper"
		tar -xf "$C/small.tar" -C "$upper" --numeric-owner
		uppers[$mode]=$upper
	done
	local order=(raw builtin mkfs) line=
	[ $((RUN % 2)) = 1 ] || order=(mkfs raw builtin)
	for mode in "${order[@]}"; do
		case $mode in
		raw)
			measure mkfs.erofs --quiet -Enoinline_data -b4096 "$W/raw.erofs" "${uppers[builtin]}"
			OUT_SIZE[commit:raw]=$(stat -c %s "$W/raw.erofs")
			rm -f "$W/raw.erofs"
			;;
		*)
			root=$W/croot-$mode
			measure "$HELPER" commit "$(config_of "$mode" "$root")" committed c
			# The commit call's own time, not the process's.
			M_WALL=$(cat "$W/stdout")
			OUT_SIZE[commit:$mode]=$(stat -c %s "$root/snapshots/1/layer.erofs")
			;;
		esac
		record "commit:$mode"
		line+=" $mode $(secs "$M_WALL")"
	done
	rm -rf "$W/croot-builtin" "$W/croot-mkfs"
	log "run $RUN/$BENCH_RUNS commit:$line"
}

# --- statistics --------------------------------------------------------------

median() { tr ' ' '\n' | awk 'NF' | sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
maxof() { tr ' ' '\n' | awk 'NF' | sort -g | tail -1; }
med() { median <<<"${WALL[$1]:-}"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || a == "" || b == "" || b == 0) print "-"; else printf "%.2fx", a / b }'; }
secs() { awk -v a="$1" 'BEGIN { if (a == "-" || a == "") print "-"; else printf "%.2f", a }'; }
mib() { awk -v a="$1" 'BEGIN { if (a == "") print "-"; else printf "%.0f", a / 1048576 }'; }
# verdict RATIO LIMIT: "met", or "MISSED" and how far past the limit.
verdict() { awk -v r="${1%x}" -v l="$2" 'BEGIN { if (r == "-") print "-"; else if (r <= l) print "met"; else printf "MISSED (%.2fx the limit)\n", r / l }'; }

# --- main --------------------------------------------------------------------

prepare_inputs
W=$(mktemp -d "$BENCH_TMPDIR/bench-writer.XXXXXX")
log "work dir $W ($(findmnt -no FSTYPE,SOURCE --target "$W" | head -1 | tr -s ' '))"
for input in $BENCH_INPUTS; do
	[ -f "$C/$input" ] || die "no input $C/$input (BENCH_INPUTS: some of $ALL_INPUTS)"
done

# The trees first: the time of a writer that gives a wrong tree means nothing.
log "equivalence: tests/layer_equivalence.py on $(basename "$(bench_image)")"
EQUIVALENCE=$(python3 "$REPO/tests/layer_equivalence.py" "$CTL" "$(bench_image)" "$W") ||
	die "the built-in writer's tree differs (above)"
log "equivalence: $EQUIVALENCE"

for RUN in $(seq 1 "$BENCH_RUNS"); do
	overhead_run
	for input in $BENCH_INPUTS; do
		read -ra modes <<<"$(modes_of "$input")"
		n=${#modes[@]}
		line=
		for i in $(seq 0 $((n - 1))); do
			mode=${modes[$(((i + RUN - 1) % n))]}
			case $mode in
			builtin | mkfs) apply_run "$mode" "$input" ;;
			*) floor_run "$mode" "$input" ;;
			esac
			record "$input:$mode"
			line+=" $mode $(secs "$M_WALL")"
		done
		log "run $RUN/$BENCH_RUNS $input:$line"
	done
	[ "$BENCH_COMMIT" = 0 ] || commit_run
done

# --- report ------------------------------------------------------------------

TMP_FS=$(findmnt -no FSTYPE,SOURCE,OPTIONS --target "$W" | head -1 | tr -s ' ')
REV=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$REPO" diff --quiet HEAD -- src erofs-writer 2>/dev/null || REV+=" (src/ or erofs-writer/ modified)"
{
	echo "erofs-snapshotter writer benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo
	echo "command: BENCH_RUNS=$BENCH_RUNS BENCH_DROP_CACHES=$BENCH_DROP_CACHES bench/writer.sh$([ "$BENCH_INPUTS" = "$ALL_INPUTS" ] || echo " (BENCH_INPUTS='$BENCH_INPUTS')")"
	echo "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, kernel $(uname -r); load average $LOAD_START at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end"
	echo "work dir: $BENCH_TMPDIR on $TMP_FS; inputs in $C"
	echo "tree: $REV; $(mkfs.erofs --version 2>&1 | head -1) ($(command -v mkfs.erofs))"
	echo "trees (tests/layer_equivalence.py): $EQUIVALENCE"
	if [ "$BENCH_DROP_CACHES" = 0 ]; then
		echo "per timed command: warm (inputs in the page cache, no drop_caches); median of $BENCH_RUNS runs"
	else
		echo "per timed command: sync; echo 3 > /proc/sys/vm/drop_caches (cold input); median of $BENCH_RUNS runs"
	fi
	echo "no fsync anywhere: outputs go to the page cache, written back after the clock stops"
	echo
	echo "apply: wall seconds (medians); builtin = erofs-snapshotter-ctl apply, default config; mkfs = the same with"
	echo "mkfs_options [\"-x2\"] (mkfs.erofs --tar=f --aufs); floor = cat FILE > OUT (tar) or gunzip + SHA-256 of the"
	echo "output (gzip; flate2/zlib-rs, benches/writer_helper.rs); sha = read + SHA-256 alone (tar); cpu = user+sys s"
	echo "of the builtin and mkfs applies (ctl and mkfs.erofs); rss = the builtin apply's peak RSS (GNU time %M, the"
	echo "ctl process), largest of the runs; out = the builtin image's size. erofs-snapshotter-ctl's fixed cost"
	echo "(cold process start and open; \`stat KEY\` on a fresh root): $(secs "$(med ctl:stat)") s, in every builtin and mkfs time"
	echo
	printf '%-18s %6s %6s %8s | %8s %8s %8s %8s | %9s %8s | %6s %6s %7s\n' \
		input in_MiB out_MiB entries builtin mkfs floor sha b/floor b/mkfs cpu_b cpu_m rss_MiB
	for input in $BENCH_INPUTS; do
		b=$(med "$input:builtin")
		m=$(med "$input:mkfs")
		case $input in
		*.gz) f=$(med "$input:gunzip") sh=- ;;
		*) f=$(med "$input:cat") sh=$(med "$input:sha") ;;
		esac
		printf '%-18s %6s %6s %8s | %8s %8s %8s %8s | %9s %8s | %6s %6s %7s\n' \
			"$input" "$(mib "$(stat -c %s "$C/$input")")" "$(mib "${OUT_SIZE[$input:builtin]}")" \
			"$(cat "$C/${input%%.tar*}.entries")" \
			"$(secs "$b")" "$(secs "$m")" "$(secs "$f")" "$(secs "$sh")" \
			"$(ratio "$b" "$f")" "$(ratio "$b" "$m")" \
			"$(secs "$(median <<<"${CPU[$input:builtin]}")")" "$(secs "$(median <<<"${CPU[$input:mkfs]}")")" \
			"$(awk -v k="$(maxof <<<"${RSS[$input:builtin]}")" 'BEGIN { printf "%.1f", k / 1024 }')"
	done
	if [ "$BENCH_COMMIT" = 1 ]; then
		echo
		echo "commit of $(($(cat "$C/small.entries") - 100)) small files (1 B to 4 KiB) in 100 directories: wall seconds (medians); raw ="
		echo "mkfs.erofs --quiet -Enoinline_data -b4096 OUT UPPER; builtin = the library's commit call (in process, without"
		echo "the upper dir's background deletion); mkfs = the same with mkfs_options [\"-x2\"]"
		echo
		printf '%-18s %8s %8s %8s | %9s | %6s %6s %7s\n' commit builtin raw mkfs b/raw cpu_b cpu_raw rss_MiB
		b=$(med commit:builtin)
		r=$(med commit:raw)
		printf '%-18s %8s %8s %8s | %9s | %6s %6s %7s\n' "10,000 files" \
			"$(secs "$b")" "$(secs "$r")" "$(secs "$(med commit:mkfs)")" "$(ratio "$b" "$r")" \
			"$(secs "$(median <<<"${CPU[commit:builtin]}")")" "$(secs "$(median <<<"${CPU[commit:raw]}")")" \
			"$(awk -v k="$(maxof <<<"${RSS[commit:builtin]}")" 'BEGIN { printf "%.1f", k / 1024 }')"
	fi
	echo
	echo "targets:"
	for input in $BENCH_INPUTS; do
		[[ $input == *.tar ]] || continue
		r=$(ratio "$(med "$input:builtin")" "$(med "$input:cat")")
		printf '  %-44s %-18s %7s  %s\n' "tar: builtin <= 1.20x cat" "$input" "$r" "$(verdict "$r" 1.2)"
	done
	for input in $BENCH_INPUTS; do
		[[ $input == *.tar ]] || continue
		r=$(ratio "$(med "$input:builtin")" "$(med "$input:mkfs")")
		printf '  %-44s %-18s %7s  %s\n' "tar: builtin <= 0.50x mkfs.erofs --tar=f" "$input" "$r" "$(verdict "$r" 0.5)"
	done
	for input in $BENCH_INPUTS; do
		[[ $input == *.gz ]] || continue
		r=$(ratio "$(med "$input:builtin")" "$(med "$input:gunzip")")
		printf '  %-44s %-18s %7s  %s\n' "gzip: builtin <= 1.10x gunzip + SHA-256" "$input" "$r" "$(verdict "$r" 1.1)"
	done
	if [ "$BENCH_COMMIT" = 1 ]; then
		r=$(ratio "$(med commit:builtin)" "$(med commit:raw)")
		printf '  %-44s %-18s %7s  %s\n' "commit: builtin <= 1.00x raw mkfs.erofs" "10,000 files" "$r" "$(verdict "$r" 1.0)"
	fi
	for input in synthetic.tar synthetic.tar.gz; do
		[ -n "${RSS[$input:builtin]:-}" ] || continue
		k=$(maxof <<<"${RSS[$input:builtin]}")
		printf '  %-44s %-18s %7s  %s\n' "peak RSS <= 64 MiB (200,000 entries)" "$input" \
			"$(awk -v k="$k" 'BEGIN { printf "%.0fMiB", k / 1024 }')" "$(verdict "$(awk -v k="$k" 'BEGIN { print k / 1024 }')x" 64)"
	done
	echo
	echo "whole benchmark run: $(awk "BEGIN { printf \"%.0f\", $EPOCHREALTIME - $T_BENCH }") s"
} | tee "$BENCH_OUT"
log "report saved to $BENCH_OUT"
