#!/usr/bin/env python3
"""ONNX Runtime's own static quantizer (onnxruntime.quantization.quantize_static, PyPI) on a detnas
float model: the reference `detnas quantize` is compared with (docs/int8-fp16.md).

Same format as ours: QDQ, per-channel symmetric int8 weights, uint8 activations, and the same
calibration images (the folder sorted, N evenly spaced, letterboxed top-left with Pillow bilinear
and the model's pad value). Quantized op types: Conv and Relu (its histogram calibration fails on
the dynamic-size tensors of the in-graph post-processing); the stem is quantized too, and nothing is
kept in float (ORT has no sensitivity pass).

usage: ort_quantize.py FLOAT.onnx CALIB_DIR OUT.onnx [--images 32] [--method minmax|percentile|entropy]
"""
import argparse
import json
import os

import numpy as np
import onnx
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quantize_static)
from PIL import Image, ImageOps

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("calib")
ap.add_argument("out")
ap.add_argument("--images", type=int, default=32)
ap.add_argument("--method", default="percentile", choices=["minmax", "percentile", "entropy"])
args = ap.parse_args()

meta = {p.key: p.value for p in onnx.load(args.model, load_external_data=False).metadata_props}
cfg = json.loads(meta["detnas.config"])
H, W = cfg["input"]["height"], cfg["input"]["width"]
pad = cfg.get("preprocess", {}).get("pad_value", 0.0)

exts = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
files = sorted(os.path.join(r, f) for r, _, fs in os.walk(args.calib) for f in fs if f.lower().endswith(exts))
if len(files) > args.images:
    files = [files[i * len(files) // args.images] for i in range(args.images)]


def letterbox(path):
    img = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    s = min(W / img.width, H / img.height)
    w, h = max(1, round(img.width * s)), max(1, round(img.height * s))
    x = np.full((3, H, W), pad, np.float32)
    x[:, :h, :w] = np.asarray(img.resize((w, h), Image.BILINEAR), np.float32).transpose(2, 0, 1)
    return x[None]


class Reader(CalibrationDataReader):
    def __init__(self):
        self.items = iter([{"images": letterbox(f)} for f in files])

    def get_next(self):
        return next(self.items, None)


method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
          "entropy": CalibrationMethod.Entropy}[args.method]
quantize_static(args.model, args.out, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=method,
                op_types_to_quantize=["Conv", "Relu"],
                extra_options={"CalibPercentile": 99.99})
# Keep the detnas metadata so that the SDK and `detnas eval` read the model unchanged.
m = onnx.load(args.out)
del m.metadata_props[:]
for k, v in meta.items():
    e = m.metadata_props.add()
    e.key, e.value = k, v
onnx.save(m, args.out)
print(json.dumps({"out": args.out, "images": len(files), "method": args.method}))
