#!/usr/bin/env bash
# Runs each fuzz target of fuzz/ for SECONDS (default 60) from the committed
# seeds on a fresh corpus (libFuzzer, no sanitizer: stable Rust). A crash or
# a panic fails the run; its input is left in fuzz/artifacts/<target>/.
set -euo pipefail
seconds=${1:-60}
cd "$(dirname "$0")/../fuzz"
cargo fuzz build -s none -O
for target in layer_tar json_inputs; do
    corpus=$(mktemp -d)
    log=$(mktemp)
    rc=0
    cargo fuzz run -s none -O "$target" "$corpus" "seeds/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1 || rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    if [ "$rc" != 0 ]; then
        grep -v -E '^(#|INFO|WARNING)' "$log" | tail -n 40 >&2
        echo "fuzz: $target failed after ${runs:-?} runs (exit $rc); input in fuzz/artifacts/$target/" >&2
        rm -rf "$corpus" "$log"
        exit 1
    fi
    echo "fuzz: $target: ${runs:-?} runs in ${seconds} s, no crash"
    rm -rf "$corpus" "$log"
done
