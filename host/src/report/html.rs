//! The report's single self-contained HTML page: charts embedded as data URIs, the run's
//! headline numbers, the before/after evaluation table and the run's configuration.

use super::charts::Chart;
use super::evals::{COLUMNS, EvalRun, comparison};
use super::held_out::HeldOutChange;
use super::metrics::RunMetrics;
use anyhow::{Context, Result};
use base64::Engine as _;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Everything the page shows.
pub struct PageInput<'a> {
    pub run_dir: &'a Path,
    pub metrics: &'a RunMetrics,
    /// The warm-start run drawn before this one, and its folder.
    pub before: Option<(&'a RunMetrics, &'a Path)>,
    /// Each chart with the PNG drawn for it.
    pub charts: &'a [(Chart, PathBuf)],
    pub evals: &'a [EvalRun],
    /// The change from the run's first validation to its last, paired by question.
    pub held_out: Option<&'a HeldOutChange>,
    /// The run's config.toml, when present.
    pub config: Option<&'a str>,
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:860px;margin:2em auto;\
padding:0 1em;color:#222}img{max-width:100%;border:1px solid #ddd;margin:.5em 0}\
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;\
text-align:right}td:first-child,td:nth-child(2),th{text-align:left}tr.delta{font-weight:bold;\
background:#f4f4f4}pre{background:#f7f7f7;padding:1em;overflow-x:auto}";

fn headline(m: &RunMetrics, before: Option<(&RunMetrics, &Path)>) -> String {
    let mut items = Vec::new();
    if let Some((warm, dir)) = before {
        let mut item = format!(
            "warm start: {} supervised steps in {}",
            warm.sft_steps,
            dir.display()
        );
        if let (Some(first), Some(last)) = (warm.val_reward.first(), warm.val_reward.last()) {
            item.push_str(&format!(
                ", validation reward {:.3} → {:.3}",
                first.1, last.1
            ));
        }
        items.push(item);
    }
    if m.sft_steps > 0 {
        items.push(format!("{} supervised (warm-start) steps", m.sft_steps));
    }
    if m.steps > 0 || m.sft_steps == 0 {
        items.push(format!("{} training steps", m.steps));
    }
    let window = (m.steps / 4).max(1);
    if let Some((first, last)) = RunMetrics::first_last_mean(&m.reward, window) {
        items.push(format!(
            "mean train reward {first:.3} over the first {window} step(s) → {last:.3} over the last {window}"
        ));
    }
    if let (Some(first), Some(last)) = (m.val_reward.first(), m.val_reward.last()) {
        items.push(format!(
            "validation reward {:.3} (step {}) → {:.3} (step {})",
            first.1, first.0, last.1, last.0
        ));
    }
    if let Some(kl) = RunMetrics::last(&m.kl) {
        items.push(format!("final KL {kl:.4}"));
    }
    if !m.step_seconds.is_empty() {
        let mean = m.step_seconds.iter().map(|p| p.1).sum::<f64>() / m.step_seconds.len() as f64;
        items.push(format!("{mean:.1} s per step"));
    }
    items
        .iter()
        .map(|i| format!("<li>{}</li>", escape(i)))
        .collect()
}

fn eval_table(evals: &[EvalRun]) -> String {
    let mut html = String::from("<table><tr><th>dataset</th><th>evaluation</th>");
    for column in COLUMNS {
        let _ = write!(html, "<th>{}</th>", escape(column));
    }
    html.push_str("</tr>");
    for row in comparison(evals) {
        let class = if row.delta { " class=\"delta\"" } else { "" };
        let _ = write!(
            html,
            "<tr{class}><td>{}</td><td>{}</td>",
            escape(&row.dataset),
            escape(&row.label)
        );
        for v in row.values {
            let cell = if row.delta {
                format!("{v:+.3}")
            } else {
                format!("{v:.3}")
            };
            let _ = write!(html, "<td>{cell}</td>");
        }
        html.push_str("</tr>");
    }
    html.push_str("</table><p>Evaluations: ");
    let dirs: Vec<String> = evals
        .iter()
        .map(|e| {
            format!(
                "{} = <code>{}</code>",
                escape(&e.label),
                escape(&e.dir.display().to_string())
            )
        })
        .collect();
    html.push_str(&dirs.join(", "));
    html.push_str("</p>");
    html
}

/// The held-out table: each quantity at the first and last validation and the paired gain,
/// with 95 % bootstrap intervals.
fn held_out_table(change: &HeldOutChange) -> String {
    let mut html = format!(
        "<h2>Held-out change</h2><p>Greedy validation rollouts at steps {} and {}, {} questions \
paired; 95 % bootstrap intervals over questions. A gain whose interval holds 0 is within \
noise.</p><table><tr><th></th><th>step {}</th><th>step {}</th><th>gain</th></tr>",
        change.before_step,
        change.after_step,
        change.questions,
        change.before_step,
        change.after_step
    );
    for (name, q) in [
        ("reward", &change.reward),
        ("EM", &change.em),
        ("F1", &change.f1),
    ] {
        let _ = write!(
            html,
            "<tr><td>{name}</td><td>{:.3} [{:.3}, {:.3}]</td><td>{:.3} [{:.3}, {:.3}]</td>\
<td>{:+.3} [{:+.3}, {:+.3}]{}</td></tr>",
            q.before.mean,
            q.before.low,
            q.before.high,
            q.after.mean,
            q.after.low,
            q.after.high,
            q.gain.mean,
            q.gain.low,
            q.gain.high,
            if q.beyond_noise() {
                ""
            } else {
                " (within noise)"
            }
        );
    }
    html.push_str("</table>");
    html
}

/// Renders the page.
pub fn page(input: &PageInput) -> Result<String> {
    let title = format!("Training report: {}", input.run_dir.display());
    let mut html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\
<style>{STYLE}</style></head><body><h1>{}</h1><ul>{}</ul>",
        escape(&title),
        escape(&title),
        headline(input.metrics, input.before)
    );
    if let Some(change) = input.held_out {
        html.push_str(&held_out_table(change));
    }
    if !input.evals.is_empty() {
        html.push_str("<h2>Evaluation</h2>");
        html.push_str(&eval_table(input.evals));
    }
    html.push_str("<h2>Training dynamics</h2>");
    for (chart, path) in input.charts {
        let png = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let _ = write!(
            html,
            "<h3>{}</h3><img alt=\"{}\" src=\"data:image/png;base64,{}\">",
            escape(&chart.title),
            escape(&chart.title),
            base64::engine::general_purpose::STANDARD.encode(png)
        );
    }
    if let Some(config) = input.config {
        let _ = write!(
            html,
            "<h2>Configuration</h2><details><summary>config.toml</summary><pre>{}</pre></details>",
            escape(config)
        );
    }
    html.push_str("</body></html>\n");
    Ok(html)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            escape("<a href=\"x\">Tom & 'Jerry'</a>"),
            "&lt;a href=&quot;x&quot;&gt;Tom &amp; &#39;Jerry&#39;&lt;/a&gt;"
        );
    }
}
