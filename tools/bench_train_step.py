#!/usr/bin/env python3
"""PyTorch baseline for `detnas train bench-step`: the same RetinaNet (DetNAS backbone path, FPN,
head), the same batch shape and the same loss (sigmoid focal + L1 on matched anchors), timed per
optimisation step (forward in train mode, loss, backward, SGD with momentum) at a fixed thread count.

usage: bench_train_step.py --config models/neon-trees.toml [--supernet] [--batch-size 4]
                           [--steps 20] [--warmup 3] [--threads 2]
Prints one JSON line {"ms_per_step_p50": ..., "ms_per_step_mean": ..., ...}.
Needs PyTorch's Python bindings, which link the whole CUDA stack (about 4.6 GB, unlike the two
small CUDA wheels libtorch alone needs): tools/bench_train_step.sh installs them into
.native/torch-full once and runs both sides.
"""
import argparse
import json
import math
import os
import sys
import time
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, ".native", "torch-full"))
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

SPACES = {"detnas-300m": (16, [4, 4, 8, 4], [64, 160, 320, 640])}
PRESETS = {"coco-retinanet-300m": "2,3,1,1,3,2,1,3,3,1,1,1,3,3,2,0,3,3,3,3"}


def cbr(cin, cout, k, s, groups, relu):
    layers = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return layers + ([nn.ReLU(inplace=True)] if relu else [])


