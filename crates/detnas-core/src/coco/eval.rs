//! pycocotools' `COCOeval` for bounding boxes: per-image greedy matching (`evaluateImg`),
//! precision/recall accumulation (`accumulate`) and the 12 summary numbers (`summarize`).
//!
//! The arithmetic follows pycocotools operation by operation (same IoU formula, same order of
//! floating-point operations, same stable sorts, numpy's pairwise summation in the means), so the
//! results are identical, not merely close.

use super::types::{Detections, GroundTruth};
use serde::ser::{Serialize, SerializeStruct, Serializer};
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

/// Evaluation parameters. [`EvalParams::default`] is pycocotools' `Params(iouType='bbox')`.
///
/// The summary assumes the default shape: `max_dets` has three entries (sorted before use, as
/// pycocotools does) and `area_ranges` are, in order, all / small / medium / large. As in
/// pycocotools, the first summary number (AP) is read at `maxDets == 100` whatever `max_dets` is,
/// AP50 and AP75 at the IoU thresholds exactly equal to 0.5 and 0.75; a number whose setting is
/// absent is -1.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalParams {
    /// IoU thresholds (default `np.linspace(.5, .95, 10)`); must not be empty.
    pub iou_thrs: Vec<f64>,
    /// Recall thresholds (default `np.linspace(0, 1, 101)`), ascending.
    pub rec_thrs: Vec<f64>,
    /// Detections kept per image and category (default `[1, 10, 100]`).
    pub max_dets: [usize; 3],
    /// `[min, max]` object areas, inclusive, for all / small / medium / large.
    pub area_ranges: [[f64; 2]; 4],
}

/// numpy's `linspace(start, stop, num)` (endpoint included), value for value.
pub(crate) fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    let div = num.saturating_sub(1).max(1) as f64;
    let step = (stop - start) / div;
    let mut values: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    if num > 1 {
        values[num - 1] = stop;
    }
    values
}

impl Default for EvalParams {
    fn default() -> Self {
        EvalParams {
            iou_thrs: linspace(0.5, 0.95, 10),
            rec_thrs: linspace(0.0, 1.0, 101),
            max_dets: [1, 10, 100],
            area_ranges: [[0.0, 1e10], [0.0, 1024.0], [1024.0, 9216.0], [9216.0, 1e10]],
        }
    }
}

/// Names of the 12 summary numbers, in pycocotools' order (keys of the JSON form).
pub const STAT_NAMES: [&str; 12] = [
    "ap",
    "ap50",
    "ap75",
    "ap_small",
    "ap_medium",
    "ap_large",
    "ar1",
    "ar10",
    "ar100",
    "ar_small",
    "ar_medium",
    "ar_large",
];

/// The result of [`evaluate`]: pycocotools' `COCOeval.stats`, -1 where a setting has no ground truth.
#[derive(Clone, Debug, PartialEq)]
pub struct CocoStats {
    /// AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl.
    pub stats: [f64; 12],
    /// The (sorted) `maxDets` used, for the summary lines.
    pub max_dets: [usize; 3],
    /// First and last IoU threshold, for the summary lines.
    pub iou_range: [f64; 2],
    /// Images evaluated (all images of the ground truth).
    pub images: usize,
    /// Categories evaluated (all categories of the ground truth).
    pub categories: usize,
    /// Detections of evaluated categories (before the per-image `maxDets` cut).
    pub detections: usize,
}

