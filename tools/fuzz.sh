#!/usr/bin/env bash
# Runs every fuzz target of the workspace (the `fuzz_*` tests of crates/*/tests/fuzz.rs: seeded
# mutations of real files, detnas_core::mutate) for a stated time each, far past the few hundred
# cases the test suite runs:
#   tools/fuzz.sh [SECONDS_PER_TARGET] [SEED] [FILTER]
#     SECONDS_PER_TARGET  time each target runs its cases (default 60; 8 targets: 8 minutes)
#     SEED                campaign seed (default: from the clock); the same seed replays the same cases
#     FILTER              run only the targets whose test name contains it (`image`, `state`, ...)
# Debug builds, so arithmetic overflow panics as it should. Prints the cases run per target; a
# failing case is reported with its seed and index (rerun it alone with DETNAS_FUZZ_SEED and
# DETNAS_FUZZ_CASE, as printed) and its input saved under target/fuzz-failures/. Exits 1 when a
# target failed. No native library is needed: no target makes an ONNX Runtime session.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SECONDS_PER_TARGET="${1:-60}"
SEED="${2:-$(date +%s)}"
FILTER="${3:-}"
OUT="$ROOT/target/fuzz-failures"

# crate and test of each target
TARGETS=(
    "detnas-core fuzz_coco_ground_truth_and_results"
    "detnas-core fuzz_checkpoint_state"
    "detnas-core fuzz_search_state"
    "detnas-core fuzz_folder_ownership_records"
    "detnas-data fuzz_image_decode"
    "detnas-data fuzz_coco_dataset"
    "detnas-data fuzz_voc_dataset"
    "detnas-infer fuzz_onnx_model"
    "detnas-infer fuzz_latency_table"
)

CRATES=()
for target in "${TARGETS[@]}"; do
    read -r crate test <<< "$target"
    if [[ "$test" == *"$FILTER"* && " ${CRATES[*]} " != *" $crate "* ]]; then
        CRATES+=("$crate")
    fi
done
if [[ ${#CRATES[@]} -eq 0 ]]; then
    echo "fuzz: no target matches '$FILTER'" >&2
    exit 2
fi
PACKAGES=()
for crate in "${CRATES[@]}"; do
    PACKAGES+=(-p "$crate")
done
cargo test --all-features "${PACKAGES[@]}" --test fuzz --no-run --quiet

echo "fuzz: ${SECONDS_PER_TARGET} s per target, seed $SEED"
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT
FAILED=()
for target in "${TARGETS[@]}"; do
    read -r crate test <<< "$target"
    [[ "$test" == *"$FILTER"* ]] || continue
    if DETNAS_FUZZ_SECONDS="$SECONDS_PER_TARGET" DETNAS_FUZZ_SEED="$SEED" DETNAS_FUZZ_OUT="$OUT" \
        cargo test --quiet --all-features -p "$crate" --test fuzz -- --exact "$test" --nocapture > "$LOG" 2>&1; then
        grep '^fuzz [a-z_]*: [0-9]* cases' "$LOG" || echo "fuzz $test: passed (no summary line)"
    else
        FAILED+=("$test")
        echo "fuzz $test: FAILED ($crate)"
        grep -A2 '^fuzz [a-z_]*: \(case\|original\)' "$LOG" || tail -n 20 "$LOG"
        echo "  the test: cargo test -p $crate --all-features --test fuzz -- --exact $test"
    fi
done
if [[ ${#FAILED[@]} -gt 0 ]]; then
    echo "fuzz: ${#FAILED[@]} target(s) failed: ${FAILED[*]}; inputs in $OUT" >&2
    exit 1
fi
echo "fuzz: every target passed"
