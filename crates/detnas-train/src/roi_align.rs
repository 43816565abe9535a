//! RoIAlign and the FPN level routing of `MultiScaleRoIAlign` (torchvision semantics), built from
//! differentiable libtorch ops: autograd gives the backward pass.
//!
//! ## Semantics
//! [`roi_align`] follows torchvision's `roi_align(input, boxes, output_size, spatial_scale,
//! sampling_ratio, aligned)`:
//! - a RoI `(batch index, x1, y1, x2, y2)` in image pixels is multiplied by `spatial_scale`;
//!   `aligned = true` shifts it by -0.5 pixel, `aligned = false` clamps its width and height to at
//!   least 1;
//! - every output bin averages `gh x gw` bilinear samples at the centres of a regular grid over the
//!   bin: `gh = gw = sampling_ratio`, or when `sampling_ratio <= 0` the adaptive
//!   `gh = ceil(roi_height / output_height)`, `gw = ceil(roi_width / output_width)` of each RoI;
//!   the divisor is `max(gh * gw, 1)` (a RoI with no sample gives zeros);
//! - a sample with `y < -1` or `y > H` (or `x < -1` or `x > W`) contributes 0; otherwise its
//!   coordinates are clamped to `[0, H - 1]` x `[0, W - 1]` and interpolated between their two
//!   neighbours (both on the last row or column once clamped there).
//!
//! The gradient flows into the features only: the RoIs are constants (as in torchvision).
//!
//! ## How
//! Every output value is a weighted sum of feature pixels. For all RoIs, bins and samples at once
//! the four neighbours of every sample get a flat pixel index and a weight (bilinear weight x
//! validity / count); one `embedding_bag` (sum mode, per-sample weights) then reduces them from a
//! channels-last view `[pixels, C]` of the features. No `[samples, C]` intermediate is built, and
//! the op's backward is exactly the scatter of weight x upstream gradient into the pixels. The
//! sample positions are separable (`y` depends on the row bin, `x` on the column bin), so they
//! are computed per axis and broadcast. [`multi_scale_roi_align`] stacks the levels of a pyramid
//! into one table and does all RoIs, whatever their level, in one such pass, in input order.
//! With `sampling_ratio <= 0` the index tensors are first built for the largest grid of the call
//! and then compacted, so one huge RoI temporarily costs `K x bins x its grid` indices.
//!
//! ## Levels
//! [`roi_levels`] is torchvision's `LevelMapper` (`k0 = 4`, canonical size 224, `eps = 1e-6`) in
//! float32: `floor(4 + log2(sqrt(area) / 224) + 1e-6)` clamped to `[k_min, k_max]`;
//! [`roi_levels_tensor`] is the same rule on a tensor (what [`multi_scale_roi_align`] uses).

use tch::{Device, Kind, Tensor};

pub use detnas_core::detector::two_stage::{CANONICAL_LEVEL, CANONICAL_SIZE, LEVEL_EPS};

/// RoIAlign of `rois` (`[K, 5]`: batch index, x1, y1, x2, y2 in image pixels) on `input`
/// (`[B, C, H, W]`): `[K, C, output.0, output.1]`, differentiable w.r.t. `input`.
///
/// Sample positions are computed in float64 for float64 features and in float32 otherwise.
///
/// # Panics
/// When `input` is not 4-D or `rois` not `[K, 5]`; when a batch index is out of range (libtorch
/// refuses the index).
pub fn roi_align(
    input: &Tensor,
    rois: &Tensor,
    output: (i64, i64),
    spatial_scale: f64,
    sampling_ratio: i64,
    aligned: bool,
) -> Tensor {
    let levels = Tensor::zeros([rois.size().first().copied().unwrap_or(0)], (Kind::Int64, input.device()));
    align_levels(std::slice::from_ref(input), rois, &levels, &[spatial_scale], output, sampling_ratio, aligned)
}

