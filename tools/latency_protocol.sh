#!/usr/bin/env bash
# The latency protocol's numbers (docs/latency.md, README): two builds of the same table, a check of
# held-out genomes against the first with its noise ceiling and the decisions near the median
# genome's latency, and how closely the two builds predict the same genomes.
#   tools/latency_protocol.sh [OUT]          (INPUT=320x320 SAMPLES=50 THREADS=2 REPETITIONS=3)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-runs/latency-protocol}"
INPUT="${INPUT:-320x320}" SAMPLES="${SAMPLES:-50}" THREADS="${THREADS:-2}" REPETITIONS="${REPETITIONS:-3}"
"$ROOT/tools/setup-native.sh"
cargo build --manifest-path "$ROOT/Cargo.toml" --release --quiet --bin detnas
BIN="$ROOT/target/release/detnas"
mkdir -p "$OUT"
for b in a b; do
    [[ -f "$OUT/lut-$b.json" ]] || /usr/bin/time -f "build $b: %e s" "$BIN" latency build --input "$INPUT" \
        --threads "$THREADS" --repetitions "$REPETITIONS" --out "$OUT/lut-$b.json" 2> "$OUT/build-$b.log"
    tail -n 2 "$OUT/build-$b.log"
done
"$BIN" latency check --lut "$OUT/lut-a.json" --samples "$SAMPLES" --seed 0 --repetitions "$REPETITIONS" \
    --budget median > "$OUT/check.txt" 2> "$OUT/check.log"
cat "$OUT/check.txt"
# the two builds against each other, genome by genome
python3 - "$OUT" "$BIN" <<'EOF'
import json, subprocess, sys
out, binary = sys.argv[1], sys.argv[2]
lines = [line.split("] ", 1)[1].split(": predicted")[0] for line in open(f"{out}/check.log") if line.startswith("round 1/")]
genomes = list(dict.fromkeys(lines))  # re-measurements log their round again
worst = []
for arch in genomes:
    p = [json.loads(subprocess.run([binary, "latency", "predict", "--lut", f"{out}/lut-{b}.json", "--arch", arch, "--json"],
                                   capture_output=True, check=True, text=True).stdout)["latency_ms"] for b in "ab"]
    worst.append(abs(p[0] - p[1]) / p[1])
within = sum(w <= 0.03 for w in worst)
print(f"two builds: {within}/{len(worst)} genomes predicted within 3% of each other (largest difference {100 * max(worst):.1f}%)")
EOF
