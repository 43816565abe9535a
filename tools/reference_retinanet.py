#!/usr/bin/env python3
"""Independent NumPy (float64) reference of a DetNAS RetinaNet, for parity tests of the ONNX export.

Written from the specification (shared/spec/search-space.md, torchvision's RetinaNet semantics), not
from the Rust code: its own space table, block structure, unfolded BatchNorm, channel split, FPN with
nearest upsampling, anchors, box decoding and per-class NMS.

usage: reference_retinanet.py --weights W.safetensors --config cfg.json --space S --arch 0,1,.. \
           --input x.f32 --out DIR
The input is raw little-endian float32 [1, 3, H, W] (RGB 0-255, already letterboxed). Writes raw
little-endian files: cls_logits.f32 [1, A, K], bbox_regression.f32 [1, A, 4], boxes.f32 [N, 4],
scores.f32 [N], labels.i64 [N], and shapes.json.
"""
import argparse
import json
import math
import os
import struct

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

SPACES = {  # stem, blocks per stage, stage widths
    "detnas-300m": (16, [4, 4, 8, 4], [64, 160, 320, 640]),
    "detnas-1.3g": (48, [8, 8, 16, 8], [96, 240, 480, 960]),
    "detnas-3.8g": (72, [8, 8, 16, 8], [172, 432, 864, 1728]),
}


def load_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", (name, info["dtype"])
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(data[base + a : base + b], dtype="<f4").reshape(info["shape"]).astype(np.float64)
    return out


class Net:
    def __init__(self, weights, eps):
        self.w = weights
        self.eps = eps

    def conv(self, x, prefix, stride, groups, bias):
        w = self.w[prefix + ".weight"]
        cout, cin_g, k, _ = w.shape
        pad = k // 2
        xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
        win = sliding_window_view(xp, (k, k), axis=(1, 2))[:, ::stride, ::stride]  # C,Ho,Wo,k,k
        if groups == 1:
            y = np.tensordot(w, win, axes=([1, 2, 3], [0, 3, 4]))
        else:
            assert groups == x.shape[0] == cout and cin_g == 1, "only depthwise grouping is used"
            y = np.einsum("chwij,cij->chw", win, w[:, 0])
        if bias:
            y = y + self.w[prefix + ".bias"][:, None, None]
        return y

    def bn(self, x, prefix):
        g, b = self.w[prefix + ".weight"], self.w[prefix + ".bias"]
        m, v = self.w[prefix + ".running_mean"], self.w[prefix + ".running_var"]
        return ((x - m[:, None, None]) / np.sqrt(v[:, None, None] + self.eps)) * g[:, None, None] + b[:, None, None]

    def cbr(self, x, prefix, idx, stride, groups, relu):
        """conv (no bias) at sequence index idx, BN at idx+1, optional ReLU."""
        y = self.bn(self.conv(x, f"{prefix}.{idx}", stride, groups, False), f"{prefix}.{idx + 1}")
        return np.maximum(y, 0) if relu else y