impl CocoStats {
    /// The 12 numbers with their names ([`STAT_NAMES`]).
    pub fn named(&self) -> [(&'static str, f64); 12] {
        std::array::from_fn(|i| (STAT_NAMES[i], self.stats[i]))
    }

    /// Mean average precision at IoU .50:.95 (the COCO "AP").
    pub fn ap(&self) -> f64 {
        self.stats[0]
    }

    /// Average precision at IoU 0.5.
    pub fn ap50(&self) -> f64 {
        self.stats[1]
    }

    /// The summary lines pycocotools' `summarize()` prints, without trailing newlines.
    pub fn summary_lines(&self) -> Vec<String> {
        let [m1, m10, m100] = self.max_dets;
        let range = format!("{:.2}:{:.2}", self.iou_range[0], self.iou_range[1]);
        // (is AP, IoU label, area label, maxDets) for each of the 12 numbers.
        let rows: [(bool, &str, &str, usize); 12] = [
            (true, &range, "all", 100),
            (true, "0.50", "all", m100),
            (true, "0.75", "all", m100),
            (true, &range, "small", m100),
            (true, &range, "medium", m100),
            (true, &range, "large", m100),
            (false, &range, "all", m1),
            (false, &range, "all", m10),
            (false, &range, "all", m100),
            (false, &range, "small", m100),
            (false, &range, "medium", m100),
            (false, &range, "large", m100),
        ];
        rows.iter()
            .zip(self.stats)
            .map(|(&(is_ap, iou, area, max_det), value)| {
                let (title, kind) = if is_ap { ("Average Precision", "(AP)") } else { ("Average Recall", "(AR)") };
                format!(" {title:<18} {kind} @[ IoU={iou:<9} | area={area:>6} | maxDets={max_det:>3} ] = {value:.3}")
            })
            .collect()
    }
}

/// The summary table, as pycocotools' `summarize()` prints it (12 lines, no trailing newline).
impl fmt::Display for CocoStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary_lines().join("\n"))
    }
}

/// JSON form: `{"stats": [12 numbers], "ap": .., "ap50": .., ..., "ar_large": .., "max_dets": [..],
/// "iou_range": [..], "images": n, "categories": n, "detections": n}`.
impl Serialize for CocoStats {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("CocoStats", 6 + STAT_NAMES.len())?;
        s.serialize_field("stats", &self.stats)?;
        for (name, value) in self.named() {
            s.serialize_field(name, &value)?;
        }
        s.serialize_field("max_dets", &self.max_dets)?;
        s.serialize_field("iou_range", &self.iou_range)?;
        s.serialize_field("images", &self.images)?;
        s.serialize_field("categories", &self.categories)?;
        s.serialize_field("detections", &self.detections)?;
        s.end()
    }
}

/// pycocotools' bbox IoU (`maskUtils.iou`): no +1 in widths; for a crowd ground truth the
/// intersection is divided by the detection's area instead of the union.
pub(crate) fn box_iou(dt: &[f64; 4], gt: &[f64; 4], gt_crowd: bool) -> f64 {
    let w = (dt[2] + dt[0]).min(gt[2] + gt[0]) - dt[0].max(gt[0]);
    if w <= 0.0 {
        return 0.0;
    }
    let h = (dt[3] + dt[1]).min(gt[3] + gt[1]) - dt[1].max(gt[1]);
    if h <= 0.0 {
        return 0.0;
    }
    let inter = w * h;
    let dt_area = dt[2] * dt[3];
    let union = if gt_crowd { dt_area } else { dt_area + gt[2] * gt[3] - inter };
    inter / union
}

/// numpy's pairwise summation (`np.add.reduce` on a contiguous float64 array): blocks of at most
/// 128 values summed with 8 accumulators, larger arrays split in halves (multiples of 8).
pub(crate) fn pairwise_sum(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        a.iter().fold(-0.0, |acc, &x| acc + x)
    } else if n <= 128 {
        let mut r: [f64; 8] = std::array::from_fn(|j| a[j]);
        let full = n - n % 8;
        for block in a[8..full].chunks_exact(8) {
            for (acc, &x) in r.iter_mut().zip(block) {
                *acc += x;
            }
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &x in &a[full..] {
            res += x;
        }
        res
    } else {
        let half = n / 2;
        let half = half - half % 8;
        pairwise_sum(&a[..half]) + pairwise_sum(&a[half..])
    }
}

/// `np.mean(values)` for a non-empty 1-D float64 array, bit for bit.
pub(crate) fn numpy_mean(values: &[f64]) -> f64 {
    (0.0 + pairwise_sum(values)) / values.len() as f64
}

/// Stable descending order of `scores` (numpy `argsort(-scores, kind='mergesort')`).
fn order_by_score_desc(scores: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&i, &j| scores[j].partial_cmp(&scores[i]).unwrap_or(Ordering::Equal));
    order
}

/// The per-image, per-category result for one area range (`evaluateImg`).
struct AreaEval {
    /// `[T x D]`, row-major by threshold: matched to a ground truth whose id is non-zero. (pycocotools
    /// stores the matched id and tests it for truth, so a match to id 0 counts as unmatched.)
    matched: Vec<bool>,
    /// `[T x D]`: ignored (matched an ignored ground truth, or unmatched and outside the area range).
    ignored: Vec<bool>,
    /// Ground truths not ignored in this area range.
    positives: usize,
}

