#!/usr/bin/env bash
# Runs make targets in named stages, then prints a summary: one row per
# target (PASS or FAIL, seconds) and one per stage.
#
#   scripts/stages.sh 'unprivileged: lint build' 'root: test-c test-e2e'
#
# Every target runs even when an earlier one failed, so that one failure does
# not hide the others; the exit status is 1 when any target failed. The
# summary is also written to target/test-summary.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
make=${MAKE:-make}

now_us() { echo "${EPOCHREALTIME/./}"; }
secs() { printf '%d.%d' $(($1 / 1000000)) $(($1 % 1000000 / 100000)); }

rows=()           # stage target result microseconds
stages=()         # stage result passed total microseconds
failed=0
t_all=$(now_us)
for spec in "$@"; do
    stage=${spec%%:*}
    s_failed=0 s_passed=0 s_total=0
    t_stage=$(now_us)
    for target in ${spec#*:}; do
        printf '\n==> [%s] make %s\n' "$stage" "$target"
        t0=$(now_us)
        if $make --no-print-directory "$target"; then
            result=PASS
            s_passed=$((s_passed + 1))
        else
            result=FAIL
            s_failed=1
            failed=1
        fi
        s_total=$((s_total + 1))
        dt=$(($(now_us) - t0))
        printf '==> [%s] make %s: %s (%s s)\n' "$stage" "$target" "$result" "$(secs "$dt")"
        rows+=("$stage $target $result $dt")
    done
    result=PASS
    [ "$s_failed" = 0 ] || result=FAIL
    stages+=("$stage $result $s_passed $s_total $(($(now_us) - t_stage))")
done
total=$(($(now_us) - t_all))

summary() {
    local stage target result dt passed count
    printf '%-14s %-24s %-6s %9s\n' stage target result seconds
    for row in "${rows[@]}"; do
        read -r stage target result dt <<<"$row"
        printf '%-14s %-24s %-6s %9s\n' "$stage" "$target" "$result" "$(secs "$dt")"
    done
    echo
    for row in "${stages[@]}"; do
        read -r stage result passed count dt <<<"$row"
        printf '%-14s %-24s %-6s %9s\n' "$stage" "stage: $passed/$count passed" "$result" "$(secs "$dt")"
    done
    result=PASS
    [ "$failed" = 0 ] || result=FAIL
    printf '%-14s %-24s %-6s %9s\n' total "" "$result" "$(secs "$total")"
}

mkdir -p target
printf '\n==> summary\n'
summary | tee target/test-summary.txt
exit "$failed"
