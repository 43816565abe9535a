//! Loading Pascal VOC XML annotations into a [`DetectionDataset`].

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::Event;

use super::report::{Issue, ValidationPolicy, Validator};
use super::{DetectionDataset, DetectionSample, check_box};
use crate::error::{DataError, Result};

/// How VOC files are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VocOptions {
    /// Class names in label order (matched exactly against the trimmed `<name>`s). `None`: the
    /// distinct names found in the files, sorted (byte order).
    pub class_names: Option<Vec<String>>,
    /// Pascal VOC's pixel convention (default): coordinates are 1-based inclusive pixel indices,
    /// so the box is `[xmin - 1, ymin - 1, xmax, ymax]` in pixel edges (as detectron2 reads
    /// VOC). `false`: `[xmin, ymin, xmax, ymax]` as written (0-based edges, as DeepForest and
    /// many labelling tools write them).
    pub one_based: bool,
    /// Drop objects marked `<difficult>1</difficult>` ([`Issue::DifficultSkipped`]) instead of
    /// keeping them ([`Issue::DifficultKept`]).
    pub skip_difficult: bool,
}

impl Default for VocOptions {
    fn default() -> Self {
        VocOptions { class_names: None, one_based: true, skip_difficult: false }
    }
}

/// The `*.xml` files directly in `dir` (extension case-insensitive), sorted by path.
pub fn voc_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| DataError::io(dir, e))?.path();
        let is_xml = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("xml"));
        if is_xml && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// What one VOC file says, as text (checked when the sample is built).
#[derive(Debug, Default)]
struct VocRecord {
    filename: Option<String>,
    width: Option<String>,
    height: Option<String>,
    objects: Vec<VocObject>,
}

#[derive(Debug, Default)]
struct VocObject {
    name: Option<String>,
    difficult: Option<String>,
    /// `xmin`, `ymin`, `xmax`, `ymax`.
    coords: [Option<String>; 4],
}

