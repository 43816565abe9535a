#!/usr/bin/env bash
# Does the best genome depend on the precision it will run at? Builds an FP32 and an INT8 latency
# table of this machine for a genes supernet's gene space, sets each budget to the median measured
# latency of the table's own 20 random calibration genomes, searches under each, and prints the two
# winners with their latency at both precisions (`detnas latency predict`).
#   [CLASSES=N] tools/precision_search.sh SUPERNET_DIR GENES.toml INPUTS OUT_DIR [search flags...]
# (CLASSES: the supernet's class count, default 1)
# e.g. CLASSES=3 tools/precision_search.sh runs/study/supernet runs/study/genes.toml 96x96,128x128 runs/precision
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SUPERNET="$1" GENES="$2" INPUTS="$3" OUT="$4"
shift 4
BIN="${DETNAS:-$ROOT/target/release/detnas}"
mkdir -p "$OUT"
for p in fp32 int8; do
    [[ -f "$OUT/lut-$p.json" ]] || "$BIN" latency build --input "$INPUTS" --genes "$GENES" --classes "${CLASSES:-1}" \
        --precision "$p" --out "$OUT/lut-$p.json"
done
median() { python3 -c "import json,statistics,sys; t=json.load(open(sys.argv[1])); print('%.3f' % statistics.median(c['measured_ms'] for c in t['calibration']))" "$1"; }
for p in fp32 int8; do
    budget="$(median "$OUT/lut-$p.json")ms"
    echo "$p budget: $budget (median of the table's calibration genomes)"
    [[ -f "$OUT/search-$p/finalists.json" ]] || "$BIN" search --checkpoint "$SUPERNET" --out "$OUT/search-$p" --lut "$OUT/lut-$p.json" --precision "$p" \
        --latency-max "$budget" --population 12 --generations 4 --top-k 4 --mutations 6 --crossovers 6 \
        --recal-batches 5 --metric ap50 --seed 0 "$@" >/dev/null
done
for p in fp32 int8; do
    best=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['finalists'][0]['candidate'])" "$OUT/search-$p/finalists.json")
    line="best under the $p budget: $best"
    for q in fp32 int8; do
        ms=$("$BIN" latency predict --lut "$OUT/lut-$q.json" --arch "$best" --json | python3 -c "import json,sys; print('%.3f' % json.load(sys.stdin)['latency_ms'])")
        line="$line | $q $ms ms"
    done
    echo "$line"
done
