#!/usr/bin/env python3
"""Writes the image fixtures that the `image` crate cannot encode into tests/data/images/.

Used by crates/detnas-infer/src/image_io_tests.rs. Every other hostile or unusual image those tests
need (empty, text, bombs, zero-size headers, EXIF orientation, palette, 16-bit, animated GIF,
truncated JPEG) is generated at test time in Rust; only these come from here:

  cmyk.jpg         32x32 CMYK JPEG (Adobe APP14 marker, inverted samples, as Photoshop writes them),
                   four 16x16 quadrants: cyan, magenta / yellow, white (CMYK 0,0,0,0)
  progressive.jpg  32x32 progressive RGB JPEG, quadrants red, green / blue, white

Deterministic: fixed pixel content, fixed encoder settings, no randomness (the seed below only
guards against someone adding random content later). Run with the project venv:

  tools/setup-python.sh && .venv/bin/python tools/make_image_fixtures.py
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from PIL import Image

SEED = 20190923
OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "images"
SIZE = 32
HALF = SIZE // 2


def quadrants(mode: str, tl, tr, bl, br) -> Image.Image:
    """A SIZE x SIZE image of `mode` with four solid HALF x HALF quadrants."""
    img = Image.new(mode, (SIZE, SIZE))
    for (x0, y0), colour in (((0, 0), tl), ((HALF, 0), tr), ((0, HALF), bl), ((HALF, HALF), br)):
        img.paste(colour, (x0, y0, x0 + HALF, y0 + HALF))
    return img


def main() -> int:
    random.seed(SEED)
    OUT.mkdir(parents=True, exist_ok=True)

    cmyk = quadrants("CMYK", (255, 0, 0, 0), (0, 255, 0, 0), (0, 0, 255, 0), (0, 0, 0, 0))
    cmyk.save(OUT / "cmyk.jpg", "JPEG", quality=95, subsampling=0, optimize=False)

    rgb = quadrants("RGB", (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255))
    rgb.save(OUT / "progressive.jpg", "JPEG", quality=95, subsampling=0, progressive=True, optimize=False)

    for name in ("cmyk.jpg", "progressive.jpg"):
        path = OUT / name
        size = path.stat().st_size
        if size > 50_000:
            print(f"{path}: {size} bytes, over the 50 KB fixture budget", file=sys.stderr)
            return 1
        with Image.open(path) as check:
            print(f"{path.relative_to(OUT.parent.parent.parent)}: {check.mode} {check.size} {size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
