#!/usr/bin/env bash
# Installs the native libraries detnas links against into .native/ (git-ignored):
#   .native/python/torch                          libtorch 2.11.0 (PyPI wheel, CPU + CUDA 13 build)
#   .native/python/onnxruntime/capi/libonnxruntime.so.1.31.1
# With --cuda (or DETNAS_CUDA=1; automatically when `nvidia-smi` lists a GPU, DETNAS_CUDA=0 to
# refuse) also what libtorch's CUDA library loads (the nvidia-* wheels the torch wheel declares for
# CUDA 13: cuBLAS, cuDNN, NCCL, ...) and ONNX Runtime's GPU build (onnxruntime-gpu, with the CUDA
# execution provider) in place of the CPU one, in the same folders: a build finds them with no
# exported variables (libtorch's RUNPATH names the nvidia folders beside it). About 4 GB more.
# Idempotent: returns at once when the pinned versions are already there.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/.native/python"
STAMP="$ROOT/.native/installed"
TORCH_VERSION="2.11.0"
ORT_VERSION="1.31.1"

CUDA="${DETNAS_CUDA:-auto}"
for arg in "$@"; do
    case "$arg" in
        --cuda) CUDA=1 ;;
        --cpu) CUDA=0 ;;
        *) echo "usage: tools/setup-native.sh [--cuda | --cpu]" >&2; exit 2 ;;
    esac
done
if [[ "$CUDA" == auto ]]; then
    CUDA=0
    if command -v nvidia-smi > /dev/null 2>&1 && nvidia-smi -L 2> /dev/null | grep -q '^GPU '; then
        echo "detnas: nvidia-smi lists a GPU: installing the CUDA libraries too (DETNAS_CUDA=0 to skip)" >&2
        CUDA=1
    fi
fi

# Without deps: the torch wheel alone (its CPU kernels and its CUDA library, which then loads only
# with the CUDA set below) and ONNX Runtime.
BASE="torch==$TORCH_VERSION nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85"
# With deps: exactly what torch 2.11.0's wheel declares for Linux (its Requires-Dist), whose own
# dependencies are further nvidia-* wheels.
CUDA_SET="cuda-toolkit[cublas,cudart,cufft,cufile,cupti,curand,cusolver,cusparse,nvjitlink,nvrtc,nvtx]==13.0.2"
CUDA_SET+=" nvidia-cudnn-cu13==9.19.0.56 nvidia-cusparselt-cu13==0.8.0 nvidia-nccl-cu13==2.28.9"
CUDA_SET+=" nvidia-nvshmem-cu13==3.4.5"
if [[ "$CUDA" == 1 ]]; then
    WANT="$BASE onnxruntime-gpu==$ORT_VERSION + $CUDA_SET"
else
    WANT="$BASE onnxruntime==$ORT_VERSION"
fi

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" \
      && -f "$DEST/torch/lib/libtorch_cpu.so" \
      && -f "$DEST/onnxruntime/capi/libonnxruntime.so.$ORT_VERSION" ]]; then
    exit 0
fi

PY="${PYTHON:-python3}"
PIP=("$PY" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore)
echo "detnas: installing native libraries ($WANT) into $DEST" >&2
rm -rf "$DEST.tmp"
# shellcheck disable=SC2086
"${PIP[@]}" --no-deps --target "$DEST.tmp" ${WANT%% + *}
if [[ "$CUDA" == 1 ]]; then
    # A folder of its own, then merged: pip --target skips top-level folders that exist (nvidia/).
    rm -rf "$DEST.cuda"
    # shellcheck disable=SC2086
    "${PIP[@]}" --target "$DEST.cuda" $CUDA_SET
    cp -alf "$DEST.cuda/." "$DEST.tmp/"   # hard links: no second copy of 4 GB
    rm -rf "$DEST.cuda"
fi
# torch-sys checks this file against the version it was written for: a mismatch becomes a clear error.
echo "$TORCH_VERSION" > "$DEST.tmp/torch/build-version"
rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"
echo "$WANT" > "$STAMP"
echo "detnas: native libraries ready" >&2
