//! Sub-graphs of a detector, for latency tables: the stem, one backbone block, the FPN, one head
//! tower layer, the predictors with post-processing. Each part is emitted by the same code as the
//! full model (the private `emit` module), with random weights whose activations stay of order one
//! ([`Weights::random_varied`], like trained weights: DetNAS's own initialisation shrinks them
//! layer by layer into denormal floats, which CPUs run several times slower), and takes float32
//! inputs of the exact shapes it has inside the full model at `cfg.input`.

use crate::emit::{Candidates, Emitter};
use crate::error::Result;
use crate::graph::{Dim, ElemType};
use crate::layout::Layout;
use crate::weights::{DetectionLoad, Weights};
use detnas_core::detector::contract::tensors;
use detnas_core::detector::plan::{ConvUnit, block_plan, fpn_plan, fpn_stage_indices, head_plan, stem_plan};
use detnas_core::detector::{DetectorConfig, HeadConv, LevelShape, all_anchors, pyramid_levels};
use detnas_core::space::arch::Arch;
use detnas_core::space::cost::{CostReport, cost};
use detnas_core::space::{Choice, SearchSpace};
use onnx_protobuf::ModelProto;

/// One part of a RetinaNet detector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// `images` `[1, 3, H, W]` -> in-graph normalisation -> stem conv.
    Stem,
    /// Backbone block `layer` (index into [`SearchSpace::layers`]) with `choice`, at its layer's
    /// input shape.
    Block {
        /// The layer.
        layer: usize,
        /// The block's choice.
        choice: Choice,
    },
    /// The FPN: C3..C5 -> P3..P7 with `channels` channels.
    Fpn {
        /// Output channels of every level.
        channels: u64,
    },
    /// One head tower layer, `cin -> cout` (dense 3x3, or depthwise 3x3 + pointwise 1x1; ReLU), on
    /// every pyramid level with shared weights. A tower of depth D is D of these per branch.
    HeadLayer {
        /// Input channels.
        cin: u64,
        /// Output channels.
        cout: u64,
        /// Dense or separable.
        conv: HeadConv,
    },
    /// Both predictors (classification and box regression, 3x3 from `cin` channels) on every
    /// level, then the post-processing (per-level top-k and decoding, threshold, NMS, top).
    Predictors {
        /// Input channels (the head tower's width).
        cin: u64,
    },
}

/// A part's model and its inputs (name and shape, in declaration order).
pub struct PartModel {
    /// The part's model (random weights; outputs with symbolic shapes).
    pub model: ModelProto,
    /// Name and shape of each input, in declaration order.
    pub inputs: Vec<(String, Vec<usize>)>,
}

fn fixed(shape: &[usize]) -> Vec<Dim> {
    shape.iter().map(|&d| Dim::Fixed(d as i64)).collect()
}

fn symbolic(rank: usize) -> Vec<Dim> {
    (0..rank).map(|i| Dim::Symbolic(format!("d{i}"))).collect()
}

fn params(units: &[&ConvUnit]) -> Vec<detnas_core::detector::plan::ParamSpec> {
    units.iter().flat_map(|u| u.params()).collect()
}

/// Inputs of a part: name and shape, in declaration order.
type PartInputs = Vec<(String, Vec<usize>)>;