/// torchvision's `MultiScaleRoIAlign` (with `aligned = false`): every RoI of `rois` (`[K, 5]`,
/// image pixels) is pooled from the level [`roi_levels_tensor`] assigns it among `features`
/// (`[B, C, Hi, Wi]`, finest first, e.g. P2..P5) whose strides are `1 / scales[i]`
/// (`[0.25, 0.125, ...]`). Returns `[K, C, output.0, output.1]` in the order of `rois`.
/// A single level takes every RoI, as in torchvision.
///
/// # Panics
/// When `features` is empty, `scales` does not match it or is not a run of consecutive powers of
/// two (see [`level_range`]), or the levels differ in batch size or channels.
pub fn multi_scale_roi_align(
    features: &[Tensor],
    rois: &Tensor,
    scales: &[f64],
    output: (i64, i64),
    sampling_ratio: i64,
) -> Tensor {
    assert!(!features.is_empty(), "multi_scale_roi_align needs at least one feature level");
    assert_eq!(features.len(), scales.len(), "one scale per feature level");
    let (k_min, k_max) = level_range(scales);
    let k = rois.size().first().copied().unwrap_or(0);
    let device = features[0].device();
    let levels = if features.len() == 1 {
        Tensor::zeros([k], (Kind::Int64, device))
    } else {
        roi_levels_tensor(&rois.narrow(1, 1, 4), k_min, k_max).to_device(device) - k_min
    };
    align_levels(features, rois, &levels, scales, output, sampling_ratio, false)
}

/// The pyramid levels `(k_min, k_max)` of feature maps with these scales (`scale = 2^-k`,
/// finest first), as torchvision infers them: `-log2(scale)` rounded.
///
/// # Panics
/// When `scales` is empty, a scale is not positive, not a power of two, or the levels are not
/// consecutive (`k_min, k_min + 1, ...`).
pub fn level_range(scales: &[f64]) -> (i64, i64) {
    assert!(!scales.is_empty(), "no feature scales");
    let levels: Vec<i64> = scales
        .iter()
        .map(|&s| {
            let k = -s.log2();
            assert!(s > 0.0 && (k - k.round()).abs() < 1e-6, "feature scale {s} is not a power of two");
            k.round() as i64
        })
        .collect();
    for (i, &k) in levels.iter().enumerate() {
        assert_eq!(k, levels[0] + i as i64, "feature scales {scales:?} are not consecutive levels, finest first");
    }
    (levels[0], levels[levels.len() - 1])
}

/// The level of one box (image pixels), as [`detnas_core::detector::two_stage::roi_level`]
/// computes it, with the levels as tensor indices.
pub fn roi_level(b: &[f32; 4], k_min: i64, k_max: i64) -> i64 {
    detnas_core::detector::two_stage::roi_level(b, k_min as usize, k_max as usize) as i64
}

/// [`roi_level`] of every box.
pub fn roi_levels(boxes: &[[f32; 4]], k_min: i64, k_max: i64) -> Vec<i64> {
    boxes.iter().map(|b| roi_level(b, k_min, k_max)).collect()
}

/// [`roi_level`] on a tensor of boxes `[K, 4]` (x1, y1, x2, y2), in float32 as torchvision's
/// `LevelMapper` computes it: int64 `[K]` levels (not offset by `k_min`), on the boxes' device.
pub fn roi_levels_tensor(boxes: &Tensor, k_min: i64, k_max: i64) -> Tensor {
    let b = boxes.detach().to_kind(Kind::Float);
    let area = (b.select(1, 2) - b.select(1, 0)) * (b.select(1, 3) - b.select(1, 1));
    let size = area.clamp_min(0.0).sqrt();
    let level = (((size / CANONICAL_SIZE as f64).log2() + CANONICAL_LEVEL as f64) + LEVEL_EPS as f64).floor();
    level.clamp(k_min as f64, k_max as f64).nan_to_num(k_min as f64, None, None).to_kind(Kind::Int64)
}

/// The channels and `(H, W)` of every level of `features`.
///
/// # Panics
/// When the first level is not 4-D or the levels differ in batch size or channels.
fn level_sizes(features: &[Tensor]) -> (i64, Vec<(i64, i64)>) {
    let first = &features[0];
    assert_eq!(first.dim(), 4, "features must be [B, C, H, W], got {:?}", first.size());
    let (batch, channels) = (first.size()[0], first.size()[1]);
    let sizes: Vec<(i64, i64)> = features
        .iter()
        .map(|f| {
            let s = f.size();
            assert!(
                s.len() == 4 && s[0] == batch && s[1] == channels,
                "feature levels differ: {s:?} vs {:?}",
                first.size()
            );
            (s[2], s[3])
        })
        .collect();
    (channels, sizes)
}

