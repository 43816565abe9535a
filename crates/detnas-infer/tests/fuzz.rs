//! Robustness of the parsers of `detnas-infer` on damaged files ([`detnas_core::mutate`]): ONNX
//! models (protobuf decoding, the SDK's metadata checks, external data references, and the pure
//! Rust passes that take a user's model: fp16 conversion and QDQ quantization) and latency tables.
//! No ONNX Runtime session is made: every case stays in Rust. Every case must end in `Ok` or a
//! typed error, naming the file where the API has one, within its heap budget; `tools/fuzz.sh`
//! runs many more cases than the suite.
#![cfg(feature = "latency")]

use detnas_core::detector::HeadConv;
use detnas_core::mutate::{AllocBudget, Case, Outcome, Settings, TrackingAlloc, fuzz};
use detnas_core::rng::Rng;
use detnas_core::search::genome::GeneSpace;
use detnas_core::space::arch::Arch;
use detnas_core::space::shape::InputSize;
use detnas_core::space::{ChannelShuffle, Choice, SearchSpace, StageSpec};
use detnas_infer::contract::check_metadata;
use detnas_infer::latency::table::table_parts;
use detnas_infer::latency::table::{CalibrationPoint, Drift};
use detnas_infer::latency::{Correction, LatencyTable, TABLE_FORMAT, TABLE_VERSION};
use detnas_infer::latency::{base_config, random_detector, sample_genomes};
use detnas_infer::{Fingerprint, Latency, TimingPlan};
use detnas_onnx::graph::encode;
use detnas_onnx::onnx_protobuf::Message;
use detnas_onnx::{ModelProto, ProtoEnum as _};
use std::collections::BTreeMap;
use std::path::Path;

#[global_allocator]
static ALLOC: TrackingAlloc = TrackingAlloc;

/// A model is held parsed, converted (fp16) and quantized at once, each a copy of its weights.
/// Fixed part: `protobuf` 3.4 reserves a packed field's declared length, up to 10M elements (80 MB
/// of `int64` dims), before it checks the length against the enclosing message, then fails the
/// parse (seed 12345, case 8153: a 51 kB model held 80.4 MB); that is the most it holds at once.
const MODEL_BUDGET: AllocBudget = AllocBudget { fixed: 96 << 20, per_input_byte: 24 };

/// A table is held as text, as a JSON tree and as the typed table (with a copy for its hash).
const TABLE_BUDGET: AllocBudget = AllocBudget { fixed: 16 << 20, per_input_byte: 256 };

/// 4 layers of narrow blocks: an exported detector of a few hundred kilobytes.
fn tiny_space() -> SearchSpace {
    let mut s = SearchSpace::detnas_300m();
    s.name = "tiny".into();
    s.stages = [32, 48, 64, 96].map(|channels| StageSpec { blocks: 1, channels }).to_vec();
    s
}

fn tiny_genes() -> GeneSpace {
    GeneSpace {
        fpn_channels: vec![16, 24],
        head_channels: vec![16],
        head_convs: vec![1, 2],
        head_conv: vec![HeadConv::Separable, HeadConv::Dense],
        input: vec![InputSize::new(64, 64), InputSize::new(96, 64)],
    }
}

/// Exported models as users get them: float, with its weights beside it (external data), INT8
/// (QDQ) and fp16.
fn model_corpus() -> Vec<Vec<u8>> {
    let space = tiny_space();
    let arch =
        Arch::new(vec![Choice::Shufflenet3x3, Choice::Xception3x3, Choice::Shufflenet7x7, Choice::Shufflenet5x5]);
    let mut cfg = base_config(2, ChannelShuffle::EvenOdd);
    cfg.category_ids = vec![1, 5];
    (cfg.input, cfg.fpn_channels, cfg.head_channels, cfg.head_convs) = (InputSize::new(64, 64), 16, 16, 1);
    let bytes = random_detector(&space, &arch, &cfg, 3, Default::default(), Default::default()).unwrap();
    let model = ModelProto::parse_from_bytes(&bytes).unwrap();
    let mut external = model.clone();
    detnas_onnx::external::externalize(&mut external, "model.onnx.data", 256);
    let int8 = detnas_onnx::quantize::quantize_for_timing(&model, true).unwrap();
    let fp16 = detnas_onnx::half::to_fp16(&model).unwrap();
    vec![bytes, encode(&external).unwrap(), encode(&int8).unwrap(), encode(&fp16).unwrap()]
}

