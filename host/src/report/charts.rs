//! Line charts as PNG files (plotters' bitmap backend with an embedded DejaVu font, so no
//! system fonts are needed).

use super::metrics::{RunMetrics, Series};
use anyhow::{Result, anyhow};
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

/// Pixel size of every chart.
pub const SIZE: (u32, u32) = (800, 420);

/// One named line of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub name: String,
    pub points: Series,
}

/// One chart: its file name, title, y-axis label and lines (x is always the training step).
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub file_stem: String,
    pub title: String,
    pub y_label: String,
    pub lines: Vec<Line>,
}

impl Chart {
    fn new(file_stem: &str, title: &str, y_label: &str, lines: Vec<Line>) -> Option<Chart> {
        let lines: Vec<Line> = lines.into_iter().filter(|l| !l.points.is_empty()).collect();
        (!lines.is_empty()).then(|| Chart {
            file_stem: file_stem.to_string(),
            title: title.to_string(),
            y_label: y_label.to_string(),
            lines,
        })
    }
}

fn line(name: &str, points: &Series) -> Line {
    Line {
        name: name.to_string(),
        points: points.clone(),
    }
}

/// The charts of a run, in page order; a quantity the run never logged has no chart.
pub fn training_charts(m: &RunMetrics) -> Vec<Chart> {
    let components = m
        .components
        .iter()
        .map(|(name, points)| line(name, points))
        .collect();
    [
        Chart::new(
            "reward",
            "Reward",
            "mean reward",
            vec![line("train", &m.reward), line("validation", &m.val_reward)],
        ),
        Chart::new(
            "reward_components",
            "Reward components (train)",
            "mean value",
            components,
        ),
        Chart::new(
            "validation_em_f1",
            "Validation answer quality",
            "score",
            vec![line("EM", &m.val_em), line("F1", &m.val_f1)],
        ),
        Chart::new(
            "response_length",
            "Response length",
            "tokens per rollout",
            vec![line("train", &m.response_length)],
        ),
        Chart::new(
            "searches",
            "Searches per rollout",
            "searches",
            vec![
                line("train", &m.searches),
                line("validation", &m.val_searches),
            ],
        ),
        Chart::new(
            "kl",
            "KL to the reference model",
            "KL (k3)",
            vec![line("train", &m.kl)],
        ),
        Chart::new(
            "entropy",
            "Policy entropy",
            "nats per token",
            vec![line("train", &m.entropy)],
        ),
    ]
    .into_iter()
    .flatten()
    .collect()
}

const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn register_font() {
    static FONT: Once = Once::new();
    FONT.call_once(|| {
        // The bytes are a valid TrueType font shipped in the dejavu crate.
        if plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
            .is_err()
        {
            tracing::warn!("the embedded DejaVu font could not be registered");
        }
    });
}

/// A range that contains every value, padded; a single value gets a unit-wide range.
fn padded_range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() || !hi.is_finite() {
        return 0.0..1.0;
    }
    let span = hi - lo;
    if span <= f64::EPSILON * hi.abs().max(1.0) {
        let pad = (hi.abs() * 0.1).max(0.5);
        return (lo - pad)..(hi + pad);
    }
    (lo - span * 0.05)..(hi + span * 0.05)
}

/// Draws `chart` into a PNG at `path`.
pub fn render_png(chart: &Chart, path: &Path) -> Result<()> {
    register_font();
    let err = |e: &dyn std::fmt::Display| anyhow!("{e}");
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let points = || chart.lines.iter().flat_map(|l| l.points.iter());
    let x = padded_range(points().map(|p| p.0));
    // About one label per step on short runs, at most 12.
    let x_labels = ((x.end - x.start).floor() as usize + 1).clamp(2, 12);
    let y = padded_range(points().map(|p| p.1));
    let mut plot = ChartBuilder::on(&root)
        .caption(&chart.title, ("sans-serif", 22))
        .margin(14)
        .x_label_area_size(42)
        .y_label_area_size(64)
        .build_cartesian_2d(x, y)
        .map_err(|e| err(&e))?;
    plot.configure_mesh()
        .x_desc("step")
        .x_labels(x_labels)
        .x_label_formatter(&|x| {
            if x.fract() == 0.0 {
                format!("{x:.0}")
            } else {
                format!("{x:.1}")
            }
        })
        .light_line_style(RGBColor(240, 240, 240))
        .y_desc(chart.y_label.as_str())
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| err(&e))?;
    for (index, series) in chart.lines.iter().enumerate() {
        let colour = COLOURS[index % COLOURS.len()];
        plot.draw_series(LineSeries::new(
            series.points.iter().copied(),
            colour.stroke_width(2),
        ))
        .map_err(|e| err(&e))?
        .label(series.name.as_str())
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2)));
        plot.draw_series(
            series
                .points
                .iter()
                .map(|&p| Circle::new(p, 3, colour.filled())),
        )
        .map_err(|e| err(&e))?;
    }
    plot.configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_padded_and_never_empty() {
        assert_eq!(padded_range([2.0].into_iter()), 1.5..2.5);
        assert_eq!(padded_range(std::iter::empty()), 0.0..1.0);
        let r = padded_range([0.0, 10.0].into_iter());
        assert_eq!(r, -0.5..10.5);
    }

    #[test]
    fn a_chart_is_a_png_with_drawn_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.png");
        let chart = Chart::new(
            "c",
            "Reward",
            "reward",
            vec![
                line("train", &vec![(1.0, 0.1), (2.0, 0.4), (3.0, 0.3)]),
                line("validation", &vec![(0.0, 0.2)]),
                line("empty", &vec![]),
            ],
        )
        .unwrap();
        assert_eq!(chart.lines.len(), 2, "empty lines are dropped");
        render_png(&chart, &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        assert!(
            bytes.len() > 5_000,
            "a chart with text and lines: {} bytes",
            bytes.len()
        );
        assert!(Chart::new("x", "x", "x", vec![line("e", &vec![])]).is_none());
    }
}
