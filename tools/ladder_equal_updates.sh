#!/usr/bin/env bash
# Schedule or interference? Retrains the middle rungs of a finished `detnas study`'s sanity ladder
# with the schedule multiplied by the number of values of the rung's elastic dimension (backbone
# choices: the 4 block choices), so each value's own weights get as many updates as the stand-alone
# genome's, and scores the ladder's genome in each (5 exact BN recalibration batches, as the study).
# A rung that reaches the stand-alone AP50 here lost it to the schedule; one that does not, to
# interference between the paths sharing its weights. Prints a Markdown table.
#   tools/ladder_equal_updates.sh STUDY_DIR OUT_DIR [RUNG...]
# e.g. tools/ladder_equal_updates.sh runs/study runs/ladder-x head-depth FPN-width
# RUNG: backbone-choices, FPN-width, head-width, head-depth, head-conv-type, input-resolution
# (default: all six). OUT_DIR must not exist or be empty; DETNAS names the binary (default: the
# release build).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[ $# -ge 2 ] || { sed -n 2,12p "${BASH_SOURCE[0]}" >&2; exit 2; }
STUDY="$1" OUT="$2"
shift 2
RUNGS=("$@")
[ ${#RUNGS[@]} -gt 0 ] || RUNGS=(backbone-choices FPN-width head-width head-depth head-conv-type input-resolution)
BIN="${DETNAS:-$ROOT/target/release/detnas}"
[ -f "$STUDY/study.json" ] || { echo "$STUDY: no study.json (not a detnas study folder)" >&2; exit 2; }
if [ -e "$OUT" ] && [ -n "$(ls -A "$OUT")" ]; then
    echo "$OUT is not empty: give a new folder" >&2
    exit 2
fi
mkdir -p "$OUT"
read -r GENOME STANDALONE < <(python3 -c "
import json, sys
l = json.load(open(sys.argv[1]))['data'].get('ladder') or sys.exit('the study has no sanity ladder yet')
print(l['genome'], '%.3f' % l['standalone'])" "$STUDY/study.json")
echo "| elastic dimension | values | iterations | AP50, recalibrated | of stand-alone ($STANDALONE) |"
echo "|---|---|---|---|---|"
for rung in "${RUNGS[@]}"; do
    base="$STUDY/ladder-$rung.toml"
    [ -f "$base" ] || { echo "$base: no such rung in the study" >&2; exit 2; }
    # the rung's configuration with its schedule (iterations, milestones, checkpoints) scaled
    read -r k iters < <(python3 - "$base" "$OUT/ladder-$rung.toml" "$rung" <<'PY'
import re, sys, tomllib
src, dst, rung = sys.argv[1:4]
c = tomllib.load(open(src, "rb"))
g = c.get("genes", {})
k = {
    "backbone-choices": 4,
    "FPN-width": len(g.get("fpn_channels", [1])),
    "head-width": len(g.get("head_channels", [1])),
    "head-depth": len(g.get("head_convs", [1])),
    "head-conv-type": len(g.get("head_conv", [1])),
    "input-resolution": len(g.get("input", [1])),
}[rung]
text = open(src).read()
scale = lambda m: str(int(m.group(2)) * k)
text = re.sub(r"^(iterations = )(\d+)", lambda m: m.group(1) + scale(m), text, flags=re.M)
text = re.sub(r"^(checkpoint_every = )(\d+)", lambda m: m.group(1) + scale(m), text, flags=re.M)
text = re.sub(r"^milestones = \[([\d, ]*)\]",
              lambda m: "milestones = [" + ", ".join(str(int(v) * k) for v in m.group(1).split(",") if v.strip()) + "]",
              text, flags=re.M)
open(dst, "w").write(text)
print(k, c["iterations"] * k)
PY
)
    "$BIN" train det-supernet --config "$OUT/ladder-$rung.toml" --out "$OUT/$rung" > "$OUT/$rung.log" 2>&1
    ap50=$("$BIN" train eval --checkpoint "$OUT/$rung" --arch "$GENOME" --recalibrate 5 --json |
        python3 -c "import json, sys; print(json.load(sys.stdin)['ap50'])")
    python3 -c "import sys; r, k, n, a, s = sys.argv[1:]; print(f'| {r} | {k} | {n} | {float(a):.3f} | {100 * float(a) / float(s):.0f}% |')" \
        "$rung" "$k" "$iters" "$ap50" "$STANDALONE"
done
