#!/usr/bin/env bash
# INT8 vs FP32, and ours vs ONNX Runtime's quantize_static, side by side in one run: quantizes MODEL
# with `detnas quantize` and with tools/ort_quantize.py on the same calibration images, evaluates
# the three models on held-out images (COCO AP / AP50 and recall / precision at IoU 0.4), and times
# their model run with `detnas bench` in alternating rounds. Prints a Markdown table.
#   tools/int8_report.sh MODEL.onnx CALIB_DIR VAL_IMAGES VAL.json OUT_DIR [--threads N] [--rounds R]
# e.g. tools/int8_report.sh models/neon-trees.onnx data/neon-trees/images/train \
#        data/neon-trees/images/val data/neon-trees/val.json runs/int8
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODEL="$1" CALIB="$2" VAL_IMAGES="$3" VAL_JSON="$4" OUT="$5"
shift 5
THREADS=2 ROUNDS=3
while [[ $# -gt 0 ]]; do
    case "$1" in
        --threads) THREADS="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
"$ROOT/tools/setup-python.sh"
BIN="${DETNAS:-$ROOT/target/release/detnas}"
PY="$ROOT/.venv/bin/python"
mkdir -p "$OUT"
cp "$MODEL" "$OUT/fp32.onnx"
"$BIN" quantize "$OUT/fp32.onnx" --calibrate "$CALIB" --out "$OUT/int8-detnas.onnx" 2> "$OUT/quantize.log"
"$PY" "$ROOT/tools/ort_quantize.py" "$OUT/fp32.onnx" "$CALIB" "$OUT/int8-ort.onnx" > "$OUT/ort_quantize.log" 2>&1
declare -A P50
for m in fp32 int8-detnas int8-ort; do P50[$m]=""; done
for ((r = 0; r < ROUNDS; r++)); do
    for m in fp32 int8-detnas int8-ort; do
        ms=$("$BIN" bench "$OUT/$m.onnx" --threads "$THREADS" --iters 100 --json 2>/dev/null \
            | "$PY" -c "import json,sys; print(json.load(sys.stdin)['model_run']['p50_ms'])")
        P50[$m]="${P50[$m]} $ms"
    done
done
median() { "$PY" -c "import statistics,sys; print('%.2f' % statistics.median(map(float, sys.argv[1:])))" $1; }
BASE=$(median "${P50[fp32]}")
echo "| model | size | model run p50 ($THREADS threads, median of $ROUNDS rounds) | speed-up | AP | AP50 | recall / precision at IoU 0.4 (score >= 0.1) |"
echo "|---|---|---|---|---|---|---|"
for m in fp32 int8-detnas int8-ort; do
    rm -rf "$OUT/det-$m"
    "$BIN" detect "$OUT/$m.onnx" "$VAL_IMAGES" --out "$OUT/det-$m" --ids-from "$VAL_JSON" --threads "$THREADS" > /dev/null 2>&1
    "$BIN" eval --gt "$VAL_JSON" --dt "$OUT/det-$m/detections.json" --json --match-iou 0.4 > "$OUT/eval-$m.json"
    ms=$(median "${P50[$m]}")
    "$PY" - "$OUT/eval-$m.json" "$OUT/$m.onnx" "$m" "$ms" "$BASE" <<'PY'
import json, os, sys
e = json.load(open(sys.argv[1])); s = dict(zip(["AP", "AP50"], e["stats"][:2])); mt = e["match"]
size = os.path.getsize(sys.argv[2]) / 1e6
ms, base = float(sys.argv[4]), float(sys.argv[5])
print(f"| {sys.argv[3]} | {size:.1f} MB | {ms:.2f} ms | {base / ms:.2f}x | {s['AP']:.3f} | {s['AP50']:.3f} | {mt['recall']:.3f} / {mt['precision']:.3f} |")
PY
done
