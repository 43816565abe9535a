#!/usr/bin/env python3
"""The Python baseline for `detnas detect` throughput: onnxruntime + Pillow + numpy, same model, same
pre-processing contract (EXIF transpose, RGB, letterbox top-left, bilinear, pad 0), same thread count.

usage: python_pipeline.py MODEL.onnx FOLDER OUT.json --threads N
Prints one JSON line: {"images": n, "seconds": s, "images_per_s": r}.
"""
import argparse
import json
import os
import time

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("folder")
ap.add_argument("out")
ap.add_argument("--threads", type=int, default=2)
args = ap.parse_args()

opts = ort.SessionOptions()
opts.intra_op_num_threads = args.threads
opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
sess = ort.InferenceSession(args.model, opts, providers=["CPUExecutionProvider"])
_, _, H, W = sess.get_inputs()[0].shape

files = sorted(
    os.path.join(r, f) for r, _, fs in os.walk(args.folder) for f in fs if f.lower().endswith((".jpg", ".jpeg", ".png"))
)
results = []
start = time.perf_counter()
for image_id, path in enumerate(files, 1):
    img = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    scale = min(W / img.width, H / img.height)
    rw, rh = max(1, min(W, round(img.width * scale))), max(1, min(H, round(img.height * scale)))
    x = np.zeros((1, 3, H, W), dtype=np.float32)
    x[0, :, :rh, :rw] = np.asarray(img.resize((rw, rh), Image.BILINEAR), dtype=np.float32).transpose(2, 0, 1)
    boxes, scores, labels = sess.run(["boxes", "scores", "labels"], {"images": x})
    sx, sy = img.width / rw, img.height / rh
    for b, s, l in zip(boxes, scores, labels):
        x1, y1 = min(max(b[0] * sx, 0), img.width), min(max(b[1] * sy, 0), img.height)
        x2, y2 = min(max(b[2] * sx, 0), img.width), min(max(b[3] * sy, 0), img.height)
        bbox = [float(x1), float(y1), float(x2 - x1), float(y2 - y1)]
        results.append({"image_id": image_id, "category_id": int(l) + 1, "bbox": bbox, "score": float(s)})
elapsed = time.perf_counter() - start
json.dump(results, open(args.out, "w"))
print(json.dumps({"images": len(files), "seconds": elapsed, "images_per_s": len(files) / elapsed}))