/// Everything kept about one (image, category) pair with ground truth or detections.
struct CellEval {
    /// Scores of the kept detections (at most `maxDets[-1]`), highest first.
    scores: Vec<f64>,
    /// One per area range.
    areas: Vec<AreaEval>,
}

/// Ground truth and detections (indices into the data set / results) of one (category, image).
#[derive(Default)]
struct Cell {
    gts: Vec<usize>,
    dts: Vec<usize>,
}

/// Groups the ground truth and the detections of evaluated categories and images by (category
/// position, image position), both ascending, items in file order; also returns how many
/// detections were grouped.
fn group_cells(gt: &GroundTruth, dt: &Detections) -> (BTreeMap<(usize, usize), Cell>, usize) {
    let mut cells: BTreeMap<(usize, usize), Cell> = BTreeMap::new();
    for (i, a) in gt.dataset().annotations.iter().enumerate() {
        if let (Some(k), Some(img)) = (gt.category_position(a.category_id), gt.image_position(a.image_id)) {
            cells.entry((k, img)).or_default().gts.push(i);
        }
    }
    let mut evaluated_dets = 0;
    for (i, d) in dt.as_slice().iter().enumerate() {
        if let (Some(k), Some(img)) = (gt.category_position(d.category_id), gt.image_position(d.image_id)) {
            cells.entry((k, img)).or_default().dts.push(i);
            evaluated_dets += 1;
        }
    }
    (cells, evaluated_dets)
}

/// pycocotools' `accumulate` output: precision `[T x R x K x A x M]` and recall `[T x K x A x M]`
/// (IoU thresholds, recall thresholds, categories, area ranges, maxDets), row-major, -1 where a
/// setting has no ground truth.
struct Accumulation {
    precision: Vec<f64>,
    recall: Vec<f64>,
    /// The dimensions `(T, R, K, A, M)`.
    dims: (usize, usize, usize, usize, usize),
}

impl Accumulation {
    /// All -1, with dimensions `(T, R, K, A, M)`.
    fn new(dims: (usize, usize, usize, usize, usize)) -> Self {
        let (nt, nr, nk, na, nm) = dims;
        Accumulation { precision: vec![-1.0; nt * nr * nk * na * nm], recall: vec![-1.0; nt * nk * na * nm], dims }
    }

    /// Index of precision `(t, r, k, a, m)`.
    fn precision_at(&self, t: usize, r: usize, k: usize, a: usize, m: usize) -> usize {
        let (_, nr, nk, na, nm) = self.dims;
        (((t * nr + r) * nk + k) * na + a) * nm + m
    }

    /// Index of recall `(t, k, a, m)`.
    fn recall_at(&self, t: usize, k: usize, a: usize, m: usize) -> usize {
        let (_, _, nk, na, nm) = self.dims;
        ((t * nk + k) * na + a) * nm + m
    }

    /// Fills category `k` from its per-image results `evals`, for every area range, maxDets
    /// (`max_dets`, sorted) and IoU threshold; precision is read at `rec_thrs`.
    fn add_category(&mut self, k: usize, evals: &[CellEval], max_dets: &[usize; 3], rec_thrs: &[f64]) {
        let (nt, _, _, na, _) = self.dims;
        for a in 0..na {
            for (m, &max_det) in max_dets.iter().enumerate() {
                let positives: usize = evals.iter().map(|e| e.areas[a].positives).sum();
                if positives == 0 {
                    continue;
                }
                // (cell, detection) pairs of all images, top max_det per image, then by score.
                let mut pairs = Vec::new();
                let mut scores = Vec::new();
                for (c, e) in evals.iter().enumerate() {
                    for (d, &s) in e.scores.iter().take(max_det).enumerate() {
                        pairs.push((c, d));
                        scores.push(s);
                    }
                }
                let order = order_by_score_desc(&scores);
                let nd = order.len();
                for t in 0..nt {
                    let (rc, mut pr) = pr_curve(evals, &pairs, &order, (t, a), positives);
                    let ri = self.recall_at(t, k, a, m);
                    self.recall[ri] = rc.last().copied().unwrap_or(0.0);
                    // Monotone (non-increasing) precision envelope.
                    for i in (1..nd).rev() {
                        if pr[i] > pr[i - 1] {
                            pr[i - 1] = pr[i];
                        }
                    }
                    for (r, &thr) in rec_thrs.iter().enumerate() {
                        // searchsorted(rc, thr, side='left'); thresholds past the last recall stay 0.
                        let i = rc.partition_point(|&x| x < thr);
                        let q = if i < nd { pr[i] } else { 0.0 };
                        let j = self.precision_at(t, r, k, a, m);
                        self.precision[j] = q;
                    }
                }
            }
        }
    }
}

