#!/usr/bin/env bash
# Shuffle-free vs today's layout, FP32 and INT8, and ONNX Runtime's own quantize_static, side by
# side in one run (docs/int8-fp16.md):
#   1. the shipped model (models/neon-trees.onnx): today's FP32 export, shuffle-free FP32
#      (`export --model --layout shuffle-free`), today's INT8 (`quantize`), shuffle-free INT8
#      (`quantize --layout shuffle-free`) and ONNX Runtime's quantize_static of today's export
#      (tools/ort_quantize.py), calibrated on the same 32 training tiles; model run p50 with
#      `detnas bench` at each thread count, the five models alternating in every round (median of
#      the rounds with their spread, max - min over median; ratios per round, as the models of a
#      round ran back to back, with their median and range); accuracy of each on the
#      held-out NEON tiles (COCO AP / AP50);
#   2. a 512x512 DetNAS-300M RetinaNet (coco-retinanet-300m, random weights of trained scale,
#      `bench --arch`): both layouts at FP32 and at INT8 as latency tables quantize for timing.
# Prints Markdown tables; everything else is written under OUT_DIR.
#   tools/shuffle_free_report.sh OUT_DIR [--threads "1 2"] [--rounds 3] [--iters 60] [--only shipped|arch]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[[ $# -ge 1 ]] || { echo "usage: tools/shuffle_free_report.sh OUT_DIR [--threads \"1 2\"] [--rounds 3] [--iters 60] [--only shipped|arch]" >&2; exit 2; }
OUT="$1"
shift
THREADS="1 2" ROUNDS=3 ITERS=60 ONLY=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --threads) THREADS="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        --iters) ITERS="$2"; shift 2 ;;
        --only) ONLY="$2"; [[ "$ONLY" == shipped || "$ONLY" == arch ]] || { echo "--only shipped or arch" >&2; exit 2; }; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
"$ROOT/tools/setup-python.sh" > /dev/null
BIN="${DETNAS:-$ROOT/target/release/detnas}"
PY="$ROOT/.venv/bin/python"
DATA="$ROOT/data/neon-trees"
[[ -d "$DATA" ]] || "$PY" "$ROOT/tools/prepare_neon_trees.py" > /dev/null
# OUT_DIR is this script's: new, empty, or written by it before (its marker file); it replaces
# only what it writes there.
if [[ -d "$OUT" && -n "$(ls -A "$OUT")" && ! -f "$OUT/.shuffle-free-report" ]]; then
    echo "shuffle_free_report: $OUT holds files this script did not write: choose another OUT_DIR" >&2
    exit 2
fi
mkdir -p "$OUT"
touch "$OUT/.shuffle-free-report"
header="| model | size"
rule="|---|---"
for t in $THREADS; do header+=" | $t thread(s): p50 (spread) | vs FP32 per round (range)"; rule+="|---|---"; done
p50() { "$PY" -c "import json,sys; print(json.load(sys.stdin)['model_run']['p50_ms'])"; }
stats() { # median and (max - min) / median of the values
    "$PY" -c "import statistics,sys; v=list(map(float, sys.argv[1:])); m=statistics.median(v); print('%.2f %.1f' % (m, 100*(max(v)-min(v))/m))" "$@"
}
ratio() { # median over the rounds of base / time (each round's models ran back to back), and its range
    "$PY" -c "
import statistics, sys
b, t = (list(map(float, a.split())) for a in sys.argv[1:3])
r = [x / y for x, y in zip(b, t)]
print('%.2fx (%.2f-%.2f)' % (statistics.median(r), min(r), max(r)))" "$1" "$2"
}
if [[ "$ONLY" != arch ]]; then
MODELS=(fp32 fp32-free int8 int8-free int8-ort)
cp "$ROOT/models/neon-trees.onnx" "$OUT/fp32.onnx"
"$BIN" export --model "$OUT/fp32.onnx" --layout shuffle-free --out "$OUT/fp32-free.onnx" 2> "$OUT/export.log"
"$BIN" quantize "$OUT/fp32.onnx" --calibrate "$DATA/images/train" --out "$OUT/int8.onnx" 2> "$OUT/quantize.log"
"$BIN" quantize "$OUT/fp32.onnx" --layout shuffle-free --calibrate "$DATA/images/train" \
    --out "$OUT/int8-free.onnx" 2> "$OUT/quantize-free.log"
