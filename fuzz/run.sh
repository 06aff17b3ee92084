#!/usr/bin/env bash
# Runs every cargo-fuzz target for ${FUZZ_SECONDS:-60} seconds on the stable toolchain.
#
#   fuzz/run.sh                      # all targets, 60 s each
#   FUZZ_SECONDS=10 fuzz/run.sh cursor
#
# Stable has no sanitizers, so targets are built with `-s none`: cargo-fuzz then passes only
# stable codegen flags (-Cpasses=sancov-module, -Cllvm-args=-sanitizer-coverage-*, --cfg fuzzing,
# -Cdebug-assertions), and panics/assertion failures are the crashes libFuzzer reports.
#
# Steps per target: replay fuzz/regressions/<target>/* (must all pass), then fuzz with
# fuzz/corpus/<target> as read-only seeds and a scratch working corpus (new inputs never land
# in the committed seed corpus). A crash leaves its input in fuzz/artifacts/<target>/ and
# makes the script exit 1 after all targets ran. Environment:
#   FUZZ_SECONDS     seconds per target (default 60)
#   FUZZ_WORK_DIR    scratch corpus directory (default fuzz/target/fuzz-work)
#   TODO_FUZZ_DATABASE_URL  fuzz on this (scratch) PostgreSQL database instead of SQLite
set -uo pipefail

cd "$(dirname "$0")"
FUZZ_SECONDS="${FUZZ_SECONDS:-60}"
WORK="${FUZZ_WORK_DIR:-target/fuzz-work}"
# The same flags for build and run, or `cargo fuzz run` rebuilds. 16 codegen units: a much
# faster build of sqlx/poem on a small machine for slightly slower fuzzing.
BUILD_FLAGS=(-s none --codegen-units 16)

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz --version 0.13.2 --locked || exit 1
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

echo "building ${targets[*]} (cargo fuzz build ${BUILD_FLAGS[*]})" >&2
start=$(date +%s)
cargo fuzz build "${BUILD_FLAGS[@]}" || exit 1
echo "build took $(( $(date +%s) - start )) s" >&2

# Per-target libFuzzer options. The HTTP target takes bodies up to ~70 KB (the 64 KiB limit
# is also reached without huge inputs, see BodySel::Padded).
libfuzzer_opts() {
    case "$1" in
        http_request | body) echo "-max_len=72000" ;;
        *) echo "-max_len=4096" ;;
    esac
}

status=0
summary=()
mkdir -p "$WORK"
for t in "${targets[@]}"; do
    mapfile -t regressions < <(find "regressions/$t" -type f ! -name .gitkeep 2>/dev/null | sort)
    if [ "${#regressions[@]}" -gt 0 ]; then
        echo "== $t: replaying ${#regressions[@]} regression input(s)" >&2
        if ! cargo fuzz run "${BUILD_FLAGS[@]}" "$t" "${regressions[@]}" -- -runs=1 >"$WORK/$t.replay.log" 2>&1; then
            tail -n 40 "$WORK/$t.replay.log" >&2
            echo "== $t: a regression input fails again" >&2
            status=1
            summary+=("$t: REGRESSION FAILS (see $WORK/$t.replay.log)")
            continue
        fi
    fi

    echo "== $t: fuzzing for ${FUZZ_SECONDS}s" >&2
    mkdir -p "$WORK/$t"
    log="$WORK/$t.log"
    cargo fuzz run "${BUILD_FLAGS[@]}" "$t" "$WORK/$t" "corpus/$t" -- \
        -max_total_time="$FUZZ_SECONDS" -timeout=10 -print_final_stats=1 \
        $(libfuzzer_opts "$t") >"$log" 2>&1
    rc=$?
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -n1)
    speed=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -n1)
    cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$log" | tail -n1)
    if [ "$rc" -ne 0 ]; then
        status=1
        grep -m1 -A30 -E "panicked|ERROR: libFuzzer|deadly signal" "$log" >&2
        artifact=$(grep -o 'Test unit written to [^ ]*' "$log" | tail -n1 | sed 's/Test unit written to //')
        summary+=("$t: CRASH after ${execs:-?} executions; input: ${artifact:-?} (log $log)")
    else
        summary+=("$t: ok, ${execs:-?} executions (${speed:-?}/s), ${cov:-cov ?}")
    fi
done

echo
echo "fuzz summary (${FUZZ_SECONDS}s per target):"
for line in "${summary[@]}"; do
    echo "  $line"
done
exit "$status"
