//! `detnas tour`: the built-in default job, a walk through the spaces and published architectures.

use anyhow::Result;
use detnas_core::rng::Rng;
use detnas_core::search::evolution::{Evolution, EvolutionConfig, FlopsConstraint};
use detnas_core::size::format_count;
use detnas_core::space::arch::PRESETS;
use detnas_core::space::cost::{FlopsTable, cost};
use detnas_core::space::sample::FlopsWindowSampler;
use detnas_core::{Arch, Convention, InputSize, SearchSpace};

pub fn run() -> Result<()> {
    let input = InputSize::IMAGENET;
    println!("DetNAS search spaces (FLOPs = conv + FC multiply-adds at {input})\n");
    for space in SearchSpace::all().iter().filter(|s| !s.is_fixed()) {
        let (lo, hi) = FlopsTable::new(space, input)?.range(Convention::Backbone);
        println!(
            "  {:<12} {} layers x 4 choices = {:.2e} paths; backbone FLOPs {} .. {}",
            space.name,
            space.num_layers(),
            space.cardinality() as f64,
            format_count(lo),
            format_count(hi)
        );
    }
    println!("\nPublished architectures");
    println!("  {:<20} {:>10} {:>10} {:>9}  description", "preset", "backbone", "classifier", "params");
    for p in PRESETS {
        let (space, arch) = p.resolve();
        let r = cost(&space, &arch, input)?;
        println!(
            "  {:<20} {:>10} {:>10} {:>9}  {}",
            p.name,
            format_count(r.backbone_flops),
            format_count(r.classifier_flops),
            format_count(r.classifier_params),
            p.description
        );
    }

    let space = SearchSpace::detnas_300m();
    let (_, arch) = detnas_core::space::arch::Preset::by_name("coco-fpn-300m")?.resolve();
    let det = InputSize::new(800, 1216);
    let r = cost(&space, &arch, det)?;
    println!("\ncoco-fpn-300m at a detection input of {det}: backbone {} FLOPs", format_count(r.backbone_flops));
    for s in &r.stages {
        println!("  {}  {:>4} x {:>3} x {:<3} stride {}", s.name, s.channels, s.height, s.width, s.stride);
    }

    let table = FlopsTable::new(&space, input)?;
    let sampler = FlopsWindowSampler::new(table.clone(), Convention::Backbone, 0, 300_000_000, 10_000)?;
    let mut rng = Rng::seed(0);
    println!("\nThree random paths under 300M backbone FLOPs (seed 0)");
    for _ in 0..3 {
        let a = sampler.sample(&space, &mut rng)?;
        println!("  {a}  {}", format_count(table.flops(&a, Convention::Backbone)));
    }

    // A toy evolutionary search: the fitness prefers large kernels, the budget forbids too many.
    let target = |a: &Arch| -> Result<f64, String> {
        Ok(a.choices().iter().map(|c| c.kernel() as f64 + if c.index() == 3 { 2.0 } else { 0.0 }).sum::<f64>())
    };
    let constraint =
        FlopsConstraint { table, convention: Convention::Backbone, max: 300_000_000, context: "224x224".into() };
    let config = EvolutionConfig { generations: 5, ..EvolutionConfig::default() };
    let mut engine = Evolution::new(space, config, vec![Box::new(constraint)])?;
    let mut fitness = target;
    let outcome = engine.run(&mut fitness, |_| {})?;
    println!(
        "\nEvolution (5 generations x 50, synthetic fitness, <= 300M): best {} fitness {:.1} after {} evaluations",
        outcome.best.arch, outcome.best.fitness, outcome.evaluations
    );
    println!("\nNext: `detnas arch info --arch coco-fpn-300m`, `detnas arch sample --flops-max 300M --count 5`");
    Ok(())
}
