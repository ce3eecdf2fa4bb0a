#!/usr/bin/env bash
# Runs each fuzz target for a bounded time, one after the other, and prints a summary line per
# target (executions, exec/s, crashes). Usage: fuzz/run.sh [seconds per target, default 60]
#
# cargo-fuzz passes nightly-only flags (-Zsanitizer, -Cpasses=sancov-module); RUSTC_BOOTSTRAP=1
# lets a stable toolchain accept them, so no nightly is needed. FUZZ_SANITIZER picks the
# sanitizer (address by default; `none` runs about twice as fast). Build output goes to
# CARGO_TARGET_DIR when set. Exits non-zero if any target found a crash; the input is then in
# fuzz/artifacts/<target>/ and `cargo fuzz fmt` / `cargo fuzz tmin` show and shrink it.
set -euo pipefail

seconds="${1:-60}"
sanitizer="${FUZZ_SANITIZER:-address}"
targets=(cookie_header cookie_value record_json)

cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || {
    echo "cargo-fuzz is not installed: cargo install cargo-fuzz" >&2
    exit 2
}

mkdir -p logs
summary=()
failed=0
for target in "${targets[@]}"; do
    # corpus/<target> collects what the fuzzer finds (and is reused by the next run);
    # seeds/<target> holds the checked-in starting inputs and is only read.
    mkdir -p "corpus/$target"
    log="logs/$target.log"
    echo "== $target: ${seconds}s, sanitizer $sanitizer"
    status=0
    # -a keeps debug assertions (overflow checks) on in the optimized build.
    cargo fuzz run --sanitizer "$sanitizer" -a "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1 || status=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    crashes=$(grep -c '^artifact_prefix=.*Test unit written to\|Test unit written to' "$log" || true)
    if [ "$status" -ne 0 ]; then
        failed=1
        tail -n 40 "$log"
    fi
    summary+=("$target: ${seconds}s, ${runs:-?} executions, ${rate:-?} exec/s, ${crashes} crashes, exit $status")
done

echo
echo "Fuzzing summary ($(date -u +%Y-%m-%d), sanitizer $sanitizer; logs in fuzz/logs/):"
printf '  %s\n' "${summary[@]}"
exit "$failed"
