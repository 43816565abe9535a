//! A synthetic detection set for fast tests: coloured shapes on a textured, noisy background, with
//! exact boxes, written as PNG files and COCO instances JSON.
//!
//! Contract of [`generate`]: for a fixed [`SyntheticSpec`] (seed included) the files are
//! byte-identical on every run and platform (integer arithmetic only, [`Rng`] for randomness).
//! Every object is drawn in exactly its class colour ([`CLASSES`]), its pixels span exactly its
//! box (the tight bounds of the shape are the box), objects never overlap, and the background
//! never takes a class colour: every background channel is in `70..=185`, every class colour
//! channel is 30 or 225.
//!
//! A harder set (for ranking detectors, where the default set is too easy to separate them) adds
//! **clutter** ([`SyntheticSpec::distractors`]: unlabelled shapes in colours of no class, under
//! the objects) and **occlusion** ([`SyntheticSpec::occlusion_percent`]: a later object may cover
//! part of an earlier one, whose box stays the whole shape's, as amodal boxes do). With both at
//! 0 (the default) the files are those of the plain set, byte for byte.

use std::path::{Path, PathBuf};

use detnas_core::rng::Rng;
use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::detection::{DetectionDataset, DetectionSample, ValidationReport};
use crate::error::{DataError, Result};

/// The shape drawn for a class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    /// The whole box, filled.
    Rectangle,
    /// The ellipse inscribed in the box (pixel centres inside it), filled; it touches all four
    /// sides of the box.
    Ellipse,
    /// A plus sign: a full-width horizontal bar and a full-height vertical bar, each a third of
    /// the box thick, crossing at the centre.
    Cross,
}

/// A synthetic class: name, shape and exact colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyntheticClass {
    /// The class name (`red_rectangle`, ...).
    pub name: &'static str,
    /// The shape drawn.
    pub shape: Shape,
    /// The exact RGB colour of every object pixel.
    pub colour: [u8; 3],
}

/// The classes, in label order; a spec with `classes = K` uses the first `K`.
pub const CLASSES: [SyntheticClass; 8] = [
    SyntheticClass { name: "red_rectangle", shape: Shape::Rectangle, colour: [225, 30, 30] },
    SyntheticClass { name: "green_ellipse", shape: Shape::Ellipse, colour: [30, 225, 30] },
    SyntheticClass { name: "blue_cross", shape: Shape::Cross, colour: [30, 30, 225] },
    SyntheticClass { name: "yellow_rectangle", shape: Shape::Rectangle, colour: [225, 225, 30] },
    SyntheticClass { name: "magenta_ellipse", shape: Shape::Ellipse, colour: [225, 30, 225] },
    SyntheticClass { name: "cyan_cross", shape: Shape::Cross, colour: [30, 225, 225] },
    SyntheticClass { name: "white_rectangle", shape: Shape::Rectangle, colour: [225, 225, 225] },
    SyntheticClass { name: "black_ellipse", shape: Shape::Ellipse, colour: [30, 30, 30] },
];

/// What to generate. Sizes are in pixels; object sides are drawn uniformly (width and height
/// independently) from `min_size..=max_size`, object counts from `min_objects..=max_objects`
/// (fewer when no free place is found in 100 tries).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyntheticSpec {
    /// Images generated.
    pub images: usize,
    /// Image width.
    pub width: u32,
    /// Image height.
    pub height: u32,
    /// Number of classes, `1..=8` ([`CLASSES`]).
    pub classes: usize,
    /// Fewest objects per image.
    pub min_objects: usize,
    /// Most objects per image.
    pub max_objects: usize,
    /// At least 8 (so every shape spans its box).
    pub min_size: u32,
    /// At most `min(width, height)`.
    pub max_size: u32,
    /// Seed of the generator: the same spec gives the same images.
    pub seed: u64,
    /// Up to this many unlabelled clutter shapes per image (uniform count, at most 64), drawn
    /// before the objects in [`DISTRACTOR_COLOURS`].
    pub distractors: usize,
    /// How much of an earlier object's box a later one may cover, in percent of the smaller box
    /// (0: objects never overlap; at most 60).
    pub occlusion_percent: u32,
}

