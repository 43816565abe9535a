#!/usr/bin/env python3
"""Anchors fitted to a COCO data set's box sizes, for a RetinaNet `[detector]` section.

Prints the 5th-95th percentiles of the boxes' size (sqrt of w*h) and aspect ratio (h/w) at the
network's input scale, then `anchor_sizes` (one per level P3..P7, doubling, the smallest at the
5th-percentile size / 2^(1/3) rounded down to an integer so that the three octave scales of P3
start just under it) and `aspect_ratios` (the 10th, 50th and 90th percentile of h/w, rounded).

usage: fit_anchors.py TRAIN.json --input 416 [--tile 400]
(--tile: the images' longer side when they vary; default: each image's own size from the JSON)
"""
import argparse
import json
import math

import numpy as np

ap = argparse.ArgumentParser()
ap.add_argument("coco")
ap.add_argument("--input", type=int, required=True)
ap.add_argument("--tile", type=int)
args = ap.parse_args()

d = json.load(open(args.coco))
side = {i["id"]: max(i.get("width", 0), i.get("height", 0)) for i in d["images"]}
sizes, ratios = [], []
for a in d["annotations"]:
    x, y, w, h = a["bbox"]
    if w <= 0 or h <= 0:
        continue
    longer = args.tile or side.get(a["image_id"]) or args.input
    scale = args.input / longer
    sizes.append(math.sqrt(w * h) * scale)
    ratios.append(h / w)
sizes, ratios = np.array(sizes), np.array(ratios)
print("boxes", len(sizes))
print("size at input scale, percentiles 5/25/50/75/95:", np.percentile(sizes, [5, 25, 50, 75, 95]).round(1).tolist())
print("aspect h/w, percentiles 5/25/50/75/95:", np.percentile(ratios, [5, 25, 50, 75, 95]).round(2).tolist())
smallest = max(4, int(np.percentile(sizes, 5) / 2 ** (1 / 3)))
anchors = [float(smallest * 2**k) for k in range(5)]
ar = sorted({round(float(v), 2) for v in np.percentile(ratios, [10, 50, 90])})
print(f"anchor_sizes = {anchors}")
print(f"aspect_ratios = {ar}")