/// Edits of a parsed model's graph that byte mutations of a protobuf rarely make: a node without
/// outputs or inputs or with another operator, an initializer with edge dimensions, another element
/// type, truncated data or external data out of range. Drawn from `rng`; returns what was done.
fn edit_graph(model: &mut ModelProto, rng: &mut Rng) -> String {
    use detnas_onnx::onnx_protobuf::StringStringEntryProto;
    use detnas_onnx::onnx_protobuf::tensor_proto::DataLocation;
    let g = model.graph.mut_or_insert_default();
    let (nodes, inits) = (g.node.len() as u64, g.initializer.len() as u64);
    if rng.below(2) == 0 && nodes > 0 {
        let n = &mut g.node[rng.below(nodes) as usize];
        match rng.below(4) {
            0 => n.output.clear(),
            1 => n.input.truncate(rng.below(2) as usize),
            2 => n.op_type = rng.pick(&["Conv", "Relu", "Resize", "Cast"]).to_string(),
            _ => n.input.push(n.output.first().cloned().unwrap_or_default()),
        }
        format!("node `{}` ({}): edited", n.name, n.op_type)
    } else if inits > 0 {
        let t = &mut g.initializer[rng.below(inits) as usize];
        match rng.below(5) {
            0 if !t.dims.is_empty() => {
                let at = rng.below(t.dims.len() as u64) as usize;
                t.dims[at] = *rng.pick(&[-1, 0, i64::MAX, i64::MIN, 1 << 31, 1 << 40]);
            }
            1 => t.dims.push(*rng.pick(&[0, -1, 1 << 40])),
            2 => t.data_type = rng.below(17) as i32,
            3 => t.raw_data.truncate(rng.below(t.raw_data.len() as u64 + 1) as usize),
            _ => {
                let entry = |k: &str, v: &str| {
                    let mut e = StringStringEntryProto::new();
                    (e.key, e.value) = (k.into(), v.into());
                    e
                };
                t.data_location = DataLocation::EXTERNAL.into();
                let at = rng.pick(&["18446744073709551615", "-1", "99999999999"]);
                t.external_data = vec![entry("location", "../../w.data"), entry("offset", at), entry("length", at)];
            }
        }
        format!("initializer `{}`: edited to dims {:?}, type {}", t.name, t.dims, t.data_type)
    } else {
        "nothing to edit".into()
    }
}

#[test]
fn fuzz_onnx_model() {
    let name = "fuzz.onnx";
    let check = move |case: &Case| {
        let Ok(mut model) = ModelProto::parse_from_bytes(&case.bytes) else { return Ok(Outcome::Rejected) };
        // Every other mutated case also gets 1 to 3 graph edits (drawn from its index).
        if !case.original && case.index.is_multiple_of(2) {
            let mut rng = Rng::seed(case.index as u64);
            for _ in 0..=rng.below(3) {
                edit_graph(&mut model, &mut rng);
            }
        }
        let metadata: Vec<(String, String)> =
            model.metadata_props.iter().map(|e| (e.key.clone(), e.value.clone())).collect();
        let checked = check_metadata(&metadata, name);
        if let Err(e) = &checked
            && !e.to_string().contains(name)
        {
            return Err(format!("metadata error not naming the model: {e}"));
        }
        if let (Ok(config), Ok(recorded)) = (&checked, detnas_infer::quantize::model_config(&model))
            && *config != recorded
        {
            return Err("the SDK and the quantizer read different configurations".into());
        }
        for file in detnas_onnx::external::external_files(&model) {
            let _ = file.leaves_model_folder();
        }
        let _ = detnas_onnx::quantize::conv_sites(&model);
        if let Ok(half) = detnas_onnx::half::to_fp16(&model) {
            encode(&half).map_err(|e| format!("a converted model does not encode: {e}"))?;
        }
        if let Ok(int8) = detnas_onnx::quantize::quantize_for_timing(&model, true) {
            encode(&int8).map_err(|e| format!("a quantized model does not encode: {e}"))?;
        }
        // Element types of the declared inputs are read as enums, as `detnas inspect` does.
        for input in model.graph.input.iter() {
            if let Some(detnas_onnx::onnx_protobuf::type_proto::Value::TensorType(t)) = &input.type_.value {
                let _ = detnas_onnx::onnx_protobuf::tensor_proto::DataType::from_i32(t.elem_type);
            }
        }
        Ok(if checked.is_ok() { Outcome::Accepted } else { Outcome::Rejected })
    };
    let summary = fuzz("onnx_model", model_corpus(), MODEL_BUDGET, &Settings::from_env(300), check);
    assert!(summary.reached_both_outcomes(), "{summary}");
}

