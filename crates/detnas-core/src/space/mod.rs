//! Search spaces as data: the three DetNAS spaces and the four ShuffleNetV2 reference nets.
//!
//! A space is a stem (3x3 stride-2 conv, optionally followed by a 3x3 stride-2 max-pool), a list of
//! stages whose first block has stride 2, and the classification head (1x1 conv + FC) used for
//! ImageNet pretraining. Every block ("layer") takes one [`Choice`].
//!
//! The first stage of the pipeline: the space ([`SearchSpace`]), its architectures ([`arch`]),
//! their exact cost ([`cost`], [`shape`]) and path samplers ([`sample`]).

pub mod arch;
pub mod cost;
pub mod sample;
pub mod shape;

use crate::error::{CoreError, Result};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The block chosen at one layer. The discriminant is the integer used in architecture encodings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Choice {
    /// pw1x1 -> dw3x3 -> pw1x1
    Shufflenet3x3 = 0,
    /// pw1x1 -> dw5x5 -> pw1x1
    Shufflenet5x5 = 1,
    /// pw1x1 -> dw7x7 -> pw1x1
    Shufflenet7x7 = 2,
    /// 3 x (dw3x3 -> pw1x1)
    Xception3x3 = 3,
}

impl Choice {
    /// All four choices in encoding order.
    pub const ALL: [Choice; 4] =
        [Choice::Shufflenet3x3, Choice::Shufflenet5x5, Choice::Shufflenet7x7, Choice::Xception3x3];

    /// The choice encoded by `v`, if any.
    pub fn from_index(v: u8) -> Option<Choice> {
        Self::ALL.get(v as usize).copied()
    }

    /// The integer of this choice in architecture encodings.
    pub fn index(self) -> u8 {
        self as u8
    }

    /// Depthwise kernel size (also the kernel of the stride-2 projection branch).
    pub fn kernel(self) -> u64 {
        match self {
            Choice::Shufflenet3x3 | Choice::Xception3x3 => 3,
            Choice::Shufflenet5x5 => 5,
            Choice::Shufflenet7x7 => 7,
        }
    }

    /// Name used in logs and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Choice::Shufflenet3x3 => "shufflenet_3x3",
            Choice::Shufflenet5x5 => "shufflenet_5x5",
            Choice::Shufflenet7x7 => "shufflenet_7x7",
            Choice::Xception3x3 => "xception_3x3",
        }
    }
}

impl fmt::Display for Choice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a stride-1 block splits its input into the identity half and the processed half.
/// The two variants are incompatible: weights trained with one only work with that one, so the
/// variant is recorded in checkpoints and exported models.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChannelShuffle {
    /// `x_proj = x[:, 0::2]`, `x_main = x[:, 1::2]` (released single-path models; the default).
    #[default]
    EvenOdd,
    /// View `(B, 2, C/2, H, W)`, transpose to `(B, C/2, 2, H, W)`, flatten; first half is `x_proj`.
    HalfInterleave,
}

impl ChannelShuffle {
    /// Stable name used in metadata and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ChannelShuffle::EvenOdd => "even-odd",
            ChannelShuffle::HalfInterleave => "half-interleave",
        }
    }

    /// Parses [`ChannelShuffle::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        [ChannelShuffle::EvenOdd, ChannelShuffle::HalfInterleave].into_iter().find(|v| v.name() == name)
    }

    /// For each output channel of the split, the input channel it reads: the first `C/2` entries are
    /// the identity half, the last `C/2` the processed half.
    pub fn split_indices(self, channels: usize) -> Vec<usize> {
        let half = channels / 2;
        match self {
            ChannelShuffle::EvenOdd => (0..half).map(|i| 2 * i).chain((0..half).map(|i| 2 * i + 1)).collect(),
            ChannelShuffle::HalfInterleave => {
                // flattened (C/2, 2) of a transposed (2, C/2) view: position p reads channel
                // (p % 2) * C/2 + p / 2.
                (0..channels).map(|p| (p % 2) * half + p / 2).collect()
            }
        }
    }
}