/// Recall and precision after each detection taken in `order` (indices into `pairs`, which are
/// (index into `evals`, detection of that cell)) at IoU threshold `t` and area range `a`
/// (`(t, a)`), over `positives` ground truths: pycocotools' cumulative sums.
fn pr_curve(
    evals: &[CellEval],
    pairs: &[(usize, usize)],
    order: &[usize],
    (t, a): (usize, usize),
    positives: usize,
) -> (Vec<f64>, Vec<f64>) {
    let (mut tp, mut fp) = (0.0f64, 0.0f64);
    let mut rc = Vec::with_capacity(order.len());
    let mut pr = Vec::with_capacity(order.len());
    for &p in order {
        let (c, d) = pairs[p];
        let area = &evals[c].areas[a];
        let nd_cell = evals[c].scores.len();
        let idx = t * nd_cell + d;
        if !area.ignored[idx] {
            if area.matched[idx] {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
        }
        rc.push(tp / positives as f64);
        pr.push(tp / (fp + tp + f64::EPSILON));
    }
    (rc, pr)
}

/// pycocotools' `summarize`: the 12 numbers from `acc`, whose IoU thresholds are `iou_thrs` and
/// maxDets `max_dets` (sorted). Each is the mean of the values > -1 of its setting, -1 when none.
fn summarize(acc: &Accumulation, iou_thrs: &[f64], max_dets: [usize; 3]) -> [f64; 12] {
    let (nt, nr, nk, _, nm) = acc.dims;
    let mean_of = |values: Vec<f64>| if values.is_empty() { -1.0 } else { numpy_mean(&values) };
    let thr_indices =
        |thr: Option<f64>| -> Vec<usize> { (0..nt).filter(|&t| thr.is_none_or(|v| iou_thrs[t] == v)).collect() };
    let det_indices = |value: usize| -> Vec<usize> { (0..nm).filter(|&m| max_dets[m] == value).collect() };
    // Mean of the precisions > -1 at (thresholds, all recalls, all categories, area a, maxDets),
    // in numpy's C order of the selection.
    let ap = |thr: Option<f64>, a: usize, max_det: usize| {
        let ms = det_indices(max_det);
        let mut values = Vec::new();
        for t in thr_indices(thr) {
            for r in 0..nr {
                for k in 0..nk {
                    for &m in &ms {
                        let v = acc.precision[acc.precision_at(t, r, k, a, m)];
                        if v > -1.0 {
                            values.push(v);
                        }
                    }
                }
            }
        }
        mean_of(values)
    };
    let ar = |a: usize, max_det: usize| {
        let ms = det_indices(max_det);
        let mut values = Vec::new();
        for t in thr_indices(None) {
            for k in 0..nk {
                for &m in &ms {
                    let v = acc.recall[acc.recall_at(t, k, a, m)];
                    if v > -1.0 {
                        values.push(v);
                    }
                }
            }
        }
        mean_of(values)
    };
    let [m1, m10, m100] = max_dets;
    [
        ap(None, 0, 100),
        ap(Some(0.5), 0, m100),
        ap(Some(0.75), 0, m100),
        ap(None, 1, m100),
        ap(None, 2, m100),
        ap(None, 3, m100),
        ar(0, m1),
        ar(0, m10),
        ar(0, m100),
        ar(1, m100),
        ar(2, m100),
        ar(3, m100),
    ]
}

/// Evaluates `dt` against `gt` exactly as pycocotools' `COCOeval` with `iouType='bbox'`:
/// every image and category of `gt` is evaluated; detections of other categories are skipped.
///
/// With no detections at all the numbers are 0 where a setting has ground truth and -1 elsewhere.
pub fn evaluate(gt: &GroundTruth, dt: &Detections, params: &EvalParams) -> CocoStats {
    let mut max_dets = params.max_dets;
    max_dets.sort_unstable();
    let max_det_all = max_dets[2];
    let iou_thrs = &params.iou_thrs;
    let (nt, nr, nk, na, nm) =
        (iou_thrs.len(), params.rec_thrs.len(), gt.category_ids().len(), params.area_ranges.len(), 3);

    // Group by (category, image), both in ascending id order, items in file order.
    let (cells, evaluated_dets) = group_cells(gt, dt);
    let mut acc = Accumulation::new((nt, nr, nk, na, nm));
    let mut cells = cells.into_iter().peekable();
    while let Some(&((k, _), _)) = cells.peek() {
        // Per-image results of category k, in ascending image id order.
        let mut evals = Vec::new();
        while let Some(((_, _), cell)) = cells.next_if(|((kk, _), _)| *kk == k) {
            evals.push(evaluate_cell(gt, dt, params, max_det_all, &cell));
        }
        acc.add_category(k, &evals, &max_dets, &params.rec_thrs);
    }

    CocoStats {
        stats: summarize(&acc, iou_thrs, max_dets),
        max_dets,
        iou_range: [iou_thrs.first().copied().unwrap_or(f64::NAN), iou_thrs.last().copied().unwrap_or(f64::NAN)],
        images: gt.image_ids().len(),
        categories: nk,
        detections: evaluated_dets,
    }
}

/// `computeIoU` + `evaluateImg` for every area range of one (image, category) pair.
fn evaluate_cell(gt: &GroundTruth, dt: &Detections, params: &EvalParams, max_det: usize, cell: &Cell) -> CellEval {
    let anns = &gt.dataset().annotations;
    let dets = dt.as_slice();
    let cell_scores: Vec<f64> = cell.dts.iter().map(|&i| dets[i].score).collect();
    let mut kept: Vec<usize> = order_by_score_desc(&cell_scores).into_iter().map(|j| cell.dts[j]).collect();
    kept.truncate(max_det);
    let scores: Vec<f64> = kept.iter().map(|&i| dets[i].score).collect();
    let (nd, ng, nt) = (kept.len(), cell.gts.len(), params.iou_thrs.len());

    // ious[d][g], ground truth in file order.
    let ious: Vec<Vec<f64>> = kept
        .iter()
        .map(|&d| cell.gts.iter().map(|&g| box_iou(&dets[d].bbox, &anns[g].bbox, anns[g].iscrowd)).collect())
        .collect();

    let areas = params
        .area_ranges
        .iter()
        .map(|&[lo, hi]| {
            let outside = |area: f64| area < lo || area > hi;
            let gt_ignored: Vec<bool> = cell.gts.iter().map(|&g| anns[g].iscrowd || outside(anns[g].area)).collect();
            // Ground truth not ignored first, each group in file order (stable).
            let mut gt_order: Vec<usize> = (0..ng).collect();
            gt_order.sort_by_key(|&g| gt_ignored[g]);
            let mut matched = vec![false; nt * nd];
            let mut ignored = vec![false; nt * nd];
            let mut gt_taken = vec![false; ng];
            if nd > 0 && ng > 0 {
                for (t, &thr) in params.iou_thrs.iter().enumerate() {
                    gt_taken.fill(false);
                    for (d, row) in ious.iter().enumerate() {
                        let mut best = thr.min(1.0 - 1e-10);
                        let mut found: Option<usize> = None;
                        for &g in &gt_order {
                            let crowd = anns[cell.gts[g]].iscrowd;
                            if gt_taken[g] && !crowd {
                                continue;
                            }
                            // Already matched a regular ground truth; the rest are ignored ones.
                            if found.is_some_and(|m| !gt_ignored[m]) && gt_ignored[g] {
                                break;
                            }
                            if row[g] < best {
                                continue;
                            }
                            best = row[g];
                            found = Some(g);
                        }
                        if let Some(m) = found {
                            ignored[t * nd + d] = gt_ignored[m];
                            matched[t * nd + d] = anns[cell.gts[m]].id != 0;
                            gt_taken[m] = true;
                        }
                    }
                }
            }
            for (d, &i) in kept.iter().enumerate() {
                let [_, _, w, h] = dets[i].bbox;
                if outside(w * h) {
                    for t in 0..nt {
                        if !matched[t * nd + d] {
                            ignored[t * nd + d] = true;
                        }
                    }
                }
            }
            AreaEval { matched, ignored, positives: gt_ignored.iter().filter(|&&ig| !ig).count() }
        })
        .collect();
    CellEval { scores, areas }
}