/// Most images of one set: their boxes are held in memory until the JSON is written (at most
/// [`MAX_OBJECTS`] each, about 1 GB at this many); larger sets belong in a real data set.
pub const MAX_IMAGES: usize = 100_000;
/// Most objects per image: crowded enough for any test, small enough to place in 100 tries each.
pub const MAX_OBJECTS: usize = 256;
/// Smallest object side: every shape then spans its box exactly.
pub const MIN_OBJECT_SIZE: u32 = 8;
/// Most clutter shapes per image (drawn before the objects, never covering all of them).
pub const MAX_DISTRACTORS: usize = 64;
/// Most occlusion, in percent of the smaller box: beyond this an object may be hidden.
pub const MAX_OCCLUSION_PERCENT: u32 = 60;
/// Longest image side: one RGB image of this side is 805 MB in memory.
pub const MAX_SIDE: u32 = 16_384;

/// Colours of clutter shapes: close to class colours in some channels, equal to none.
pub const DISTRACTOR_COLOURS: [[u8; 3]; 4] = [[225, 130, 30], [130, 30, 225], [30, 130, 130], [200, 200, 120]];

impl Default for SyntheticSpec {
    /// 32 images of 128 x 128, 3 classes, 1 to 4 objects of 12 to 60 pixels, seed 0.
    fn default() -> Self {
        SyntheticSpec {
            images: 32,
            width: 128,
            height: 128,
            classes: 3,
            min_objects: 1,
            max_objects: 4,
            min_size: 12,
            max_size: 60,
            seed: 0,
            distractors: 0,
            occlusion_percent: 0,
        }
    }
}

impl SyntheticSpec {
    /// Checks the ranges documented on the fields.
    pub fn validate(&self) -> Result<()> {
        let fail = |reason: String| Err(DataError::Argument(format!("synthetic spec: {reason}")));
        if self.images == 0 {
            return fail("images must be at least 1".into());
        }
        if self.images > MAX_IMAGES {
            return fail(format!("images is {}, at most {MAX_IMAGES}", self.images));
        }
        if !(1..=CLASSES.len()).contains(&self.classes) {
            return fail(format!("classes is {}, must be 1..={}", self.classes, CLASSES.len()));
        }
        if self.max_objects > MAX_OBJECTS {
            return fail(format!("max_objects is {}, at most {MAX_OBJECTS}", self.max_objects));
        }
        if self.min_objects > self.max_objects {
            return fail(format!("min_objects {} > max_objects {}", self.min_objects, self.max_objects));
        }
        if self.min_size < MIN_OBJECT_SIZE || self.min_size > self.max_size {
            let (min, max) = (self.min_size, self.max_size);
            return fail(format!("object sizes {min}..={max} must satisfy {MIN_OBJECT_SIZE} <= min <= max"));
        }
        if self.distractors > MAX_DISTRACTORS {
            return fail(format!("distractors is {}, at most {MAX_DISTRACTORS}", self.distractors));
        }
        if self.occlusion_percent > MAX_OCCLUSION_PERCENT {
            return fail(format!("occlusion_percent is {}, at most {MAX_OCCLUSION_PERCENT}", self.occlusion_percent));
        }
        if self.max_size > self.width.min(self.height) || self.width > MAX_SIDE || self.height > MAX_SIDE {
            return fail(format!(
                "image {}x{} must hold max_size {} and be at most {MAX_SIDE} pixels a side",
                self.width, self.height, self.max_size
            ));
        }
        Ok(())
    }
}

/// The COCO file [`generate`] writes beside `images/`.
pub const ANNOTATIONS: &str = "annotations.json";

/// The command that owns synthetic set folders ([`write_set`]).
pub const COMMAND: &str = "data synthetic";

/// [`generate`] into a folder this command owns ([`detnas_core::owner`]): a new or empty folder,
/// or (with `replace`) a set it wrote before, whose listed files are removed first; a folder of
/// another command or of the user's files is refused. Returns the JSON's path and, after a
/// replacement, a note naming the files kept (those detnas did not write).
pub fn write_set(dir: &Path, spec: &SyntheticSpec, replace: bool) -> Result<(PathBuf, Option<String>)> {
    use detnas_core::owner::{Existing, Flags, OwnedDir};
    spec.validate()?;
    let existing = if replace { Existing::Replace } else { Existing::Refuse };
    let flags = Flags { out: "--out", replace: "--overwrite", resume: None };
    let owned = OwnedDir::open(dir, COMMAND, existing, flags)?;
    let note = if owned.earlier { owned.dir.replace_with_note()? } else { None };
    Ok((generate(dir, spec)?, note))
}

