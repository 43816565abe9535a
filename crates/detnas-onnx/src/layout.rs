//! The physical channel order of the backbone's tensors, and the shuffle-free plan.
//!
//! A ShuffleNetV2 block splits its input into a passthrough half and a processed half by a channel
//! shuffle (even / odd channels, or the half-interleave), which the default export writes as
//! strided `Slice`s or `Gather`s. Those are cheap in NCHW but per-element copies in the NHWC layout
//! ONNX Runtime uses for integer convolutions. Channel order inside the network is ours to choose:
//! a convolution reading a tensor can take its input channels in any order (its weight's input
//! dimension permuted), and one writing a tensor can emit them in any order (its output dimension,
//! bias and folded BN permuted; a depthwise conv keeps the order it reads). [`LayoutPlan`] chooses
//! an order for every tensor such that every stride-1 block reads its processed half as one
//! contiguous range, and its output is a `Concat` of a few contiguous ranges of its input and the
//! branch output: the exported graph has one `Split` and one `Concat` per block and no strided
//! copy. The FPN's lateral convs and the next stage's first block absorb each stage's final order.
//!
//! How the order is chosen. Within a stage every channel has a *fate*: the number of blocks it
//! still passes through untouched before a block processes it (0: processed by the next block),
//! or [`SURVIVES`] when it leaves the stage untouched. Channels with the same fate are
//! interchangeable, so the plan only orders fates. Every block input is a "V": fates
//! non-increasing, then non-decreasing, so the fate-0 channels (the processed half) are one
//! contiguous range at the bottom. A block's output keeps the V: the passthrough ranges in
//! decreasing fate (the two arms' ranges of one fate side by side; fates drop by one), then the
//! branch output, which its last conv emits in increasing fate. A stride-2 block's two branches
//! emit decreasing and increasing fates. A block with k distinct passthrough fates splits its input
//! into at most 2k + 1 ranges.

use detnas_core::space::{ChannelShuffle, LayerSpec, SearchSpace};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The fate of a channel that leaves its stage without being processed.
pub const SURVIVES: usize = usize::MAX;

/// How the backbone's channel shuffle is written in an exported graph.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// The shuffle as the trained network computes it: strided `Slice`s (even / odd) or `Gather`s
    /// (half-interleave) before every stride-1 block.
    #[default]
    Shuffle,
    /// The shuffle folded into the convolutions' weights ([`LayoutPlan`]): contiguous `Split`s
    /// and `Concat`s only. The outputs equal [`Layout::Shuffle`]'s within float rounding.
    ShuffleFree,
}

impl Layout {
    /// Every layout, in listing order.
    pub const ALL: [Layout; 2] = [Layout::Shuffle, Layout::ShuffleFree];

    /// Stable name used in metadata, latency tables and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Layout::Shuffle => "shuffle",
            Layout::ShuffleFree => "shuffle-free",
        }
    }

    /// Parses [`Layout::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.name() == name)
    }

    /// Whether this is the default (nothing recorded for it, so older files keep their bytes).
    pub fn is_default(&self) -> bool {
        *self == Layout::Shuffle
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Physical channel order of a tensor: entry `p` is the logical channel (as the trained network
/// numbers it) stored at physical position `p`.
pub type Order = Vec<usize>;

/// What one entry of a stride-1 block's output `Concat` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Output `i` of the block's input `Split`.
    Piece(usize),
    /// The processed branch's output.
    Branch,
}

/// The plan of one backbone block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockLayout {
    /// A stride-2 block: both branches read the whole input.
    Stride2 {
        /// Order of the block's input.
        input: Order,
        /// Order in which the projection branch's last conv emits its channels (its own
        /// numbering, `0..in_channels`).
        proj_out: Order,
        /// Order in which the main branch's last conv emits its channels (its own numbering).
        main_out: Order,
        /// Order of the block's output (`Concat(proj, main)`).
        output: Order,
    },
    /// A stride-1 block: `Split` the input, the processed piece through the branch, `Concat`.
    Stride1 {
        /// Order of the block's input.
        input: Order,
        /// Sizes of the input's `Split`, in physical order.
        split: Vec<usize>,
        /// The `Split` output the branch reads.
        process: usize,
        /// The branch's input channels (its own numbering, `0..in/2`) in the order of `process`.
        branch_in: Order,
        /// Order in which the branch's last conv emits its channels (its own numbering).
        branch_out: Order,
        /// The output `Concat`'s inputs.
        concat: Vec<Source>,
        /// Order of the block's output.
        output: Order,
    },
}

impl BlockLayout {
    /// Order of the block's output.
    pub fn output(&self) -> &Order {
        match self {
            BlockLayout::Stride2 { output, .. } | BlockLayout::Stride1 { output, .. } => output,
        }
    }