class Block(nn.Module):
    def __init__(self, cin, cout, stride, choice):
        super().__init__()
        k = [3, 5, 7, 3][choice]
        mid = cout // 2
        self.stride = stride
        inp, out = (cin, cout - cin) if stride == 2 else (cin // 2, cout - cin // 2)
        if stride == 2:
            self.proj = nn.Sequential(*cbr(inp, inp, k, 2, inp, False), *cbr(inp, inp, 1, 1, 1, True))
        if choice == 3:
            m = cbr(inp, inp, 3, stride, inp, False) + cbr(inp, mid, 1, 1, 1, True)
            m += cbr(mid, mid, 3, 1, mid, False) + cbr(mid, mid, 1, 1, 1, True)
            m += cbr(mid, mid, 3, 1, mid, False) + cbr(mid, out, 1, 1, 1, True)
        else:
            m = cbr(inp, mid, 1, 1, 1, True) + cbr(mid, mid, k, stride, mid, False) + cbr(mid, out, 1, 1, 1, True)
        self.main = nn.Sequential(*m)

    def forward(self, x):
        if self.stride == 2:
            return torch.cat([self.proj(x), self.main(x)], 1)
        return torch.cat([x[:, 0::2], self.main(x[:, 1::2])], 1)


class Net(nn.Module):
    def __init__(self, space, arch, det, supernet):
        super().__init__()
        stem, blocks, widths = SPACES[space]
        self.arch = arch
        self.stem = nn.Sequential(*cbr(3, stem, 3, 2, 1, True))
        self.layers = nn.ModuleList()
        cin, i = stem, 0
        self.ends = []
        for n, w in zip(blocks, widths):
            for b in range(n):
                choices = range(4) if supernet else [arch[i]]
                self.layers.append(nn.ModuleDict({str(c): Block(cin, w, 2 if b == 0 else 1, c) for c in choices}))
                cin, i = w, i + 1
            self.ends.append(i - 1)
        c = det.get("fpn_channels", 256)
        self.inner = nn.ModuleList([nn.Conv2d(w, c, 1) for w in widths[1:]])
        self.outer = nn.ModuleList([nn.Conv2d(c, c, 3, 1, 1) for _ in widths[1:]])
        self.p6, self.p7 = nn.Conv2d(c, c, 3, 2, 1), nn.Conv2d(c, c, 3, 2, 1)
        hc, nconv = det.get("head_channels", 256), det.get("head_convs", 4)
        self.a = 3 * len(det.get("aspect_ratios", [0.5, 1.0, 2.0]))
        self.k = len(det["class_names"])

        def tower():
            layers, ch = [], c
            for _ in range(nconv):
                layers += [nn.Conv2d(ch, hc, 3, 1, 1), nn.ReLU(inplace=True)]
                ch = hc
            return nn.Sequential(*layers)

        self.cls_tower, self.reg_tower = tower(), tower()
        self.cls = nn.Conv2d(hc, self.a * self.k, 3, 1, 1)
        self.reg = nn.Conv2d(hc, self.a * 4, 3, 1, 1)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255)
        self.register_buffer("inv_std", 1 / (torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255))

    def forward(self, x):
        x = self.stem((x - self.mean) * self.inv_std)
        feats = []
        for i, layer in enumerate(self.layers):
            x = layer[str(self.arch[i])](x)
            if i in self.ends:
                feats.append(x)
        c3, c4, c5 = feats[1:]
        inner = self.inner[2](c5)
        outs = [self.outer[2](inner)]
        for i, c in [(1, c4), (0, c3)]:
            lat = self.inner[i](c)
            inner = lat + F.interpolate(inner, size=lat.shape[-2:], mode="nearest")
            outs.insert(0, self.outer[i](inner))
        p6 = self.p6(outs[-1])
        outs += [p6, self.p7(F.relu(p6))]
        flat = lambda t, c: t.view(t.shape[0], self.a, c, *t.shape[2:]).permute(0, 3, 4, 1, 2).reshape(t.shape[0], -1, c)
        cls = torch.cat([flat(self.cls(self.cls_tower(f)), self.k) for f in outs], 1)
        reg = torch.cat([flat(self.reg(self.reg_tower(f)), 4) for f in outs], 1)
        return cls, reg


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--supernet", action="store_true")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (GPU work synchronised before each clock stop)")
    args = ap.parse_args()
    dev = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = tomllib.load(open(args.config, "rb"))
    det = cfg.get("detector", {})
    det.setdefault("class_names", ["object"])
    arch_text = PRESETS.get(cfg.get("arch", ""), cfg.get("arch", ""))
    arch = [int(c) for c in arch_text.split(",")]
    h, w = det.get("input", {"height": 512, "width": 512}).values()
    net = Net(cfg.get("space", "detnas-300m"), arch, det, args.supernet)
    net = net.to(dev)
    params = [p for p in net.parameters()]
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4)
    x = (torch.rand(args.batch_size, 3, h, w) * 255).to(dev)
    with torch.no_grad():
        cls, _ = net(x)
    n_anchors, k = cls.shape[1], cls.shape[2]
    # fixed targets: ~1% foreground anchors, ~5% ignored (the matching itself is outside the timing)
    g = torch.Generator().manual_seed(0)
    labels = torch.full((args.batch_size, n_anchors), -1, dtype=torch.long)
    r = torch.rand(args.batch_size, n_anchors, generator=g)
    labels[r < 0.06] = -2
    labels[r < 0.01] = torch.randint(0, k, (int((r < 0.01).sum()),), generator=g)
    deltas = torch.randn(args.batch_size, n_anchors, 4, generator=g) * 0.1
    norm = (labels >= 0).sum(1).clamp(min=1).float()
    labels, deltas, norm = labels.to(dev), deltas.to(dev), norm.to(dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def step():
        opt.zero_grad(set_to_none=True)
        cls, reg = net(x)
        fg = labels >= 0
        onehot = F.one_hot(labels.clamp(min=0), k).float() * fg.unsqueeze(-1)
        p = torch.sigmoid(cls)
        ce = F.binary_cross_entropy_with_logits(cls, onehot, reduction="none")
        p_t = p * onehot + (1 - p) * (1 - onehot)
        focal = (0.25 * onehot + 0.75 * (1 - onehot)) * ce * (1 - p_t) ** 2 * (labels != -2).unsqueeze(-1)
        loss = (focal.sum((1, 2)) / norm).mean() + (((reg - deltas).abs().sum(2) * fg).sum(1) / norm).mean()
        loss.backward()
        opt.step()

    net.train()
    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        step()
        sync()
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    print(json.dumps({
        "framework": f"pytorch {torch.__version__}", "supernet": args.supernet, "batch": args.batch_size,
        "input": [h, w], "threads": args.threads, "device": args.device, "ms_per_step_p50": times[len(times) // 2],
        "ms_per_step_mean": sum(times) / len(times),
    }))


if __name__ == "__main__":
    main()
