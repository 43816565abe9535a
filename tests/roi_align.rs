//! RoIAlign (detnas_train::roi_align) against a float64 NumPy reference written from the
//! algorithm (tools/roi_align_reference.py), finite differences, ONNX Runtime's `RoiAlign`, and
//! the multi-scale routing against single-level RoIAlign.

use detnas_train::roi_align::{
    level_range, multi_scale_roi_align, roi_align, roi_level, roi_levels, roi_levels_tensor,
};
use detnas_train::tch::{Device, Kind, Tensor};
use serde_json::{Value, json};

/// splitmix64: deterministic data independent of libtorch's global generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)`.
    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn vec(&mut self, n: usize) -> Vec<f64> {
        (0..n).map(|_| self.uniform(-1.0, 1.0)).collect()
    }
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

fn to_vec(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double).reshape([-1])).unwrap()
}

/// Boxes `(b, x1, y1, x2, y2)` on an image of `img_w x img_h` pixels split into `batch` images:
/// random ones (some partly outside) and the edge cases.
fn test_boxes(rng: &mut Rng, batch: usize, img_w: f64, img_h: f64, random: usize) -> Vec<[f64; 5]> {
    let (w, h) = (img_w, img_h);
    let mut boxes = vec![
        [0.0, -0.3 * w, -0.2 * h, 0.4 * w, 0.5 * h],   // partly outside (top left)
        [1.0, 0.6 * w, 0.7 * h, 1.3 * w, 1.2 * h],     // partly outside (bottom right)
        [0.0, 1.5 * w, 1.5 * h, 2.0 * w, 1.9 * h],     // completely outside (beyond the map)
        [1.0, -0.9 * w, -0.9 * h, -0.3 * w, -0.4 * h], // completely outside (negative)
        [0.0, 0.3 * w, 0.4 * h, 0.3 * w + 0.3, 0.4 * h + 0.2], // tiny (< 1 px)
        [1.0, 0.5 * w, 0.5 * h, 0.5 * w, 0.5 * h],     // empty
        [0.0, 0.6 * w, 0.6 * h, 0.5 * w, 0.4 * h],     // inverted
        [0.0, 0.0, 0.0, w, h],                         // the whole map
        [1.0, 0.0, 0.0, 0.3 * w, 0.2 * h],             // at the top-left border
        [0.0, 0.7 * w, 0.8 * h, w, h],                 // at the bottom-right border
        [1.0, 0.8 * w, 0.9 * h, w + 3.0, h + 3.0],     // just past the bottom-right border
        [0.0, -3.0, -3.0, 0.2 * w, 0.1 * h],           // just past the top-left border
        [1.0, w - 0.5, h - 0.5, w + 0.5, h + 0.5],     // a pixel on the corner
    ];
    for _ in 0..random {
        let b = (rng.next() % batch as u64) as f64;
        let (cx, cy) = (rng.uniform(-0.1 * w, 1.1 * w), rng.uniform(-0.1 * h, 1.1 * h));
        let (bw, bh) = (rng.uniform(0.2, 0.8 * w), rng.uniform(0.2, 0.8 * h));
        boxes.push([b, cx - bw / 2.0, cy - bh / 2.0, cx + bw / 2.0, cy + bh / 2.0]);
    }
    for (i, b) in boxes.iter_mut().enumerate() {
        b[0] = ((b[0] as usize + i) % batch) as f64;
    }
    boxes
}

fn rois_tensor(boxes: &[[f64; 5]], kind: Kind) -> Tensor {
    Tensor::from_slice(&boxes.concat()).view([boxes.len() as i64, 5]).to_kind(kind)
}

struct Case {
    output: (i64, i64),
    sampling_ratio: i64,
    aligned: bool,
}

