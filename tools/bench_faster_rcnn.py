#!/usr/bin/env python3
"""Our exported FPN Faster R-CNN (`detnas export --detector faster-rcnn`) against torchvision's
`FasterRCNN` with the same DetNAS backbone path and FPN, exported by torch.onnx (the TorchScript
exporter): the same weights in both, checked for the same detections, then timed side by side in
ONNX Runtime.

usage: bench_faster_rcnn.py [--input 512] [--seconds 30] [--threads 2] [--out results.json]
                            [--arch coco-fpn-300m] [--seed 0] [--image models/samples/neon-yell-1.jpg]
                            [--workdir DIR]

1. One set of seeded random weights, spread so that every tensor matters and the RPN and class scores
   are well separated (convs N(0, gain/fan_in) as `Weights::random_varied`, BN statistics random,
   heads scaled so logits are of order one), loaded into torchvision's model and written with our
   names (crates/detnas-core/src/detector/plan.rs) as safetensors for `detnas export --weights`.
2. Both exported to ONNX and checked with onnx.checker (full_check).
3. Both run in ONNX Runtime on the same letterboxed image (ours RGB 0-255 [1,3,H,W], torchvision's
   0-1 [3,H,W]); detections compared (counts, boxes within 1e-3 relative, scores within 1e-4, labels),
   plus the RPN proposals (ours' raw outputs against torchvision eager) to locate any difference.
4. Interleaved timing, `--threads` intra-op threads each, graph optimisation all.
Prints a Markdown table and writes JSON with --out; exits 1 when the detections differ. Needs PyTorch
and torchvision's Python bindings in .native/torch-full (tools/bench_faster_rcnn.sh installs them) and
a current target/release/detnas.
"""
import argparse
import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict

TOOLS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TOOLS)
sys.path.insert(0, os.path.join(ROOT, ".native", "torch-full"))
sys.path.insert(1, TOOLS)
import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torchvision  # noqa: E402
from PIL import Image, ImageOps  # noqa: E402
from torchvision.models.detection import FasterRCNN  # noqa: E402
from torchvision.models.detection.anchor_utils import AnchorGenerator  # noqa: E402
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead  # noqa: E402
from torchvision.models.detection.rpn import concat_box_prediction_layers  # noqa: E402
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign  # noqa: E402
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool  # noqa: E402

from bench_train_step import SPACES, Block, cbr  # noqa: E402  (the DetNAS blocks, even-odd split)

ARCHS = {"coco-fpn-300m": ("detnas-300m", "2,1,2,0,2,1,1,2,3,3,1,3,0,0,3,1,3,1,3,2")}
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
CLASSES = ["a", "b"]


class DetNASFPN(nn.Module):
    """The DetNAS backbone path (C2..C5) and torchvision's P2..P6 FPN, like `BackboneWithFPN`.
    Module names follow ours: `first_conv`, `features.{layer}.{choice}`, `fpn`."""

    def __init__(self, space, arch, out_channels=256):
        super().__init__()
        stem, blocks, widths = SPACES[space]
        self.arch = arch
        self.first_conv = nn.Sequential(*cbr(3, stem, 3, 2, 1, True))
        self.features = nn.ModuleList()
        self.ends = []
        cin, i = stem, 0
        for n, w in zip(blocks, widths):
            for b in range(n):
                self.features.append(nn.ModuleDict({str(arch[i]): Block(cin, w, 2 if b == 0 else 1, arch[i])}))
                cin, i = w, i + 1
            self.ends.append(i - 1)
        self.fpn = FeaturePyramidNetwork(list(widths), out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, x):
        x = self.first_conv(x)
        feats = OrderedDict()
        for i, layer in enumerate(self.features):
            x = layer[str(self.arch[i])](x)
            if i in self.ends:
                feats[str(len(feats))] = x
        return self.fpn(feats)