/// One stage: `blocks` layers, all with `channels` outputs; the first has stride 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageSpec {
    /// Layers (blocks) in the stage.
    pub blocks: usize,
    /// Output channels of every block.
    pub channels: u64,
}

/// A search space (or a fixed reference network when only one choice is allowed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchSpace {
    /// The space's name (`detnas-300m`, ...).
    pub name: String,
    /// Output channels of the 3x3 stride-2 stem conv.
    pub stem_channels: u64,
    /// Whether a 3x3 stride-2 max-pool follows the stem (ShuffleNetV2 reference nets only).
    pub stem_maxpool: bool,
    /// The stages, in order.
    pub stages: Vec<StageSpec>,
    /// Output channels of the classification head's 1x1 conv.
    pub last_channels: u64,
    /// Classes of the classification head's FC layer (ImageNet: 1000).
    pub num_classes: u64,
    /// Choices allowed at every layer.
    pub allowed: Vec<Choice>,
}

/// Where one layer sits and what it maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct LayerSpec {
    /// Layer index in the architecture encoding (0-based).
    pub index: usize,
    /// Stage index (0-based) and block index within the stage.
    pub stage: usize,
    /// Block index within the stage (0-based).
    pub block: usize,
    /// Input channels.
    pub in_channels: u64,
    /// Output channels.
    pub out_channels: u64,
    /// 2 for the first block of a stage, otherwise 1.
    pub stride: u64,
}

/// Names of the built-in spaces, in listing order.
pub const SPACE_NAMES: [&str; 7] = [
    "detnas-300m",
    "detnas-1.3g",
    "detnas-3.8g",
    "shufflenetv2-0.5x",
    "shufflenetv2-1.0x",
    "shufflenetv2-1.5x",
    "shufflenetv2-2.0x",
];

impl SearchSpace {
    fn detnas(name: &str, stem: u64, blocks: [usize; 4], widths: [u64; 4], last: u64) -> Self {
        SearchSpace {
            name: name.to_string(),
            stem_channels: stem,
            stem_maxpool: false,
            stages: blocks.iter().zip(widths).map(|(&b, c)| StageSpec { blocks: b, channels: c }).collect(),
            last_channels: last,
            num_classes: 1000,
            allowed: Choice::ALL.to_vec(),
        }
    }

    fn shufflenet_v2(name: &str, widths: [u64; 3], last: u64) -> Self {
        SearchSpace {
            name: name.to_string(),
            stem_channels: 24,
            stem_maxpool: true,
            stages: [4, 8, 4].iter().zip(widths).map(|(&b, c)| StageSpec { blocks: b, channels: c }).collect(),
            last_channels: last,
            num_classes: 1000,
            allowed: vec![Choice::Shufflenet3x3],
        }
    }

    /// DetNAS 300M space (also the SPOS space): 20 layers.
    pub fn detnas_300m() -> Self {
        Self::detnas("detnas-300m", 16, [4, 4, 8, 4], [64, 160, 320, 640], 1024)
    }

    /// DetNAS 1.3G space: 40 layers.
    pub fn detnas_1_3g() -> Self {
        Self::detnas("detnas-1.3g", 48, [8, 8, 16, 8], [96, 240, 480, 960], 1024)
    }

    /// DetNAS 3.8G space: 40 layers. The head's 1x1 conv has 1024 outputs, which gives the published
    /// 29.5M classifier parameters.
    pub fn detnas_3_8g() -> Self {
        Self::detnas("detnas-3.8g", 72, [8, 8, 16, 8], [172, 432, 864, 1728], 1024)
    }

    /// Looks a built-in space up by name.
    pub fn by_name(name: &str) -> Result<Self> {
        Ok(match name {
            "detnas-300m" => Self::detnas_300m(),
            "detnas-1.3g" => Self::detnas_1_3g(),
            "detnas-3.8g" => Self::detnas_3_8g(),
            "shufflenetv2-0.5x" => Self::shufflenet_v2(name, [48, 96, 192], 1024),
            "shufflenetv2-1.0x" => Self::shufflenet_v2(name, [116, 232, 464], 1024),
            "shufflenetv2-1.5x" => Self::shufflenet_v2(name, [176, 352, 704], 1024),
            "shufflenetv2-2.0x" => Self::shufflenet_v2(name, [244, 488, 976], 2048),
            _ => {
                return Err(CoreError::UnknownSpace { name: name.to_string(), known: SPACE_NAMES.join(", ") });
            }
        })
    }