#[test]
fn roi_align_forward_and_backward_match_the_numpy_reference() {
    let mut rng = Rng(11);
    let (b, c, h, w) = (3usize, 4usize, 9usize, 11usize);
    let scale = 0.5;
    let features = rng.vec(b * c * h * w);
    let boxes = test_boxes(&mut rng, b, w as f64 / scale, h as f64 / scale, 24);
    let cases: Vec<Case> = [(7, 7), (3, 5)]
        .into_iter()
        .flat_map(|output| {
            [(2, false), (0, false), (2, true), (0, true)].map(|(sampling_ratio, aligned)| Case {
                output,
                sampling_ratio,
                aligned,
            })
        })
        .collect();
    let grads: Vec<Vec<f64>> =
        cases.iter().map(|cs| rng.vec(boxes.len() * c * (cs.output.0 * cs.output.1) as usize)).collect();

    let specs: Vec<Value> = cases
        .iter()
        .zip(&grads)
        .map(|(cs, g)| {
            json!({
                "features": features, "shape": [b, c, h, w], "boxes": boxes,
                "output_size": [cs.output.0, cs.output.1], "spatial_scale": scale,
                "sampling_ratio": cs.sampling_ratio, "aligned": cs.aligned, "grad_output": g,
            })
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let (inp, out) = (dir.path().join("in.json"), dir.path().join("out.json"));
    std::fs::write(&inp, serde_json::to_vec(&json!({ "cases": specs })).unwrap()).unwrap();
    crate::util::python(&["tools/roi_align_reference.py", inp.to_str().unwrap(), out.to_str().unwrap()]);
    let reference: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();

    let shape = [b as i64, c as i64, h as i64, w as i64];
    let rois = rois_tensor(&boxes, Kind::Double);
    let (mut worst_fwd, mut worst_bwd) = (0.0f64, 0.0f64);
    for ((cs, g), r) in cases.iter().zip(&grads).zip(reference["cases"].as_array().unwrap()) {
        let want_out: Vec<f64> = serde_json::from_value(r["output"].clone()).unwrap();
        let want_grad: Vec<f64> = serde_json::from_value(r["grad_input"].clone()).unwrap();
        let x = Tensor::from_slice(&features).view(shape).set_requires_grad(true);
        let y = roi_align(&x, &rois, cs.output, scale, cs.sampling_ratio, cs.aligned);
        assert_eq!(y.size(), [boxes.len() as i64, c as i64, cs.output.0, cs.output.1]);
        assert_eq!(y.kind(), Kind::Double);
        let upstream = Tensor::from_slice(g).view(y.size().as_slice());
        (&y * upstream).sum(Kind::Double).backward();
        let fwd = max_abs_diff(&to_vec(&y), &want_out);
        let bwd = max_abs_diff(&to_vec(&x.grad()), &want_grad);
        let label = format!("output {:?} sampling {} aligned {}", cs.output, cs.sampling_ratio, cs.aligned);
        eprintln!("numpy reference, {label}: forward max |diff| {fwd:.3e}, backward {bwd:.3e}");
        assert!(fwd < 1e-5, "{label}: forward differs by {fwd}");
        assert!(bwd < 1e-5, "{label}: backward differs by {bwd}");
        // The edge cases are exercised: zeros outside, non-zero inside.
        let per_roi = y.abs().sum_dim_intlist(&[1i64, 2, 3][..], false, Kind::Double);
        assert_eq!(per_roi.double_value(&[2]), 0.0, "{label}: a box beyond the map pools zeros");
        assert_eq!(per_roi.double_value(&[3]), 0.0, "{label}: a box left of the map pools zeros");
        assert!(per_roi.double_value(&[0]) > 0.0 && per_roi.double_value(&[7]) > 0.0);
        worst_fwd = worst_fwd.max(fwd);
        worst_bwd = worst_bwd.max(bwd);
    }
    eprintln!("numpy reference, all cases: forward max |diff| {worst_fwd:.3e}, backward {worst_bwd:.3e}");
}

#[test]
fn roi_align_gradient_matches_finite_differences() {
    let mut rng = Rng(5);
    let shape = [2i64, 2, 5, 6];
    let n = shape.iter().product::<i64>() as usize;
    let features = rng.vec(n);
    let boxes = [[0.0, -2.0, 1.0, 9.0, 14.0], [1.0, 3.3, 2.2, 22.0, 21.0], [1.0, 10.0, 8.0, 10.4, 8.3]];
    let rois = rois_tensor(&boxes, Kind::Double);
    for (sampling_ratio, aligned) in [(2, false), (0, true)] {
        let upstream = Tensor::from_slice(&rng.vec(boxes.len() * 2 * 3 * 2)).view([3, 2, 3, 2]);
        let loss = |f: &[f64]| {
            let x = Tensor::from_slice(f).view(shape);
            (roi_align(&x, &rois, (3, 2), 0.25, sampling_ratio, aligned) * &upstream).sum(Kind::Double)
        };
        let x = Tensor::from_slice(&features).view(shape).set_requires_grad(true);
        (roi_align(&x, &rois, (3, 2), 0.25, sampling_ratio, aligned) * &upstream).sum(Kind::Double).backward();
        let analytic = to_vec(&x.grad());
        let eps = 1e-6;
        let numeric: Vec<f64> = (0..n)
            .map(|i| {
                let (mut up, mut down) = (features.clone(), features.clone());
                up[i] += eps;
                down[i] -= eps;
                (loss(&up).double_value(&[]) - loss(&down).double_value(&[])) / (2.0 * eps)
            })
            .collect();
        let err = max_abs_diff(&analytic, &numeric);
        eprintln!("finite differences, sampling {sampling_ratio} aligned {aligned}: max |diff| {err:.3e}");
        assert!(err < 1e-7, "gradient differs from finite differences by {err}");
        assert!(analytic.iter().filter(|g| g.abs() > 0.0).count() > n / 4, "the gradient reaches many pixels");
    }
}

#[cfg(feature = "infer")]
#[test]
fn roi_align_matches_onnx_runtime_roialign() {
    use detnas_infer::ort::session::Session;
    use detnas_infer::ort::value::TensorRef;
    use detnas_onnx::graph::encode;
    use detnas_onnx::{Attr, Dim, ElemType, GraphBuilder};

    let mut rng = Rng(23);
    let (b, c, h, w) = (2usize, 8usize, 20usize, 24usize);
    let scale = 0.25;
    let features: Vec<f32> = rng.vec(b * c * h * w).into_iter().map(|v| v as f32).collect();
    let boxes = test_boxes(&mut rng, b, w as f64 / scale, h as f64 / scale, 40);
    let k = boxes.len();
    let rois4: Vec<f32> = boxes.iter().flat_map(|r| r[1..].iter().map(|&v| v as f32)).collect();
    let batch_indices: Vec<i64> = boxes.iter().map(|r| r[0] as i64).collect();
    let rois = Tensor::from_slice(&boxes.concat()).view([k as i64, 5]).to_kind(Kind::Float);
    let x = Tensor::from_slice(&features).view([b as i64, c as i64, h as i64, w as i64]);
    let env = detnas_infer::runtime::environment().expect("ONNX Runtime loads");

    // output_half_pixel = torchvision's aligned=false (the detector's setting); half_pixel = aligned.
    for (mode, aligned, sampling_ratio, (oh, ow)) in [
        ("output_half_pixel", false, 2, (7, 7)),
        ("output_half_pixel", false, 0, (7, 7)),
        ("half_pixel", true, 2, (5, 3)),
    ] {
        let mut g = GraphBuilder::new("roi_align");
        let xi = g.input("x", ElemType::F32, &[b, c, h, w].map(|d| Dim::Fixed(d as i64))).unwrap();
        let ri = g.input("rois", ElemType::F32, &[Dim::Fixed(k as i64), Dim::Fixed(4)]).unwrap();
        let bi = g.input("batch_indices", ElemType::I64, &[Dim::Fixed(k as i64)]).unwrap();
        let attrs = vec![
            ("coordinate_transformation_mode", Attr::Str(mode.into())),
            ("mode", Attr::Str("avg".into())),
            ("output_height", Attr::Int(oh)),
            ("output_width", Attr::Int(ow)),
            ("sampling_ratio", Attr::Int(sampling_ratio)),
            ("spatial_scale", Attr::Float(scale as f32)),
        ];
        let y = g.op_as("RoiAlign", "y", &[&xi, &ri, &bi], attrs).unwrap();
        let out_dims = [k as i64, c as i64, oh, ow].map(Dim::Fixed);
        g.output(&y, ElemType::F32, &out_dims).unwrap();
        let model = encode(&g.build()).unwrap();
        let mut session = Session::builder(env).unwrap().commit_from_memory(&model).unwrap();
        let xa = ndarray::Array4::from_shape_vec((b, c, h, w), features.clone()).unwrap();
        let ra = ndarray::Array2::from_shape_vec((k, 4), rois4.clone()).unwrap();
        let ba = ndarray::Array1::from_vec(batch_indices.clone());
        let outputs = session
            .run(detnas_infer::ort::inputs![
                "x" => TensorRef::from_array_view(&xa).unwrap(),
                "rois" => TensorRef::from_array_view(&ra).unwrap(),
                "batch_indices" => TensorRef::from_array_view(&ba).unwrap(),
            ])
            .unwrap();
        let (shape, data) = outputs["y"].try_extract_tensor::<f32>().unwrap();
        assert_eq!(shape.to_vec(), vec![k as i64, c as i64, oh, ow]);
        let ours = roi_align(&x, &rois, (oh, ow), scale, sampling_ratio, aligned);
        assert_eq!(ours.kind(), Kind::Float);
        let theirs: Vec<f64> = data.iter().map(|&v| v as f64).collect();
        let err = max_abs_diff(&to_vec(&ours), &theirs);
        eprintln!("ONNX Runtime RoiAlign {mode} sampling {sampling_ratio}: max |diff| {err:.3e} (float32)");
        assert!(err < 1e-4, "{mode} sampling {sampling_ratio}: differs from ONNX Runtime by {err}");
    }
}

#[test]
fn level_mapper_follows_torchvision_on_known_sizes_and_eps_boundaries() {
    let (k_min, k_max) = level_range(&[0.25, 0.125, 0.0625, 0.03125]);
    assert_eq!((k_min, k_max), (2, 5));
    let rect = |w: f32, h: f32| [3.0f32, 7.0, 3.0 + w, 7.0 + h];
    let sizes = [
        (rect(224.0, 224.0), 4),
        (rect(112.0, 112.0), 3),
        (rect(448.0, 448.0), 5),
        (rect(56.0, 56.0), 2),
        (rect(10.0, 10.0), 2),     // clamped up to k_min
        (rect(0.5, 0.5), 2),       // clamped up to k_min
        (rect(4000.0, 3000.0), 5), // clamped down to k_max
        (rect(896.0, 896.0), 5),   // level 6, clamped
        (rect(448.0, 112.0), 4),   // sqrt(area) = 224
        (rect(223.0, 223.0), 3),
        (rect(225.0, 225.0), 4),
        (rect(0.0, 50.0), 2), // no area
    ];
    for (b, want) in sizes {
        assert_eq!(roi_level(&b, k_min, k_max), want, "{b:?}");
    }
    // Just below a power of two: within eps the level stays up, beyond it drops (a box of width
    // 224 * 2^n and height 224 * 2^n * 2^(-2d) has log2(sqrt(area) / 224) = n - d). Range 1..6:
    // nothing clamped.
    for n in -2i32..=1 {
        let (side, level) = (224.0 * 2f64.powi(n), 4 + n as i64);
        assert_eq!(roi_level(&rect(side as f32, side as f32), 1, 6), level, "exactly 224 * 2^{n}");
        for (d, keeps) in [(2e-7, true), (4e-7, true), (3e-6, false), (1e-5, false)] {
            let b = rect(side as f32, (side * 2f64.powf(-2.0 * d)) as f32);
            let raw = ((b[2] - b[0]) as f64 * (b[3] - b[1]) as f64).sqrt() / 224.0;
            assert!(raw.log2() < n as f64, "the box is below the boundary");
            let want = if keeps { level } else { level - 1 };
            assert_eq!(roi_levels(&[b], 1, 6), vec![want], "n {n} d {d}");
            assert_eq!(roi_level(&b, k_min, k_max), want.clamp(k_min, k_max), "n {n} d {d}, clamped");
        }
    }
    // Unclamped levels, with a wider range.
    assert_eq!(roi_levels(&[rect(896.0, 896.0), rect(28.0, 28.0)], 1, 6), vec![6, 1]);
}

#[test]
fn level_mapper_in_rust_and_on_tensors_agree() {
    let mut rng = Rng(3);
    let mut boxes: Vec<[f32; 4]> = (0..20000)
        .map(|_| {
            let (x, y) = (rng.uniform(-50.0, 800.0) as f32, rng.uniform(-50.0, 800.0) as f32);
            let (w, h) = (rng.uniform(-2.0, 9.0).exp() as f32, rng.uniform(-2.0, 9.0).exp() as f32);
            [x, y, x + w, y + h]
        })
        .collect();
    // Boxes around every power-of-two boundary.
    for n in -4..4 {
        for i in -40..=40 {
            let side = (224.0 * 2f64.powi(n) * (1.0 + i as f64 * 1e-7)) as f32;
            boxes.push([0.0, 0.0, side, side]);
            boxes.push([10.0, 20.0, 10.0 + side, 20.0 + side * 0.5]);
        }
    }
    boxes.extend([[5.0, 5.0, 5.0, 9.0], [5.0, 0.0, 1.0, 4.0], [0.0, 0.0, f32::NAN, 4.0], [0.0, 0.0, 1e30, 1e30]]);
    for (k_min, k_max) in [(2, 5), (1, 7)] {
        let rust = roi_levels(&boxes, k_min, k_max);
        let t = Tensor::from_slice(&boxes.concat()).view([boxes.len() as i64, 4]);
        let torch = Vec::<i64>::try_from(roi_levels_tensor(&t, k_min, k_max)).unwrap();
        let differ: Vec<_> =
            (0..boxes.len()).filter(|&i| rust[i] != torch[i]).map(|i| (boxes[i], rust[i], torch[i])).collect();
        assert!(
            differ.is_empty(),
            "{} of {} boxes differ: {:?}",
            differ.len(),
            boxes.len(),
            &differ[..differ.len().min(5)]
        );
        for l in k_min..=k_max {
            assert!(rust.contains(&l), "level {l} is exercised");
        }
    }
}

/// A P2..P5 pyramid of a `img_w x img_h` batch of `b` images with `c` channels.
fn pyramid(rng: &mut Rng, b: i64, c: i64, img_h: i64, img_w: i64, kind: Kind) -> Vec<Tensor> {
    (2..=5)
        .map(|l| {
            let (h, w) = (img_h >> l, img_w >> l);
            Tensor::from_slice(&rng.vec((b * c * h * w) as usize)).view([b, c, h, w]).to_kind(kind)
        })
        .collect()
}

#[test]
fn multi_scale_roi_align_routes_each_roi_to_its_level_in_order() {
    let mut rng = Rng(17);
    let (b, c, img_h, img_w) = (2i64, 3i64, 256i64, 320i64);
    let scales = [0.25, 0.125, 0.0625, 0.03125];
    let features = pyramid(&mut rng, b, c, img_h, img_w, Kind::Double);
    let boxes: Vec<[f64; 5]> = (0..60)
        .map(|i| {
            let side = rng.uniform(8f64.ln(), 700f64.ln()).exp();
            let aspect = rng.uniform(0.5, 2.0);
            let (cx, cy) = (rng.uniform(0.0, img_w as f64), rng.uniform(0.0, img_h as f64));
            let (bw, bh) = (side * aspect.sqrt(), side / aspect.sqrt());
            [(i % b) as f64, cx - bw / 2.0, cy - bh / 2.0, cx + bw / 2.0, cy + bh / 2.0]
        })
        .collect();
    let rois = rois_tensor(&boxes, Kind::Double);
    let levels =
        roi_levels(&boxes.iter().map(|r| [r[1], r[2], r[3], r[4]].map(|v| v as f32)).collect::<Vec<_>>(), 2, 5);
    for l in 2..=5 {
        assert!(levels.contains(&l), "level {l} is used: {levels:?}");
    }
    for sampling_ratio in [2, 0] {
        let leaves: Vec<Tensor> = features.iter().map(|f| f.copy().set_requires_grad(true)).collect();
        let out = multi_scale_roi_align(&leaves, &rois, &scales, (7, 7), sampling_ratio);
        assert_eq!(out.size(), [60, c, 7, 7]);
        let mut worst = 0.0f64;
        for (i, r) in boxes.iter().enumerate() {
            let l = (levels[i] - 2) as usize;
            let single =
                roi_align(&features[l], &rois_tensor(&[*r], Kind::Double), (7, 7), scales[l], sampling_ratio, false);
            worst = worst.max(max_abs_diff(&to_vec(&out.get(i as i64)), &to_vec(&single.get(0))));
        }
        eprintln!("multi-scale vs single level, sampling {sampling_ratio}: max |diff| {worst:.3e}");
        assert!(worst < 1e-12, "sampling {sampling_ratio}: multi-scale differs from its level by {worst}");
        // Whole-level batches give the same (in order) as well, and gradients reach every level.
        out.sum(Kind::Double).backward();
        for (l, leaf) in leaves.iter().enumerate() {
            let picked: Vec<usize> = (0..boxes.len()).filter(|&i| levels[i] == l as i64 + 2).collect();
            let sub: Vec<[f64; 5]> = picked.iter().map(|&i| boxes[i]).collect();
            let single =
                roi_align(&features[l], &rois_tensor(&sub, Kind::Double), (7, 7), scales[l], sampling_ratio, false);
            let idx = Tensor::from_slice(&picked.iter().map(|&i| i as i64).collect::<Vec<_>>());
            assert!(max_abs_diff(&to_vec(&out.index_select(0, &idx)), &to_vec(&single)) < 1e-12);
            assert!(leaf.grad().abs().sum(Kind::Double).double_value(&[]) > 0.0, "level {l} gets a gradient");
        }
    }
    // One level: every RoI goes to it.
    let one = multi_scale_roi_align(&features[1..2], &rois, &scales[1..2], (4, 4), 2);
    let direct = roi_align(&features[1], &rois, (4, 4), scales[1], 2, false);
    assert!(max_abs_diff(&to_vec(&one), &to_vec(&direct)) < 1e-12);
}

/// Forward + backward time of 512 (and 1024) RoIs at 7x7, sampling 2, on the P2..P5 pyramid of
/// two 512x512 images with 256 channels (float32, CPU). Run with `--ignored --nocapture`.
#[test]
#[ignore = "timing; run explicitly"]
fn multi_scale_roi_align_timing_on_a_512_pyramid() {
    let mut rng = Rng(1);
    let scales = [0.25, 0.125, 0.0625, 0.03125];
    let features: Vec<Tensor> = (2..=5)
        .map(|l| Tensor::randn([2, 256, 512 >> l, 512 >> l], (Kind::Float, Device::Cpu)).set_requires_grad(true))
        .collect();
    for n in [512usize, 1024] {
        let boxes: Vec<[f64; 5]> = (0..n)
            .map(|i| {
                let (bw, bh) = (rng.uniform(16f64.ln(), 512f64.ln()).exp(), rng.uniform(16f64.ln(), 512f64.ln()).exp());
                let (x, y) = (rng.uniform(0.0, 512.0 - bw.min(511.0)), rng.uniform(0.0, 512.0 - bh.min(511.0)));
                [(i % 2) as f64, x, y, x + bw, y + bh]
            })
            .collect();
        let rois = rois_tensor(&boxes, Kind::Float);
        let upstream = Tensor::randn([n as i64, 256, 7, 7], (Kind::Float, Device::Cpu));
        let mut best = (f64::MAX, f64::MAX);
        for _ in 0..5 {
            let t0 = std::time::Instant::now();
            let out = multi_scale_roi_align(&features, &rois, &scales, (7, 7), 2);
            let fwd = t0.elapsed().as_secs_f64();
            (out * &upstream).sum(Kind::Float).backward();
            let total = t0.elapsed().as_secs_f64();
            best = (best.0.min(fwd), best.1.min(total));
            for f in &features {
                let _ = f.grad().zero_();
            }
        }
        eprintln!(
            "{n} RoIs, 7x7, sampling 2, P2..P5 of 2x256x512x512 (float32, {} threads): forward {:.1} ms, forward+backward {:.1} ms",
            detnas_train::tch::get_num_threads(),
            best.0 * 1e3,
            best.1 * 1e3
        );
    }
}