/// The `detnas data synthetic` arguments that write `spec` into `dir` (with `--overwrite`).
pub fn command_line(dir: &Path, spec: &SyntheticSpec) -> Vec<String> {
    let s = spec;
    [
        ("--out", dir.display().to_string()),
        ("--images", s.images.to_string()),
        ("--size", format!("{}x{}", s.width, s.height)),
        ("--classes", s.classes.to_string()),
        ("--seed", s.seed.to_string()),
        ("--objects", format!("{}..{}", s.min_objects, s.max_objects)),
        ("--sizes", format!("{}..{}", s.min_size, s.max_size)),
        ("--distractors", s.distractors.to_string()),
        ("--occlusion", s.occlusion_percent.to_string()),
    ]
    .into_iter()
    .flat_map(|(f, v)| [f.to_string(), v])
    .chain(["--overwrite".to_string()])
    .collect()
}

/// Writes `spec.images` PNG files `dir/images/000001.png, ...` and their ground truth
/// `dir/annotations.json` (COCO instances: image ids `1..=N`, category ids `1..=K` named as in
/// [`CLASSES`], file names relative to `dir`), and returns the JSON's path. The JSON is written
/// last and atomically, so its presence means the set is complete. Existing files are replaced;
/// when `dir` has an ownership record ([`detnas_core::owner`]) every file is listed there first.
pub fn generate(dir: &Path, spec: &SyntheticSpec) -> Result<PathBuf> {
    spec.validate()?;
    let images_dir = dir.join("images");
    if detnas_core::fsutil::is_symlink(&images_dir) {
        return Err(DataError::io(
            &images_dir,
            std::io::Error::other("a symbolic link: images are written only into a folder of the set"),
        ));
    }
    std::fs::create_dir_all(&images_dir).map_err(|e| DataError::io(&images_dir, e))?;
    // Listed in the folder's ownership record (when it has one) before any is written.
    let mut ours = vec!["images/".to_string(), ANNOTATIONS.to_string()];
    ours.extend((0..spec.images).map(|index| format!("images/{:06}.png", index + 1)));
    detnas_core::owner::note(dir, &ours).map_err(|e| DataError::io(dir, std::io::Error::other(e.to_string())))?;
    let mut rng = Rng::seed(spec.seed);
    let mut samples = Vec::with_capacity(spec.images);
    for index in 0..spec.images {
        let (image, boxes, labels) = draw_image(spec, &mut rng);
        let path = images_dir.join(format!("{:06}.png", index + 1));
        let mut png = Vec::new();
        image
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .map_err(|e| DataError::ImageWrite { path: path.clone(), reason: e.to_string() })?;
        std::fs::write(&path, &png).map_err(|e| DataError::io(&path, e))?;
        samples.push(DetectionSample {
            image: path,
            width: spec.width,
            height: spec.height,
            boxes,
            labels,
            image_id: index as u64 + 1,
        });
    }
    let dataset = DetectionDataset {
        class_names: CLASSES[..spec.classes].iter().map(|c| c.name.to_owned()).collect(),
        category_ids: (1..=spec.classes as u64).collect(),
        samples,
        report: ValidationReport::default(),
    };
    let json = dir.join(ANNOTATIONS);
    dataset.write_coco(&json)?;
    Ok(json)
}

/// Uniform integer in `lo..=hi`.
fn between(rng: &mut Rng, lo: u32, hi: u32) -> u32 {
    lo + rng.below(u64::from(hi - lo) + 1) as u32
}

/// Background cell size of the value-noise texture.
const CELL: u32 = 32;

