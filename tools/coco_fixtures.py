#!/usr/bin/env python3
"""Golden fixtures for the COCO bbox evaluation in `detnas_core::coco`.

Writes small, seeded cases to tests/data/coco/<case>/:
  gt.json        COCO instances (images, annotations with bbox/area/iscrowd, categories)
  dt.json        COCO results ([{image_id, category_id, bbox, score}])
  expected.json  {"stats": [12 numbers], "summary": [12 lines], "pycocotools": version, "note": ...}
where stats and summary are what pycocotools' COCOeval(iouType='bbox') evaluate/accumulate/summarize
give on exactly these files.

Usage (from the repository root, after tools/setup-python.sh):
    .venv/bin/python tools/coco_fixtures.py            # regenerate every case
    .venv/bin/python tools/coco_fixtures.py --check    # regenerate in memory, fail if a file differs

The empty-results case: pycocotools' `COCO.loadRes` fails on an empty list (it reads `anns[0]`), so
its expected numbers are derived by reasoning about COCOeval with no detections: for every
(category, area range) bucket holding at least one non-crowd ground truth inside the area range,
accumulate() sets recall to 0 (no detections) and every precision to 0 (searchsorted finds no
recall point), so the mean over the bucket's entries is 0; a summary number whose area range has no
such bucket in any category has no entry > -1 and is -1. AP50/AP75 and AR1/AR10/AR100 use the "all"
range. The script computes these values from the ground truth by that rule and cross-checks them
with COCOeval run on a hand-built, empty detections COCO object (bypassing loadRes).
"""

import argparse
import contextlib
import importlib.metadata
import io
import json
import os
import sys

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "coco")
MAX_BYTES = 50_000

SMALL = 32**2
MEDIUM = 96**2


def r2(x):
    """Rounds to 2 decimals, as detectors' results files usually are."""
    return float(round(float(x), 2))


class Builder:
    """Accumulates one case's ground truth and detections."""

    def __init__(self, categories):
        self.images = []
        self.annotations = []
        self.categories = [{"id": c, "name": f"class{c}", "supercategory": "thing"} for c in categories]
        self.detections = []
        self.next_ann = 1

    def image(self, image_id, width=640, height=480):
        self.images.append({"id": image_id, "file_name": f"{image_id:012d}.jpg", "width": width, "height": height})
        return image_id

    def gt(self, image_id, category_id, bbox, area=None, iscrowd=0, ann_id=None):
        bbox = [r2(v) for v in bbox]
        if area is None:
            area = bbox[2] * bbox[3]
        if ann_id is None:
            ann_id = self.next_ann
            self.next_ann += 1
        self.annotations.append(
            {
                "id": ann_id,
                "image_id": image_id,
                "category_id": category_id,
                "bbox": bbox,
                "area": float(area),
                "iscrowd": iscrowd,
                "segmentation": [],
            }
        )

    def dt(self, image_id, category_id, bbox, score):
        self.detections.append(
            {"image_id": image_id, "category_id": category_id, "bbox": [r2(v) for v in bbox], "score": float(score)}
        )

    def gt_json(self):
        return {
            "info": {"description": "detnas coco_fixtures.py"},
            "images": self.images,
            "annotations": self.annotations,
            "categories": self.categories,
        }


def random_box(rng, size_class, width=640, height=480):
    """A box whose w*h falls in the given area class ('small', 'medium', 'large')."""
    lo, hi = {"small": (4, 30), "medium": (34, 94), "large": (100, 300)}[size_class]
    w = rng.uniform(lo, hi)
    h = rng.uniform(lo, hi)
    x = rng.uniform(0, width - w)
    y = rng.uniform(0, height - h)
    return [x, y, w, h]


def jitter(rng, box, amount):
    x, y, w, h = box
    return [
        x + rng.normal(0, amount * w),
        y + rng.normal(0, amount * h),
        max(1.0, w * (1 + rng.normal(0, amount))),
        max(1.0, h * (1 + rng.normal(0, amount))),
    ]


# ----------------------------------------------------------------------------------------------
# Cases