/// The channels-last table `[B * S, C]` of `features` with S = the pixels of all levels of one
/// image: a pixel's row is `b * S + offset(level) + y * W + x`. One copy (none for a single level
/// already in channels-last memory format).
fn pixel_table(features: &[Tensor], channels: i64) -> Tensor {
    if features.len() == 1 {
        features[0].permute([0, 2, 3, 1]).reshape([-1, channels])
    } else {
        let flat: Vec<Tensor> = features.iter().map(|f| f.flatten(2, 3).transpose(1, 2)).collect();
        Tensor::cat(&flat, 1).reshape([-1, channels])
    }
}

/// The RoIs on their levels, in the level's pixels: `[K]` tensors, float in the compute kind
/// unless said otherwise.
struct LevelRois {
    /// Row in [`pixel_table`] of the first pixel of the RoI's image and level (int64).
    base: Tensor,
    /// Height and width of the RoI's level.
    height: Tensor,
    width: Tensor,
    /// Width of the RoI's level (int64).
    width_i: Tensor,
    /// Top-left corner (scaled, shifted by -0.5 when aligned).
    x1: Tensor,
    y1: Tensor,
    /// Width and height (at least 1 unless aligned).
    roi_w: Tensor,
    roi_h: Tensor,
}

impl LevelRois {
    /// `rois` (`[K, 5]`, image pixels) on the levels `levels` (`[K]` int64 indices into `sizes`
    /// and `scales`), computed in `opts` (kind and device).
    fn new(
        rois: &Tensor,
        levels: &Tensor,
        scales: &[f64],
        sizes: &[(i64, i64)],
        aligned: bool,
        opts: (Kind, Device),
    ) -> Self {
        let (ck, device) = opts;
        let per_image: i64 = sizes.iter().map(|(h, w)| h * w).sum();
        let offsets: Vec<i64> =
            sizes.iter().scan(0, |acc, (h, w)| Some(std::mem::replace(acc, *acc + h * w))).collect();
        let lookup = |v: Vec<f64>| Tensor::from_slice(&v).to_kind(ck).to_device(device).index_select(0, levels);
        let height = lookup(sizes.iter().map(|s| s.0 as f64).collect());
        let width = lookup(sizes.iter().map(|s| s.1 as f64).collect());
        let scale = lookup(scales.to_vec());
        let width_i = Tensor::from_slice(&sizes.iter().map(|s| s.1).collect::<Vec<_>>())
            .to_device(device)
            .index_select(0, levels);
        let offset_i = Tensor::from_slice(&offsets).to_device(device).index_select(0, levels);

        let r = rois.detach().to_device(device).to_kind(ck);
        let base = offset_i + r.select(1, 0).to_kind(Kind::Int64) * per_image;
        let shift = if aligned { 0.5 } else { 0.0 };
        let x1 = r.select(1, 1) * &scale - shift;
        let y1 = r.select(1, 2) * &scale - shift;
        let x2 = r.select(1, 3) * &scale - shift;
        let y2 = r.select(1, 4) * &scale - shift;
        let (mut roi_w, mut roi_h) = (x2 - &x1, y2 - &y1);
        if !aligned {
            roi_w = roi_w.clamp_min(1.0);
            roi_h = roi_h.clamp_min(1.0);
        }
        LevelRois { base, height, width, width_i, x1, y1, roi_w, roi_h }
    }
}

