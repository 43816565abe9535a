#!/usr/bin/env python3
"""RoIAlign reference in float64 NumPy, written directly from the algorithm (plain loops).

Semantics of torchvision's ``roi_align(input, boxes, output_size, spatial_scale,
sampling_ratio, aligned)``:

* ``boxes[k] = (batch index, x1, y1, x2, y2)`` in image pixels, multiplied by
  ``spatial_scale``; ``aligned`` shifts the scaled box by -0.5 pixel, otherwise the RoI's width
  and height are clamped to at least 1;
* every output bin averages ``gh x gw`` bilinear samples placed at the centres of a regular
  grid over the bin; ``gh = sampling_ratio`` or, when ``sampling_ratio <= 0``,
  ``ceil(roi_height / output_height)`` (the same for the width); the divisor is
  ``max(gh * gw, 1)``;
* a sample with ``y < -1`` or ``y > H`` (or ``x`` likewise) contributes 0; otherwise the
  coordinate is clamped to ``[0, H - 1]`` before interpolating between its two neighbours.

The backward pass scatters ``bilinear weight * upstream gradient / count`` to the four
neighbours of every sample.

Usage: ``roi_align_reference.py IN.json OUT.json`` where IN holds ``features`` (flat, row-major),
``shape`` ``[B, C, H, W]``, ``boxes`` ``[[b, x1, y1, x2, y2], ...]``, ``output_size`` ``[oh, ow]``,
``spatial_scale``, ``sampling_ratio``, ``aligned`` and optionally ``grad_output`` (flat
``[K, C, oh, ow]``); OUT gets ``output`` (flat) and ``output_shape``, plus ``grad_input``
(flat ``[B, C, H, W]``) when ``grad_output`` was given. IN may also be ``{"cases": [...]}``
(several such objects): OUT is then ``{"cases": [...]}`` with one result per case, in order.
"""

import json
import math
import sys

import numpy as np


def _sample_corners(y, x, height, width):
    """The (row, column, weight) neighbours of one bilinear sample; empty when it is outside."""
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return []
    y = max(y, 0.0)
    x = max(x, 0.0)
    y_low = int(math.floor(y))
    x_low = int(math.floor(x))
    if y_low >= height - 1:
        y_low = y_high = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_low = x_high = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly = y - y_low
    lx = x - x_low
    hy = 1.0 - ly
    hx = 1.0 - lx
    return [
        (y_low, x_low, hy * hx),
        (y_low, x_high, hy * lx),
        (y_high, x_low, ly * hx),
        (y_high, x_high, ly * lx),
    ]


def _bins(box, output_size, spatial_scale, sampling_ratio, aligned):
    """For every bin (ph, pw): the list of (row, column, weight / count) it averages."""
    oh, ow = output_size
    offset = 0.5 if aligned else 0.0
    start_w = box[1] * spatial_scale - offset
    start_h = box[2] * spatial_scale - offset
    end_w = box[3] * spatial_scale - offset
    end_h = box[4] * spatial_scale - offset
    roi_w = end_w - start_w
    roi_h = end_h - start_h
    if not aligned:
        roi_w = max(roi_w, 1.0)
        roi_h = max(roi_h, 1.0)
    bin_h = roi_h / oh
    bin_w = roi_w / ow
    grid_h = sampling_ratio if sampling_ratio > 0 else int(math.ceil(roi_h / oh))
    grid_w = sampling_ratio if sampling_ratio > 0 else int(math.ceil(roi_w / ow))
    count = max(grid_h * grid_w, 1)
    return grid_h, grid_w, count, start_h, start_w, bin_h, bin_w


def roi_align(features, boxes, output_size, spatial_scale, sampling_ratio, aligned, grad_output=None):
    """Forward output ``[K, C, oh, ow]`` and, with ``grad_output``, the features' gradient."""
    _, channels, height, width = features.shape
    oh, ow = output_size
    out = np.zeros((len(boxes), channels, oh, ow), dtype=np.float64)
    grad = np.zeros_like(features) if grad_output is not None else None
    for k, box in enumerate(boxes):
        b = int(box[0])
        grid_h, grid_w, count, start_h, start_w, bin_h, bin_w = _bins(
            box, output_size, spatial_scale, sampling_ratio, aligned
        )
        for ph in range(oh):
            for pw in range(ow):
                acc = np.zeros(channels, dtype=np.float64)
                for iy in range(grid_h):
                    y = start_h + ph * bin_h + (iy + 0.5) * bin_h / grid_h
                    for ix in range(grid_w):
                        x = start_w + pw * bin_w + (ix + 0.5) * bin_w / grid_w
                        for row, col, w in _sample_corners(y, x, height, width):
                            acc += w * features[b, :, row, col]
                            if grad is not None:
                                grad[b, :, row, col] += w * grad_output[k, :, ph, pw] / count
                out[k, :, ph, pw] = acc / count
    return out, grad


def run_case(spec):
    """One case of the JSON protocol (see the module docstring) -> its result dictionary."""
    shape = spec["shape"]
    features = np.asarray(spec["features"], dtype=np.float64).reshape(shape)
    boxes = [list(map(float, b)) for b in spec["boxes"]]
    oh, ow = spec["output_size"]
    grad_output = spec.get("grad_output")
    if grad_output is not None:
        grad_output = np.asarray(grad_output, dtype=np.float64).reshape(len(boxes), shape[1], oh, ow)
    out, grad = roi_align(
        features,
        boxes,
        (oh, ow),
        float(spec["spatial_scale"]),
        int(spec["sampling_ratio"]),
        bool(spec["aligned"]),
        grad_output,
    )
    result = {"output": out.ravel().tolist(), "output_shape": list(out.shape)}
    if grad is not None:
        result["grad_input"] = grad.ravel().tolist()
    return result


def main():
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    if "cases" in spec:
        result = {"cases": [run_case(case) for case in spec["cases"]]}
    else:
        result = run_case(spec)
    with open(sys.argv[2], "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