    /// Order of the block's input.
    pub fn input(&self) -> &Order {
        match self {
            BlockLayout::Stride2 { input, .. } | BlockLayout::Stride1 { input, .. } => input,
        }
    }
}

/// The shuffle-free plan of a whole backbone: one [`BlockLayout`] per layer of the space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayoutPlan {
    /// One entry per layer ([`SearchSpace::layers`]).
    pub blocks: Vec<BlockLayout>,
}

/// The split's positions (identity half first) and, per input channel, its position in the split.
struct Split {
    half: usize,
    /// `position[l]`: where input channel `l` goes in the split (`< half`: passthrough, and then
    /// also its index in the block's output).
    position: Vec<usize>,
}

impl Split {
    fn new(shuffle: ChannelShuffle, channels: usize) -> Self {
        let indices = shuffle.split_indices(channels);
        let mut position = vec![0; channels];
        for (p, &l) in indices.iter().enumerate() {
            position[l] = p;
        }
        Split { half: channels / 2, position }
    }
}

fn later(fate: usize) -> usize {
    if fate == SURVIVES { SURVIVES } else { fate + 1 }
}

/// Sorts `channels` by `fate` (stable: equal fates keep their order), increasing or decreasing.
fn by_fate(channels: impl Iterator<Item = usize>, fate: impl Fn(usize) -> usize, increasing: bool) -> Order {
    let mut v: Order = channels.collect();
    if increasing {
        v.sort_by_key(|&c| fate(c));
    } else {
        v.sort_by_key(|&c| std::cmp::Reverse(fate(c)));
    }
    v
}

/// Maximal runs `(start, end)` of equal value in `values`.
fn runs(values: &[usize]) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for (p, v) in values.iter().enumerate() {
        match out.last_mut() {
            Some(r) if values[r.0] == *v => r.1 = p + 1,
            _ => out.push((p, p + 1)),
        }
    }
    out
}

impl LayoutPlan {
    /// The plan of `space`'s backbone with `shuffle` (the stem emits its channels in order).
    pub fn new(space: &SearchSpace, shuffle: ChannelShuffle) -> Self {
        let layers = space.layers();
        let mut blocks = Vec::with_capacity(layers.len());
        let mut order: Order = (0..space.stem_channels as usize).collect();
        let mut start = 0;
        for stage in &space.stages {
            let stage_layers = &layers[start..start + stage.blocks];
            start += stage.blocks;
            let fates = stage_fates(stage_layers, shuffle);
            for (i, layer) in stage_layers.iter().enumerate() {
                let block = if layer.stride == 2 {
                    plan_stride2(layer, order, &fates[i])
                } else {
                    plan_stride1(layer, shuffle, order, &fates[i - 1], &fates[i])
                };
                order = block.output().clone();
                blocks.push(block);
            }
        }
        LayoutPlan { blocks }
    }

    /// Order of the output of the last block of stage `stage` (what the FPN's lateral conv and
    /// the next stage read).
    pub fn stage_output(&self, space: &SearchSpace, stage: usize) -> &Order {
        let last: usize = space.stages[..=stage].iter().map(|s| s.blocks).sum::<usize>() - 1;
        self.blocks[last].output()
    }
}

/// For each block of a stage, the fate of each of its *output* channels (logical numbering):
/// entry `i` is what block `i + 1` does with them.
fn stage_fates(layers: &[LayerSpec], shuffle: ChannelShuffle) -> Vec<Vec<usize>> {
    let mut fates = vec![Vec::new(); layers.len()];
    for i in (0..layers.len()).rev() {
        let out = layers[i].out_channels as usize;
        fates[i] = match layers.get(i + 1) {
            None => vec![SURVIVES; out],
            Some(next) => {
                let split = Split::new(shuffle, next.in_channels as usize);
                let after = &fates[i + 1];
                (0..out)
                    .map(|l| if split.position[l] < split.half { later(after[split.position[l]]) } else { 0 })
                    .collect()
            }
        };
    }
    fates
}

/// A stride-2 block: the projection branch emits decreasing fates, the main branch increasing.
fn plan_stride2(layer: &LayerSpec, input: Order, out_fate: &[usize]) -> BlockLayout {
    let cin = layer.in_channels as usize;
    let cout = layer.out_channels as usize;
    let proj_out = by_fate(0..cin, |c| out_fate[c], false);
    let main_out = by_fate(0..cout - cin, |m| out_fate[cin + m], true);
    let output = proj_out.iter().copied().chain(main_out.iter().map(|m| cin + m)).collect();
    BlockLayout::Stride2 { input, proj_out, main_out, output }
}