/// The flat pixel indices, weights and bag offsets for one `embedding_bag` that pools the `K`
/// RoIs `r` into `output` bins of `sampling_ratio` x `sampling_ratio` samples each (adaptive per
/// RoI when `sampling_ratio <= 0`); weights in the compute kind `ck`.
fn sample_bags(r: &LevelRois, output: (i64, i64), sampling_ratio: i64, ck: Kind) -> (Tensor, Tensor, Tensor) {
    let (oh, ow) = output;
    let k = r.x1.size()[0];
    let device = r.x1.device();
    // Samples per bin along each axis, per RoI, and the largest (the padded grid).
    let (grid_h, grid_w, gh, gw) = if sampling_ratio > 0 {
        let g = Tensor::full([k], sampling_ratio, (ck, device));
        (g.shallow_clone(), g, sampling_ratio, sampling_ratio)
    } else {
        let gh = (&r.roi_h / oh as f64).ceil().clamp_min(0.0);
        let gw = (&r.roi_w / ow as f64).ceil().clamp_min(0.0);
        let (mh, mw) = (gh.max().double_value(&[]) as i64, gw.max().double_value(&[]) as i64);
        (gh, gw, mh.max(1), mw.max(1))
    };
    let count = (&grid_h * &grid_w).clamp_min(1.0);

    let (yi, yw) = axis(&r.y1, &r.roi_h, &r.height, oh, &grid_h, gh);
    let (xi, xw) = axis(&r.x1, &r.roi_w, &r.width, ow, &grid_w, gw);
    // [K, oh, ow, gh, gw, 2 (y neighbour), 2 (x neighbour)]
    let rows = r.base.view([k, 1, 1, 1]) + yi * r.width_i.view([k, 1, 1, 1]);
    let index = rows.view(&[k, oh, 1, gh, 1, 2, 1][..]) + xi.view(&[k, 1, ow, 1, gw, 1, 2][..]);
    let weight = yw.view(&[k, oh, 1, gh, 1, 2, 1][..]) * xw.view(&[k, 1, ow, 1, gw, 1, 2][..])
        / count.view(&[k, 1, 1, 1, 1, 1, 1][..]);

    let bins = k * oh * ow;
    if sampling_ratio > 0 {
        let bag = gh * gw * 4;
        (
            index.reshape([-1]),
            weight.reshape([-1]),
            Tensor::arange_start_step(0, bins * bag, bag, (Kind::Int64, device)),
        )
    } else {
        // Drop the padding of RoIs with fewer samples than the largest grid: variable-size bags.
        let in_h = Tensor::arange(gh, (ck, device)).view([1, gh]).lt_tensor(&grid_h.view([k, 1]));
        let in_w = Tensor::arange(gw, (ck, device)).view([1, gw]).lt_tensor(&grid_w.view([k, 1]));
        let keep = in_h.view(&[k, 1, 1, gh, 1, 1, 1][..]).logical_and(&in_w.view(&[k, 1, 1, 1, gw, 1, 1][..]));
        let keep = keep.expand(index.size(), false);
        let bag = (grid_h * grid_w * 4.0).to_kind(Kind::Int64).view([k, 1]).expand([k, oh * ow], false).reshape([-1]);
        let starts = bag.cumsum(0, Kind::Int64) - &bag;
        (index.masked_select(&keep), weight.masked_select(&keep), starts)
    }
}

/// RoIAlign of each RoI on `features[levels[k]]` with `scales[levels[k]]`: all RoIs in one pass.
fn align_levels(
    features: &[Tensor],
    rois: &Tensor,
    levels: &Tensor,
    scales: &[f64],
    output: (i64, i64),
    sampling_ratio: i64,
    aligned: bool,
) -> Tensor {
    let (oh, ow) = output;
    assert!(oh > 0 && ow > 0, "output size {output:?} must be positive");
    let (channels, sizes) = level_sizes(features);
    let first = &features[0];
    let device = first.device();
    let rs = rois.size();
    assert!(rs.len() == 2 && rs[1] == 5, "rois must be [K, 5] (batch index, x1, y1, x2, y2), got {rs:?}");
    let k = rs[0];
    if k == 0 {
        return Tensor::zeros([0, channels, oh, ow], (first.kind(), device));
    }

    let table = pixel_table(features, channels);
    let ck = if first.kind() == Kind::Double { Kind::Double } else { Kind::Float };
    let r = LevelRois::new(rois, levels, scales, &sizes, aligned, (ck, device));
    let (index, weight, bag_offsets) = sample_bags(&r, output, sampling_ratio, ck);
    let weight = weight.to_kind(table.kind());
    let (pooled, _, _, _) = Tensor::embedding_bag(&table, &index, &bag_offsets, false, 0, false, Some(&weight), false);
    pooled.view([k, oh, ow, channels]).permute([0, 3, 1, 2]).contiguous()
}

