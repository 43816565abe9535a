#!/usr/bin/env python3
"""Builds a small real detection set of tree crowns, data/neon-trees/, from the NEON imagery that
the deepforest 2.1.0 wheel ships.

Credits
  Imagery: NEON (National Ecological Observatory Network), Airborne Observation Platform RGB
  orthophotos (10 cm), sites OSBS, SOAP and YELL; NEON data are provided by Battelle under
  U.S. National Science Foundation funding. Crown annotations and packaging: DeepForest
  (Weinstein et al., weecology), MIT licence, https://github.com/weecology/DeepForest .
  The same credit is written to data/neon-trees/CREDITS.txt.

Source (deepforest/data/ in the wheel; the package is never imported, only its data files read)
  4 RGB images with Pascal VOC XML crowns (0-based pixel-edge coordinates: xmax = width means the
  last column; the script checks and reports boxes outside the image):
    2019_YELL_2_528000_4978000_image_crop2.png  2299x2472  574 crowns  -> train
    2019_YELL_2_541000_4977000_image_crop.png   1249x1035  279 crowns  -> val
    OSBS_029.tif (LZW TIFF, read with Pillow)     400x400    61 crowns  -> train
    SOAP_061.png                                  400x400    37 crowns  -> train
  SOAP_061's labels `Dead` / `Alive` and the others' `Tree` all become the one class `tree`
  (category id 1); the original label counts are printed. SOAP_031.png (no annotations) and the
  AWPE drone photo (birds) are not used. The 8 source files are checked against pinned SHA-256
  sums, so the output cannot silently change with the wheel (--no-verify skips the check).

Split (fixed, by source image, so no crown or pixel is shared between the splits)
  val = 2019_YELL_2_541000_4977000_image_crop (a different YELL scene from the training one);
  train = the other three.

Tiling
  train: 400x400 tiles with stride 300 (100 px overlap), the last row and column aligned to the
         image border; a 400x400 image is one tile.
  val:   a non-overlapping grid of ceil(W/400) x ceil(H/400) near-equal tiles (each at most 400 px
         a side), so every crown is evaluated once (1249x1035 -> 12 tiles of about 312x345).
  A crown cut by a tile border is clipped to the tile and kept when its visible part is at least
  40% of its area and 4 px a side; smaller remnants are dropped (counted). Tiles without crowns
  are kept. Coordinates stay integers.

Output (data/ is git-ignored)
  data/neon-trees/images/{train,val}/<source>_x<X>_y<Y>.png   RGB PNG tiles
  data/neon-trees/train.json, val.json   COCO instances; file_name relative to data/neon-trees;
                                          image and annotation ids unique across both files
  data/neon-trees/CREDITS.txt            credits and provenance (wheel, source SHA-256 sums)
  Load with DetectionDataset::from_coco(train.json, data/neon-trees, ...); evaluate with
  `detnas eval --gt data/neon-trees/val.json --dt results.json`.

Install
  deepforest's own dependencies (torch, transformers, rasterio, ...) are several GB and not
  needed, so it is not in tools/requirements.txt. The data files are found, in order: --source
  DIR (a deepforest/data folder); an installed deepforest (located with importlib, not imported,
  e.g. after `pip install --no-deps deepforest==2.1.0` into .venv); data/.cache/deepforest-2.1.0/.
  When none has them the script runs, once (20 MB download from PyPI):
    python -m pip install --no-deps --target data/.cache/deepforest-2.1.0 deepforest==2.1.0

Determinism: no randomness; sources sorted by name, tiles row-major, Pillow's PNG encoder with
fixed settings, JSON with fixed key order: the same inputs and Pillow version give the same bytes.

Usage
  tools/setup-python.sh && .venv/bin/python tools/prepare_neon_trees.py [--out DIR] [--source DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "data" / "neon-trees"
CACHE = ROOT / "data" / ".cache" / "deepforest-2.1.0"
PACKAGE = "deepforest==2.1.0"

TILE = 400
TRAIN_STRIDE = 300
MIN_VISIBLE = 0.4
MIN_SIDE = 4
CLASS_NAME = "tree"
VAL_SOURCES = {"2019_YELL_2_541000_4977000_image_crop"}

# XML annotation -> (image file, SHA-256 of the XML, SHA-256 of the image), deepforest 2.1.0.
SOURCES = {
    "2019_YELL_2_528000_4978000_image_crop2.xml": (
        "2019_YELL_2_528000_4978000_image_crop2.png",
        "bd431af6a5086d721eb731b22f5ea28cd8a8eab06883efc1c665391acbc68e11",
        "a9bdb0f4447fdd899d22f567e0e20ba8320c5413b2ad0cd0ac8d9f3b6e0f9767",
    ),
    "2019_YELL_2_541000_4977000_image_crop.xml": (
        "2019_YELL_2_541000_4977000_image_crop.png",
        "cefe4b96888bacbf8af1674f000082e549aa707aa6590d545effb23e43f26631",
        "178e58a23cc2642226a364a30f71bd9258ddc1b012c826f12250914a90c7a131",
    ),
    "OSBS_029.xml": (
        "OSBS_029.tif",
        "1f68c4011d7b351c29ca755072e77f3d16e6fd1f995bd05a9dd4eb952b55373c",
        "8521dbb5e8063d37d61895867dfcca7476491d1345103dc1b3fd96f71b186353",
    ),
    "SOAP_061.xml": (
        "SOAP_061.png",
        "4833280af75fd9c47965a93e38945282835e9e725cac412bdb9469d63480947c",
        "256508f1a62149bec4a80879077a865caf50e8cace095e6564c76befa480d424",
    ),
}

CREDITS = """\
NEON tree crowns (data/neon-trees), prepared by tools/prepare_neon_trees.py

