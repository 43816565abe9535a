//! One folder run in three steps: [`plan`] (check the output folder, collect the inputs, give each
//! its id and output name), [`Batch::process`] (workers detect, write label and annotated files, and the
//! calling thread appends each image's record to `results.jsonl` as it finishes) and the result
//! files at the end ([`journal::write_results`], atomically). See [`journal`] for the files and
//! [`outdir`] for how earlier results are treated.

use super::draw::draw_detection;
use super::journal::{self, BoxRecord, ImageRecord, Journal, Manifest, Settings};
use super::outdir::OutDir;
use super::{Existing, Failure, FolderEvent, FolderOptions, FolderOutcome, OutputFiles, inputs, names};
use super::{chain, cores, file_error, to_json};
use crate::Detector;
use crate::error::{InferError, Result, Source};
use crate::options::DetectorOptions;
use crate::results::{Detections, StageTimings};
use crate::tiles::Tiling;
use detnas_core::fsutil::write_atomic;
use image::RgbImage;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Instant;

type Emit<'e> = dyn FnMut(FolderEvent<'_>) + 'e;

/// Model classes of a filter given as names or 0-based indices.
fn parse_classes(spec: &[String], names: &[String]) -> Result<Vec<usize>> {
    spec.iter()
        .map(|s| {
            let s = s.trim();
            s.parse::<usize>()
                .ok()
                .filter(|i| *i < names.len())
                .or_else(|| names.iter().position(|n| n == s))
                .ok_or_else(|| InferError::ClassFilter { name: s.to_string(), classes: names.to_vec() })
        })
        .collect()
}

/// The settings recorded in `run.json`.
fn settings(o: &FolderOptions) -> Result<Settings> {
    let bytes = std::fs::read(&o.model).map_err(|e| file_error(format!("reading model {}", o.model.display()), e))?;
    Ok(Settings {
        model: o.model.display().to_string(),
        model_bytes: bytes.len() as u64,
        model_hash: format!("{:016x}", detnas_core::search::evolution::fnv1a64(&bytes)),
        inputs: o.inputs.clone(),
        conf: o.conf,
        iou: o.iou,
        max_det: o.max_det,
        classes: o.classes.clone(),
        save_txt: o.save_txt,
        save_img: o.save_img,
        // Canonical, so that a resume from another folder or spelling compares equal.
        ids_from: o
            .ids_from
            .as_ref()
            .map(|p| detnas_core::fsutil::identity(p).unwrap_or_else(|| p.clone()).display().to_string()),
        tile: o.tiling.map(|t| t.size),
        overlap: o.tiling.map(|t| t.overlap),
        full_decode: o.full_decode,
        tta: o.tta,
    })
}

/// Step 1: the checked output folder, the run's manifest (new, or read back on resume) and, on
/// resume, the inputs changed since the run planned them (to be detected again).
fn plan(o: &FolderOptions, emit: &mut Emit<'_>) -> Result<(OutDir, Manifest, Vec<usize>)> {
    let resume = o.existing == Existing::Resume;
    let out = OutDir::open(&o.out, o.existing, emit)?;
    let settings = settings(o)?;
    let collected = inputs::collect_inputs(&o.inputs, Some(&out.canonical));
    for note in collected.notes {
        emit(FolderEvent::Notice(note));
    }
    if resume {
        let mut manifest = Manifest::read_for_resume(&out.path, &settings)?;
        let changed = manifest.reconcile(&collected.files)?;
        out.claim(&manifest.names, settings.save_txt, settings.save_img)?;
        if !changed.is_empty() {
            emit(FolderEvent::Notice(format!(
                "{} input(s) changed since the run planned them: detected again ({})",
                changed.len(),
                changed.iter().take(3).map(|&i| manifest.files[i].display().to_string()).collect::<Vec<_>>().join(", ")
            )));
        }
        // run.json takes the new stamps only once results.jsonl has dropped the changed inputs'
        // records (in `run`): a resume that stops before then still sees them as changed.
        return Ok((out, manifest, changed));
    }
    for f in &collected.failures {
        emit(FolderEvent::Skipped(f));
    }
    let ids = match &o.ids_from {
        Some(gt) => names::ids_from_ground_truth(gt, &collected.files)?,
        None => (1..=collected.files.len() as i64).map(Some).collect(),
    };
    let names = names::output_names(&collected.files);
    let mut failures = collected.failures;
    for (file, id) in collected.files.iter().zip(&ids) {
        if id.is_none() {
            let gt = o.ids_from.as_deref().unwrap_or(Path::new("")).display();
            failures.push(Failure::new(
                file.display().to_string(),
                format!("{}: not in the --ids-from ground truth {gt}", file.display()),
            ));
        }
    }
    out.claim(&names, o.save_txt, o.save_img)?;
    let mut manifest = Manifest::new(settings, collected.files, ids, names);
    manifest.failures = failures;
    Ok((out, manifest, Vec::new()))
}