def build_torchvision(space, arch, size):
    backbone = DetNASFPN(space, arch)
    anchors = AnchorGenerator(((32,), (64,), (128,), (256,), (512,)), ((0.5, 1.0, 2.0),) * 5)
    roi_pool = MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)
    box_head = TwoMLPHead(256 * 7 * 7, 1024)
    predictor = FastRCNNPredictor(1024, len(CLASSES) + 1)
    model = FasterRCNN(
        backbone, num_classes=None, min_size=size, max_size=size, image_mean=MEAN, image_std=STD,
        rpn_anchor_generator=anchors, box_roi_pool=roi_pool, box_head=box_head, box_predictor=predictor,
        rpn_pre_nms_top_n_test=1000, rpn_post_nms_top_n_test=1000,
        box_score_thresh=0.05, box_nms_thresh=0.5, box_detections_per_img=100,
    )
    return model.eval()


def varied_state(model, seed):
    """Seeded weights where every tensor matters: convs N(0, gain/fan_in) (gain 1 depthwise, 2
    otherwise), BN running var U(0.5, 1.5), scale sqrt(var) U(0.9, 1.1), means / shifts / biases
    N(0, 0.1); linears N(0, 2/in); the predictors smaller so logits and deltas stay moderate."""
    g = torch.Generator().manual_seed(seed)
    sd = model.state_dict()
    out = {}
    for name, t in sd.items():
        if name.endswith("num_batches_tracked"):
            out[name] = t.clone()
            continue
        shape = tuple(t.shape)
        if t.dim() == 4:
            fan_in = shape[1] * shape[2] * shape[3]
            std = math.sqrt((1.0 if shape[1] == 1 else 2.0) / fan_in)
            if name.startswith("rpn.head.cls_logits"):
                std = 0.25 * math.sqrt(1.0 / fan_in)
            elif name.startswith("rpn.head.bbox_pred"):
                std = 0.06 * math.sqrt(1.0 / fan_in)
            v = torch.randn(shape, generator=g) * std
        elif t.dim() == 2:
            std = math.sqrt(2.0 / shape[1])
            if "cls_score" in name:
                std = 0.5 * math.sqrt(1.0 / shape[1])
            elif "box_predictor.bbox_pred" in name:
                std = 0.5 * math.sqrt(1.0 / shape[1])
            v = torch.randn(shape, generator=g) * std
        elif name.endswith("running_var"):
            v = 0.5 + torch.rand(shape, generator=g)
        elif name.endswith(".weight"):  # BN scale, fixed below
            v = 0.9 + 0.2 * torch.rand(shape, generator=g)
        else:
            v = torch.randn(shape, generator=g) * 0.1
        out[name] = v
    for name in out:
        var = name[: -len("weight")] + "running_var"
        if name.endswith(".weight") and var in out:
            out[name] = out[name] * out[var].sqrt()
    return out


def our_name(tv_name):
    """torchvision state_dict name -> ours (plan.rs); None for tensors we do not read."""
    if tv_name.endswith("num_batches_tracked"):
        return None
    n = tv_name
    if n.startswith("backbone.fpn."):
        return n[len("backbone."):]
    if n.startswith("backbone.features."):
        n = n.replace(".proj.", ".branch_proj.").replace(".main.", ".branch_main.")
    return n


def save_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        b = tensors[name].detach().contiguous().float().numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


