//! Network input sizes and conv output arithmetic (shared by the cost model and the detector).

use crate::error::{CoreError, Result};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Network input size in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InputSize {
    /// Height in pixels.
    pub height: u64,
    /// Width in pixels.
    pub width: u64,
}

impl InputSize {
    /// 224x224, the ImageNet input (the size DetNAS budgets are quoted at).
    pub const IMAGENET: InputSize = InputSize { height: 224, width: 224 };

    /// An input of `height` x `width` pixels (not checked).
    pub fn new(height: u64, width: u64) -> Self {
        InputSize { height, width }
    }

    /// Parses `HxW` (e.g. `800x1216`) or a single number for a square input.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |reason: &str| CoreError::BadInputSize { input: text.to_string(), reason: reason.into() };
        let t = text.trim().to_ascii_lowercase();
        let (h, w) = match t.split_once('x') {
            Some((h, w)) => (h.trim(), w.trim()),
            None => (t.as_str(), t.as_str()),
        };
        let h: u64 = h.parse().map_err(|_| bad("expected HxW such as 224x224 or 800x1216"))?;
        let w: u64 = w.parse().map_err(|_| bad("expected HxW such as 224x224 or 800x1216"))?;
        if h == 0 || w == 0 {
            return Err(bad("height and width must be positive"));
        }
        if h > 65536 || w > 65536 {
            return Err(bad("height and width must be at most 65536"));
        }
        Ok(InputSize { height: h, width: w })
    }
}

impl fmt::Display for InputSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.height, self.width)
    }
}

/// Output length of a conv/pool along one axis: `floor((n + 2p - k) / s) + 1`, `None` if empty.
pub fn conv_out(n: u64, kernel: u64, stride: u64, pad: u64) -> Option<u64> {
    (n + 2 * pad).checked_sub(kernel).map(|v| v / stride + 1)
}