/// Whether images are decoded on a thread of their own, ahead of inference: for one untiled
/// worker. Several workers already overlap decoding and inference with each other (2 workers x 1
/// thread on 2 cores: 64-65 images/s pipelined against 65-68 each decoding its own).
fn pipelined(tiling: Option<Tiling>, workers: usize) -> bool {
    tiling.is_none() && workers == 1
}

/// Loads the model with the run's options, `workers` sessions.
fn load_detector(o: &FolderOptions, workers: usize, emit: &mut Emit<'_>) -> Result<Detector> {
    let cores = cores();
    let threads = match o.threads {
        Some(n) if n > cores => {
            emit(FolderEvent::Warning(format!(
                "--threads {n} is more than the {cores} core(s) of this machine: using {cores}"
            )));
            cores
        }
        Some(n) => n,
        None => cores,
    };
    // Without conf, everything the graph returns (its own score_thresh): COCO results for `eval`.
    let options = DetectorOptions {
        score_threshold: o.conf,
        iou_threshold: o.iou,
        max_detections: o.max_det,
        threads: Some((threads / workers).max(1)),
        sessions: workers,
        device: o.device,
        strict: o.strict,
        reduced_decode: !o.full_decode,
        tta: o.tta,
        // One untiled worker is pipelined: a decoding thread shares the cores with the session's
        // threads, which must not spin while it works.
        spinning: !pipelined(o.tiling, workers),
        ..DetectorOptions::default()
    };
    let mut detector = Detector::from_file(&o.model, options)?;
    if let Some(w) = detector.device_warning() {
        emit(FolderEvent::Warning(w.to_string()));
    }
    if let Some(spec) = &o.classes {
        let classes = parse_classes(spec, &detector.info().config.class_names)?;
        detector.set_class_filter(Some(classes));
    }
    let nms = detector.info().config.nms_thresh;
    if let Some(iou) = o.iou.filter(|t| *t > nms) {
        emit(FolderEvent::Warning(format!("--iou {iou} is looser than the model's NMS threshold {nms}: no effect")));
    }
    Ok(detector)
}

/// Workers actually started: at most the cores of this machine (said when fewer than asked) and
/// the images left.
fn worker_count(requested: usize, pending: usize, emit: &mut Emit<'_>) -> usize {
    let cores = cores();
    if requested > cores {
        emit(FolderEvent::Warning(format!(
            "--workers {requested} is more than the {cores} core(s) of this machine: using {cores}"
        )));
    }
    requested.min(cores).min(pending).max(1)
}

/// The run [`super::detect_folder`] describes, its options validated.
pub(super) fn run(o: &FolderOptions, emit: &mut Emit<'_>) -> Result<FolderOutcome> {
    let resume = o.existing == Existing::Resume;
    let (out, mut manifest, changed) = plan(o, emit)?;
    let mut records = if resume { Journal::read(&out.path, manifest.files.len())? } else { BTreeMap::new() };
    for i in &changed {
        records.remove(i);
    }
    let pending = (0..manifest.files.len()).filter(|i| manifest.ids[*i].is_some() && !records.contains_key(i)).count();
    let start_afresh = |out: &OutDir, emit: &mut Emit<'_>| -> Result<()> {
        if out.has_results {
            out.clear(emit)?;
            out.claim(&manifest.names, o.save_txt, o.save_img)?;
        }
        Ok(())
    };
    if manifest.files.is_empty() {
        start_afresh(&out, emit)?;
        let errors = out.path.join("errors.json");
        write_atomic(&errors, &to_json(&manifest.failures, true, &errors)?)?;
        return Err(InferError::NoImages { inputs: o.inputs.join(" ") });
    }
    let workers = worker_count(o.workers, pending, emit);
    let detector = load_detector(o, workers, emit)?;
    if let (Some(gt), false) = (&o.ids_from, resume) {
        let categories = detnas_core::coco::CocoDataset::load(gt)?.categories;
        manifest.category_ids =
            Some(names::category_ids_by_name(gt, &categories, &detector.info().config.class_names)?);
    }
    if !resume {
        start_afresh(&out, emit)?;
        manifest.write(&out.path)?;
    }
    let (labels, annotated) =
        (output_folder(&out.path, o.save_txt, "labels")?, output_folder(&out.path, o.save_img, "images")?);
    let mut journal = Journal::start(&out.path, &records)?;
    if resume {
        manifest.write(&out.path)?;
    }
    emit(FolderEvent::Started {
        out: &out.path,
        images: manifest.files.len(),
        done: records.len(),
        pending,
        workers,
        resumed: resume,
    });
    let start = Instant::now();
    let batch = Batch { detector: &detector, tiling: o.tiling, out: &out.path, manifest: &manifest };
    let (timings, now) = batch.process(workers, &mut journal, &mut records, emit)?;
    let wall = start.elapsed();
    journal.finish(&records)?;
    let failures = journal::all_failures(&manifest.failures, &records);
    journal::write_results(&out.path, &manifest, &detector.info().config, &records, &failures)?;
    let outcome = outcome(out.path, records, failures, (labels, annotated), (now, timings, wall));
    emit(FolderEvent::Finished(&outcome));
    if outcome.images == 0 {
        return Err(InferError::NothingProcessed { failed: outcome.failures.len() });
    }
    Ok(outcome)
}