class Exportable(nn.Module):
    """[3, H, W] in 0-1 -> boxes, scores, labels (torchvision's 1-based labels)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, image):
        out = self.model([image])[0]
        return out["boxes"], out["scores"], out["labels"]


def letterbox(path, size):
    img = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    scale = min(size / img.width, size / img.height)
    rw, rh = max(1, min(size, round(img.width * scale))), max(1, min(size, round(img.height * scale)))
    x = np.zeros((1, 3, size, size), dtype=np.float32)
    x[0, :, :rh, :rw] = np.asarray(img.resize((rw, rh), Image.BILINEAR), dtype=np.float32).transpose(2, 0, 1)
    return x


def session(path, threads):
    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    o.inter_op_num_threads = 1
    o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])


def iou(a, b):
    lt, rb = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-12)


def compare(ob, os_, ol, tb, ts, tl, box_rel=1e-3, score_tol=1e-4):
    """Index-by-index comparison (both sorted by decreasing score), then an order-free one
    (same label, IoU > 0.99) for what did not line up."""
    n = min(len(ob), len(tb))
    rel = np.abs(ob[:n] - tb[:n]) / np.maximum(np.abs(tb[:n]), 1.0)
    sdiff = np.abs(os_[:n] - ts[:n])
    same = (rel.max(1, initial=0) <= box_rel) & (sdiff <= score_tol) & (ol[:n] == tl[:n])
    first_bad = int(np.argmin(same)) if not same.all() else None
    # order-free matching of everything
    unmatched_ours, used = [], set()
    m = iou(ob, tb) if len(ob) and len(tb) else np.zeros((len(ob), len(tb)))
    pairs = []
    for i in range(len(ob)):
        for j in np.argsort(-m[i]):
            if m[i, j] <= 0.99:
                unmatched_ours.append(i)
                break
            if j not in used and tl[j] == ol[i]:
                used.add(int(j))
                pairs.append((i, int(j)))
                break
        else:
            unmatched_ours.append(i)
    pr = pairs
    prel = max((float((np.abs(ob[i] - tb[j]) / np.maximum(np.abs(tb[j]), 1.0)).max()) for i, j in pr), default=0.0)
    pabs = max((float(np.abs(ob[i] - tb[j]).max()) for i, j in pr), default=0.0)
    psc = max((float(abs(os_[i] - ts[j])) for i, j in pr), default=0.0)
    return {
        "count_ours": int(len(ob)), "count_theirs": int(len(tb)),
        "in_order_equal": int(same.sum()), "first_in_order_difference": first_bad,
        "in_order_max_box_rel": float(rel.max(initial=0)),
        "in_order_max_box_abs": float(np.abs(ob[:n] - tb[:n]).max(initial=0)),
        "in_order_max_score_diff": float(sdiff.max(initial=0)),
        "in_order_label_mismatches": int((ol[:n] != tl[:n]).sum()),
        "matched_any_order": len(pairs), "unmatched_ours": [int(i) for i in unmatched_ours],
        "unmatched_theirs": [int(j) for j in range(len(tb)) if j not in used],
        "matched_max_box_rel": prel, "matched_max_box_abs": pabs, "matched_max_score_diff": psc,
        "all_equal": bool(len(ob) == len(tb) and same.all()),
    }


def torchvision_proposals(model, image):
    """torchvision eager RPN output for one [3, H, W] image: proposals [P, 4] and probabilities [P]."""
    with torch.no_grad():
        images, _ = model.transform([image])
        feats = model.backbone(images.tensors)
        rpn = model.rpn
        fl = list(feats.values())
        obj, deltas = rpn.head(fl)
        anchors = rpn.anchor_generator(images, fl)
        per_level = [o[0].numel() for o in obj]
        obj, deltas = concat_box_prediction_layers(obj, deltas)
        props = rpn.box_coder.decode(deltas, anchors).view(1, -1, 4)
        boxes, scores = rpn.filter_proposals(props, obj, images.image_sizes, per_level)
    return boxes[0].numpy(), scores[0].numpy()


def timing(sessions, feeds, seconds, warmup=3):
    for name, s in sessions.items():
        for _ in range(warmup):
            s.run(None, feeds[name])
    times = {k: [] for k in sessions}
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for name, s in sessions.items():
            t = time.perf_counter()
            s.run(None, feeds[name])
            times[name].append((time.perf_counter() - t) * 1e3)
    stats = {}
    for k, v in times.items():
        v = sorted(v)
        stats[k] = {"runs": len(v), "p50_ms": v[len(v) // 2], "mean_ms": sum(v) / len(v), "min_ms": v[0]}
    return stats


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--input", type=int, default=512, help="square input side (multiple of 32)")
    ap.add_argument("--seconds", type=float, default=30.0, help="interleaved timing, both models together")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="JSON results")
    ap.add_argument("--arch", default="coco-fpn-300m", choices=sorted(ARCHS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--image", default=os.path.join(ROOT, "models", "samples", "neon-yell-1.jpg"))
    ap.add_argument("--detnas", default=os.path.join(ROOT, "target", "release", "detnas"))
    ap.add_argument("--workdir", help="keep the weights and ONNX files here (default: a temporary folder)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    space, arch_text = ARCHS[args.arch]
    arch = [int(c) for c in arch_text.split(",")]
    size = args.input
    work = args.workdir or tempfile.mkdtemp(prefix="bench_frcnn_")
    os.makedirs(work, exist_ok=True)
    paths = {k: os.path.join(work, f) for k, f in [
        ("weights", "weights.safetensors"), ("ours", "ours.onnx"), ("ours_raw", "ours_raw.onnx"),
        ("theirs", "torchvision.onnx")]}

    # 1. weights
    torch.manual_seed(args.seed)
    model = build_torchvision(space, arch, size)
    state = varied_state(model, args.seed)
    model.load_state_dict(state)
    ours = {our_name(k): v for k, v in state.items() if our_name(k) is not None}
    save_safetensors(paths["weights"], ours)
    print(f"weights: {len(ours)} tensors, {sum(v.numel() for v in ours.values()) / 1e6:.2f}M values -> {paths['weights']}",
          file=sys.stderr)

    # 2. exports
    common = [args.detnas, "export", "--detector", "faster-rcnn", "--arch", args.arch, "--classes", ",".join(CLASSES),
              "--input", f"{size}x{size}", "--weights", paths["weights"]]
    t = time.perf_counter()
    subprocess.run(common + ["--out", paths["ours"]], check=True, stdout=subprocess.DEVNULL)
    export_ours_s = time.perf_counter() - t
    subprocess.run(common + ["--raw-outputs", "--out", paths["ours_raw"]], check=True, stdout=subprocess.DEVNULL)
    t = time.perf_counter()
    dummy = torch.rand(3, size, size)
    wrapped = Exportable(model).eval()
    with torch.no_grad():
        torch.onnx.export(wrapped, (dummy,), paths["theirs"], dynamo=False, opset_version=17,
                          input_names=["image"], output_names=["boxes", "scores", "labels"],
                          do_constant_folding=True)
    export_theirs_s = time.perf_counter() - t
    wrapped.eval()
    checks = {}
    for k in ("ours", "theirs"):
        m = onnx.load(paths[k])
        onnx.checker.check_model(m, full_check=True)
        ops = {}
        for n in m.graph.node:
            ops[n.op_type] = ops.get(n.op_type, 0) + 1
        checks[k] = {"checker": "ok", "opset": max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")),
                     "nodes": len(m.graph.node), "bytes": os.path.getsize(paths[k]),
                     "ops": dict(sorted(ops.items(), key=lambda kv: -kv[1]))}
        print(f"{k}: onnx.checker full_check ok, {len(m.graph.node)} nodes, {os.path.getsize(paths[k]) / 1e6:.1f} MB",
              file=sys.stderr)

    # 3. correctness
    x255 = letterbox(args.image, size)
    x01 = x255[0] / 255.0
    s_ours, s_theirs = session(paths["ours"], args.threads), session(paths["theirs"], args.threads)
    s_raw = session(paths["ours_raw"], args.threads)
    ob, os_, ol = s_ours.run(["boxes", "scores", "labels"], {"images": x255})
    tb, ts, tl = s_theirs.run(["boxes", "scores", "labels"], {"image": x01})
    tl = tl - 1  # torchvision: 0 is background
    det = compare(ob, os_, ol, tb, ts, tl)
    with torch.no_grad():
        eb, es, el = wrapped(torch.from_numpy(x01))
    eager = compare(tb, ts, tl, eb.numpy(), es.numpy(), el.numpy() - 1)
    raw = dict(zip([o.name for o in s_raw.get_outputs()], s_raw.run(None, {"images": x255})))
    pb, ps = torchvision_proposals(model, torch.from_numpy(x01))
    rb, rs = raw["proposals"], raw["proposal_scores"]
    zeros = lambda a: np.zeros(len(a), dtype=np.int64)  # noqa: E731
    proposals = compare(rb, rs, zeros(rb), pb, ps, zeros(pb))
    n = min(len(rb), len(pb))
    off = np.where(np.abs(rb[:n] - pb[:n]).max(1, initial=0) / np.maximum(np.abs(pb[:n]).max(1, initial=0), 1.0) > 1e-3)[0]
    # a rank where the boxes differ but the scores agree to float32 rounding: two near-equal proposals
    # (independent in the second stage) in the other order
    proposals["out_of_order_ranks"] = [int(i) for i in off]
    proposals["max_score_diff_at_out_of_order_ranks"] = float(np.abs(rs[off] - ps[off]).max(initial=0))
    spread = {"score_min": float(os_.min(initial=1)), "score_max": float(os_.max(initial=0)),
              "distinct_scores": int(len(np.unique(os_))), "labels": np.bincount(ol, minlength=len(CLASSES)).tolist(),
              "proposal_score_min": float(rs.min(initial=1)), "proposal_score_max": float(rs.max(initial=0))}

    # 4. timing
    stats = timing({"ours": s_ours, "theirs": s_theirs}, {"ours": {"images": x255}, "theirs": {"image": x01}},
                   args.seconds)
    ratio_p50 = stats["ours"]["p50_ms"] / stats["theirs"]["p50_ms"]
    ratio_mean = stats["ours"]["mean_ms"] / stats["theirs"]["mean_ms"]

    result = {
        "arch": args.arch, "space": space, "input": [size, size], "threads": args.threads, "seed": args.seed,
        "image": os.path.relpath(args.image, ROOT), "onnxruntime": ort.__version__,
        "torch": torch.__version__, "torchvision": torchvision.__version__,
        "export_seconds": {"ours": export_ours_s, "theirs": export_theirs_s},
        "onnx": checks, "detections": det, "torchvision_onnx_vs_eager": eager,
        "proposals_ours_vs_torchvision_eager": proposals,
        "spread": spread, "timing": stats, "ratio_ours_over_theirs": {"p50": ratio_p50, "mean": ratio_mean},
        "workdir": work,
    }
    print(f"\n### FPN Faster R-CNN {args.arch}, {size}x{size}, {args.threads} threads, ONNX Runtime {ort.__version__}\n")
    print("| model | nodes | runs | p50 ms | mean ms | min ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for k, label in [("ours", "detnas export"), ("theirs", f"torchvision {torchvision.__version__} + torch.onnx")]:
        s = stats[k]
        print(f"| {label} | {checks[k]['nodes']} | {s['runs']} | {s['p50_ms']:.1f} | {s['mean_ms']:.1f} "
              f"| {s['min_ms']:.1f} |")
    print(f"\nratio ours/theirs: p50 {ratio_p50:.3f}, mean {ratio_mean:.3f}\n")
    print(f"detections: ours {det['count_ours']}, torchvision {det['count_theirs']}; equal in order "
          f"{det['in_order_equal']} (max box rel {det['in_order_max_box_rel']:.2e}, max score diff "
          f"{det['in_order_max_score_diff']:.2e}, label mismatches {det['in_order_label_mismatches']}); "
          f"matched in any order "
          f"{det['matched_any_order']} (max box rel {det['matched_max_box_rel']:.2e}, score diff "
          f"{det['matched_max_score_diff']:.2e})")
    print(f"proposals: ours {proposals['count_ours']}, torchvision eager {proposals['count_theirs']}; equal in order "
          f"{proposals['in_order_equal']}, matched in any order {proposals['matched_any_order']} (max box rel "
          f"{proposals['matched_max_box_rel']:.2e}, max score diff {proposals['matched_max_score_diff']:.2e}); out-of-order "
          f"ranks {proposals['out_of_order_ranks']} with scores within "
          f"{proposals['max_score_diff_at_out_of_order_ranks']:.1e} (near-ties)")
    print(f"torchvision ONNX vs eager: equal in order {eager['in_order_equal']}/{eager['count_theirs']}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return 0 if det["all_equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