/// A stride-1 block whose input `input` has the fates `in_fate` (logical numbering) and whose
/// output channels have `out_fate`.
fn plan_stride1(
    layer: &LayerSpec,
    shuffle: ChannelShuffle,
    input: Order,
    in_fate: &[usize],
    out_fate: &[usize],
) -> BlockLayout {
    let c = layer.in_channels as usize;
    let split = Split::new(shuffle, c);
    let physical: Vec<usize> = input.iter().map(|&l| in_fate[l]).collect();
    let fate_runs = runs(&physical);
    // The processed ranges (one, at the V's bottom) and the passthrough ranges by decreasing fate.
    let processed: Vec<(usize, usize)> = fate_runs.iter().copied().filter(|r| physical[r.0] == 0).collect();
    let mut kept: Vec<(usize, usize)> = fate_runs.iter().copied().filter(|r| physical[r.0] != 0).collect();
    kept.sort_by_key(|r| (std::cmp::Reverse(physical[r.0]), r.0));
    // Ranges adjacent in the input and in the output are one piece.
    let mut merged: Vec<(usize, usize)> = Vec::new();
    for r in kept {
        match merged.last_mut() {
            Some(m) if m.1 == r.0 => m.1 = r.1,
            _ => merged.push(r),
        }
    }
    let mut pieces: Vec<(usize, usize)> = merged.iter().chain(&processed).copied().collect();
    pieces.sort();
    let index = |r: &(usize, usize)| pieces.iter().position(|p| p == r).expect("a piece");
    let process: Vec<usize> = processed.iter().map(index).collect();
    assert_eq!(process.len(), 1, "layer {}: the processed half is not one range", layer.index);
    let (p0, p1) = processed[0];
    let branch_in: Order = input[p0..p1].iter().map(|&l| split.position[l] - split.half).collect();
    let branch_channels = layer.out_channels as usize - split.half;
    let branch_out = by_fate(0..branch_channels, |m| out_fate[split.half + m], true);
    let mut concat: Vec<Source> = merged.iter().map(|r| Source::Piece(index(r))).collect();
    concat.push(Source::Branch);
    let output = merged
        .iter()
        .flat_map(|&(a, b)| input[a..b].iter().map(|&l| split.position[l]))
        .chain(branch_out.iter().map(|m| split.half + m))
        .collect();
    BlockLayout::Stride1 {
        input,
        split: pieces.iter().map(|(a, b)| b - a).collect(),
        process: process[0],
        branch_in,
        branch_out,
        concat,
        output,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use detnas_core::space::{Choice, StageSpec};

    /// What a value is: input channel `l` of the block, or branch output channel `m`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Sym {
        Input(usize),
        Branch(usize),
    }

    /// Runs a stride-1 block's plan on symbols: the physical input holds `Input(l)` at the
    /// positions of `input`, and the branch emits `Branch(m)` in `branch_out`'s order. Returns the
    /// physical output and the branch's physical input.
    fn run(block: &BlockLayout) -> (Vec<Sym>, Vec<Sym>) {
        let BlockLayout::Stride1 { input, split, process, branch_out, concat, .. } = block else {
            panic!("a stride-1 block")
        };
        let x: Vec<Sym> = input.iter().map(|&l| Sym::Input(l)).collect();
        let mut pieces = Vec::new();
        let mut at = 0;
        for &n in split {
            pieces.push(x[at..at + n].to_vec());
            at += n;
        }
        assert_eq!(at, x.len(), "the split covers the input");
        let mut out = Vec::new();
        for s in concat {
            match s {
                Source::Piece(i) => out.extend_from_slice(&pieces[*i]),
                Source::Branch => out.extend(branch_out.iter().map(|&m| Sym::Branch(m))),
            }
        }
        (out, pieces[*process].clone())
    }

    /// Every block of `space`'s plan computes exactly the shuffled block: the branch reads the
    /// processed half (its channel `q` is input channel `split[half + q]`), output channel `i <
    /// half` is input channel `split[i]`, output `half + m` is branch output `m`, and the declared
    /// orders are what the graph makes.
    fn check(space: &SearchSpace, shuffle: ChannelShuffle) -> Vec<usize> {
        let plan = LayoutPlan::new(space, shuffle);
        let layers = space.layers();
        assert_eq!(plan.blocks.len(), layers.len());
        let mut pieces = Vec::new();
        for (i, (layer, block)) in layers.iter().zip(&plan.blocks).enumerate() {
            if i > 0 {
                assert_eq!(block.input(), plan.blocks[i - 1].output(), "layer {i} reads what {} wrote", i - 1);
            }
            let c = layer.in_channels as usize;
            let order = block.output();
            let mut sorted = order.clone();
            sorted.sort();
            assert_eq!(sorted, (0..layer.out_channels as usize).collect::<Vec<_>>(), "layer {i}: a permutation");
            let BlockLayout::Stride1 { split, branch_in, .. } = block else {
                let BlockLayout::Stride2 { proj_out, main_out, output, .. } = block else { unreachable!() };
                let expect: Order = proj_out.iter().copied().chain(main_out.iter().map(|m| c + m)).collect();
                assert_eq!(*output, expect);
                continue;
            };
            pieces.push(split.len());
            // k passthrough fates: 1..=(blocks left after this one), or surviving the stage
            let left = space.stages[layer.stage].blocks - 1 - layer.block;
            assert!(split.len() <= 2 * (left + 1) + 1, "layer {i}: {} pieces with {left} blocks left", split.len());
            let indices = shuffle.split_indices(c);
            let half = c / 2;
            let (out, branch) = run(block);
            let expect_branch: Vec<Sym> = branch_in.iter().map(|&q| Sym::Input(indices[half + q])).collect();
            assert_eq!(branch, expect_branch, "layer {i}: the branch reads the processed half");
            let mut seen: Vec<usize> = branch_in.clone();
            seen.sort();
            assert_eq!(seen, (0..half).collect::<Vec<_>>(), "layer {i}: the whole processed half");
            for (p, sym) in out.iter().enumerate() {
                let o = order[p];
                let expect = if o < half { Sym::Input(indices[o]) } else { Sym::Branch(o - half) };
                assert_eq!(*sym, expect, "layer {i}, physical output {p} (logical {o})");
            }
        }
        pieces
    }

    #[test]
    fn every_block_of_every_space_computes_the_shuffled_block() {
        for space in SearchSpace::all() {
            for shuffle in [ChannelShuffle::EvenOdd, ChannelShuffle::HalfInterleave] {
                let pieces = check(&space, shuffle);
                // the second block of a 4-block stage splits into 7 ranges at most (fates 1, 2,
                // surviving; the processed range)
                assert!(pieces.iter().all(|&p| p >= 3), "{} {shuffle:?}: {pieces:?}", space.name);
            }
        }
    }

    /// Four channels, two stride-1 blocks after a stride-2 block, even / odd: small enough to
    /// follow by hand.
    #[test]
    fn a_hand_checked_stage() {
        let space = SearchSpace {
            name: "tiny".into(),
            stem_channels: 2,
            stem_maxpool: false,
            stages: vec![StageSpec { blocks: 3, channels: 4 }],
            last_channels: 8,
            num_classes: 2,
            allowed: vec![Choice::Shufflenet3x3],
        };
        let plan = LayoutPlan::new(&space, ChannelShuffle::EvenOdd);
        // Block 2 (last): passthrough = even channels {0, 2}, processed = {1, 3}; everything it
        // keeps survives. Block 1: keeps {0, 2} -> outputs {0, 1}; of those block 2 keeps 0 and
        // processes 1: fates at block 1's input: 0 -> SURVIVES, 2 -> 1, odd -> 0. Block 1's
        // input is block 0's output: logical fates [S, 0, 1, 0]; block 0's projection (channels
        // 0, 1) emits decreasing fates [0 (S), 1 (0)], its main branch (output 2, 3) increasing
        // [3 - 2 = 1 (fate 0), 0 (fate 1)].
        let BlockLayout::Stride2 { proj_out, main_out, output, .. } = &plan.blocks[0] else { panic!() };
        assert_eq!(proj_out, &vec![0, 1]);
        assert_eq!(main_out, &vec![1, 0]);
        assert_eq!(output, &vec![0, 1, 3, 2]);
        // Block 1 input fates by position: [S, 0, 0, 1]: processed = positions 1..3 (logical 1, 3:
        // branch inputs 0, 1), passthrough pieces [0..1] (fate S) and [3..4] (fate 1).
        let BlockLayout::Stride1 { split, process, branch_in, concat, output, .. } = &plan.blocks[1] else { panic!() };
        assert_eq!(split, &vec![1, 2, 1]);
        assert_eq!(*process, 1);
        assert_eq!(branch_in, &vec![0, 1]);
        assert_eq!(concat, &vec![Source::Piece(0), Source::Piece(2), Source::Branch]);
        // passthrough logical 0 -> output 0, logical 2 -> output 1; block 2 keeps the branch's
        // output 2 (logical 2, survives) and processes 3 (fate 0): increasing fate emits 3 first.
        assert_eq!(output, &vec![0, 1, 3, 2]);
        check(&space, ChannelShuffle::EvenOdd);
        check(&space, ChannelShuffle::HalfInterleave);
    }
}