/// A part's inputs (name and shape, in declaration order) and the conv units whose weights it
/// holds; `report` and `levels` are the feature shapes of the full detector. An error when a
/// block's layer is not in `space`.
fn part_plan(
    space: &SearchSpace,
    cfg: &DetectorConfig,
    part: &Part,
    report: &CostReport,
    levels: &[LevelShape],
) -> Result<(PartInputs, Vec<ConvUnit>)> {
    let level_shape = |c: u64, i: usize| vec![1, c as usize, levels[i].height, levels[i].width];
    Ok(match *part {
        Part::Stem => {
            let (h, w) = (cfg.input.height as usize, cfg.input.width as usize);
            (vec![(tensors::IMAGES.to_string(), vec![1, 3, h, w])], vec![stem_plan(space)])
        }
        Part::Block { layer, choice } => {
            let spec = space.layers().get(layer).copied().ok_or_else(|| {
                detnas_core::CoreError::BadConfig(format!("layer {layer} is not in space {}", space.name))
            })?;
            let (h, w) = report.layers[layer].in_hw;
            let plan = block_plan(&spec, choice);
            let shape = vec![1, spec.in_channels as usize, h as usize, w as usize];
            (vec![("x".into(), shape)], plan.proj.into_iter().chain(plan.main).collect())
        }
        Part::Fpn { channels } => {
            let cfg = DetectorConfig { fpn_channels: channels, ..cfg.clone() };
            let stages = fpn_stage_indices(space, cfg.kind());
            let in_ch: Vec<usize> = stages.iter().map(|&i| space.stages[i].channels as usize).collect();
            let fpn = fpn_plan(&in_ch, &cfg);
            let inputs = stages
                .iter()
                .map(|&i| {
                    let s = &report.stages[i];
                    (s.name.clone(), vec![1, s.channels as usize, s.height as usize, s.width as usize])
                })
                .collect();
            (inputs, fpn.inner.into_iter().chain(fpn.layer).chain(fpn.extra).collect())
        }
        Part::HeadLayer { cin, cout, conv } => {
            let cfg = DetectorConfig {
                fpn_channels: cin,
                head_channels: cout,
                head_convs: 1,
                head_conv: conv,
                ..cfg.clone()
            };
            let inputs = levels.iter().enumerate().map(|(i, l)| (l.name.clone(), level_shape(cin, i))).collect();
            (inputs, head_plan(&cfg).classification.tower.concat())
        }
        Part::Predictors { cin } => {
            let cfg = DetectorConfig { fpn_channels: cin, head_channels: cin, head_convs: 0, ..cfg.clone() };
            let head = head_plan(&cfg);
            let inputs = levels.iter().enumerate().map(|(i, l)| (l.name.clone(), level_shape(cin, i))).collect();
            (inputs, vec![head.classification.predictor, head.regression.predictor])
        }
    })
}

/// Emits the graph of `part` into `e` from its declared inputs `names` and its `units` (as
/// [`part_plan`] gives them); returns its outputs with their ranks.
fn emit_part(
    e: &mut Emitter<'_>,
    space: &SearchSpace,
    cfg: &DetectorConfig,
    part: &Part,
    units: &[ConvUnit],
    names: &[String],
    levels: &[LevelShape],
) -> Result<Vec<(String, usize)>> {
    Ok(match *part {
        Part::Stem => {
            let x = e.preprocess(&names[0], &cfg.preprocess)?;
            vec![(e.unit(&units[0], &x)?, 4)]
        }
        Part::Block { layer, choice } => {
            let spec = space.layers()[layer];
            vec![(e.block(&spec, choice, cfg.shuffle, &names[0])?, 4)]
        }
        Part::Fpn { channels } => {
            let cfg = DetectorConfig { fpn_channels: channels, ..cfg.clone() };
            let stages = fpn_stage_indices(space, cfg.kind());
            let in_ch: Vec<usize> = stages.iter().map(|&i| space.stages[i].channels as usize).collect();
            let pyramid = e.fpn(&fpn_plan(&in_ch, &cfg), names, levels, channels)?;
            pyramid.into_iter().map(|p| (p, 4)).collect()
        }
        Part::HeadLayer { .. } => names.iter().map(|x| e.chain(units, x).map(|y| (y, 4))).collect::<Result<_>>()?,
        Part::Predictors { .. } => {
            let anchors = all_anchors(levels, cfg);
            let mut candidates = Candidates::default();
            for (level, x) in levels.iter().zip(names) {
                let cls = e.unit(&units[0], x)?;
                let reg = e.unit(&units[1], x)?;
                candidates.add_level(e, (&cls, &reg), level, &anchors, cfg)?;
            }
            let (boxes, scores, labels) = candidates.finish(e, cfg)?;
            vec![(boxes, 2), (scores, 1), (labels, 1)]
        }
    })
}

/// Exports `part` of a detector on `space` configured by `cfg` (its input size, classes, anchors,
/// thresholds and shuffle; the part's own widths come from `part`), with weights drawn from `seed`
/// and, for the predictors, post-processing that handles `load`'s detections. A block part with
/// [`Layout::ShuffleFree`] is laid out as it is in a shuffle-free model.
pub fn export_part(
    space: &SearchSpace,
    cfg: &DetectorConfig,
    part: &Part,
    seed: u64,
    load: DetectionLoad,
    layout: Layout,
) -> Result<PartModel> {
    cfg.validate()?;
    // Feature shapes do not depend on the choices: any path gives them.
    let arch = Arch::uniform(space, space.allowed[0]);
    let report = cost(space, &arch, cfg.input)?;
    let levels = pyramid_levels(space, &arch, cfg)?;
    let (inputs, units) = part_plan(space, cfg, part, &report, &levels)?;
    let weights = Weights::random_varied(&params(&units.iter().collect::<Vec<_>>()), seed).with_detections(load);
    let mut e = Emitter::new("detnas_part", &weights, cfg.bn_eps);
    e.plan = crate::export::plan_of(space, cfg, layout);
    let mut names = Vec::new();
    for (name, shape) in &inputs {
        names.push(e.g.input(name, ElemType::F32, &fixed(shape))?);
    }
    let outputs = emit_part(&mut e, space, cfg, part, &units, &names, &levels)?;
    for (i, (value, rank)) in outputs.iter().enumerate() {
        let ty = if matches!(part, Part::Predictors { .. }) && i == 2 { ElemType::I64 } else { ElemType::F32 };
        e.g.output(value, ty, &symbolic(*rank))?;
    }
    Ok(PartModel { model: e.g.build(), inputs })
}

