#!/usr/bin/env bash
# Runs the fuzz targets (FUZZING.md), each for FUZZ_SECONDS (default 600), FUZZ_JOBS at a time
# (default 1), and prints per target the executions and the crashes found. `make fuzz` runs it.
#   scripts/fuzz.sh [TARGET...]    (default: every target in fuzz/Cargo.toml)
# Each target starts from its committed seeds (fuzz/corpus/<target>) and what earlier runs
# found (fuzz/corpus-new/<target>); crashes land in fuzz/artifacts/<target>/. The committed
# regression inputs (fuzz/regressions/<target>/) are replayed first. libFuzzer's output goes
# to fuzz/logs/<target>.log and the summary table to fuzz/logs/summary.txt.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${FUZZ_SECONDS:-600}
jobs=${FUZZ_JOBS:-1}
# cargo-fuzz passes -Z flags; the stable toolchain takes them with RUSTC_BOOTSTRAP.
export RUSTC_BOOTSTRAP=1
flags=(--sanitizer none)
if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi
mkdir -p logs
if [ ${#targets[@]} -eq 1 ]; then
    cargo fuzz build "${flags[@]}" "${targets[0]}"
else
    cargo fuzz build "${flags[@]}"
fi

run_one() {
    local target=$1 log=logs/$1.log
    mkdir -p "corpus-new/$target" "corpus/$target" "artifacts/$target"
    : >"$log"
    local regressions=()
    if [ -d "regressions/$target" ]; then
        mapfile -t regressions < <(find "regressions/$target" -type f | sort)
    fi
    local still=0
    for input in "${regressions[@]}"; do
        if ! cargo fuzz run "${flags[@]}" "$target" "$input" >>"$log" 2>&1; then
            still=$((still + 1))
        fi
    done
    local before
    before=$(mktemp)
    find "artifacts/$target" -type f | sort >"$before"
    # Fork mode goes on after a crash (a known bug does not hide the next one); a hang is a
    # bug too: an input slower than 10 s is kept as a timeout.
    cargo fuzz run "${flags[@]}" "$target" "corpus-new/$target" "corpus/$target" -- \
        -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 >>"$log" 2>&1 || true
    local found=()
    mapfile -t found < <(find "artifacts/$target" -type f | sort | comm -13 "$before" -)
    rm -f "$before"
    local execs
    execs=$(grep -oE '^#[0-9]+:' "$log" | tail -1 | tr -dc '0-9' || true)
    row "$target" "$seconds" "${execs:-?}" "${#found[@]}" "$still of ${#regressions[@]}"
    # libFuzzer's fork mode does not keep a crash's stack: each new input is replayed (the
    # first 20) into logs/<target>.crashes, and the distinct places that panicked are listed.
    local replay=logs/$target.crashes
    : >"$replay"
    for input in "${found[@]:0:20}"; do
        echo "=== $input" >>"$replay"
        cargo fuzz run "${flags[@]}" "$target" "$input" >>"$replay" 2>&1 || true
    done
    sites "$replay" | sed "s|^|    $target: |" | tee -a logs/summary.txt
}

# Where each replayed input panicked: the panic's own place, or for a panic inside the
# standard library the first frame in mlapp's or the fuzz crate's code.
sites() {
    awk '/panicked at/ { site = $NF; if (site ~ /\/rustc\//) { want = 1 } else { print site }; next }
        want && /^ +at / && $2 !~ /\/rustc\/|registry/ { print $2; want = 0 }' "$1" |
        sed -e 's/:$//' -e "s|^$(cd .. && pwd)/||" | sort | uniq -c | awk '{ print "panics at " $2 " (" $1 " inputs)" }'
}

row() {
    printf '%-14s %8s %14s %8s %22s\n' "$@" | tee -a logs/summary.txt
}
: >logs/summary.txt
row target seconds executions crashes "regressions crashing"
running=0
for target in "${targets[@]}"; do
    run_one "$target" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait -n || true
        running=$((running - 1))
    fi
done
wait
if awk 'NR > 1 && $2 ~ /^[0-9]+$/ && ($4 != 0 || $5 != 0) { bad = 1 } END { exit !bad }' logs/summary.txt; then
    echo "!!! crashes found or regressions still crashing: see fuzz/artifacts/ and fuzz/logs/"
    echo "!!! (FUZZING.md says what to do with them)"
    exit 1
fi
