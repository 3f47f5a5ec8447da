//! `host report` on a fixture run folder: every chart is a real PNG with the data drawn in it,
//! the HTML page embeds them and carries the before/after table; bad folders are named.

use crate::common;

use common::{host_command, output_text as text, repo_root};
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures").join(name)
}

/// Pixels of the first line colour (plotters' palette entry 0) in a PNG.
fn line_pixels(path: &std::path::Path) -> usize {
    let image = image::open(path)
        .unwrap_or_else(|e| panic!("{} is not a PNG: {e}", path.display()))
        .to_rgb8();
    assert_eq!(image.dimensions(), (800, 420));
    image.pixels().filter(|p| p.0 == [31, 119, 180]).count()
}

#[test]
fn report_draws_every_chart_and_a_self_contained_page() {
    let out = tempfile::tempdir().unwrap();
    let output = host_command(&[])
        .arg("report")
        .arg(fixture("report-run"))
        .arg(format!(
            "--eval=before={}",
            fixture("report-evals/before").display()
        ))
        .arg(format!(
            "--eval=after={}",
            fixture("report-evals/after").display()
        ))
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));

    let expected = [
        "reward",
        "reward_components",
        "validation_em_f1",
        "response_length",
        "searches",
        "kl",
        "entropy",
    ];
    for stem in expected {
        let png = out.path().join(format!("{stem}.png"));
        let pixels = line_pixels(&png);
        assert!(pixels > 200, "{stem}.png has only {pixels} line pixels");
    }

    let html = std::fs::read_to_string(out.path().join("index.html")).unwrap();
    assert_eq!(
        html.matches("src=\"data:image/png;base64,").count(),
        expected.len()
    );
    assert!(
        !html.contains("src=\"reward.png\""),
        "charts are embedded, not linked"
    );
    // 12 complete steps: the cut 13th line is left out.
    assert!(html.contains("12 training steps"), "{html:.2000}");
    assert!(html.contains("validation reward 0.100 (step 0) → 0.280 (step 12)"));
    // Before/after table with the change in EM (0.125 → 0.375) and answered (8/16 → 14/16).
    assert!(html.contains("before (16 questions)"));
    assert!(html.contains("after − before"));
    assert!(html.contains("<td>+0.250</td>"), "EM delta");
    assert!(html.contains("<td>+0.300</td>"), "F1 delta");
    assert_eq!(
        html.matches("<td>+0.250</td>").count(),
        1,
        "only EM moved by 0.25"
    );
    assert!(html.contains("<td>+0.375</td>"), "answered delta");
    // The config is shown, escaped.
    assert!(html.contains("&lt;fixture &amp; run&gt;"));
}

#[test]
fn report_without_evals_defaults_to_the_run_folder() {
    let run = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("report-run/metrics.jsonl"),
        run.path().join("metrics.jsonl"),
    )
    .unwrap();
    let output = host_command(&[])
        .arg("report")
        .arg(run.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let html = std::fs::read_to_string(run.path().join("report/index.html")).unwrap();
    assert!(!html.contains("<h2>Evaluation</h2>"));
    assert!(
        !html.contains("<h2>Configuration</h2>"),
        "no config.toml, no section"
    );
    assert!(run.path().join("report/kl.png").is_file());
}

#[test]
fn bad_report_inputs_are_named() {
    let empty = tempfile::tempdir().unwrap();
    let output = host_command(&[])
        .arg("report")
        .arg(empty.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        text(&output).contains("metrics.jsonl") && text(&output).contains("host train"),
        "{}",
        text(&output)
    );

    let fixture_lines = std::fs::read_to_string(fixture("report-run/metrics.jsonl")).unwrap();
    let good: Vec<&str> = fixture_lines.lines().take(2).collect();
    std::fs::write(
        empty.path().join("metrics.jsonl"),
        format!("{}\n{{oops}}\n{}\n", good[0], good[1]),
    )
    .unwrap();
    let output = host_command(&[])
        .arg("report")
        .arg(empty.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        text(&output).contains("metrics.jsonl:2"),
        "{}",
        text(&output)
    );

    let output = host_command(&[])
        .arg("report")
        .arg(fixture("report-run"))
        .arg(format!("--eval=before={}", empty.path().display()))
        .arg("--out")
        .arg(empty.path().join("r"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(text(&output).contains("report.json"), "{}", text(&output));
}
