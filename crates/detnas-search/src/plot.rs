//! `pareto.png`: every evaluated candidate of a search (fitness against cost), the Pareto front
//! as a line, and optional reference points (baselines) labelled by name; and the study's
//! scatter plots.

use anyhow::{Context, Result, anyhow};
use detnas_core::fsutil::write_atomic;
use detnas_core::search::pareto::{CandidateRow, pareto_front};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use std::path::Path;

const SIZE: (u32, u32) = (900, 600);
const FONT: &str = "sans-serif";

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The embedded font is valid; a failure would only leave the text out.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
    });
}

/// The axes every plot here draws on.
type Chart<'a, 'b> = ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A plotters error as an `anyhow` one (the caller adds which file).
fn drawn<T, E: std::fmt::Display>(r: std::result::Result<T, E>) -> Result<T> {
    r.map_err(|e| anyhow!("{e}"))
}

/// A [`SIZE`] chart with `title`, axes over `x` and `y` with their labels and a grid, whose
/// content `draw` adds (with a `legend` of the series it labels); written to `path` as PNG,
/// atomically.
fn chart_png(
    path: &Path,
    title: &str,
    (x, y): (std::ops::Range<f64>, std::ops::Range<f64>),
    (x_label, y_label): (&str, &str),
    legend: bool,
    draw: impl FnOnce(&mut Chart<'_, '_>) -> Result<()>,
) -> Result<()> {
    register_font();
    let mut buf = vec![0u8; (SIZE.0 * SIZE.1 * 3) as usize];
    (|| {
        let root = BitMapBackend::with_buffer(&mut buf, SIZE).into_drawing_area();
        drawn(root.fill(&WHITE))?;
        let mut chart = drawn(
            ChartBuilder::on(&root)
                .caption(title, (FONT, 22))
                .margin(15)
                .x_label_area_size(45)
                .y_label_area_size(60)
                .build_cartesian_2d(x, y),
        )?;
        drawn(chart.configure_mesh().x_desc(x_label).y_desc(y_label).draw())?;
        draw(&mut chart)?;
        // the legend of the series `draw` labelled (none: no legend box)
        if legend {
            drawn(
                chart
                    .configure_series_labels()
                    .position(SeriesLabelPosition::UpperLeft)
                    .background_style(WHITE.mix(0.8))
                    .border_style(BLACK)
                    .draw(),
            )?;
        }
        drawn(root.present())
    })()
    .with_context(|| format!("drawing {}", path.display()))?;
    let img = image::RgbImage::from_raw(SIZE.0, SIZE.1, buf).context("plot buffer size")?;
    let mut png = std::io::Cursor::new(Vec::new());
    img.write_to(&mut png, image::ImageFormat::Png)?;
    write_atomic(path, png.get_ref())?;
    Ok(())
}

/// Draws the plot of `rows` (and labelled `references`, as `(name, cost, fitness)`) into `path`
/// as PNG, atomically.
pub fn pareto_png(path: &Path, title: &str, rows: &[CandidateRow], references: &[(String, f64, f64)]) -> Result<()> {
    let axis = rows.first().map_or("cost", |r| r.cost().1);
    let points: Vec<(f64, f64)> = rows.iter().map(|r| (r.cost().0, r.fitness)).collect();
    let all = points.iter().copied().chain(references.iter().map(|(_, c, f)| (*c, *f)));
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in all {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    let pad = |lo: f64, hi: f64| {
        let d = ((hi - lo) * 0.08).max(1e-3);
        (lo - d, hi + d)
    };
    let ((x0, x1), (y0, y1)) = (pad(x0, x1), pad(y0, y1));
    chart_png(path, title, (x0..x1, y0..y1), (axis, "fitness"), true, |chart| {
        let grey = RGBColor(150, 150, 170);
        drawn(chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, grey.filled()))))?
            .label("evaluated")
            .legend(move |(x, y)| Circle::new((x, y), 3, grey.filled()));
        let front: Vec<(f64, f64)> = pareto_front(rows).into_iter().map(|i| points[i]).collect();
        // a staircase: the best fitness reachable at each cost
        let steps = front.windows(2).flat_map(|w| [w[0], (w[1].0, w[0].1)]).chain(front.last().copied());
        drawn(chart.draw_series(LineSeries::new(steps, BLUE.stroke_width(2))))?
            .label("Pareto front")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLUE.stroke_width(2)));
        drawn(chart.draw_series(front.iter().map(|&p| Circle::new(p, 4, BLUE.filled()))))?;
        for (name, c, f) in references {
            // labels of points in the right half go to their left, so they stay inside the plot
            let width = 7 * name.chars().count() as i32;
            let dx = if (*c - x0) / (x1 - x0) > 0.5 { -8 - width } else { 8 };
            drawn(chart.draw_series([EmptyElement::at((*c, *f))
                + TriangleMarker::new((0, 0), 6, RED.filled())
                + Text::new(name.clone(), (dx, -8), (FONT, 14))]))?;
        }
        Ok(())
    })
}

/// A square scatter plot of `points` with the diagonal y = x, into `path` as PNG (atomically).
pub fn scatter_png(path: &Path, title: &str, labels: (&str, &str), points: &[(f64, f64)]) -> Result<()> {
    let hi = points.iter().fold(0.0f64, |m, &(x, y)| m.max(x).max(y)).max(1e-3) * 1.08;
    chart_png(path, title, (0.0..hi, 0.0..hi), labels, false, |chart| {
        let grey = RGBColor(150, 150, 170);
        drawn(chart.draw_series(LineSeries::new([(0.0, 0.0), (hi, hi)], grey.stroke_width(1))))?;
        drawn(chart.draw_series(points.iter().map(|&p| Circle::new(p, 5, BLUE.filled()))))?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_points_front_and_references() {
        let rows: Vec<CandidateRow> = (0..12)
            .map(|i| CandidateRow {
                candidate: format!("c{i}"),
                generation: i / 4,
                backbone_flops: 1,
                detector_flops: 1,
                predicted_ms: Some(5.0 + i as f64),
                measured_ms: None,
                fitness: ((i * 7) % 5) as f64 / 10.0,
                scored_by: "supernet".into(),
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pareto.png");
        pareto_png(&path, "search", &rows, &[("baseline".into(), 9.0, 0.2)]).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), SIZE);
        let blue = img.pixels().filter(|p| p.0 == [0, 0, 255]).count();
        let red = img.pixels().filter(|p| p.0 == [255, 0, 0]).count();
        let dark = img.pixels().filter(|p| p.0.iter().all(|&c| c < 60)).count();
        assert!(blue > 100 && red > 10 && dark > 500, "front {blue}, reference {red}, text and axes {dark}");
    }

    #[test]
    fn scatter_draws_every_point() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scatter.png");
        scatter_png(&path, "fidelity", ("inherited", "stand-alone"), &[(0.1, 0.2), (0.3, 0.25), (0.5, 0.6)]).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        let blue = img.pixels().filter(|p| p.0 == [0, 0, 255]).count();
        assert!(blue > 3 * 50, "three filled points: {blue} blue pixels");
    }
}