def block(net, x, layer, choice, stride, shuffle):
    prefix = f"backbone.features.{layer}.{choice}"
    k = [3, 5, 7, 3][choice]
    if stride == 2:
        cin = x.shape[0]
        proj = net.cbr(x, prefix + ".branch_proj", 0, 2, cin, False)
        proj = net.cbr(proj, prefix + ".branch_proj", 2, 1, 1, True)
        main_in = x
    else:
        c = x.shape[0]
        if shuffle == "even-odd":
            proj, main_in = x[0::2], x[1::2]
        else:  # half-interleave: view (2, C/2) -> transpose -> flatten -> halves
            flat = x.reshape(2, c // 2, *x.shape[1:]).transpose(1, 0, 2, 3).reshape(c, *x.shape[1:])
            proj, main_in = flat[: c // 2], flat[c // 2 :]
    m = prefix + ".branch_main"
    cin = main_in.shape[0]
    if choice == 3:
        y = net.cbr(main_in, m, 0, stride, cin, False)
        y = net.cbr(y, m, 2, 1, 1, True)
        y = net.cbr(y, m, 5, 1, y.shape[0], False)
        y = net.cbr(y, m, 7, 1, 1, True)
        y = net.cbr(y, m, 10, 1, y.shape[0], False)
        y = net.cbr(y, m, 12, 1, 1, True)
    else:
        y = net.cbr(main_in, m, 0, 1, 1, True)
        y = net.cbr(y, m, 3, stride, y.shape[0], False)
        y = net.cbr(y, m, 5, 1, 1, True)
    assert k == net.w[f"{m}.{3 if choice != 3 else 0}.weight"].shape[-1]
    return np.concatenate([proj, y], axis=0)


def nearest_resize(x, h, w):
    hi = np.floor(np.arange(h) * (x.shape[1] / h)).astype(int)
    wi = np.floor(np.arange(w) * (x.shape[2] / w)).astype(int)
    return x[:, hi][:, :, wi]


def cell_anchors(size, scales, ratios):
    sizes = [size * 2 ** (i / scales) for i in range(scales)]
    out = []
    for r in ratios:
        hr = math.sqrt(r)
        wr = 1 / hr
        for s in sizes:
            ws, hs = wr * s, hr * s
            out.append([round(-ws / 2), round(-hs / 2), round(ws / 2), round(hs / 2)])
    return np.array(out, dtype=np.float64)


def iou(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def nms(boxes, scores, thresh):
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    keep, removed = [], set()
    for i, a in enumerate(order):
        if a in removed:
            continue
        keep.append(a)
        for b in order[i + 1 :]:
            if b not in removed and iou(boxes[a], boxes[b]) > thresh:
                removed.add(b)
    return keep


def main():
    ap = argparse.ArgumentParser()
    for a in ["--weights", "--config", "--space", "--arch", "--input", "--out"]:
        ap.add_argument(a, required=True)
    args = ap.parse_args()
    cfg = json.load(open(args.config))
    arch = [int(c) for c in args.arch.split(",")]
    stem, blocks, widths = SPACES[args.space]
    H, W = cfg["input"]["height"], cfg["input"]["width"]
    x = np.fromfile(args.input, dtype="<f4").astype(np.float64).reshape(3, H, W)
    mean, std = np.array(cfg["preprocess"]["mean"]), np.array(cfg["preprocess"]["std"])
    x = (x / 255.0 - mean[:, None, None]) / std[:, None, None]
    net = Net(load_safetensors(args.weights), cfg["bn_eps"])

    x = net.cbr(x, "backbone.first_conv", 0, 2, 1, True)
    feats, layer = [], 0
    for stage, n in enumerate(blocks):
        for b in range(n):
            x = block(net, x, layer, arch[layer], 2 if b == 0 else 1, cfg["shuffle"])
            layer += 1
        feats.append(x)
    c3, c4, c5 = feats[1], feats[2], feats[3]

    conv = lambda t, p, s=1, g=1: net.conv(t, p, s, g, True)
    inner = conv(c5, "fpn.inner_blocks.2.0")
    outs = [conv(inner, "fpn.layer_blocks.2.0")]
    for i, c in [(1, c4), (0, c3)]:
        lat = conv(c, f"fpn.inner_blocks.{i}.0")
        inner = lat + nearest_resize(inner, lat.shape[1], lat.shape[2])
        outs.insert(0, conv(inner, f"fpn.layer_blocks.{i}.0"))
    p6 = conv(outs[-1], "fpn.extra_blocks.p6", 2)
    p7 = conv(np.maximum(p6, 0), "fpn.extra_blocks.p7", 2)
    levels = outs + [p6, p7]

    K = len(cfg["class_names"])
    A = cfg["scales_per_octave"] * len(cfg["aspect_ratios"])

    def tower(t, prefix):
        for i in range(cfg["head_convs"]):
            p = f"{prefix}.conv.{2 * i}"
            if cfg["head_conv"] == "dense":
                t = np.maximum(conv(t, p), 0)
            else:
                t = np.maximum(conv(conv(t, p + ".dw", 1, t.shape[0]), p + ".pw"), 0)
        return t

    all_cls, all_reg, cand = [], [], []
    clamp = math.log(1000.0 / 16)
    for li, f in enumerate(levels):
        h, w = f.shape[1:]
        cls = conv(tower(f, "head.classification_head"), "head.classification_head.cls_logits")
        reg = conv(tower(f, "head.regression_head"), "head.regression_head.bbox_reg")
        cls = cls.reshape(A, K, h, w).transpose(2, 3, 0, 1).reshape(-1, K)
        reg = reg.reshape(A, 4, h, w).transpose(2, 3, 0, 1).reshape(-1, 4)
        all_cls.append(cls)
        all_reg.append(reg)
        sh, sw = H // h, W // w
        cell = cell_anchors(cfg["anchor_sizes"][li], cfg["scales_per_octave"], cfg["aspect_ratios"])
        ys, xs = np.meshgrid(np.arange(h) * sh, np.arange(w) * sw, indexing="ij")
        shifts = np.stack([xs.ravel(), ys.ravel(), xs.ravel(), ys.ravel()], axis=1)
        anchors = (shifts[:, None, :] + cell[None]).reshape(-1, 4)
        scores = 1 / (1 + np.exp(-cls.ravel()))
        k = min(cfg["topk_candidates"], scores.size)
        top = np.argsort(-scores, kind="stable")[:k]
        for idx in top:
            a, label = divmod(int(idx), K)
            an = anchors[a]
            aw, ah = an[2] - an[0], an[3] - an[1]
            cx, cy = an[0] + 0.5 * aw, an[1] + 0.5 * ah
            dx, dy, dw, dh = reg[a]
            pcx, pcy = dx * aw + cx, dy * ah + cy
            pw, ph = math.exp(min(dw, clamp)) * aw, math.exp(min(dh, clamp)) * ah
            box = [pcx - 0.5 * pw, pcy - 0.5 * ph, pcx + 0.5 * pw, pcy + 0.5 * ph]
            box = [min(max(box[0], 0), W), min(max(box[1], 0), H), min(max(box[2], 0), W), min(max(box[3], 0), H)]
            cand.append((box, float(scores[idx]), label))

    cand = [c for c in cand if c[1] > cfg["score_thresh"]]
    keep = []
    for label in sorted({c[2] for c in cand}):
        idx = [i for i, c in enumerate(cand) if c[2] == label]
        kept = nms([cand[i][0] for i in idx], [cand[i][1] for i in idx], cfg["nms_thresh"])
        keep += [idx[i] for i in kept]
    keep.sort(key=lambda i: (-cand[i][1], i))
    keep = keep[: cfg["detections_per_img"]]

    os.makedirs(args.out, exist_ok=True)
    cls = np.concatenate(all_cls)[None]
    reg = np.concatenate(all_reg)[None]
    cls.astype("<f4").tofile(os.path.join(args.out, "cls_logits.f32"))
    reg.astype("<f4").tofile(os.path.join(args.out, "bbox_regression.f32"))
    np.array([cand[i][0] for i in keep], dtype="<f4").reshape(-1, 4).tofile(os.path.join(args.out, "boxes.f32"))
    np.array([cand[i][1] for i in keep], dtype="<f4").tofile(os.path.join(args.out, "scores.f32"))
    np.array([cand[i][2] for i in keep], dtype="<i8").tofile(os.path.join(args.out, "labels.i64"))
    json.dump({"cls_logits": list(cls.shape), "detections": len(keep)}, open(os.path.join(args.out, "shapes.json"), "w"))


if __name__ == "__main__":
    main()
