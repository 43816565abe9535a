//! `detnas arch ...`: list, info and sample.

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use detnas_core::detector::plan::{Paths, detector_params};
use detnas_core::detector::{DetectorConfig, DetectorKind, detector_flops};
use detnas_core::rng::Rng;
use detnas_core::search::genome::Genome;
use detnas_core::size::{format_count, parse_count};
use detnas_core::space::arch::PRESETS;
use detnas_core::space::cost::{CostReport, FlopsTable, cost};
use detnas_core::space::sample::{FlopsBinnedSampler, FlopsWindowSampler};
use detnas_core::{Arch, Convention, InputSize, SearchSpace};
use serde_json::json;

#[derive(Subcommand, Debug)]
pub enum ArchCommand {
    /// List the search spaces and the published architecture presets.
    List {
        /// Print the list as JSON.
        #[arg(long)]
        json: bool,
    },
    /// FLOPs, parameters, stage shapes and per-layer choices of one architecture.
    Info(InfoArgs),
    /// Sample random architectures, optionally under a FLOPs budget.
    Sample(SampleArgs),
}

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// Search space (optional when --arch is a preset).
    #[arg(long)]
    space: Option<String>,
    /// Encoding (`2,1,2,0,...` or `2120...`), preset name (see `detnas arch list`), or a genome
    /// with detector genes (`coco-retinanet-300m:fpn96:head96x3:sep:320`): then the detector's
    /// FLOPs and parameters per part are reported at the genome's resolution.
    #[arg(long, value_parser = super::values::genome)]
    arch: String,
    /// Input size HxW (or one number for a square input) of the backbone report; a genome's
    /// resolution gene takes its place.
    #[arg(long, value_parser = super::values::input_size)]
    input: Option<String>,
    /// Classes of the detector report (they size the classification predictor).
    #[arg(long, default_value_t = 1, value_parser = super::values::classes)]
    classes: usize,
    /// Report the whole detector of this family (default with detector genes: retinanet); a
    /// faster-rcnn report splits the head into the RPN and the RoI head at 1000 proposals.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(["retinanet", "faster-rcnn"]))]
    detector: Option<String>,
    /// Print the report as JSON (exact integer FLOPs and parameters).
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum SamplerKind {
    /// Uniform per layer, rejected until inside the FLOPs window.
    Uniform,
    /// SPOS: a uniformly chosen FLOPs bin, then rejection sampling into it.
    Binned,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ConventionArg {
    /// Stem and blocks (DetNAS's "300M").
    Backbone,
    /// Backbone plus the classification head (SPOS / ShuffleNetV2 figures).
    Classifier,
}

#[derive(Args, Debug)]
pub struct SampleArgs {
    /// Search space (see `detnas arch list`).
    #[arg(long, default_value = "detnas-300m")]
    space: String,
    /// Upper FLOPs bound (e.g. 300M, 1.3G).
    #[arg(long, value_parser = super::values::flops)]
    flops_max: Option<String>,
    /// Lower FLOPs bound.
    #[arg(long, value_parser = super::values::flops)]
    flops_min: Option<String>,
    /// Number of architectures to draw.
    #[arg(long, default_value_t = 1, value_parser = super::values::genomes)]
    count: usize,
    /// Seed of the sampler (same seed, same architectures).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Input size HxW at which FLOPs are counted.
    #[arg(long, default_value = "224x224", value_parser = super::values::input_size)]
    input: String,
    /// Which layers the FLOPs bound counts.
    #[arg(long, value_enum, default_value_t = ConventionArg::Backbone)]
    convention: ConventionArg,
    /// How paths are drawn.
    #[arg(long, value_enum, default_value_t = SamplerKind::Uniform)]
    sampler: SamplerKind,
    /// Number of FLOPs bins for --sampler binned.
    #[arg(long, default_value_t = 10, value_parser = super::values::bins)]
    bins: usize,
    /// Uniform draws allowed per sample before giving up.
    #[arg(long, default_value_t = 10_000, value_parser = super::values::tries)]
    max_tries: usize,
    /// Print the samples as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: ArchCommand) -> Result<()> {
    match cmd {
        ArchCommand::List { json } => list(json),
        ArchCommand::Info(args) => info(args),
        ArchCommand::Sample(args) => sample(args),
    }
}

fn list(as_json: bool) -> Result<()> {
    let spaces = SearchSpace::all();
    if as_json {
        let spaces: Vec<_> = spaces
            .iter()
            .map(|s| {
                json!({
                    "name": s.name,
                    "layers": s.num_layers(),
                    "allowed_choices": s.allowed.iter().map(|c| c.index()).collect::<Vec<_>>(),
                    "stem_channels": s.stem_channels,
                    "stage_blocks": s.stages.iter().map(|st| st.blocks).collect::<Vec<_>>(),
                    "stage_channels": s.stage_channels(),
                    "fixed": s.is_fixed(),
                })
            })
            .collect();
        let presets: Vec<_> = PRESETS
            .iter()
            .map(|p| json!({"name": p.name, "space": p.space, "arch": p.encoding, "description": p.description}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&json!({"spaces": spaces, "presets": presets}))?);
        return Ok(());
    }
    println!("search spaces");
    for s in &spaces {
        let blocks: Vec<String> = s.stages.iter().map(|st| st.blocks.to_string()).collect();
        let widths: Vec<String> = s.stage_channels().iter().map(u64::to_string).collect();
        let kind = if s.is_fixed() { "reference net".to_string() } else { format!("4^{} paths", s.num_layers()) };
        println!(
            "  {:<18} {:>2} layers  blocks {:<11} widths {:<18} stem {:<3} {kind}",
            s.name,
            s.num_layers(),
            blocks.join("/"),
            widths.join("/"),
            s.stem_channels
        );
    }
    println!("presets (use as --arch)");
    for p in PRESETS {
        println!("  {:<20} {:<18} {}", p.name, p.space, p.description);
    }
    Ok(())
}

fn report_json(space: &SearchSpace, arch: &Arch, r: &CostReport) -> serde_json::Value {
    json!({
        "space": space.name,
        "arch": arch.to_string(),
        "input": {"height": r.input.height, "width": r.input.width},
        "backbone_flops": r.backbone_flops,
        "classifier_flops": r.classifier_flops,
        "backbone_params": r.backbone_params,
        "classifier_params": r.classifier_params,
        "stages": r.stages,
        "layers": r.layers,
    })
}

/// FLOPs and parameters of a genome's whole detector, by part.
fn detector_report(
    genome: &Genome,
    classes: usize,
    kind: DetectorKind,
    input: Option<InputSize>,
) -> Result<serde_json::Value> {
    let mut base = DetectorConfig::new(kind);
    if let Some(input) = input {
        base.input = input;
    }
    base.class_names = (0..classes).map(|i| format!("class{i}")).collect();
    let cfg = genome.detector_config(&base)?;
    let flops = detector_flops(&genome.space, &genome.arch, &cfg)?;
    // backbone, fpn, head (RetinaNet's, or the RPN and the RoI head together), rpn, roi_head
    let mut params = [0u64; 5];
    for p in detector_params(&genome.space, Paths::Single(&genome.arch), &cfg).iter().filter(|p| !p.buffer) {
        let n = p.shape.iter().product::<usize>() as u64;
        match ["backbone.", "fpn.", "head.", "rpn.", "roi_heads."].iter().position(|k| p.name.starts_with(k)) {
            Some(i @ 0..=2) => params[i] += n,
            Some(i) => {
                params[i] += n;
                params[2] += n;
            }
            None => params[2] += n,
        }
    }
    let mut params_json =
        json!({"backbone": params[0], "fpn": params[1], "head": params[2], "total": params[..3].iter().sum::<u64>()});
    if kind == DetectorKind::FasterRcnn {
        params_json["rpn"] = json!(params[3]);
        params_json["roi_head"] = json!(params[4]);
    }
    Ok(json!({
        "detector": kind.name(),
        "genome": genome.complete(&base).to_string(),
        "input": {"height": cfg.input.height, "width": cfg.input.width},
        "classes": classes,
        "flops": flops,
        "params": params_json,
    }))
}

fn print_detector(d: &serde_json::Value) {
    println!("genome      {}", d["genome"].as_str().unwrap_or_default());
    println!(
        "detector    {} {}x{}, {} class(es)",
        d["detector"].as_str().unwrap_or_default(),
        d["input"]["height"],
        d["input"]["width"],
        d["classes"]
    );
    let parts: &[&str] = if d["params"].get("rpn").is_some() {
        &["backbone", "fpn", "rpn", "roi_head", "total"]
    } else {
        &["backbone", "fpn", "head", "total"]
    };
    for &part in parts {
        let (f, p) = (d["flops"][part].as_u64().unwrap_or(0), d["params"][part].as_u64().unwrap_or(0));
        println!("  {part:<9} {:>9} FLOPs ({f})  {:>8} params ({p})", format_count(f), format_count(p));
    }
}

fn info(args: InfoArgs) -> Result<()> {
    let genome = Genome::parse(args.space.as_deref(), &args.arch)?;
    let (space, arch) = (&genome.space, &genome.arch);
    let input = match (&args.input, genome.genes.input) {
        (Some(_), Some(_)) => anyhow::bail!("--input and the genome's resolution gene both set the input: give one"),
        (Some(i), None) => InputSize::parse(i)?,
        (None, Some(i)) => i,
        (None, None) => InputSize::IMAGENET,
    };
    let r = cost(space, arch, input)?;
    let kind: Option<DetectorKind> =
        args.detector.as_deref().map(str::parse).transpose().map_err(anyhow::Error::msg)?;
    let detector = (!genome.genes.is_empty() || kind.is_some())
        .then(|| {
            detector_report(&genome, args.classes, kind.unwrap_or_default(), args.input.is_some().then_some(input))
        })
        .transpose()?;
    if args.json {
        let mut v = report_json(space, arch, &r);
        if let Some(d) = detector {
            v["detector"] = d;
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let (space, arch) = (space.clone(), arch.clone());
    println!("space       {} ({} layers, choices {})", space.name, space.num_layers(), space.allowed_description());
    println!("arch        {arch}");
    println!("input       {input}");
    println!(
        "backbone    {:>9} FLOPs ({})  {:>8} params ({})",
        format_count(r.backbone_flops),
        r.backbone_flops,
        format_count(r.backbone_params),
        r.backbone_params
    );
    println!(
        "classifier  {:>9} FLOPs ({})  {:>8} params ({})",
        format_count(r.classifier_flops),
        r.classifier_flops,
        format_count(r.classifier_params),
        r.classifier_params
    );
    let stages: Vec<String> =
        r.stages.iter().map(|s| format!("{} {}x{}x{} /{}", s.name, s.channels, s.height, s.width, s.stride)).collect();
    println!("stages      {}", stages.join("   "));
    println!("  layer stage choice          channels   stride  input    FLOPs      params");
    for l in &r.layers {
        println!(
            "  {:>5} {:>5} {} {:<14} {:>4}->{:<4} {:>6}  {:<8} {:<10} {}",
            l.layer,
            l.stage + 1,
            l.choice.index(),
            l.choice.name(),
            l.in_channels,
            l.out_channels,
            l.stride,
            format!("{}x{}", l.in_hw.0, l.in_hw.1),
            format_count(l.flops),
            format_count(l.params)
        );
    }
    if let Some(d) = &detector {
        print_detector(d);
    }
    Ok(())
}

fn sample(args: SampleArgs) -> Result<()> {
    let space = SearchSpace::by_name(&args.space)?;
    let input = InputSize::parse(&args.input)?;
    let convention = match args.convention {
        ConventionArg::Backbone => Convention::Backbone,
        ConventionArg::Classifier => Convention::Classifier,
    };
    let max = args.flops_max.as_deref().map(parse_count).transpose()?;
    let min = args.flops_min.as_deref().map(parse_count).transpose()?;
    let table = FlopsTable::new(&space, input)?;
    let mut rng = Rng::seed(args.seed);
    let mut archs = Vec::with_capacity(args.count);
    match args.sampler {
        SamplerKind::Uniform => {
            let s = FlopsWindowSampler::new(
                table.clone(),
                convention,
                min.unwrap_or(0),
                max.unwrap_or(u64::MAX),
                args.max_tries,
            )?;
            for _ in 0..args.count {
                archs.push(s.sample(&space, &mut rng)?);
            }
        }
        SamplerKind::Binned => {
            if min.is_some() {
                anyhow::bail!("--flops-min is not used by --sampler binned (its bins start at the space's minimum)");
            }
            let mut s = FlopsBinnedSampler::new(table.clone(), convention, args.bins, max)?;
            s.tries_per_bin = args.max_tries.min(500);
            for _ in 0..args.count {
                archs.push(s.sample(&space, &mut rng)?);
            }
        }
    }
    if args.json {
        let items: Vec<_> = archs
            .iter()
            .map(|a| {
                let r = cost(&space, a, input).expect("sampled archs are valid");
                report_json(&space, a, &r)
            })
            .map(|mut v| {
                let o = v.as_object_mut().expect("object");
                o.remove("layers");
                o.remove("stages");
                v
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&items)?);
    } else {
        for a in &archs {
            println!("{a}  {} FLOPs", format_count(table.flops(a, convention)));
        }
    }
    Ok(())
}