Imagery: NEON (National Ecological Observatory Network), Airborne Observation Platform RGB
orthophotos, sites OSBS, SOAP and YELL. The National Ecological Observatory Network is a program
sponsored by the U.S. National Science Foundation and operated under cooperative agreement by
Battelle. See https://www.neonscience.org/data-samples/data-policies-citation .

Crown annotations and packaging: DeepForest (Weinstein, B. G. et al., weecology), MIT licence,
https://github.com/weecology/DeepForest - taken from the data files of the deepforest 2.1.0 wheel
on PyPI (deepforest/data/).

Changes: images cut into tiles, crowns clipped to tiles (remnants under 40% of the crown or 4 px
dropped), all labels (Tree, Dead, Alive) merged into one class `tree`, split by source image.
"""


class PrepareError(Exception):
    """A problem that stops the preparation; the message names the file."""


@dataclass
class Source:
    stem: str
    image_path: Path
    image: Image.Image
    boxes: list[tuple[int, int, int, int]]
    labels: dict[str, int]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def find_data_dir(source: Path | None) -> Path:
    """The deepforest/data folder: --source, an installed deepforest, the cache, or a fresh
    `pip install --no-deps --target` into the cache."""
    if source is not None:
        if not (source / "OSBS_029.xml").is_file():
            raise PrepareError(f"{source}: not a deepforest/data folder (no OSBS_029.xml)")
        return source
    candidates = []
    spec = importlib.util.find_spec("deepforest")  # locates the package without importing it
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / "data" for p in spec.submodule_search_locations]
    candidates.append(CACHE / "deepforest" / "data")
    for candidate in candidates:
        if all((candidate / xml).is_file() for xml in SOURCES):
            return candidate
    print(f"installing {PACKAGE} (data files only, --no-deps) into {CACHE}", file=sys.stderr)
    CACHE.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
               "--no-deps", "--no-compile", "--upgrade", "--target", str(CACHE), PACKAGE]
    result = subprocess.run(command, check=False)
    if result.returncode != 0:
        raise PrepareError(f"`{' '.join(command)}` failed with exit code {result.returncode}")
    data = CACHE / "deepforest" / "data"
    if not data.is_dir():
        raise PrepareError(f"{data}: missing after installing {PACKAGE}")
    return data


def read_source(data: Path, xml_name: str, verify: bool) -> tuple[Source, dict[str, int]]:
    """Reads one annotated image; returns it and counts of boxes clipped / dropped at load."""
    image_name, xml_sum, image_sum = SOURCES[xml_name]
    xml_path, image_path = data / xml_name, data / image_name
    for path, expected in ((xml_path, xml_sum), (image_path, image_sum)):
        if not path.is_file():
            raise PrepareError(f"{path}: missing from the deepforest data")
        if verify and sha256(path) != expected:
            raise PrepareError(f"{path}: SHA-256 differs from deepforest 2.1.0's (use --no-verify to accept)")
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as e:
        raise PrepareError(f"{xml_path}: {e}") from e
    if root.findtext("filename") != image_name:
        raise PrepareError(f"{xml_path}: <filename> is {root.findtext('filename')!r}, expected {image_name!r}")
    image = Image.open(image_path)
    image.load()
    image = image.convert("RGB")
    width, height = image.size
    size = (int(root.findtext("size/width", "0")), int(root.findtext("size/height", "0")))
    if size != (width, height):
        raise PrepareError(f"{xml_path}: <size> {size} but {image_path.name} is {width}x{height}")
    counts = {"clipped at load": 0, "dropped at load": 0}
    boxes, labels = [], {}
    for k, obj in enumerate(root.iter("object"), start=1):
        name = (obj.findtext("name") or "").strip()
        try:
            x1, y1, x2, y2 = (int(float(obj.findtext(f"bndbox/{c}", "nan"))) for c in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError as e:
            raise PrepareError(f"{xml_path}: object #{k}: bad <bndbox>: {e}") from e
        cx1, cy1, cx2, cy2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
        if cx2 <= cx1 or cy2 <= cy1:
            counts["dropped at load"] += 1
            continue
        if (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2):
            counts["clipped at load"] += 1
        boxes.append((cx1, cy1, cx2, cy2))
        labels[name] = labels.get(name, 0) + 1
    return Source(xml_path.stem, image_path, image, boxes, labels), counts


def train_origins(length: int) -> list[int]:
    """Tile origins along one axis: stride TRAIN_STRIDE, the last tile aligned to the border."""
    if length <= TILE:
        return [0]
    origins = list(range(0, length - TILE + 1, TRAIN_STRIDE))
    if origins[-1] != length - TILE:
        origins.append(length - TILE)
    return origins


def val_cuts(length: int) -> list[tuple[int, int]]:
    """Non-overlapping near-equal intervals, each at most TILE long, covering [0, length)."""
    n = -(-length // TILE)
    edges = [round(i * length / n) for i in range(n + 1)]
    return list(zip(edges[:-1], edges[1:]))


def tiles_of(source: Source, split: str) -> list[tuple[int, int, int, int]]:
    width, height = source.image.size
    if split == "train":
        xs = [(x, min(x + TILE, width)) for x in train_origins(width)]
        ys = [(y, min(y + TILE, height)) for y in train_origins(height)]
    else:
        xs, ys = val_cuts(width), val_cuts(height)
    return [(x0, y0, x1, y1) for (y0, y1) in ys for (x0, x1) in xs]


def crop_boxes(boxes, tile, counts):
    """Boxes clipped to `tile`, in tile coordinates; small remnants dropped and counted."""
    tx0, ty0, tx1, ty1 = tile
    kept = []
    for x1, y1, x2, y2 in boxes:
        cx1, cy1, cx2, cy2 = max(x1, tx0), max(y1, ty0), min(x2, tx1), min(y2, ty1)
        if cx2 <= cx1 or cy2 <= cy1:
            continue
        visible = (cx2 - cx1) * (cy2 - cy1)
        if (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2):
            if visible < MIN_VISIBLE * (x2 - x1) * (y2 - y1) or min(cx2 - cx1, cy2 - cy1) < MIN_SIDE:
                counts["remnants dropped"] += 1
                continue
            counts["clipped by tiles"] += 1
        kept.append((cx1 - tx0, cy1 - ty0, cx2 - tx0, cy2 - ty0))
    return kept


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default data/neon-trees)")
    parser.add_argument("--source", type=Path, help="a deepforest/data folder (default: find or install it)")
    parser.add_argument("--no-verify", action="store_true", help="accept source files with other SHA-256 sums")
    args = parser.parse_args()
    try:
        data = find_data_dir(args.source)
        out: Path = args.out
        for split in ("train", "val"):
            shutil.rmtree(out / "images" / split, ignore_errors=True)
            (out / "images" / split).mkdir(parents=True)
        next_image, next_ann = 1, 1
        provenance = []
        summary = {}
        for split in ("train", "val"):
            coco = {
                "info": {
                    "description": f"NEON tree crowns from deepforest 2.1.0, {split} split "
                                   "(tools/prepare_neon_trees.py); see CREDITS.txt",
                    "version": "1",
                },
                "licenses": [],
                "images": [],
                "annotations": [],
                "categories": [{"id": 1, "name": CLASS_NAME, "supercategory": "plant"}],
            }
            counts = {"clipped at load": 0, "dropped at load": 0, "clipped by tiles": 0, "remnants dropped": 0}
            labels: dict[str, int] = {}
            sources = [x for x in sorted(SOURCES) if (Path(x).stem in VAL_SOURCES) == (split == "val")]
            for xml_name in sources:
                source, load_counts = read_source(data, xml_name, not args.no_verify)
                for key, n in load_counts.items():
                    counts[key] += n
                for key, n in source.labels.items():
                    labels[key] = labels.get(key, 0) + n
                provenance.append((split, source, xml_name))
                for tile in tiles_of(source, split):
                    x0, y0, x1, y1 = tile
                    name = f"images/{split}/{source.stem}_x{x0}_y{y0}.png"
                    source.image.crop(tile).save(out / name, format="PNG", optimize=False, compress_level=6)
                    coco["images"].append({
                        "id": next_image,
                        "file_name": name,
                        "width": x1 - x0,
                        "height": y1 - y0,
                        "source_image": source.image_path.name,
                        "x0": x0,
                        "y0": y0,
                    })
                    for bx1, by1, bx2, by2 in crop_boxes(source.boxes, tile, counts):
                        w, h = bx2 - bx1, by2 - by1
                        coco["annotations"].append({
                            "id": next_ann,
                            "image_id": next_image,
                            "category_id": 1,
                            "bbox": [bx1, by1, w, h],
                            "area": w * h,
                            "iscrowd": 0,
                        })
                        next_ann += 1
                    next_image += 1
            write_atomic(out / f"{split}.json", json.dumps(coco, indent=1) + "\n")
            summary[split] = (sources, coco, counts, labels)

        lines = [CREDITS, "Provenance: deepforest 2.1.0 wheel (PyPI), deepforest/data/:"]
        for split, source, xml_name in provenance:
            width, height = source.image.size
            lines.append(f"  {split:5}  {source.image_path.name}  {width}x{height}  {len(source.boxes)} crowns  "
                         f"sha256 {sha256(source.image_path)}")
            lines.append(f"         {xml_name}  sha256 {sha256(data / xml_name)}")
        write_atomic(out / "CREDITS.txt", "\n".join(lines) + "\n")

        for split, (sources, coco, counts, labels) in summary.items():
            boxes = coco["annotations"]
            per_tile = [0] * len(coco["images"])
            for a in boxes:
                per_tile[a["image_id"] - coco["images"][0]["id"]] += 1
            sides = sorted(max(a["bbox"][2], a["bbox"][3]) for a in boxes)
            print(f"{split}: {len(coco['images'])} tiles from {len(sources)} images "
                  f"({', '.join(Path(s).stem for s in sources)}), {len(boxes)} boxes "
                  f"(per tile min {min(per_tile)} / mean {statistics.mean(per_tile):.1f} / max {max(per_tile)}, "
                  f"{per_tile.count(0)} tiles empty; longer side px min {sides[0]} / median "
                  f"{statistics.median(sides):g} / max {sides[-1]})")
            print(f"{split}: source labels {dict(sorted(labels.items()))} -> class `{CLASS_NAME}`; "
                  + ", ".join(f"{k} {v}" for k, v in counts.items()))
        print(f"wrote {out / 'train.json'}, {out / 'val.json'}, {out / 'images'}, {out / 'CREDITS.txt'}")
    except (PrepareError, OSError) as e:
        print(f"prepare_neon_trees: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