    /// All built-in spaces in listing order.
    pub fn all() -> Vec<Self> {
        SPACE_NAMES.iter().map(|n| Self::by_name(n).expect("built-in space")).collect()
    }

    /// Number of layers (choices in an architecture).
    pub fn num_layers(&self) -> usize {
        self.stages.iter().map(|s| s.blocks).sum()
    }

    /// Whether this is a fixed network rather than a space to search.
    pub fn is_fixed(&self) -> bool {
        self.allowed.len() == 1
    }

    /// Number of architectures in the space (saturating).
    pub fn cardinality(&self) -> u128 {
        (self.allowed.len() as u128).saturating_pow(self.num_layers() as u32)
    }

    /// Output stride of the stem (2, or 4 with the max-pool).
    pub fn stem_stride(&self) -> u64 {
        if self.stem_maxpool { 4 } else { 2 }
    }

    /// The layers in encoding order.
    pub fn layers(&self) -> Vec<LayerSpec> {
        let mut out = Vec::with_capacity(self.num_layers());
        let mut cin = self.stem_channels;
        for (s, stage) in self.stages.iter().enumerate() {
            for b in 0..stage.blocks {
                out.push(LayerSpec {
                    index: out.len(),
                    stage: s,
                    block: b,
                    in_channels: cin,
                    out_channels: stage.channels,
                    stride: if b == 0 { 2 } else { 1 },
                });
                cin = stage.channels;
            }
        }
        out
    }

    /// Output channels of every stage (C2..C5 for DetNAS spaces).
    pub fn stage_channels(&self) -> Vec<u64> {
        self.stages.iter().map(|s| s.channels).collect()
    }

    /// Human list of the allowed choice integers (`0-3` or `0`).
    pub fn allowed_description(&self) -> String {
        let v: Vec<String> = self.allowed.iter().map(|c| c.index().to_string()).collect();
        if v.len() == 4 { "0-3".to_string() } else { v.join(", ") }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_counts_match_the_spec() {
        assert_eq!(SearchSpace::detnas_300m().num_layers(), 20);
        assert_eq!(SearchSpace::detnas_1_3g().num_layers(), 40);
        assert_eq!(SearchSpace::detnas_3_8g().num_layers(), 40);
        assert_eq!(SearchSpace::by_name("shufflenetv2-1.0x").unwrap().num_layers(), 16);
    }

    #[test]
    fn first_block_of_each_stage_has_stride_two() {
        let space = SearchSpace::detnas_300m();
        let strides: Vec<u64> = space.layers().iter().map(|l| l.stride).collect();
        let twos: Vec<usize> = strides.iter().enumerate().filter(|(_, s)| **s == 2).map(|(i, _)| i).collect();
        assert_eq!(twos, vec![0, 4, 8, 16]);
        assert_eq!(space.layers()[0].in_channels, 16);
        assert_eq!(space.layers()[4].in_channels, 64);
    }

    #[test]
    fn unknown_space_lists_the_known_ones() {
        let err = SearchSpace::by_name("detnas-9g").unwrap_err().to_string();
        assert!(err.contains("detnas-9g") && err.contains("detnas-300m"), "{err}");
    }

    #[test]
    fn shuffle_indices_are_permutations() {
        for v in [ChannelShuffle::EvenOdd, ChannelShuffle::HalfInterleave] {
            let mut idx = v.split_indices(8);
            idx.sort();
            assert_eq!(idx, (0..8).collect::<Vec<_>>());
        }
        assert_eq!(ChannelShuffle::EvenOdd.split_indices(4), vec![0, 2, 1, 3]);
        assert_eq!(ChannelShuffle::HalfInterleave.split_indices(4), vec![0, 2, 1, 3]);
        assert_eq!(ChannelShuffle::HalfInterleave.split_indices(8), vec![0, 4, 1, 5, 2, 6, 3, 7]);
    }
}
