#!/usr/bin/env python3
"""Runs an exported detnas model with Python onnxruntime on a raw float32 input, for cross-checks.

usage: ort_detect.py MODEL.onnx INPUT.f32 OUT.json   (INPUT is little-endian float32 [1, 3, H, W])
Writes {"boxes": [[x1,y1,x2,y2], ...], "scores": [...], "labels": [...]}.
"""
import json
import sys

import numpy as np
import onnxruntime as ort

model, raw, out = sys.argv[1:4]
sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
shape = [d for d in sess.get_inputs()[0].shape]
x = np.fromfile(raw, dtype="<f4").reshape(shape)
boxes, scores, labels = sess.run(["boxes", "scores", "labels"], {"images": x})
json.dump({"boxes": boxes.tolist(), "scores": scores.tolist(), "labels": labels.tolist()}, open(out, "w"))
