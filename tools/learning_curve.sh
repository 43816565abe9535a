#!/usr/bin/env bash
# Is training data the limit? Trains the same stand-alone detector on seeded subsets of the training
# tiles (the fractions given) with one short schedule, exports each, and evaluates it on the held-out
# tiles: held-out AP / AP50 against training-set size. Prints a Markdown table.
#   tools/learning_curve.sh CONFIG.toml OUT_DIR FRACTION... (e.g. 0.25 0.5 1)
# e.g. tools/learning_curve.sh models/neon-trees-curve.toml runs/curve 0.25 0.5 1
# CONFIG names the training (data.coco) and held-out (val.coco) COCO files; subsets keep whole
# tiles, drawn with a fixed seed, each smaller subset inside the larger ones.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONFIG="$1" OUT="$2"
shift 2
BIN="${DETNAS:-$ROOT/target/release/detnas}"
mkdir -p "$OUT"
read -r TRAIN VAL VAL_IMAGES < <(python3 -c "
import json, os, sys, tomllib
c = tomllib.load(open(sys.argv[1], 'rb'))
val = c['val']['coco']
first = json.load(open(val))['images'][0]['file_name']
print(c['data']['coco'], val, os.path.join(os.path.dirname(val), os.path.dirname(first)))" "$CONFIG")
ROWS=()
for f in "$@"; do
    sub="$OUT/train-$f.json"
    n=$(python3 - "$TRAIN" "$sub" "$f" <<'PY'
import json, random, sys
d = json.load(open(sys.argv[1]))
ids = sorted(i["id"] for i in d["images"])
random.Random(0).shuffle(ids)
keep = set(ids[: max(1, round(float(sys.argv[3]) * len(ids)))])
d["images"] = [i for i in d["images"] if i["id"] in keep]
d["annotations"] = [a for a in d["annotations"] if a["image_id"] in keep]
json.dump(d, open(sys.argv[2], "w"))
print(len(d["images"]), len(d["annotations"]))
PY
)
    run="$OUT/run-$f"
    if [[ ! -f "$run/done" ]]; then
        resume=()
        [[ -f "$run/state.json" ]] && resume=(--resume)
        "$BIN" train retinanet --config "$CONFIG" --coco "$sub" --images "$(dirname "$TRAIN")" --out "$run" "${resume[@]}" \
            > "$run.log" 2>&1
        touch "$run/done"
    fi
    "$BIN" export --checkpoint "$run" --out "$OUT/model-$f.onnx" 2> /dev/null
    rm -rf "$OUT/det-$f"
    "$BIN" detect "$OUT/model-$f.onnx" "$VAL_IMAGES" --out "$OUT/det-$f" --ids-from "$VAL" > /dev/null 2>&1
    "$BIN" eval --gt "$VAL" --dt "$OUT/det-$f/detections.json" --json --match-iou 0.4 > "$OUT/eval-$f.json"
    ROWS+=("$(python3 -c "
import json, sys
e = json.load(open(sys.argv[1])); m = e['match']
tiles, boxes = sys.argv[3].split()
print(f'| {sys.argv[2]} | {tiles} | {boxes} | {e[\"stats\"][0]:.3f} | {e[\"stats\"][1]:.3f} | {m[\"recall\"]:.3f} / {m[\"precision\"]:.3f} |')" "$OUT/eval-$f.json" "$f" "$n")")
done
echo "| fraction | training tiles | crowns | AP | AP50 | recall / precision at IoU 0.4 |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