/// Parses the fields a detection set needs; elements are matched by their path under the root
/// (`filename`, `size/width`, `object/name`, `object/bndbox/xmin`, ...), so `<part>`s and other
/// nested elements are ignored.
fn parse_voc(text: &str) -> std::result::Result<VocRecord, String> {
    let mut reader = quick_xml::Reader::from_str(text);
    let mut record = VocRecord::default();
    let mut path: Vec<String> = Vec::new();
    let mut content = String::new();
    loop {
        let event = reader.read_event().map_err(|e| format!("XML error at byte {}: {e}", reader.error_position()))?;
        match event {
            Event::Start(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                path.push(name);
                content.clear();
                if path.len() == 2 && path[1] == "object" {
                    record.objects.push(VocObject::default());
                }
            }
            Event::Text(e) => content.push_str(&e.decode().map_err(|e| e.to_string())?),
            Event::CData(e) => content.push_str(&e.decode().map_err(|e| e.to_string())?),
            Event::GeneralRef(e) => {
                if let Some(c) = e.resolve_char_ref().map_err(|e| e.to_string())? {
                    content.push(c);
                } else {
                    let name = e.decode().map_err(|e| e.to_string())?;
                    let resolved =
                        resolve_predefined_entity(&name).ok_or_else(|| format!("unknown entity &{name};"))?;
                    content.push_str(resolved);
                }
            }
            Event::End(_) => {
                let value = std::mem::take(&mut content).trim().to_owned();
                let keys: Vec<&str> = path.iter().skip(1).map(String::as_str).collect();
                let object = record.objects.last_mut();
                match (keys.as_slice(), object) {
                    (["filename"], _) => record.filename = Some(value),
                    (["size", "width"], _) => record.width = Some(value),
                    (["size", "height"], _) => record.height = Some(value),
                    (["object", "name"], Some(o)) => o.name = Some(value),
                    (["object", "difficult"], Some(o)) => o.difficult = Some(value),
                    (["object", "bndbox", coord], Some(o)) => {
                        if let Some(i) = ["xmin", "ymin", "xmax", "ymax"].iter().position(|c| c == coord) {
                            o.coords[i] = Some(value);
                        }
                    }
                    _ => {}
                }
                path.pop();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if record.filename.is_none() && record.objects.is_empty() && record.width.is_none() {
        return Err("no VOC <annotation> content (filename, size, object)".to_owned());
    }
    Ok(record)
}

/// A positive integer dimension written as text (`400` or `400.0`).
fn dimension(text: Option<&str>) -> Option<u32> {
    let v: f64 = text?.parse().ok()?;
    (v.is_finite() && v >= 1.0 && v.fract() == 0.0 && v <= f64::from(u32::MAX)).then_some(v as u32)
}

/// Reads and parses each of `xml_files`; a file that cannot be read or parsed is noted as
/// [`Issue::BadAnnotationFile`] and comes back `None` (an error under a strict policy).
fn read_voc_records(xml_files: &[PathBuf], v: &mut Validator<'_>) -> Result<Vec<Option<VocRecord>>> {
    let mut records: Vec<Option<VocRecord>> = Vec::with_capacity(xml_files.len());
    for file in xml_files {
        let parsed = std::fs::read(file)
            .map_err(|e| e.to_string())
            .and_then(|bytes| String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_owned()))
            .and_then(|text| parse_voc(&text));
        match parsed {
            Ok(record) => records.push(Some(record)),
            Err(reason) => {
                v.note(Issue::BadAnnotationFile, file, &"file", reason)?;
                records.push(None);
            }
        }
    }
    Ok(records)
}

/// The class names in label order: those of `options` (an error unless non-empty and distinct),
/// else the distinct non-empty object names of `records`, sorted. An error naming `source` when
/// there are none.
fn voc_class_names(options: &VocOptions, records: &[Option<VocRecord>], source: &Path) -> Result<Vec<String>> {
    let class_names: Vec<String> = match &options.class_names {
        Some(names) => {
            let distinct: BTreeSet<&String> = names.iter().collect();
            if names.is_empty() || distinct.len() != names.len() {
                return Err(DataError::Argument(format!("VOC class names must be non-empty and distinct: {names:?}")));
            }
            names.clone()
        }
        None => {
            let found: BTreeSet<String> = records
                .iter()
                .flatten()
                .flat_map(|r| r.objects.iter().filter_map(|o| o.name.clone()))
                .filter(|n| !n.is_empty())
                .collect();
            found.into_iter().collect()
        }
    };
    if class_names.is_empty() {
        return Err(DataError::invalid(source, "no object <name> in any VOC file: no classes"));
    }
    Ok(class_names)
}

/// Builds the samples of a VOC set from its parsed records, noting every problem in `v`.
struct VocSamples<'a, 'p> {
    v: Validator<'p>,
    image_dir: &'a Path,
    options: &'a VocOptions,
    class_names: &'a [String],
    label_of: HashMap<&'a str, usize>,
    /// Image path -> the XML file that annotated it first.
    first_use: HashMap<PathBuf, PathBuf>,
}

impl VocSamples<'_, '_> {
    /// The sample of `record` (read from `file`) with id `image_id`, or `None` when the record
    /// cannot be used: no filename, an image another file already annotates, an image whose size
    /// is unknown or that fails the policy's checks (each noted; an error under a strict policy).
    fn sample(&mut self, file: &Path, record: &VocRecord, image_id: u64) -> Result<Option<DetectionSample>> {
        let v = &mut self.v;
        let Some(filename) = record.filename.as_deref().filter(|n| !n.is_empty()) else {
            v.note(Issue::BadImageRecord, file, &"<filename>", "missing or empty".to_owned())?;
            return Ok(None);
        };
        let path = self.image_dir.join(filename);
        let record_name = format!("<filename> {filename}");
        if let Some(first) = self.first_use.get(&path) {
            let detail = format!("image already annotated by {}; the first is kept", first.display());
            v.note(Issue::DuplicateImageId, file, &record_name, detail)?;
            return Ok(None);
        }
        self.first_use.insert(path.clone(), file.to_path_buf());
        let recorded = match (dimension(record.width.as_deref()), dimension(record.height.as_deref())) {
            (Some(w), Some(h)) => Some((w, h)),
            _ => None,
        };
        let describe = || format!("<size> width {:?} / height {:?}", record.width, record.height);
        let Some((width, height)) = v.sized(&path, recorded, file, &record_name, describe)? else {
            return Ok(None);
        };
        let mut sample =
            DetectionSample { image: path, width, height, boxes: Vec::new(), labels: Vec::new(), image_id };
        for (k, object) in record.objects.iter().enumerate() {
            self.add_object(&mut sample, file, k, object)?;
        }
        if sample.boxes.is_empty() {
            self.v.note(Issue::ImageWithoutBoxes, file, &record_name, "no box kept".to_owned())?;
        }
        Ok(Some(sample))
    }

    /// Adds object `k` (0-based) of `file` to `sample` when its class is known, it is not a
    /// skipped difficult object and its box passes [`check_box`]; each problem is noted (an error
    /// under a strict policy).
    fn add_object(&mut self, sample: &mut DetectionSample, file: &Path, k: usize, object: &VocObject) -> Result<()> {
        let v = &mut self.v;
        let (width, height) = (sample.width, sample.height);
        let object_record = format!("object #{}", k + 1);
        let name = object.name.as_deref().unwrap_or("");
        let Some(&label) = self.label_of.get(name) else {
            let detail = format!("class name {name:?} is not one of {:?}", self.class_names);
            return v.note(Issue::UnknownCategory, file, &object_record, detail);
        };
        if object.difficult.as_deref().is_some_and(|d| d.parse::<f64>().is_ok_and(|d| d != 0.0)) {
            let skip = self.options.skip_difficult;
            let issue = if skip { Issue::DifficultSkipped } else { Issue::DifficultKept };
            v.note(issue, file, &object_record, format!("{name} marked difficult"))?;
            if skip {
                return Ok(());
            }
        }
        let shown = object.coords.iter().map(|c| c.as_deref().unwrap_or("missing")).collect::<Vec<_>>();
        let detail = format!("bndbox xmin/ymin/xmax/ymax {} in a {width}x{height} image", shown.join("/"));
        let parsed: Option<Vec<f64>> =
            object.coords.iter().map(|c| c.as_deref().and_then(|t| t.parse::<f64>().ok())).collect();
        let xyxy = match parsed.as_deref() {
            Some(&[x1, y1, x2, y2]) if self.options.one_based => [x1 - 1.0, y1 - 1.0, x2, y2],
            Some(&[x1, y1, x2, y2]) => [x1, y1, x2, y2],
            _ => [f64::NAN; 4],
        };
        match check_box(xyxy, width, height, v.policy().clip_boxes) {
            Ok((b, clipped)) => {
                if let Some(issue) = clipped {
                    v.note(issue, file, &object_record, detail)?;
                }
                sample.boxes.push(b);
                sample.labels.push(label);
                Ok(())
            }
            Err(issue) => v.note(issue, file, &object_record, detail),
        }
    }
}

impl DetectionDataset {
    /// Loads Pascal VOC XML files (in the given order); `<filename>`s are relative to `image_dir`.
    ///
    /// Reads `<filename>`, `<size>` (`width`, `height`; the image header when absent) and each
    /// `<object>`'s `<name>`, `<difficult>` and `<bndbox>` (see [`VocOptions::one_based`] for the
    /// pixel convention). Image ids are the 1-based positions in `xml_files`; `category_ids` are
    /// `1..=K`. A file that cannot be read or parsed is [`Issue::BadAnnotationFile`]; two files
    /// naming the same image are [`Issue::DuplicateImageId`]; an object whose name is not a class
    /// is [`Issue::UnknownCategory`]; boxes are checked as for COCO. Problems are counted and
    /// skipped, or are [`DataError::Strict`] naming the XML file under a strict policy. An empty
    /// file list, or no class name at all, is [`DataError::Invalid`].
    pub fn from_voc(
        xml_files: &[PathBuf],
        image_dir: &Path,
        options: &VocOptions,
        policy: &ValidationPolicy,
    ) -> Result<DetectionDataset> {
        let source = xml_files.first().and_then(|f| f.parent()).unwrap_or(image_dir);
        if xml_files.is_empty() {
            return Err(DataError::invalid(image_dir, "no VOC annotation files given"));
        }
        let mut v = Validator::new(policy, source.display().to_string());
        v.report.images_read = xml_files.len();
        let records = read_voc_records(xml_files, &mut v)?;
        v.report.annotations_read = records.iter().flatten().map(|r| r.objects.len()).sum();

        let class_names = voc_class_names(options, &records, source)?;
        let label_of: HashMap<&str, usize> = class_names.iter().enumerate().map(|(i, n)| (n.as_str(), i)).collect();
        let mut build =
            VocSamples { v, image_dir, options, class_names: &class_names, label_of, first_use: HashMap::new() };
        let mut samples = Vec::with_capacity(records.len());
        for (index, (file, record)) in xml_files.iter().zip(&records).enumerate() {
            let Some(record) = record else { continue };
            if let Some(sample) = build.sample(file, record, index as u64 + 1)? {
                samples.push(sample);
            }
        }
        let mut report = build.v.report;
        report.samples = samples.len();
        report.boxes = samples.iter().map(|s| s.boxes.len()).sum();
        let category_ids = (1..=class_names.len() as u64).collect();
        Ok(DetectionDataset { class_names, category_ids, samples, report })
    }

    /// Loads a data set in the Pascal VOC folder layout: `root/Annotations/<id>.xml` and images in
    /// `root/JPEGImages`. With `image_set` (`"trainval"`, `"test"`, ...), the ids listed one per
    /// line (first word) in `root/ImageSets/Main/<image_set>.txt`, in that order; without it,
    /// every XML file of `Annotations`, sorted. Otherwise as [`DetectionDataset::from_voc`].
    pub fn from_voc_dir(
        root: &Path,
        image_set: Option<&str>,
        options: &VocOptions,
        policy: &ValidationPolicy,
    ) -> Result<DetectionDataset> {
        let annotations = root.join("Annotations");
        let files = match image_set {
            None => voc_files(&annotations)?,
            Some(set) => {
                let list = root.join("ImageSets").join("Main").join(format!("{set}.txt"));
                let text = std::fs::read_to_string(&list).map_err(|e| DataError::io(&list, e))?;
                text.lines()
                    .filter_map(|line| line.split_whitespace().next())
                    .map(|id| annotations.join(format!("{id}.xml")))
                    .collect()
            }
        };
        if files.is_empty() {
            return Err(DataError::invalid(&annotations, "no VOC annotation files"));
        }
        DetectionDataset::from_voc(&files, &root.join("JPEGImages"), options, policy)
    }
}