def case_basic():
    """Several images (ids unsorted in the file), non-contiguous category ids, all three area
    ranges, GT area differing from w*h (as segmentation areas do), jittered true positives and
    random false positives."""
    rng = np.random.default_rng(1)
    b = Builder([1, 3, 90])
    for image_id in [42, 7, 1000, 3, 15, 8, 64]:
        b.image(image_id)
        for _ in range(rng.integers(1, 6)):
            cat = int(rng.choice([1, 3, 90]))
            box = random_box(rng, str(rng.choice(["small", "medium", "large"])))
            b.gt(image_id, cat, box, area=r2(box[2] * box[3] * rng.uniform(0.55, 1.0)))
            if rng.random() < 0.85:
                b.dt(image_id, cat, jitter(rng, box, 0.08), r2(rng.uniform(0.05, 1.0)))
            if rng.random() < 0.3:
                b.dt(image_id, cat, jitter(rng, box, 0.2), r2(rng.uniform(0.05, 1.0)))
        for _ in range(rng.integers(0, 4)):
            cat = int(rng.choice([1, 3, 90]))
            size = str(rng.choice(["small", "medium", "large"]))
            b.dt(image_id, cat, random_box(rng, size), r2(rng.uniform(0.05, 0.7)))
    return b


def case_crowd():
    """Crowd regions: dets inside a crowd are ignored (IoU = intersection / dt area), a crowd matches
    many dets, regular GT inside a crowd is preferred, a category whose only GT is a crowd."""
    rng = np.random.default_rng(2)
    b = Builder([1, 2, 5])
    for image_id in [1, 2, 3, 4]:
        b.image(image_id)
        crowd = [50.0 + 10 * image_id, 40.0, 300.0, 250.0]
        b.gt(image_id, 1, crowd, area=r2(300 * 250 * 0.7), iscrowd=1)
        for _ in range(3):
            box = [crowd[0] + rng.uniform(0, 200), crowd[1] + rng.uniform(0, 150), rng.uniform(20, 90), rng.uniform(20, 90)]
            b.gt(image_id, 1, box)
            b.dt(image_id, 1, jitter(rng, box, 0.05), r2(rng.uniform(0.3, 1.0)))
        for _ in range(6):
            # Small dets inside the crowd: ignored, never false positives.
            box = [crowd[0] + rng.uniform(0, 250), crowd[1] + rng.uniform(0, 200), rng.uniform(5, 40), rng.uniform(5, 40)]
            b.dt(image_id, 1, box, r2(rng.uniform(0.05, 1.0)))
        # A det half inside the crowd: IoU with the crowd = fraction of the det inside it.
        b.dt(image_id, 1, [crowd[0] - 20, crowd[1] + 10, 40, 40], 0.55)
        # Category 2: regular GT plus a crowd overlapping it.
        box = random_box(rng, "medium")
        b.gt(image_id, 2, box)
        b.gt(image_id, 2, [box[0] - 10, box[1] - 10, box[2] + 20, box[3] + 20], iscrowd=1)
        b.dt(image_id, 2, jitter(rng, box, 0.05), 0.9)
        b.dt(image_id, 2, jitter(rng, box, 0.1), 0.8)
        b.dt(image_id, 2, jitter(rng, box, 0.3), 0.7)
        # Category 5: only a crowd GT, with dets on it.
        crowd5 = random_box(rng, "large")
        b.gt(image_id, 5, crowd5, iscrowd=1)
        b.dt(image_id, 5, jitter(rng, crowd5, 0.1), r2(rng.uniform(0.1, 1.0)))
    return b


