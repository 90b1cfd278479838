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
    local before after
    before=$(find "artifacts/$target" -type f | wc -l)
    # A hang is a bug too: any input slower than 10 s is reported as a timeout.
    cargo fuzz run "${flags[@]}" "$target" "corpus-new/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >>"$log" 2>&1 || true
    after=$(find "artifacts/$target" -type f | wc -l)
    local execs
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || true)
    row "$target" "$seconds" "${execs:-?}" "$((after - before))" "$still of ${#regressions[@]}"
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
if awk 'NR > 1 && ($4 != 0 || $5 != 0) { bad = 1 } END { exit !bad }' logs/summary.txt; then
    echo "!!! crashes found or regressions still crashing: see fuzz/artifacts/ and fuzz/logs/"
    echo "!!! (FUZZING.md says what to do with them)"
    exit 1
fi
