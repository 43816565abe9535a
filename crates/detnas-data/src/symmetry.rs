//! The eight symmetries of the square (the dihedral group D4) on images and on boxes: training
//! augmentation of aerial imagery (which has no "up") and test-time augmentation use the same ones.

use detnas_core::detector::boxes::BBox;
use image::RgbImage;
use image::imageops::{flip_horizontal, rotate90, rotate180, rotate270};

/// Symmetry `k` (0..8): `k % 4` quarter turns clockwise, then a horizontal flip when `k >= 4`.
/// `0` is the identity; `{0, 2, 4, 6}` are the identity, the half turn and the two mirror flips
/// (the ones that keep a non-square image's width and height).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Symmetry(u8);

impl Symmetry {
    /// The identity.
    pub const IDENTITY: Symmetry = Symmetry(0);

    /// Symmetry `k % 8`.
    pub fn new(k: u64) -> Self {
        Symmetry((k % 8) as u8)
    }

    /// All eight.
    pub fn all() -> [Symmetry; 8] {
        std::array::from_fn(|k| Symmetry(k as u8))
    }

    /// The four that keep width and height: identity, horizontal flip, vertical flip, half turn.
    pub fn flips() -> [Symmetry; 4] {
        [Symmetry(0), Symmetry(4), Symmetry(6), Symmetry(2)]
    }

    /// Its index `k` in 0..8.
    pub fn index(self) -> u8 {
        self.0
    }

    /// Whether it exchanges width and height (a quarter turn, possibly flipped).
    pub fn swaps_axes(self) -> bool {
        self.0 % 2 == 1
    }

    /// The symmetry that undoes this one: turns are undone by the opposite turn, reflections by
    /// themselves.
    pub fn inverse(self) -> Symmetry {
        if self.0 < 4 { Symmetry((4 - self.0) % 4) } else { self }
    }

    /// The size of a `width x height` image after this symmetry.
    pub fn size(self, width: u32, height: u32) -> (u32, u32) {
        if self.swaps_axes() { (height, width) } else { (width, height) }
    }

    /// `img` transformed.
    pub fn image(self, img: &RgbImage) -> RgbImage {
        let turned = match self.0 % 4 {
            0 => img.clone(),
            1 => rotate90(img),
            2 => rotate180(img),
            _ => rotate270(img),
        };
        if self.0 < 4 { turned } else { flip_horizontal(&turned) }
    }

    /// A box (pixel edges) of a `width x height` image, moved with its pixels.
    pub fn bbox(self, b: &BBox, width: u32, height: u32) -> BBox {
        let (w, h) = (width as f32, height as f32);
        let turned = match self.0 % 4 {
            0 => *b,
            1 => [h - b[3], b[0], h - b[1], b[2]],
            2 => [w - b[2], h - b[3], w - b[0], h - b[1]],
            _ => [b[1], w - b[2], b[3], w - b[0]],
        };
        if self.0 < 4 {
            return turned;
        }
        let (tw, _) = self.size(width, height);
        let tw = tw as f32;
        [tw - turned[2], turned[1], tw - turned[0], turned[3]]
    }

    /// A box of the transformed image mapped back to the `width x height` image it came from.
    pub fn unmap_bbox(self, b: &BBox, width: u32, height: u32) -> BBox {
        let (tw, th) = self.size(width, height);
        self.inverse().bbox(b, tw, th)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_move_with_their_pixels_and_come_back() {
        // a 7x4 image, one marked pixel framed by a 1x1 box
        let mut img = RgbImage::new(7, 4);
        img.put_pixel(5, 1, image::Rgb([255, 0, 0]));
        let original = [5.0, 1.0, 6.0, 2.0];
        let mut seen = std::collections::BTreeSet::new();
        for s in Symmetry::all() {
            let t = s.image(&img);
            let b = s.bbox(&original, 7, 4);
            assert_eq!((b[2] - b[0], b[3] - b[1]), (1.0, 1.0), "{s:?}: {b:?}");
            assert_eq!(t.get_pixel(b[0] as u32, b[1] as u32).0, [255, 0, 0], "{s:?}: {b:?}");
            assert_eq!(t.dimensions(), s.size(7, 4));
            assert_eq!(s.unmap_bbox(&b, 7, 4), original, "{s:?} undone");
            assert_eq!(s.inverse().image(&t), img, "{s:?} undone on pixels");
            seen.insert((b[0] as u32, b[1] as u32, t.width()));
        }
        assert_eq!(seen.len(), 8, "eight different placements");
        for s in Symmetry::flips() {
            assert!(!s.swaps_axes());
        }
        assert_eq!(Symmetry::new(9), Symmetry::new(1));
    }
}