/// One image: textured background, then non-overlapping objects. Returns the image, the boxes
/// (`[x1, y1, x2, y2]` pixel edges) and the labels.
fn draw_image(spec: &SyntheticSpec, rng: &mut Rng) -> (RgbImage, Vec<[f32; 4]>, Vec<usize>) {
    let (w, h) = (spec.width, spec.height);
    let base: [i32; 3] = std::array::from_fn(|_| between(rng, 105, 150) as i32);
    let (gw, gh) = (w / CELL + 2, h / CELL + 2);
    let grid: Vec<[i32; 3]> = (0..gw * gh).map(|_| std::array::from_fn(|_| between(rng, 0, 50) as i32 - 25)).collect();
    let mut image = RgbImage::new(w, h);
    let cell = CELL as i32;
    for y in 0..h {
        for x in 0..w {
            let (gx, gy) = ((x / CELL) as usize, (y / CELL) as usize);
            let (fx, fy) = ((x % CELL) as i32, (y % CELL) as i32);
            let node = |dx: usize, dy: usize| grid[(gy + dy) * gw as usize + gx + dx];
            let (n00, n10, n01, n11) = (node(0, 0), node(1, 0), node(0, 1), node(1, 1));
            let pixel = image.get_pixel_mut(x, y);
            for c in 0..3 {
                let smooth = (n00[c] * (cell - fx) * (cell - fy)
                    + n10[c] * fx * (cell - fy)
                    + n01[c] * (cell - fx) * fy
                    + n11[c] * fx * fy)
                    / (cell * cell);
                let noise = between(rng, 0, 20) as i32 - 10;
                pixel.0[c] = (base[c] + smooth + noise).clamp(70, 185) as u8;
            }
        }
    }

    if spec.distractors > 0 {
        for _ in 0..between(rng, 0, spec.distractors as u32) {
            let shape = [Shape::Rectangle, Shape::Ellipse, Shape::Cross][rng.below(3) as usize];
            let colour = DISTRACTOR_COLOURS[rng.below(DISTRACTOR_COLOURS.len() as u64) as usize];
            let bw = between(rng, spec.min_size, spec.max_size);
            let bh = between(rng, spec.min_size, spec.max_size);
            let (x0, y0) = (between(rng, 0, w - bw), between(rng, 0, h - bh));
            draw_shape(&mut image, [x0, y0, x0 + bw, y0 + bh], SyntheticClass { name: "clutter", shape, colour });
        }
    }

    let count = between(rng, spec.min_objects as u32, spec.max_objects as u32);
    let mut boxes: Vec<[u32; 4]> = Vec::new();
    let mut labels = Vec::new();
    for _ in 0..count {
        for _try in 0..100 {
            let label = rng.below(spec.classes as u64) as usize;
            let bw = between(rng, spec.min_size, spec.max_size);
            let bh = between(rng, spec.min_size, spec.max_size);
            let x0 = between(rng, 0, w - bw);
            let y0 = between(rng, 0, h - bh);
            let candidate = [x0, y0, x0 + bw, y0 + bh];
            // A very elongated ellipse may miss its box's extreme columns or rows: redraw it.
            let shape = CLASSES[label].shape;
            if !covers(shape, 0, bh / 2, bw, bh) || !covers(shape, bw / 2, 0, bw, bh) {
                continue;
            }
            let overlaps = boxes.iter().any(|b| {
                let iw = candidate[2].min(b[2]).saturating_sub(candidate[0].max(b[0]));
                let ih = candidate[3].min(b[3]).saturating_sub(candidate[1].max(b[1]));
                let smaller = (bw * bh).min((b[2] - b[0]) * (b[3] - b[1]));
                iw * ih > 0 && 100 * iw * ih > spec.occlusion_percent * smaller
            });
            if !overlaps {
                draw_shape(&mut image, candidate, CLASSES[label]);
                boxes.push(candidate);
                labels.push(label);
                break;
            }
        }
    }
    let boxes = boxes.iter().map(|b| b.map(|v| v as f32)).collect();
    (image, boxes, labels)
}

/// Whether pixel `(x, y)` (offsets inside a `w` x `h` box) belongs to `shape`. Integer-only.
fn covers(shape: Shape, x: u32, y: u32, w: u32, h: u32) -> bool {
    match shape {
        Shape::Rectangle => true,
        Shape::Ellipse => {
            // Pixel centre in half-pixel units from the box centre: (2x + 1 - w, 2y + 1 - h);
            // inside when (dx / w)^2 + (dy / h)^2 <= 1.
            let (w, h) = (i64::from(w), i64::from(h));
            let dx = 2 * i64::from(x) + 1 - w;
            let dy = 2 * i64::from(y) + 1 - h;
            dx * dx * h * h + dy * dy * w * w <= w * w * h * h
        }
        Shape::Cross => {
            let (tw, th) = ((w / 3).max(1), (h / 3).max(1));
            let in_vertical = x >= (w - tw) / 2 && x < (w - tw) / 2 + tw;
            let in_horizontal = y >= (h - th) / 2 && y < (h - th) / 2 + th;
            in_vertical || in_horizontal
        }
    }
}

fn draw_shape(image: &mut RgbImage, b: [u32; 4], class: SyntheticClass) {
    let (w, h) = (b[2] - b[0], b[3] - b[1]);
    for y in 0..h {
        for x in 0..w {
            if covers(class.shape, x, y, w, h) {
                image.put_pixel(b[0] + x, b[1] + y, image::Rgb(class.colour));
            }
        }
    }
}

#[cfg(test)]
#[path = "synthetic_tests.rs"]
mod tests;
