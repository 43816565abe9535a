#!/usr/bin/env python3
"""Independent NumPy (float64) reference of a DetNAS FPN Faster R-CNN, for parity tests of the ONNX
export (crates/detnas-onnx/src/faster_rcnn.rs).

Written from the semantics (torchvision's FasterRCNN at test time), not from the Rust code: its own
space table, blocks with unfolded BatchNorm, channel split, FPN C2..C5 -> P2..P5 with nearest
upsampling and a max-pool P6, RPN anchors, box decoding, small-box removal, per-level NMS, the
LevelMapper, RoIAlign (aligned=False, bilinear with torchvision's boundary rule), the box head,
softmax, class-specific decoding and per-class NMS. The backbone part is a copy of
tools/reference_retinanet.py's (so that neither depends on the other).

usage: reference_faster_rcnn.py --weights W.safetensors --config cfg.json --space S --arch 0,1,.. \
           --input x.f32 --out DIR
The input is raw little-endian float32 [1, 3, H, W] (RGB 0-255, already letterboxed). Writes raw
little-endian files: proposals.f32 [P, 4], proposal_scores.f32 [P], boxes.f32 [N, 4], scores.f32 [N],
labels.i64 [N] (0-based, background excluded), and summary.json with the counts and the margins of
every discrete decision (how far the closest value was from flipping it), which tell an
ill-conditioned case from a bug.
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
CLAMP = math.log(1000.0 / 16)


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

    def linear(self, x, prefix, relu):
        y = x @ self.w[prefix + ".weight"].T + self.w[prefix + ".bias"]
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


# ---- Faster R-CNN ----------------------------------------------------------------------------


def cell_anchors(size, ratios):
    """torchvision's AnchorGenerator, one size: w = size / sqrt(r), h = size * sqrt(r), rounded."""
    out = []
    for r in ratios:
        hr = math.sqrt(r)
        ws, hs = size / hr, size * hr
        out.append([round(-ws / 2), round(-hs / 2), round(ws / 2), round(hs / 2)])
    return np.array(out, dtype=np.float64)


def decode(ref, deltas, weights):
    """BoxCoder.decode: ref [..., 4] boxes, deltas [..., 4] -> boxes [..., 4]."""
    w, h = ref[..., 2] - ref[..., 0], ref[..., 3] - ref[..., 1]
    cx, cy = ref[..., 0] + 0.5 * w, ref[..., 1] + 0.5 * h
    dx, dy = deltas[..., 0] / weights[0], deltas[..., 1] / weights[1]
    dw = np.minimum(deltas[..., 2] / weights[2], CLAMP)
    dh = np.minimum(deltas[..., 3] / weights[3], CLAMP)
    pcx, pcy = dx * w + cx, dy * h + cy
    pw, ph = np.exp(dw) * w, np.exp(dh) * h
    return np.stack([pcx - 0.5 * pw, pcy - 0.5 * ph, pcx + 0.5 * pw, pcy + 0.5 * ph], axis=-1)


def clip(boxes, W, H):
    out = boxes.copy()
    out[..., 0::2] = np.clip(out[..., 0::2], 0, W)
    out[..., 1::2] = np.clip(out[..., 1::2], 0, H)
    return out


class Margins:
    """The smallest distance of any discrete decision from its threshold, per kind."""

    def __init__(self):
        self.m = {}

    def add(self, kind, values):
        values = np.abs(np.asarray(values, dtype=np.float64)).ravel()
        if values.size:
            self.m[kind] = min(self.m.get(kind, math.inf), float(values.min()))


