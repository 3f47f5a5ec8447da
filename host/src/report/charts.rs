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
    /// The step where GRPO took over from the warm start (a vertical rule), when the report
    /// draws both phases.
    pub boundary: Option<f64>,
}

impl Chart {
    fn new(file_stem: &str, title: &str, y_label: &str, lines: Vec<Line>) -> Option<Chart> {
        let lines: Vec<Line> = lines.into_iter().filter(|l| !l.points.is_empty()).collect();
        (!lines.is_empty()).then(|| Chart {
            file_stem: file_stem.to_string(),
            title: title.to_string(),
            y_label: y_label.to_string(),
            lines,
            boundary: None,
        })
    }
}

fn line(name: &str, points: &Series) -> Line {
    Line {
        name: name.to_string(),
        points: points.clone(),
    }
}

/// The charts of a run, in page order; a quantity the run never logged has no chart. With
/// `before` (the warm-start run the policy came from), both phases share one timeline: the
/// warm start's steps first, then the run's, moved past them, with a rule where GRPO begins.
pub fn training_charts(run: &RunMetrics, before: Option<&RunMetrics>) -> Vec<Chart> {
    let empty = RunMetrics::default();
    let (warm, boundary) = match before {
        Some(warm) => (warm, Some(warm.last_step)),
        None => (&empty, None),
    };
    let m = &run.shifted(boundary.unwrap_or(0.0));
    let phase = |name: &str| match boundary {
        Some(_) => format!("{name} (warm start)"),
        None => name.to_string(),
    };
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
            vec![
                line("train", &m.reward),
                line("validation", &m.val_reward),
                line(&phase("validation"), &warm.val_reward),
            ],
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
            vec![
                line("EM", &m.val_em),
                line("F1", &m.val_f1),
                line(&phase("EM"), &warm.val_em),
                line(&phase("F1"), &warm.val_f1),
            ],
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
                line(&phase("validation"), &warm.val_searches),
            ],
        ),
        Chart::new(
            "warm_start_loss",
            "Warm-start loss (SFT)",
            "cross-entropy per token",
            vec![line("loss", &warm.sft_loss), line("loss", &m.sft_loss)],
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
    .map(|chart| Chart { boundary, ..chart })
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
    let x = padded_range(points().map(|p| p.0).chain(chart.boundary));
    // About one label per step on short runs, at most 12.
    let x_labels = ((x.end - x.start).floor() as usize + 1).clamp(2, 12);
    let y = padded_range(points().map(|p| p.1));
    let y_range = y.clone();
    let mut plot = ChartBuilder::on(&root)
        .caption(&chart.title, ("sans-serif", 22))
        .margin(14)
        .x_label_area_size(42)
        .y_label_area_size(64)
        .build_cartesian_2d(x, y)
        .map_err(|e| err(&e))?;
    plot.configure_mesh()
        .x_desc(if chart.boundary.is_some() {
            "step (warm start, then GRPO)"
        } else {
            "step"
        })
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
    if let Some(at) = chart.boundary {
        let grey = RGBColor(150, 150, 150);
        plot.draw_series(LineSeries::new(
            [(at, y_range.start), (at, y_range.end)],
            grey.stroke_width(1),
        ))
        .map_err(|e| err(&e))?
        .label("GRPO starts")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], grey.stroke_width(1)));
    }
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

    #[test]
    fn a_warm_start_comes_first_on_one_timeline() {
        let warm = RunMetrics {
            val_reward: vec![(0.0, 0.0), (40.0, 0.2)],
            sft_loss: vec![(1.0, 2.0), (40.0, 0.5)],
            sft_steps: 40,
            last_step: 40.0,
            ..RunMetrics::default()
        };
        let grpo = RunMetrics {
            steps: 2,
            reward: vec![(1.0, 0.3), (2.0, 0.4)],
            val_reward: vec![(0.0, 0.2), (2.0, 0.35)],
            last_step: 2.0,
            ..RunMetrics::default()
        };
        let charts = training_charts(&grpo, Some(&warm));
        let reward = charts.iter().find(|c| c.file_stem == "reward").unwrap();
        assert_eq!(reward.boundary, Some(40.0));
        let by_name = |name: &str| &reward.lines.iter().find(|l| l.name == name).unwrap().points;
        assert_eq!(by_name("validation"), &vec![(40.0, 0.2), (42.0, 0.35)]);
        assert_eq!(by_name("train"), &vec![(41.0, 0.3), (42.0, 0.4)]);
        assert_eq!(by_name("validation (warm start)"), &warm.val_reward);
        assert!(charts.iter().any(|c| c.file_stem == "warm_start_loss"));
        let dir = tempfile::tempdir().unwrap();
        render_png(reward, &dir.path().join("r.png")).unwrap();
        // Alone, the run keeps its own steps and has no rule or loss chart.
        let alone = training_charts(&grpo, None);
        assert!(alone.iter().all(|c| c.boundary.is_none()));
        assert!(alone.iter().all(|c| c.file_stem != "warm_start_loss"));
        assert_eq!(alone[0].lines[0].points[0], (1.0, 0.3));
    }
}