/// One axis of the sampling grid: for `pooled` bins of `grid` (padded to `gmax`) samples each
/// over `[start, start + size]` on a map of `extent` pixels, the two neighbours' pixel indices
/// (int64) and bilinear weights (zero for samples outside `[-1, extent]` or the RoI's grid),
/// both `[K, pooled, gmax, 2]`.
fn axis(start: &Tensor, size: &Tensor, extent: &Tensor, pooled: i64, grid: &Tensor, gmax: i64) -> (Tensor, Tensor) {
    let k = start.size()[0];
    let opts = (start.kind(), start.device());
    let bin = (size / pooled as f64).view([k, 1, 1]);
    let g = grid.view([k, 1, 1]);
    let p = Tensor::arange(pooled, opts).view([1, pooled, 1]);
    let i = Tensor::arange(gmax, opts).view([1, 1, gmax]);
    // torchvision's order of operations: start + p * bin + (i + 0.5) * bin / grid.
    let pos = start.view([k, 1, 1]) + &p * &bin + (&i + 0.5) * &bin / g.clamp_min(1.0);
    let ext = extent.view([k, 1, 1]);
    let valid = pos.ge(-1.0).logical_and(&pos.le_tensor(&ext)).logical_and(&i.lt_tensor(&g));
    let last = &ext - 1.0;
    let c = pos.where_scalarother(&valid, 0.0).clamp_min(0.0).minimum(&last);
    let lo = c.floor();
    let hi = (&lo + 1.0).minimum(&last);
    let frac = &c - &lo;
    let v = valid.to_kind(start.kind());
    let weights = Tensor::stack(&[(1.0 - &frac) * &v, frac * v], -1);
    let index = Tensor::stack(&[lo, hi], -1).to_kind(Kind::Int64);
    (index, weights)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// Direct per-sample evaluation of one output value (float64, plain loops).
    #[allow(clippy::too_many_arguments)]
    fn naive(
        f: &[f64],
        hw: (usize, usize),
        roi: [f64; 4],
        scale: f64,
        out: (usize, usize),
        ph: usize,
        pw: usize,
        sr: i64,
        aligned: bool,
    ) -> f64 {
        let (h, w) = (hw.0 as f64, hw.1 as f64);
        let off = if aligned { 0.5 } else { 0.0 };
        let (x1, y1) = (roi[0] * scale - off, roi[1] * scale - off);
        let (mut rw, mut rh) = (roi[2] * scale - off - x1, roi[3] * scale - off - y1);
        if !aligned {
            rw = rw.max(1.0);
            rh = rh.max(1.0);
        }
        let (bh, bw) = (rh / out.0 as f64, rw / out.1 as f64);
        let gh = if sr > 0 { sr } else { (rh / out.0 as f64).ceil().max(0.0) as i64 };
        let gw = if sr > 0 { sr } else { (rw / out.1 as f64).ceil().max(0.0) as i64 };
        let at = |yy: usize, xx: usize| f[yy * hw.1 + xx];
        let mut acc = 0.0;
        for iy in 0..gh {
            let y = y1 + ph as f64 * bh + (iy as f64 + 0.5) * bh / gh as f64;
            for ix in 0..gw {
                let x = x1 + pw as f64 * bw + (ix as f64 + 0.5) * bw / gw as f64;
                if y < -1.0 || y > h || x < -1.0 || x > w {
                    continue;
                }
                let (y, x) = (y.clamp(0.0, h - 1.0), x.clamp(0.0, w - 1.0));
                let (yl, xl) = (y.floor() as usize, x.floor() as usize);
                let (yh, xh) = ((yl + 1).min(hw.0 - 1), (xl + 1).min(hw.1 - 1));
                let (ly, lx) = (y - yl as f64, x - xl as f64);
                acc += (1.0 - ly) * (1.0 - lx) * at(yl, xl)
                    + (1.0 - ly) * lx * at(yl, xh)
                    + ly * (1.0 - lx) * at(yh, xl)
                    + ly * lx * at(yh, xh);
            }
        }
        acc / (gh * gw).max(1) as f64
    }

    #[test]
    fn roi_align_matches_a_direct_evaluation_with_fixed_and_adaptive_sampling() {
        let (h, w) = (6usize, 7usize);
        let f: Vec<f64> = (0..2 * h * w).map(|i| ((i * 37 % 23) as f64 - 11.0) / 7.0).collect();
        let input = Tensor::from_slice(&f).view([2, 1, h as i64, w as i64]);
        let boxes = [
            [0.0, 1.0, 2.0, 20.0, 18.0],
            [1.0, -6.0, -3.0, 9.5, 30.0],
            [1.0, 5.0, 5.0, 5.2, 5.1],
            [0.0, 27.0, 23.0, 40.0, 40.0],
        ];
        let rois = Tensor::from_slice(&boxes.concat()).view([4, 5]);
        for (sr, aligned) in [(2, false), (0, false), (3, true), (0, true)] {
            let out = roi_align(&input, &rois, (3, 2), 0.25, sr, aligned);
            assert_eq!(out.size(), [4, 1, 3, 2]);
            for (r, b) in boxes.iter().enumerate() {
                let img = &f[b[0] as usize * h * w..][..h * w];
                for ph in 0..3 {
                    for pw in 0..2 {
                        let want = naive(img, (h, w), [b[1], b[2], b[3], b[4]], 0.25, (3, 2), ph, pw, sr, aligned);
                        let got = out.double_value(&[r as i64, 0, ph as i64, pw as i64]);
                        assert!(
                            (got - want).abs() < 1e-12,
                            "sr {sr} aligned {aligned} roi {r} bin {ph},{pw}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn roi_align_of_a_constant_map_is_the_constant_inside_and_gradient_sums_to_the_upstream() {
        let input = Tensor::full([1, 3, 8, 8], 2.5, (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let rois = Tensor::from_slice(&[0.0f32, 1.0, 1.0, 20.0, 25.0, 0.0, 0.0, 0.0, 31.0, 31.0]).view([2, 5]);
        let out = roi_align(&input, &rois, (7, 7), 0.25, 2, false);
        assert!((out - 2.5).abs().max().double_value(&[]) < 1e-6);
        let out = roi_align(&input, &rois, (7, 7), 0.25, 2, false);
        out.sum(Kind::Float).backward();
        // Every sample is inside: each bin spreads its upstream 1 over weights summing to 1.
        let total = input.grad().sum(Kind::Float).double_value(&[]);
        assert!((total - 2.0 * 3.0 * 49.0).abs() < 1e-3, "{total}");
    }

    #[test]
    fn no_rois_give_an_empty_output() {
        let input = Tensor::ones([1, 4, 5, 5], (Kind::Float, Device::Cpu));
        let out = roi_align(&input, &Tensor::zeros([0, 5], (Kind::Float, Device::Cpu)), (7, 7), 1.0, 2, false);
        assert_eq!(out.size(), [0, 4, 7, 7]);
        let out = multi_scale_roi_align(
            &[input.shallow_clone()],
            &Tensor::zeros([0, 5], (Kind::Float, Device::Cpu)),
            &[1.0],
            (2, 2),
            0,
        );
        assert_eq!(out.size(), [0, 4, 2, 2]);
    }

    #[test]
    fn level_mapper_on_known_sizes() {
        let sq = |s: f32| [10.0, 20.0, 10.0 + s, 20.0 + s];
        let got = roi_levels(&[sq(224.0), sq(112.0), sq(448.0), sq(10.0), sq(5000.0), sq(56.0), sq(0.0)], 2, 5);
        assert_eq!(got, vec![4, 3, 5, 2, 5, 2, 2]);
        assert_eq!(roi_levels(&[sq(223.0), sq(225.0), sq(447.9), sq(111.9)], 2, 5), vec![3, 4, 4, 2]);
        // Inverted on both axes: a positive area, as in torchvision. Inverted on one axis or NaN: k_min.
        assert_eq!(
            roi_levels(&[[900.0, 900.0, 0.0, 0.0], [5.0, 0.0, 1.0, 4.0], [0.0, 0.0, f32::NAN, 4.0]], 2, 5),
            vec![5, 2, 2]
        );
        assert_eq!(level_range(&[0.25, 0.125, 0.0625, 0.03125]), (2, 5));
        assert_eq!(level_range(&[1.0 / 8.0]), (3, 3));
    }

    #[test]
    #[should_panic(expected = "not consecutive")]
    fn level_range_refuses_a_gap() {
        level_range(&[0.25, 0.0625]);
    }
}
