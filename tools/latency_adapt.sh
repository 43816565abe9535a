#!/usr/bin/env bash
# Few-shot adaptation against a full build (docs/latency.md): a 2-thread table adapted to 1 thread
# from SAMPLES genomes, and a 1-thread table built from scratch, both checked at 1 thread on the
# same held-out genomes.
#   tools/latency_adapt.sh [OUT]     (INPUT=320x320 SAMPLES=10 CHECK=30 REPETITIONS=3)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-runs/latency-adapt}"
INPUT="${INPUT:-320x320}" SAMPLES="${SAMPLES:-10}" CHECK="${CHECK:-30}" REPETITIONS="${REPETITIONS:-3}"
"$ROOT/tools/setup-native.sh"
cargo build --manifest-path "$ROOT/Cargo.toml" --release --quiet --bin detnas
BIN="$ROOT/target/release/detnas"
mkdir -p "$OUT"
run() { # name, command...
    local name="$1"
    shift
    /usr/bin/time -f "$name: %e s" "$@" 2> "$OUT/$name.log" > "$OUT/$name.out" || { tail -n 5 "$OUT/$name.log"; exit 1; }
    tail -n 1 "$OUT/$name.log"
}
[[ -f "$OUT/lut-2t.json" ]] || run build-2t "$BIN" latency build --input "$INPUT" --threads 2 --repetitions "$REPETITIONS" --out "$OUT/lut-2t.json"
[[ -f "$OUT/lut-1t.json" ]] || run build-1t "$BIN" latency build --input "$INPUT" --threads 1 --repetitions "$REPETITIONS" --out "$OUT/lut-1t.json"
[[ -f "$OUT/lut-adapted.json" ]] || run adapt "$BIN" latency adapt --lut "$OUT/lut-2t.json" --threads 1 \
    --samples "$SAMPLES" --repetitions "$REPETITIONS" --out "$OUT/lut-adapted.json"
for t in 1t adapted 2t; do
    run "check-$t" "$BIN" latency check --lut "$OUT/lut-$t.json" --samples "$CHECK" --seed 0 --repetitions "$REPETITIONS"
    echo "== lut-$t (measured at its own thread count)"
    grep -E "^(additive|corrected|ceiling|drift)" "$OUT/check-$t.out"
done