/// `dir` inside the output folder `out`, made when `wanted`.
fn output_folder(out: &Path, wanted: bool, dir: &str) -> Result<Option<PathBuf>> {
    if !wanted {
        return Ok(None);
    }
    let d = out.join(dir);
    std::fs::create_dir_all(&d).map_err(|e| file_error(format!("creating {}", d.display()), e))?;
    Ok(Some(d))
}

/// The outcome of a finished run into `out`: its files, counts, records and failures, and the
/// `(detected now, stage timings, wall time)` of this run.
fn outcome(
    out: PathBuf,
    records: BTreeMap<usize, ImageRecord>,
    failures: Vec<Failure>,
    (labels, annotated): (Option<PathBuf>, Option<PathBuf>),
    (detected_now, timings, wall): (usize, StageTimings, std::time::Duration),
) -> FolderOutcome {
    let ok = || records.values().filter(|r| r.error.is_none());
    FolderOutcome {
        files: OutputFiles {
            detections: out.join("detections.json"),
            images: out.join("images.json"),
            errors: (!failures.is_empty()).then(|| out.join("errors.json")),
            results: out.join(journal::JOURNAL),
            run: out.join(journal::MANIFEST),
            labels,
            annotated,
        },
        images: ok().count(),
        detections: ok().map(|r| r.detections.len()).sum(),
        records: records.into_values().collect(),
        failures,
        detected_now,
        timings,
        wall,
        out,
    }
}

/// What every worker of a run shares.
struct Batch<'a> {
    detector: &'a Detector,
    tiling: Option<Tiling>,
    out: &'a Path,
    manifest: &'a Manifest,
}

