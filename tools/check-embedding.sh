#!/usr/bin/env bash
# Builds tests/fixtures/embed-app as an application outside this workspace would be built (a path
# dependency on detnas-infer, no ONNX Runtime setting at build time), then checks how it finds
# ONNX Runtime with no ORT_DYLIB_PATH:
#   1. installed nowhere: a one-line error naming the library file, the version and where to get it;
#   2. through LD_LIBRARY_PATH (a folder holding only the versioned file, as in the PyPI wheel);
#   3. beside its executable (placed there by `detnas env --copy-runtime`);
# that 2 and 3 give identical detections, and that the binary holds no path of this machine's
# ONNX Runtime.
#   tools/check-embedding.sh [--release] [--fresh]    (--fresh: empty target folder, timed)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROFILE=debug
FLAGS=()
TARGET="$ROOT/target/embed-app"
for arg in "$@"; do
    case "$arg" in
        --release) PROFILE=release; FLAGS=(--release) ;;
        --fresh) TARGET="$(mktemp -d)/target" ;;
        *) echo "unknown argument $arg" >&2; exit 2 ;;
    esac
done
"$ROOT/tools/setup-native.sh"
LIB="$ROOT/.native/python/onnxruntime/capi/libonnxruntime.so.1.31.1"
MODEL="$ROOT/models/neon-trees.onnx"
IMAGES=("$ROOT"/models/samples/*.jpg)

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
fail() { echo "check-embedding: FAILED: $*" >&2; exit 1; }
clean() { env -u ORT_DYLIB_PATH -u LD_LIBRARY_PATH -u DETNAS_ORT_LIBRARY "$@"; }

APP="$WORK/embed-app"
cp -r "$ROOT/tests/fixtures/embed-app" "$APP"
sed -i "s#DETNAS_INFER_PATH#$ROOT/crates/detnas-infer#" "$APP/Cargo.toml"
cp "$ROOT/Cargo.lock" "$APP/Cargo.lock" # the workspace's tested versions
start=$(date +%s)
(cd "$APP" && clean CARGO_TARGET_DIR="$TARGET" cargo build --quiet "${FLAGS[@]}")
echo "check-embedding: built the app ($PROFILE) in $(( $(date +%s) - start )) s"
BIN="$TARGET/$PROFILE/embed-app"

# 1. Nowhere to be found.
if out=$(clean "$BIN" "$MODEL" "${IMAGES[@]}" 2>&1); then fail "ran without any ONNX Runtime: $out"; fi
[[ $(printf '%s\n' "$out" | wc -l) == 1 ]] || fail "expected one error line, got: $out"
for needle in libonnxruntime.so.1 "ONNX Runtime 1.31" releases PyPI LD_LIBRARY_PATH; do
    [[ "$out" == *"$needle"* ]] || fail "'$needle' missing from: $out"
done
if grep -qaF "$ROOT/.native" "$BIN"; then fail "$BIN holds a path of this machine's ONNX Runtime"; fi

# 2. LD_LIBRARY_PATH.
mkdir "$WORK/lib"
cp "$LIB" "$WORK/lib/"
loader=$(clean LD_LIBRARY_PATH="$WORK/lib" "$BIN" "$MODEL" "${IMAGES[@]}") || fail "LD_LIBRARY_PATH run failed"
[[ "$loader" == *"runtime 1.31.1 $WORK/lib/libonnxruntime.so.1.31.1 (system loader search)"* ]] \
    || fail "not found through LD_LIBRARY_PATH: $loader"

# 3. Beside the executable.
mkdir "$WORK/dist"
cp "$BIN" "$WORK/dist/"
DETNAS="$ROOT/target/debug/detnas"
if [[ -x "$DETNAS" ]]; then
    "$DETNAS" env --copy-runtime "$WORK/dist" >/dev/null
else
    cp "$LIB" "$WORK/dist/"
fi
beside=$(clean "$WORK/dist/embed-app" "$MODEL" "${IMAGES[@]}") || fail "run beside the library failed"
[[ "$beside" == *"(executable's folder)"* ]] || fail "not found beside the executable: $beside"

# Same detections either way, and some trees found.
[[ "$(grep -v '^runtime' <<<"$loader" | sed 's/"[a-z]*_ms":[0-9.e-]*//g')" == \
   "$(grep -v '^runtime' <<<"$beside" | sed 's/"[a-z]*_ms":[0-9.e-]*//g')" ]] || fail "detections differ"
grep -q '"objects":[1-9]' <<<"$beside" || fail "no objects detected: $beside"
echo "check-embedding: ok (error without a runtime; found through LD_LIBRARY_PATH and beside the executable)"
