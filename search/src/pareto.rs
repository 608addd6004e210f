//! The paper's trade-off figure: test accuracy against the measured cost of
//! one secure inference (online latency and bytes per party), one point per
//! model, the all-Softmax teacher as the baseline.

use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

use crate::{Error, Result};

/// One model's accuracy and secure-inference cost.
#[derive(Clone, Debug, Serialize)]
pub struct Point {
    /// Label (the model directory's name).
    pub name: String,
    /// Head mix, e.g. `8/16 ReLU-Softmax, 8/16 ScaleAttn`.
    pub heads: String,
    /// Test accuracy in [0, 1].
    pub test_acc: f64,
    /// Online seconds per image (both parties as threads of one process).
    pub online_seconds: f64,
    /// Bytes each party sends per image.
    pub bytes_per_party: u64,
    /// Communication rounds per image.
    pub rounds: u64,
    /// Bytes the dealer sends (both parties together) per image.
    pub dealer_bytes: u64,
    /// Whether this is the all-Softmax baseline.
    pub baseline: bool,
}

/// A model's attention (and MPCViT+ GeLU) mix in a few words, e.g.
/// `RS 8 · SA 8 of 16 heads, GeLU 100/200 tokens`.
pub fn head_mix(config: &model::ModelConfig) -> String {
    use model::AttnKind;
    let total = config.depth * config.heads;
    let count = |kind| {
        config
            .attention
            .iter()
            .flatten()
            .filter(|&&k| k == kind)
            .count()
    };
    let parts: Vec<String> = [
        ("SM", AttnKind::Softmax),
        ("RS", AttnKind::ReluSoftmax),
        ("SA", AttnKind::ScaleAttn),
    ]
    .into_iter()
    .filter(|(_, k)| count(*k) > 0)
    .map(|(name, k)| format!("{name} {}", count(k)))
    .collect();
    let mut s = format!("{} of {total} heads", parts.join(" · "));
    let masks: Vec<&Vec<bool>> = config.beta.iter().flatten().collect();
    if !masks.is_empty() {
        let tokens: usize = masks.iter().map(|m| m.len()).sum();
        let gelu: usize = masks.iter().map(|m| m.iter().filter(|&&b| b).count()).sum();
        s += &format!(", GeLU {gelu}/{tokens} tokens");
    }
    s
}

/// The Markdown table of `points` (accuracy in %, MB = 10⁶ bytes).
pub fn markdown_table(points: &[Point]) -> String {
    let mut s = String::from(
        "| model | heads | test accuracy | online s / image | MB sent per party | rounds | dealer MB |\n|---|---|---|---|---|---|---|\n",
    );
    for p in points {
        s += &format!(
            "| {} | {} | {:.2}% | {:.2} | {:.1} | {} | {:.1} |\n",
            p.name,
            p.heads,
            100.0 * p.test_acc,
            p.online_seconds,
            p.bytes_per_party as f64 / 1e6,
            p.rounds,
            p.dealer_bytes as f64 / 1e6
        );
    }
    s
}

/// Write the figure as SVG: accuracy against online latency (left) and
/// against megabytes per party (right).
pub fn write_svg(points: &[Point], title: &str, path: &Path) -> Result<()> {
    if points.is_empty() {
        return Err(Error::Unsupported("no models to plot".into()));
    }
    let plot_err = |e: String| Error::Unsupported(format!("plotting {}: {e}", path.display()));
    let root = SVGBackend::new(path, (1100, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(e.to_string()))?;
    let root = root
        .titled(title, ("sans-serif", 20))
        .map_err(|e| plot_err(e.to_string()))?;
    let panels = root.split_evenly((1, 2));
    let acc: Vec<f64> = points.iter().map(|p| 100.0 * p.test_acc).collect();
    let (lo, hi) = span(&acc, 0.5);
    let axes: [(&str, XAxis); 2] = [
        ("online latency per image (s)", |p| p.online_seconds),
        ("MB sent per party per image", |p| {
            p.bytes_per_party as f64 / 1e6
        }),
    ];
    for (panel, (x_label, x_of)) in panels.iter().zip(axes) {
        let xs: Vec<f64> = points.iter().map(x_of).collect();
        let (x_lo, x_hi) = span(&xs, 0.0);
        let mut chart = ChartBuilder::on(panel)
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d((x_lo * 0.8).max(0.0)..x_hi * 1.25, lo..hi)
            .map_err(|e| plot_err(e.to_string()))?;
        chart
            .configure_mesh()
            .max_light_lines(1)
            .x_desc(x_label)
            .y_desc("test accuracy (%)")
            .draw()
            .map_err(|e| plot_err(e.to_string()))?;
        // The searched models as a line ordered by cost, the baseline apart.
        let mut searched: Vec<(f64, f64)> = points
            .iter()
            .filter(|p| !p.baseline)
            .map(|p| (x_of(p), 100.0 * p.test_acc))
            .collect();
        searched.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart
            .draw_series(LineSeries::new(searched, BLUE.stroke_width(2)))
            .map_err(|e| plot_err(e.to_string()))?;
        // Red: the all-Softmax baseline; blue: the searched models.
        for p in points {
            let (x, y) = (x_of(p), 100.0 * p.test_acc);
            let color = if p.baseline { RED } else { BLUE };
            let marker = EmptyElement::at((x, y))
                + Circle::new((0, 0), 5, color.filled())
                + Text::new(
                    p.name.clone(),
                    (8, -16),
                    ("sans-serif", 13).into_font().color(&color),
                );
            chart
                .draw_series(std::iter::once(marker))
                .map_err(|e| plot_err(e.to_string()))?;
        }
    }
    root.present().map_err(|e| plot_err(e.to_string()))?;
    Ok(())
}

/// A panel's x coordinate of a point.
type XAxis = fn(&Point) -> f64;

/// `[min - pad, max + pad]` of `v`, widened to a non-empty range.
fn span(v: &[f64], pad: f64) -> (f64, f64) {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let pad = pad.max((hi - lo) * 0.1).max(1e-3);
    (lo - pad, hi + pad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(name: &str, acc: f64, s: f64, baseline: bool) -> Point {
        Point {
            name: name.into(),
            heads: "h".into(),
            test_acc: acc,
            online_seconds: s,
            bytes_per_party: (s * 2e7) as u64,
            rounds: 100,
            dealer_bytes: 1,
            baseline,
        }
    }

    #[test]
    fn svg_has_every_point_and_table_every_row() {
        let pts = [
            point("softmax", 0.9, 1.5, true),
            point("mu0", 0.85, 0.5, false),
            point("mu0.5", 0.89, 0.7, false),
        ];
        let dir = std::env::temp_dir().join(format!("pareto-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.svg");
        write_svg(&pts, "t", &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"));
        let texts: Vec<&str> = svg
            .split("<text")
            .skip(1)
            .filter_map(|t| t.split_once('>')?.1.split("</text>").next())
            .map(str::trim)
            .collect();
        for p in &pts {
            let labels = texts.iter().filter(|t| **t == p.name).count();
            assert_eq!(labels, 2, "{} labelled in both panels", p.name);
        }
        assert_eq!(svg.matches("<circle").count(), 6);
        let table = markdown_table(&pts);
        assert_eq!(table.lines().count(), 2 + pts.len());
        assert!(table.contains("| mu0.5 | h | 89.00% | 0.70 | 14.0 | 100 |"));
        assert!(write_svg(&[], "t", &path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