impl Batch<'_> {
    /// Step 2: detects every image of the manifest without a record, in parallel, recording each
    /// one as it finishes. Returns the summed stage timings and the count of images detected now.
    fn process(
        &self,
        workers: usize,
        journal: &mut Journal,
        records: &mut BTreeMap<usize, ImageRecord>,
        emit: &mut Emit<'_>,
    ) -> Result<(StageTimings, usize)> {
        let manifest = self.manifest;
        let pending: Vec<usize> =
            (0..manifest.files.len()).filter(|i| manifest.ids[*i].is_some() && !records.contains_key(i)).collect();
        let mut sums = StageTimings::default();
        let mut done = 0usize;
        let mut failed: Option<InferError> = None;
        let mut absorb = |(record, timings): (ImageRecord, StageTimings)| {
            if failed.is_some() {
                return;
            }
            if let Err(e) = journal.append(&record) {
                failed = Some(e);
                return;
            }
            if record.error.is_none() {
                sums.decode += timings.decode;
                sums.preprocess += timings.preprocess;
                sums.inference += timings.inference;
                sums.postprocess += timings.postprocess;
                done += 1;
            }
            let index = record.index;
            records.insert(index, record);
            let (record, recorded) = (&records[&index], records.len());
            emit(match record.error {
                Some(_) => FolderEvent::ImageFailed { record, recorded },
                None => FolderEvent::ImageDone { record, recorded },
            });
        };
        if pipelined(self.tiling, workers) {
            // Decoding runs ahead of inference through a bounded queue (two images per worker).
            let paths: Vec<&PathBuf> = pending.iter().map(|&i| &manifest.files[i]).collect();
            let handle = |k: usize, found| self.finish_one(pending[k], found);
            let keep = manifest.settings.save_img;
            self.detector.detect_pipelined_keeping(&paths, 2 * workers, keep, handle, &mut absorb);
        } else {
            let next = AtomicUsize::new(0);
            let (tx, rx) = mpsc::channel::<(ImageRecord, StageTimings)>();
            std::thread::scope(|scope| {
                for _ in 0..workers {
                    let tx = tx.clone();
                    let (next, pending) = (&next, &pending);
                    scope.spawn(move || {
                        loop {
                            let k = next.fetch_add(1, Ordering::Relaxed);
                            let Some(&i) = pending.get(k) else { break };
                            if tx.send(self.detect_one(i)).is_err() {
                                break;
                            }
                        }
                    });
                }
                drop(tx);
                rx.into_iter().for_each(&mut absorb);
            });
        }
        if let Some(e) = failed {
            return Err(e);
        }
        Ok((sums, done))
    }

    /// Detects image `i` of the manifest (window by window with a tiling), then [`Batch::finish_one`].
    fn detect_one(&self, i: usize) -> (ImageRecord, StageTimings) {
        let path = &self.manifest.files[i];
        let keep = self.manifest.settings.save_img;
        let found = match self.tiling {
            Some(tiling) => self.detector.detect_path_tiled_keeping(path, tiling, keep),
            None => self.detector.detect_path_keeping(path, keep),
        };
        self.finish_one(i, found)
    }

    /// The record of image `i` of the manifest from what was `found` (with the decoded image when
    /// it is kept for `--save-img`, see [`save_annotated`]); writes its label and annotated files.
    fn finish_one(&self, i: usize, found: Result<(Detections, Option<RgbImage>)>) -> (ImageRecord, StageTimings) {
        let (manifest, out) = (self.manifest, self.out);
        let path = &manifest.files[i];
        let file = path.display().to_string();
        let Some(id) = manifest.ids[i] else {
            // Only images with an id are processed; one without is a failure, never a panic.
            let error = format!("{}: no image id", path.display());
            return (ImageRecord::failed(i, file, 0, error), StageTimings::default());
        };
        let (d, image) = match found {
            Ok(found) => found,
            Err(e) => return (ImageRecord::failed(i, file, id, e.to_string()), StageTimings::default()),
        };
        let cfg = &self.detector.info().config;
        let mut record = ImageRecord::new(i, file, id);
        record.width = d.width;
        record.height = d.height;
        record.warnings = d.warnings.iter().map(|w| w.to_string()).collect();
        record.detections = d
            .detections
            .iter()
            .map(|det| {
                let [x1, y1, x2, y2] = det.bbox;
                BoxRecord {
                    category_id: manifest.category_id(cfg, det.class_id),
                    bbox: [round3(x1), round3(y1), round3(x2 - x1), round3(y2 - y1)],
                    score: round5(det.score),
                }
            })
            .collect();
        let name = &manifest.names[i];
        let settings = &manifest.settings;
        if settings.save_txt {
            let rel = format!("labels/{name}.txt");
            match write_yolo(&out.join(&rel), &d) {
                Ok(()) => record.label_file = Some(rel),
                Err(e) => record.output_error = Some(format!("{}: label file: {}", path.display(), chain(&*e))),
            }
        }
        if settings.save_img {
            let rel = format!("images/{name}.jpg");
            match save_annotated(path, image, &out.join(&rel), &d, self.detector) {
                Ok(()) => record.image_file = Some(rel),
                Err(e) => record.output_error = Some(format!("{}: annotated copy: {}", path.display(), chain(&*e))),
            }
        }
        (record, d.timings)
    }
}

fn round3(v: f32) -> f64 {
    (v as f64 * 1e3).round() / 1e3
}

fn round5(v: f32) -> f64 {
    (v as f64 * 1e5).round() / 1e5
}

/// Writes the YOLO label file of `d` (`class cx cy w h score`, normalised).
fn write_yolo(path: &Path, d: &Detections) -> std::result::Result<(), Source> {
    let (w, h) = (d.width as f32, d.height as f32);
    let mut text = String::new();
    for det in &d.detections {
        let [x1, y1, x2, y2] = det.bbox;
        text.push_str(&format!(
            "{} {:.6} {:.6} {:.6} {:.6} {:.5}\n",
            det.class_id,
            (x1 + x2) / 2.0 / w,
            (y1 + y2) / 2.0 / h,
            (x2 - x1) / w,
            (y2 - y1) / h,
            det.score
        ));
    }
    write_atomic(path, text.as_bytes())?;
    Ok(())
}

/// Writes a JPEG copy of the image at `path` with the boxes of `d` drawn on it to `dest`.
///
/// `image` is the image as the detection decoded it, when that was at full resolution: it is
/// drawn on as is. `None` when the detection decoded a large JPEG at a reduced DCT scale (see
/// [`crate::DetectorOptions::reduced_decode`]) or read a PNG row by row (`--tile`): only then is
/// the file decoded again, at full resolution, for the copy. The detections are the same either
/// way.
fn save_annotated(
    path: &Path,
    image: Option<RgbImage>,
    dest: &Path,
    d: &Detections,
    detector: &Detector,
) -> std::result::Result<(), Source> {
    let mut img = match image {
        Some(img) => img,
        None => crate::image_io::load_image(path, &detector.options().limits)?.rgb,
    };
    for det in &d.detections {
        draw_detection(&mut img, det.bbox, &format!("{} {:.2}", det.class_name, det.score), det.class_id);
    }
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, image::ImageFormat::Jpeg)?;
    write_atomic(dest, bytes.get_ref())?;
    Ok(())
}