def nms(boxes, scores, thresh, margins, kind):
    """Greedy NMS by decreasing score (ties: lower index first); drops IoU > thresh."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    removed = np.zeros(len(scores), dtype=bool)
    keep = []
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    order = np.array(order, dtype=int)
    for pos, a in enumerate(order):
        if removed[a]:
            continue
        keep.append(int(a))
        rest = order[pos + 1 :]
        rest = rest[~removed[rest]]
        if rest.size == 0:
            continue
        w = np.maximum(0.0, np.minimum(boxes[a, 2], boxes[rest, 2]) - np.maximum(boxes[a, 0], boxes[rest, 0]))
        h = np.maximum(0.0, np.minimum(boxes[a, 3], boxes[rest, 3]) - np.maximum(boxes[a, 1], boxes[rest, 1]))
        inter = w * h
        union = areas[a] + areas[rest] - inter
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
        margins.add(kind, iou[inter > 0] - thresh)
        removed[rest[iou > thresh]] = True
    return keep


def roi_align(feat, rois, scale, out, ratio):
    """torchvision roi_align, aligned=False: feat [C, H, W], rois [R, 4] (input pixels)."""
    C, H, W = feat.shape
    res = np.zeros((len(rois), C, out, out))
    for r, (x1, y1, x2, y2) in enumerate(rois):
        sx, sy = x1 * scale, y1 * scale
        rw, rh = max(x2 * scale - sx, 1.0), max(y2 * scale - sy, 1.0)
        bw, bh = rw / out, rh / out
        gh = ratio if ratio > 0 else int(math.ceil(rh / out))
        gw = ratio if ratio > 0 else int(math.ceil(rw / out))
        ys = (sy + np.arange(out)[:, None] * bh + (np.arange(gh)[None, :] + 0.5) * bh / gh).ravel()
        xs = (sx + np.arange(out)[:, None] * bw + (np.arange(gw)[None, :] + 0.5) * bw / gw).ravel()

        def axis(v, n):
            inside = (v >= -1.0) & (v <= n)
            v = np.maximum(v, 0.0)
            lo = np.floor(v).astype(int)
            top = lo >= n - 1
            lo = np.where(top, n - 1, lo)
            hi = np.where(top, n - 1, lo + 1)
            frac = np.where(top, 0.0, v - lo)
            return inside, lo, hi, frac

        iy, yl, yh, ly = axis(ys, H)
        ix, xl, xh, lx = axis(xs, W)
        hy, hx = 1 - ly, 1 - lx
        val = (
            (hy[:, None] * hx[None, :]) * feat[:, yl][:, :, xl]
            + (hy[:, None] * lx[None, :]) * feat[:, yl][:, :, xh]
            + (ly[:, None] * hx[None, :]) * feat[:, yh][:, :, xl]
            + (ly[:, None] * lx[None, :]) * feat[:, yh][:, :, xh]
        )
        val = val * (iy[:, None] & ix[None, :])
        res[r] = val.reshape(C, out, gh, out, gw).sum(axis=(2, 4)) / max(gh * gw, 1)
    return res


def main():
    ap = argparse.ArgumentParser()
    for a in ["--weights", "--config", "--space", "--arch", "--input", "--out"]:
        ap.add_argument(a, required=True)
    args = ap.parse_args()
    cfg = json.load(open(args.config))
    assert cfg["kind"] == "faster-rcnn", cfg["kind"]
    rpn, roi = cfg["rpn"], cfg["roi_heads"]
    arch = [int(c) for c in args.arch.split(",")]
    stem, blocks, widths = SPACES[args.space]
    H, W = cfg["input"]["height"], cfg["input"]["width"]
    x = np.fromfile(args.input, dtype="<f4").astype(np.float64).reshape(3, H, W)
    mean, std = np.array(cfg["preprocess"]["mean"]), np.array(cfg["preprocess"]["std"])
    x = (x / 255.0 - mean[:, None, None]) / std[:, None, None]
    net = Net(load_safetensors(args.weights), cfg["bn_eps"])
    margins = Margins()

    x = net.cbr(x, "backbone.first_conv", 0, 2, 1, True)
    feats, layer = [], 0
    for stage, n in enumerate(blocks):
        for b in range(n):
            x = block(net, x, layer, arch[layer], 2 if b == 0 else 1, cfg["shuffle"])
            layer += 1
        feats.append(x)

    # FPN on C2..C5, then P6 = max_pool2d(P5, kernel 1, stride 2)
    conv = lambda t, p, s=1, g=1: net.conv(t, p, s, g, True)
    inner = conv(feats[3], "fpn.inner_blocks.3.0")
    pyramid = [conv(inner, "fpn.layer_blocks.3.0")]
    for i in [2, 1, 0]:
        lat = conv(feats[i], f"fpn.inner_blocks.{i}.0")
        inner = lat + nearest_resize(inner, lat.shape[1], lat.shape[2])
        pyramid.insert(0, conv(inner, f"fpn.layer_blocks.{i}.0"))
    pyramid.append(pyramid[-1][:, ::2, ::2])

    # RPN and filter_proposals
    cand_boxes, cand_scores, cand_level = [], [], []
    for li, f in enumerate(pyramid):
        h, w = f.shape[1:]
        t = np.maximum(conv(f, "rpn.head.conv.0.0"), 0)
        logits = conv(t, "rpn.head.cls_logits")
        deltas = conv(t, "rpn.head.bbox_pred")
        A = logits.shape[0]
        logits = logits.reshape(A, 1, h, w).transpose(2, 3, 0, 1).reshape(-1)
        deltas = deltas.reshape(A, 4, h, w).transpose(2, 3, 0, 1).reshape(-1, 4)
        sh, sw = H // h, W // w
        cell = cell_anchors(rpn["anchor_sizes"][li], rpn["aspect_ratios"])
        ys, xs = np.meshgrid(np.arange(h) * sh, np.arange(w) * sw, indexing="ij")
        shifts = np.stack([xs.ravel(), ys.ravel(), xs.ravel(), ys.ravel()], axis=1)
        anchors = (shifts[:, None, :] + cell[None]).reshape(-1, 4)
        order = np.argsort(-logits, kind="stable")
        k = min(rpn["pre_nms_top_n_test"], logits.size)
        if k < logits.size:
            margins.add("rpn_pre_nms_top_n", logits[order[k - 1]] - logits[order[k]])
        top = order[:k]
        boxes = clip(decode(anchors[top], deltas[top], [1.0, 1.0, 1.0, 1.0]), W, H)
        scores = 1 / (1 + np.exp(-logits[top]))
        ws, hs = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        margins.add("rpn_min_size", np.concatenate([ws, hs]) - rpn["min_size"])
        margins.add("rpn_score_thresh", scores - rpn["score_thresh"])
        keep = (ws >= rpn["min_size"]) & (hs >= rpn["min_size"]) & (scores >= rpn["score_thresh"])
        boxes, scores = boxes[keep], scores[keep]
        kept = nms(boxes, scores, rpn["nms_thresh"], margins, "rpn_nms_iou")
        cand_boxes.append(boxes[kept])
        cand_scores.append(scores[kept])
    boxes, scores = np.concatenate(cand_boxes), np.concatenate(cand_scores)
    order = np.argsort(-scores, kind="stable")
    post = rpn["post_nms_top_n_test"]
    if post < scores.size:
        margins.add("rpn_post_nms_top_n", scores[order[post - 1]] - scores[order[post]])
    order = order[:post]
    proposals, proposal_scores = boxes[order], scores[order]

    # MultiScaleRoIAlign on P2..P5 with the LevelMapper (k0 4, canonical 224, eps 1e-6)
    P = len(proposals)
    area = (proposals[:, 2] - proposals[:, 0]) * (proposals[:, 3] - proposals[:, 1])
    with np.errstate(divide="ignore", invalid="ignore"):  # an empty box has level -inf: k_min
        raw_level = 4 + np.log2(np.sqrt(np.maximum(area, 0)) / 224) + 1e-6
    finite = np.isfinite(raw_level)
    margins.add("roi_level", raw_level[finite] - np.round(raw_level[finite]))
    level = np.where(np.isnan(raw_level), 2, np.clip(np.floor(raw_level), 2, 5)).astype(int)
    C = cfg["fpn_channels"]
    pool = roi["pool_size"]
    pooled = np.zeros((P, C, pool, pool))
    for lv in range(2, 6):
        idx = np.nonzero(level == lv)[0]
        if idx.size:
            f = pyramid[lv - 2]
            scale = 2.0 ** round(math.log2(f.shape[2] / W))  # torchvision's inferred power of two
            pooled[idx] = roi_align(f, proposals[idx], scale, pool, roi["sampling_ratio"])

    # box head and predictor
    feats = []
    for r in range(P):
        t = pooled[r]
        for i in range(cfg["head_convs"]):
            p = f"roi_heads.box_head.conv.{2 * i}"
            if cfg["head_conv"] == "dense":
                t = np.maximum(conv(t, p), 0)
            else:
                t = np.maximum(conv(conv(t, p + ".dw", 1, t.shape[0]), p + ".pw"), 0)
        feats.append(t.reshape(-1))
    t = np.array(feats).reshape(P, -1) if P else np.zeros((0, net.w["roi_heads.box_head.fc6.weight"].shape[1]))
    t = net.linear(t, "roi_heads.box_head.fc6", True)
    if cfg["head_convs"] == 0:
        t = net.linear(t, "roi_heads.box_head.fc7", True)
    logits = net.linear(t, "roi_heads.box_predictor.cls_score", False)
    deltas = net.linear(t, "roi_heads.box_predictor.bbox_pred", False)

    # postprocess_detections
    K = len(cfg["class_names"])
    e = np.exp(logits - logits.max(axis=1, keepdims=True)) if P else logits
    probs = e / e.sum(axis=1, keepdims=True) if P else logits
    deltas = deltas.reshape(P, K + 1, 4)
    boxes = clip(decode(proposals[:, None, :], deltas, roi["bbox_reg_weights"]), W, H)
    boxes = boxes[:, 1:].reshape(-1, 4)
    scores = probs[:, 1:].reshape(-1)
    labels = np.tile(np.arange(K), P)
    ws, hs = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    margins.add("score_thresh", scores - cfg["score_thresh"])
    margins.add("min_side", np.concatenate([ws, hs]) - 1e-2)
    keep = (scores > cfg["score_thresh"]) & (ws >= 1e-2) & (hs >= 1e-2)
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    kept = []
    for c in sorted(set(labels.tolist())):
        idx = np.nonzero(labels == c)[0]
        kept += [int(idx[i]) for i in nms(boxes[idx], scores[idx], cfg["nms_thresh"], margins, "nms_iou")]
    kept.sort(key=lambda i: (-scores[i], i))
    if len(kept) > cfg["detections_per_img"]:
        d = cfg["detections_per_img"]
        margins.add("detections_per_img", scores[kept[d - 1]] - scores[kept[d]])
    kept = kept[: cfg["detections_per_img"]]

    os.makedirs(args.out, exist_ok=True)
    out = lambda name: os.path.join(args.out, name)
    proposals.astype("<f4").reshape(-1, 4).tofile(out("proposals.f32"))
    proposal_scores.astype("<f4").tofile(out("proposal_scores.f32"))
    boxes[kept].astype("<f4").reshape(-1, 4).tofile(out("boxes.f32"))
    scores[kept].astype("<f4").tofile(out("scores.f32"))
    labels[kept].astype("<i8").tofile(out("labels.i64"))
    levels = {f"P{lv}": int((level == lv).sum()) for lv in range(2, 6)}
    summary = {"proposals": P, "detections": len(kept), "proposals_per_level": levels, "margins": margins.m}
    json.dump(summary, open(out("summary.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