"$PY" "$ROOT/tools/ort_quantize.py" "$OUT/fp32.onnx" "$DATA/images/train" "$OUT/int8-ort.onnx" \
    > "$OUT/ort_quantize.log" 2>&1

declare -A TIMES
for t in $THREADS; do
    for ((r = 0; r < ROUNDS; r++)); do
        for m in "${MODELS[@]}"; do
            ms=$("$BIN" bench "$OUT/$m.onnx" --threads "$t" --iters "$ITERS" --json 2>/dev/null | p50)
            TIMES[$m,$t]="${TIMES[$m,$t]:-} $ms"
        done
    done
done
for m in "${MODELS[@]}"; do
    rm -rf "$OUT/det-$m"
    "$BIN" detect "$OUT/$m.onnx" "$DATA/images/val" --out "$OUT/det-$m" --ids-from "$DATA/val.json" > /dev/null 2> "$OUT/detect-$m.log" \
        || { echo "detect with $m failed: see $OUT/detect-$m.log" >&2; exit 1; }
    "$BIN" eval --gt "$DATA/val.json" --dt "$OUT/det-$m/detections.json" --json > "$OUT/eval-$m.json"
done

echo "Shipped model (models/neon-trees.onnx), median of $ROUNDS alternating rounds of $ITERS runs:"
echo
echo "$header | AP | AP50 |"
echo "$rule|---|---|"
for m in "${MODELS[@]}"; do
    row="| $m | $("$PY" -c "import os,sys; print('%.1f MB' % (os.path.getsize(sys.argv[1]) / 1e6))" "$OUT/$m.onnx")"
    for t in $THREADS; do
        read -r ms spread <<< "$(stats ${TIMES[$m,$t]})"
        row+=" | $ms ms ($spread%) | $(ratio "${TIMES[fp32,$t]}" "${TIMES[$m,$t]}")"
    done
    row+=" | $("$PY" -c "import json,sys; s=json.load(open(sys.argv[1]))['stats']; print('%.3f | %.3f' % (s[0], s[1]))" "$OUT/eval-$m.json") |"
    echo "$row"
done
for t in $THREADS; do
    echo
    echo "$t thread(s): int8-free vs int8 $(ratio "${TIMES[int8,$t]}" "${TIMES[int8-free,$t]}"), vs int8-ort $(ratio "${TIMES[int8-ort,$t]}" "${TIMES[int8-free,$t]}") (per round)"
done
fi
[[ "$ONLY" == shipped ]] && exit 0

# 2. a 512x512 DetNAS-300M RetinaNet, random weights of trained scale
ARCH="coco-retinanet-300m:512x512"
declare -A ARCH_TIMES
VARIANTS=("shuffle fp32" "shuffle-free fp32" "shuffle int8" "shuffle-free int8")
for t in $THREADS; do
    for ((r = 0; r < ROUNDS; r++)); do
        for v in "${VARIANTS[@]}"; do
            read -r layout precision <<< "$v"
            ms=$("$BIN" bench --arch "$ARCH" --layout "$layout" --precision "$precision" --threads "$t" \
                --iters $((ITERS / 4 + 1)) --json 2>/dev/null | p50)
            ARCH_TIMES[$v,$t]="${ARCH_TIMES[$v,$t]:-} $ms"
        done
    done
done
echo "$ARCH (random weights; INT8 quantized for timing), median of $ROUNDS alternating rounds:"
echo
echo "$header |" | sed 's/| size//'
echo "$rule|" | sed 's/|---//'
for v in "${VARIANTS[@]}"; do
    row="| $v"
    for t in $THREADS; do
        read -r ms spread <<< "$(stats ${ARCH_TIMES[$v,$t]})"
        row+=" | $ms ms ($spread%) | $(ratio "${ARCH_TIMES[shuffle fp32,$t]}" "${ARCH_TIMES[$v,$t]}")"
    done
    echo "$row |"
done
