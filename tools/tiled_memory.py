#!/usr/bin/env python3
"""Peak memory of tiled detection on large aerial mosaics: `detnas detect --tile` on N x N images
assembled from the shipped NEON sample tiles (mirrored in turn so seams differ), as PNG (read row
by row) and, for contrast, as JPEG (decoded whole).

Usage: .venv/bin/python tools/tiled_memory.py [--sizes 4000,16000] [--tile 400] [--overlap 0.1]
       [--detnas target/release/detnas] [--work /tmp/detnas-tiled]

Prints one line per run: format, size, windows, detections, seconds and peak RSS (the child's
GNU time's maximum resident set size). The images are written to --work (about 0.4 GB for 16000 x 16000 PNG).
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parent.parent
Image.MAX_IMAGE_PIXELS = None


def mosaic(size: int) -> Image.Image:
    tiles = [Image.open(p).convert("RGB") for p in sorted((ROOT / "models/samples").glob("*.jpg"))]
    side = min(min(t.size) for t in tiles)
    tiles = [t.crop((0, 0, side, side)) for t in tiles]
    variants = [t for t in tiles] + [ImageOps.mirror(t) for t in tiles] + [ImageOps.flip(t) for t in tiles]
    big = Image.new("RGB", (size, size))
    k = 0
    for y in range(0, size, side):
        for x in range(0, size, side):
            big.paste(variants[k % len(variants)], (x, y))
            k += 1
    return big


def run(detnas: str, image: Path, out: Path, tile: int, overlap: float) -> dict:
    cmd = [detnas, "detect", "models/neon-trees.onnx", str(image), "--out", str(out), "--exist-ok"]
    cmd += ["--tile", str(tile), "--overlap", str(overlap), "--conf", "0.3"]
    rss = out.with_suffix(".rss")
    t = time.perf_counter()
    # GNU time writes the peak resident set size (KiB) of this one run to its own file
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(rss)] + cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    peak_mib = round(int(rss.read_text().split()[-1]) / 1024, 1)
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1]
        return {"error": last, "seconds": round(seconds, 1), "peak_rss_mib": peak_mib}
    detections = json.loads((out / "detections.json").read_text())
    return {"detections": len(detections), "seconds": round(seconds, 1), "peak_rss_mib": peak_mib}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="4000,16000")
    ap.add_argument("--tile", type=int, default=400)
    ap.add_argument("--overlap", type=float, default=0.1)
    ap.add_argument("--detnas", default=str(ROOT / "target/release/detnas"))
    ap.add_argument("--work", default="/tmp/detnas-tiled")
    ap.add_argument("--jpeg", action="store_true", help="also run the JPEG (whole decode) of each size")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    for size in [int(s) for s in a.sizes.split(",")]:
        big = mosaic(size)
        formats = ["png"] + (["jpg"] if a.jpeg else [])
        for fmt in formats:
            path = work / f"mosaic-{size}.{fmt}"
            if not path.exists():
                big.save(path, quality=92) if fmt == "jpg" else big.save(path, compress_level=1)
            result = run(a.detnas, path, work / f"out-{size}-{fmt}", a.tile, a.overlap)
            print(json.dumps({"format": fmt, "size": f"{size}x{size}", "tile": a.tile, **result}), flush=True)
        del big
    return 0


if __name__ == "__main__":
    sys.exit(main())