#[cfg(test)]
mod tests {
    use super::*;
    use detnas_core::InputSize;

    #[test]
    fn every_part_exports_with_the_shapes_of_the_full_model() {
        let space = SearchSpace::detnas_300m();
        let cfg = DetectorConfig { input: InputSize::new(128, 128), ..Default::default() };
        let parts = [
            Part::Stem,
            Part::Block { layer: 0, choice: Choice::Xception3x3 },
            Part::Block { layer: 5, choice: Choice::Shufflenet7x7 },
            Part::Fpn { channels: 64 },
            Part::HeadLayer { cin: 64, cout: 96, conv: HeadConv::Separable },
            Part::HeadLayer { cin: 96, cout: 96, conv: HeadConv::Dense },
            Part::Predictors { cin: 96 },
        ];
        for part in parts {
            let m = export_part(&space, &cfg, &part, 0, DetectionLoad::None, Layout::Shuffle).unwrap();
            assert!(m.model.graph.node.len() >= 2, "{part:?}");
            assert_eq!(m.inputs.len(), m.model.graph.input.len(), "{part:?}");
        }
        let block = export_part(
            &space,
            &cfg,
            &Part::Block { layer: 5, choice: Choice::Shufflenet7x7 },
            0,
            DetectionLoad::None,
            Layout::Shuffle,
        )
        .unwrap();
        // layer 5: second block of stage 2, 160 channels at 128 / 8 = 16
        assert_eq!(block.inputs[0].1, vec![1, 160, 16, 16]);
        let head = export_part(
            &space,
            &cfg,
            &Part::HeadLayer { cin: 64, cout: 96, conv: HeadConv::Dense },
            0,
            DetectionLoad::None,
            Layout::Shuffle,
        )
        .unwrap();
        let shapes: Vec<Vec<usize>> = head.inputs.iter().map(|(_, s)| s.clone()).collect();
        assert_eq!(
            shapes,
            vec![vec![1, 64, 16, 16], vec![1, 64, 8, 8], vec![1, 64, 4, 4], vec![1, 64, 2, 2], vec![1, 64, 1, 1]]
        );
        assert_eq!(head.model.graph.output.len(), 5);
    }

    #[test]
    fn a_shuffle_free_block_part_is_laid_out_as_in_the_full_model() {
        let space = SearchSpace::detnas_300m();
        let cfg = DetectorConfig { input: InputSize::new(128, 128), ..Default::default() };
        let ops = |layer: usize, layout: Layout| -> Vec<String> {
            let part = Part::Block { layer, choice: Choice::Shufflenet3x3 };
            let m = export_part(&space, &cfg, &part, 0, DetectionLoad::None, layout).unwrap();
            m.model.graph.node.iter().map(|n| n.op_type.clone()).collect()
        };
        let plan = crate::layout::LayoutPlan::new(&space, cfg.shuffle);
        // layer 9: the second block of the 8-block stage
        let crate::layout::BlockLayout::Stride1 { split, .. } = &plan.blocks[9] else { panic!("stride 1") };
        let free = ops(9, Layout::ShuffleFree);
        assert_eq!(free.iter().filter(|o| *o == "Split").count(), 1);
        assert!(!free.contains(&"Slice".to_string()));
        assert!(split.len() > 2, "{split:?}");
        let shuffled = ops(9, Layout::Shuffle);
        assert_eq!(shuffled.iter().filter(|o| *o == "Slice").count(), 2);
        // stride-2 blocks have no split in either layout
        assert!(!ops(8, Layout::ShuffleFree).iter().any(|o| o == "Split" || o == "Slice"));
    }
}