def case_max_dets():
    """More than 100 detections on an image: the 1 / 10 / 100 cuts, per image and category."""
    rng = np.random.default_rng(3)
    b = Builder([1, 2])
    b.image(1, 800, 800)
    b.image(2, 800, 800)
    gts = []
    for _ in range(30):
        box = random_box(rng, str(rng.choice(["small", "medium", "large"])), 800, 800)
        b.gt(1, 1, box)
        gts.append(box)
    # 150 detections on image 1: true positives spread over the score range.
    for i in range(150):
        if i % 5 == 0:
            box = jitter(rng, gts[(i // 5) % len(gts)], 0.05)
        else:
            box = random_box(rng, str(rng.choice(["small", "medium", "large"])), 800, 800)
        b.dt(1, 1, box, round(float(rng.uniform(0.01, 1.0)), 4))
    for _ in range(5):
        box = random_box(rng, "medium", 800, 800)
        b.gt(2, 1, box)
        b.gt(2, 2, jitter(rng, box, 0.3))
        for _ in range(24):
            b.dt(2, 1, jitter(rng, box, 0.15), round(float(rng.uniform(0.01, 1.0)), 4))
        b.dt(2, 2, jitter(rng, box, 0.1), round(float(rng.uniform(0.01, 1.0)), 4))
    return b


def case_ties():
    """Exact score ties within an image and across images (stable sorts decide), identical dets,
    identical GTs (equal IoUs: the later GT in the scan wins), overlapping GTs."""
    rng = np.random.default_rng(4)
    b = Builder([1, 2])
    for image_id in [5, 2, 9]:
        b.image(image_id)
        base = random_box(rng, "large")
        b.gt(image_id, 1, base)
        b.gt(image_id, 1, base)  # duplicate GT box
        b.gt(image_id, 1, jitter(rng, base, 0.1))
        other = random_box(rng, "medium")
        b.gt(image_id, 2, other)
        b.gt(image_id, 2, [other[0] + other[2] * 0.3, other[1], other[2], other[3]])
        for score in [0.9, 0.9, 0.5, 0.5, 0.5, 0.3]:
            b.dt(image_id, 1, jitter(rng, base, 0.04) if rng.random() < 0.7 else random_box(rng, "large"), score)
        b.dt(image_id, 1, base, 0.5)  # identical to the GT
        b.dt(image_id, 1, base, 0.5)  # and again
        for score in [0.7, 0.7, 0.7, 0.2]:
            b.dt(image_id, 2, jitter(rng, other, 0.15), score)
    return b


def case_empty_images():
    """Images without GT (only false positives), images without detections, an image with neither,
    a category without any GT (with dets), and dets of a category absent from the GT (skipped)."""
    rng = np.random.default_rng(5)
    b = Builder([1, 2, 7])
    for image_id in range(1, 9):
        b.image(image_id)
    for image_id in [1, 2, 3, 4]:  # GT; 3 and 4 get no detections
        for _ in range(3):
            cat = int(rng.choice([1, 2]))
            box = random_box(rng, str(rng.choice(["small", "medium", "large"])))
            b.gt(image_id, cat, box)
            if image_id in (1, 2):
                b.dt(image_id, cat, jitter(rng, box, 0.07), r2(rng.uniform(0.2, 1.0)))
    for image_id in [5, 6]:  # no GT, false positives only
        for _ in range(3):
            b.dt(image_id, int(rng.choice([1, 2])), random_box(rng, "medium"), r2(rng.uniform(0.2, 1.0)))
    # image 7: nothing at all; image 8: only dets of category 7, which has no GT anywhere.
    b.dt(8, 7, random_box(rng, "large"), 0.95)
    b.dt(1, 7, random_box(rng, "small"), 0.4)
    # Category 11 is not in the GT categories: pycocotools never looks at these.
    b.dt(1, 11, random_box(rng, "large"), 0.99)
    b.dt(2, 11, random_box(rng, "small"), 0.98)
    return b


def case_area_bounds():
    """Area range boundaries (inclusive on both sides): GT areas exactly 32^2 and 96^2 (in two ranges
    at once), GT area field disagreeing with w*h, dets with w*h on the boundaries, a zero-width det,
    boxes that only touch (zero intersection), zero-area GT."""
    b = Builder([1])
    b.image(1)
    b.image(2)
    b.gt(1, 1, [10, 10, 32, 32])  # area 1024: small and medium
    b.dt(1, 1, [11, 10, 32, 32], 0.9)
    b.gt(1, 1, [100, 100, 96, 96])  # area 9216: medium and large
    b.dt(1, 1, [100, 102, 96, 96], 0.8)
    b.gt(1, 1, [300, 50, 40, 40], area=900.0)  # box 1600 px but small by area
    b.dt(1, 1, [301, 51, 40, 40], 0.7)
    b.gt(1, 1, [300, 200, 20, 20], area=2000.0)  # box 400 px but medium by area
    b.dt(1, 1, [300, 201, 20, 20], 0.6)
    b.gt(1, 1, [400, 300, 150, 100], area=9216.5)  # just above 96^2
    b.dt(1, 1, [402, 300, 150, 100], 0.5)
    b.gt(2, 1, [50, 50, 100, 0], area=0.0)  # degenerate GT, area 0 (small)
    b.dt(2, 1, [50, 50, 100, 0], 0.95)  # degenerate det: IoU 0
    b.dt(2, 1, [200, 200, 0, 30], 0.85)  # zero-width det
    b.dt(2, 1, [500, 100, 32, 32], 0.75)  # unmatched, w*h = 1024: FP in small and medium
    b.dt(2, 1, [500, 300, 96, 96], 0.65)  # unmatched, w*h = 9216: FP in medium and large
    b.gt(2, 1, [10, 300, 50, 50])
    b.dt(2, 1, [60, 300, 50, 50], 0.55)  # touches the GT's right edge: intersection width 0
    b.dt(2, 1, [10, 300, 50, 50], 0.45)  # exact match, lower score
    return b


def case_gt_id_zero():
    """A GT annotation with id 0: pycocotools records matches by GT id and tests the id for truth,
    so a detection matching it counts as unmatched (a false positive). Reproduced on purpose."""
    b = Builder([1])
    b.image(1)
    b.gt(1, 1, [10, 10, 50, 50], ann_id=0)
    b.gt(1, 1, [100, 100, 60, 60], ann_id=1)
    b.dt(1, 1, [10, 10, 50, 50], 0.9)
    b.dt(1, 1, [101, 100, 60, 60], 0.8)
    b.dt(1, 1, [300, 300, 20, 20], 0.1)
    return b


def case_random():
    """A larger random case: many images and categories, crowds, every area range, ties."""
    rng = np.random.default_rng(6)
    cats = [1, 2, 4, 6, 9]
    b = Builder(cats)
    for image_id in rng.permutation(np.arange(100, 124)).tolist():
        b.image(image_id)
        for _ in range(rng.integers(0, 7)):
            cat = int(rng.choice(cats))
            box = random_box(rng, str(rng.choice(["small", "medium", "large"])))
            crowd = int(rng.random() < 0.06)
            b.gt(image_id, cat, box, area=r2(box[2] * box[3] * rng.uniform(0.5, 1.0)), iscrowd=crowd)
            for _ in range(rng.integers(0, 3)):
                det_cat = cat if rng.random() < 0.9 else int(rng.choice(cats))
                b.dt(image_id, det_cat, jitter(rng, box, 0.12), round(float(rng.uniform(0, 1)), 1))
        for _ in range(rng.integers(0, 3)):
            b.dt(image_id, int(rng.choice(cats)), random_box(rng, "medium"), round(float(rng.uniform(0, 1)), 1))
    return b


def case_empty_results():
    """An empty results list `[]` (see the module docstring for how its numbers are obtained). The GT
    has small and medium objects, a large object only as a crowd (so the large range has no
    positives: -1), a category without GT and an image without GT."""
    b = Builder([1, 2, 3])
    for image_id in [1, 2, 3]:
        b.image(image_id)
    b.gt(1, 1, [10, 10, 20, 20])
    b.gt(1, 2, [100, 100, 50, 50])
    b.gt(2, 1, [30, 30, 60, 40])
    b.gt(2, 2, [0, 0, 300, 200], iscrowd=1)
    b.gt(2, 1, [200, 200, 150, 150], area=5000.0)  # large box, medium by area
    return b


CASES = {
    "basic": case_basic,
    "crowd": case_crowd,
    "max_dets": case_max_dets,
    "ties": case_ties,
    "empty_images": case_empty_images,
    "area_bounds": case_area_bounds,
    "gt_id_zero": case_gt_id_zero,
    "random": case_random,
    "empty_results": case_empty_results,
}

# ----------------------------------------------------------------------------------------------
# Evaluation


def run_cocoeval(coco_gt, coco_dt):
    """COCOeval bbox on the given COCO objects; returns (stats, summary lines)."""
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink):
        ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        ev.summarize()
    return [float(s) for s in ev.stats], summary.getvalue().splitlines()


def load_gt(gt_path):
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(gt_path)


def expected_for_empty(gt):
    """The reasoned numbers for no detections (module docstring): 0 where a bucket has a non-crowd
    GT inside the area range, else -1."""
    ranges = {"all": (0, 1e5**2), "small": (0, SMALL), "medium": (SMALL, MEDIUM), "large": (MEDIUM, 1e5**2)}
    cats = {c["id"] for c in gt["categories"]}
    images = {i["id"] for i in gt["images"]}

    def has_gt(area_label):
        lo, hi = ranges[area_label]
        return any(
            not a["iscrowd"] and lo <= a["area"] <= hi and a["category_id"] in cats and a["image_id"] in images
            for a in gt["annotations"]
        )

    labels = ["all", "all", "all", "small", "medium", "large", "all", "all", "all", "small", "medium", "large"]
    return [0.0 if has_gt(label) else -1.0 for label in labels]


def evaluate_case(case_dir, gt, dt):
    gt_path = os.path.join(case_dir, "gt.json")
    dt_path = os.path.join(case_dir, "dt.json")
    coco_gt = load_gt(gt_path)
    note = None
    if dt:
        with contextlib.redirect_stdout(io.StringIO()):
            coco_dt = coco_gt.loadRes(dt_path)
        stats, summary = run_cocoeval(coco_gt, coco_dt)
    else:
        # loadRes([]) raises IndexError; build the empty detections object by hand instead.
        coco_dt = COCO()
        coco_dt.dataset = {"images": list(coco_gt.dataset["images"]), "annotations": [],
                           "categories": list(coco_gt.dataset["categories"])}
        with contextlib.redirect_stdout(io.StringIO()):
            coco_dt.createIndex()
        stats, summary = run_cocoeval(coco_gt, coco_dt)
        reasoned = expected_for_empty(gt)
        if stats != reasoned:
            sys.exit(f"{case_dir}: reasoned empty-results stats {reasoned} != COCOeval's {stats}")
        stats = reasoned
        note = ("pycocotools' loadRes fails on []: stats derived by reasoning (0 where a bucket has "
                "non-crowd GT in range, else -1), cross-checked with COCOeval on an empty COCO object")
    expected = {"pycocotools": importlib.metadata.version("pycocotools"), "stats": stats, "summary": summary}
    if note:
        expected["note"] = note
    return expected


def dumps(obj):
    return json.dumps(obj, indent=1) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if a regenerated file differs")
    parser.add_argument("cases", nargs="*", help="cases to build (default: all)")
    args = parser.parse_args()
    names = args.cases or list(CASES)
    failed = False
    for name in names:
        builder = CASES[name]()
        case_dir = os.path.join(OUT, name)
        gt, dt = builder.gt_json(), builder.detections
        files = {"gt.json": dumps(gt), "dt.json": dumps(dt)}
        if args.check:
            for fname, text in files.items():
                with open(os.path.join(case_dir, fname)) as f:
                    if f.read() != text:
                        print(f"{name}/{fname}: differs", file=sys.stderr)
                        failed = True
        os.makedirs(case_dir, exist_ok=True)
        if not args.check:
            for fname, text in files.items():
                with open(os.path.join(case_dir, fname), "w") as f:
                    f.write(text)
        expected = dumps(evaluate_case(case_dir, gt, dt))
        path = os.path.join(case_dir, "expected.json")
        if args.check:
            with open(path) as f:
                if f.read() != expected:
                    print(f"{name}/expected.json: differs", file=sys.stderr)
                    failed = True
        else:
            with open(path, "w") as f:
                f.write(expected)
        sizes = {f: os.path.getsize(os.path.join(case_dir, f)) for f in ["gt.json", "dt.json", "expected.json"]}
        total = sum(sizes.values())
        if total > MAX_BYTES:
            sys.exit(f"{name}: {total} bytes, over the {MAX_BYTES}-byte budget")
        print(f"{name:14} {len(gt['annotations']):4} gt {len(dt):4} dt {total:6} bytes  AP {json.loads(expected)['stats'][0]:.4f}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