/// A table over [`tiny_genes`] of the tiny space, with every part it needs at both resolutions
/// (made-up times: no measurement), a correction and calibration points, as `save` writes it.
fn latency_table(dir: &Path) -> Vec<u8> {
    let space = tiny_space();
    let genes = tiny_genes();
    let base = base_config(1, ChannelShuffle::EvenOdd);
    let mut entries = BTreeMap::new();
    for (i, &input) in genes.input.iter().enumerate() {
        let cfg = detnas_core::detector::DetectorConfig { input, ..base.clone() };
        let parts = table_parts(&space, &genes, &cfg, Default::default()).unwrap();
        let at = parts.keys().enumerate().map(|(k, key)| {
            let ms = 0.05 * (k + 1) as f64 * (i + 1) as f64;
            let latency = Latency {
                iterations: 10,
                mean_ms: ms,
                p50_ms: ms,
                p90_ms: ms * 1.1,
                p99_ms: ms * 1.3,
                min_ms: ms * 0.9,
                repetitions_ms: vec![ms * 0.95, ms, ms * 1.05],
            };
            (key.clone(), latency)
        });
        entries.insert(input.to_string(), at.collect());
    }
    let fingerprint = Fingerprint {
        device: "cpu".into(),
        cpu: "Fuzz CPU @ 2.0GHz".into(),
        logical_cores: 2,
        isa: vec!["avx2".into(), "fma".into()],
        gpu: None,
        onnxruntime: "1.31.1".into(),
        provider: "CPUExecutionProvider".into(),
        threads: Some(1),
        precision: "fp32".into(),
    };
    let calibration = sample_genomes(&space, &genes, 3, 5)
        .iter()
        .map(|g| CalibrationPoint { genome: g.to_string(), additive_ms: 2.5, measured_ms: 3.0 })
        .collect();
    let mut table = LatencyTable {
        format: TABLE_FORMAT.into(),
        version: TABLE_VERSION,
        hash: String::new(),
        space: space.name.clone(),
        classes: 1,
        shuffle: ChannelShuffle::EvenOdd,
        fingerprint,
        genes,
        timing: TimingPlan::iterations(1, 10),
        repetitions: 3,
        detections: Default::default(),
        layout: Default::default(),
        entries,
        drift: Some(Drift {
            reference: "stem 64x64".into(),
            times_ms: vec![0.1, 0.11, 0.1],
            drift_pct: 10.0,
            tolerance_pct: 20.0,
            remeasured: 0,
            disturbed: 0,
        }),
        calibration_drift: None,
        correction: Some(Correction { scale: 1.1, offset_ms: -0.2, form: Default::default() }),
        calibration_seed: 5,
        calibration,
        adapted: None,
        source: String::new(),
    };
    let path = dir.join("corpus.json");
    table.save(&path).unwrap();
    std::fs::read(&path).unwrap()
}

#[test]
fn fuzz_latency_table() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = vec![latency_table(dir.path())];
    let path = dir.path().join("lut.json");
    let space = tiny_space();
    let check = move |case: &Case| {
        std::fs::write(&path, &case.bytes).unwrap();
        // Every other case whose content still makes a table gets its hash recomputed, so that
        // content the hash does not protect (a table written by another version) is checked too.
        if case.index % 2 == 1
            && let Ok(mut table) = serde_json::from_slice::<LatencyTable>(&case.bytes)
        {
            table.save(&path).unwrap();
        }
        let table = match LatencyTable::load(&path) {
            Ok(table) => table,
            Err(e) if e.to_string().contains(&path.display().to_string()) => return Ok(Outcome::Rejected),
            Err(e) => return Err(format!("error not naming the table: {e}")),
        };
        // What `latency predict` and `latency check` do with a table: genomes of its gene space.
        let base = base_config(table.classes, table.shuffle);
        for genome in sample_genomes(&space, &table.genes, 3, case.index as u64) {
            let Ok(cfg) = genome.detector_config(&base) else { continue };
            if let Err(e) = table.predict(&space, &genome.arch, &cfg)
                && !e.to_string().contains(&path.display().to_string())
            {
                return Err(format!("prediction error not naming the table: {e}"));
            }
        }
        Ok(Outcome::Accepted)
    };
    let summary = fuzz("latency_table", corpus, TABLE_BUDGET, &Settings::from_env(300), check);
    assert!(summary.reached_both_outcomes(), "{summary}");
}

/// Regressions of `fuzz_latency_table` (seed 0), in tables whose hash was recomputed: an empty gene
/// list (case 47) made `latency check` draw from nothing (`Rng::below(0)`), an input of huge sides
/// (case 1809) overflowed while the gene space was validated; and a class count past
/// `MAX_CLASSES` would have the predictor make that many class names. Each is refused on load,
/// naming the file.
#[test]
fn tables_with_unusable_genes_or_classes_are_refused_on_load() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = latency_table(dir.path());
    let path = dir.path().join("edited.json");
    type Edit = fn(&mut LatencyTable);
    let edits: [(&str, Edit); 4] = [
        ("`head_convs` has no value", |t| t.genes.head_convs.clear()),
        ("18446744073709551615x64", |t| t.genes.input.push(InputSize::new(u64::MAX, 64))),
        ("0 classes", |t| t.classes = 0),
        ("99999999999 classes", |t| t.classes = 99_999_999_999),
    ];
    for (expected, edit) in edits {
        let mut table: LatencyTable = serde_json::from_slice(&corpus).unwrap();
        edit(&mut table);
        table.save(&path).unwrap();
        let e = LatencyTable::load(&path).unwrap_err().to_string();
        assert!(e.contains(expected) && e.contains(&path.display().to_string()), "{expected}: {e}");
    }
    std::fs::write(&path, &corpus).unwrap();
    assert!(LatencyTable::load(&path).is_ok(), "the unedited table loads");
}
