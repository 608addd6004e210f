//! The paper's trade-off figure: test accuracy against the measured cost of
//! one secure inference (latency and bytes per party), one point per model, the
//! all-Softmax teacher as the baseline.
//!
//! With the three-process runs of `examples/e2e` ([`secure_latencies`]), the
//! latency axis is the WAN's (the relay's 20 ms each way, 400 Mbit/s) and a third
//! panel sets the front's shape beside the paper's: WAN latency relative to the
//! Softmax baseline against μ, ours and the paper's CIFAR-10 points
//! ([`paper_shape`]).

use std::path::Path;

use mpcvit_bench::report::{E2eRow, PaperRow};
use plotters::prelude::*;
use serde::Serialize;

use crate::{Error, Result};

/// The links a secure latency is measured on, in the tables' order.
pub const LINKS: [&str; 3] = ["none", "lan", "wan"];

/// End-to-end latency of one secure inference through the three processes (two
/// parties and the dealer, mutual TLS) on one link.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LinkLatency {
    /// `none` (loopback), `lan` or `wan` (`mpcvit_bench`'s link models).
    pub link: String,
    /// Median seconds per image, client to result.
    pub latency_s: f64,
}

/// The latencies of the model named `name` in `rows` (`e2e --csv` rows): for each of
/// [`LINKS`], the last row of that model on that link; links without a row are left out.
pub fn secure_latencies(rows: &[E2eRow], name: &str) -> Vec<LinkLatency> {
    LINKS
        .iter()
        .filter_map(|&link| {
            rows.iter()
                .rev()
                .find(|r| r.model == name && r.link == link)
                .map(|r| LinkLatency {
                    link: link.into(),
                    latency_s: r.latency_s,
                })
        })
        .collect()
}

/// One point of the paper's shape panel: μ and the latency relative to the Softmax
/// baseline of the same source.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ShapePoint {
    /// Fraction of ReLU-Softmax heads.
    pub mu: f64,
    /// Latency divided by the all-Softmax model's.
    pub relative: f64,
}

/// The paper's μ points relative to its Softmax ViT (rows of `bench/paper.csv` for one
/// model); empty when the Softmax row is missing.
pub fn paper_shape(rows: &[PaperRow]) -> Vec<ShapePoint> {
    let Some(base) = rows.iter().find(|r| r.variant == "Softmax ViT") else {
        return Vec::new();
    };
    let mut points: Vec<ShapePoint> = rows
        .iter()
        .filter(|r| r.model == base.model)
        .filter_map(|r| {
            r.mu.map(|mu| ShapePoint {
                mu,
                relative: r.latency_s / base.latency_s,
            })
        })
        .collect();
    points.sort_by(|a, b| a.mu.total_cmp(&b.mu));
    points
}

/// Our searched models' WAN latency relative to the baseline's, by μ (empty without
/// WAN latencies or a baseline).
pub fn our_shape(points: &[Point]) -> Vec<ShapePoint> {
    let Some(base) = points
        .iter()
        .find(|p| p.baseline)
        .and_then(|p| p.latency_on("wan"))
    else {
        return Vec::new();
    };
    let mut shape: Vec<ShapePoint> = points
        .iter()
        .filter(|p| !p.baseline)
        .filter_map(|p| {
            p.latency_on("wan").map(|l| ShapePoint {
                mu: p.mu,
                relative: l / base,
            })
        })
        .collect();
    shape.sort_by(|a, b| a.mu.total_cmp(&b.mu));
    shape
}

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
    /// Fraction of ReLU-Softmax heads.
    pub mu: f64,
    /// Latencies through the three processes, per link (empty when not measured).
    pub secure: Vec<LinkLatency>,
}

impl Point {
    /// The three-process latency on `link`, if measured.
    pub fn latency_on(&self, link: &str) -> Option<f64> {
        self.secure
            .iter()
            .find(|l| l.link == link)
            .map(|l| l.latency_s)
    }
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

/// The Markdown table of `points` (accuracy in %, MB = 10⁶ bytes); with three-process
/// latencies, one column per link of [`LINKS`].
pub fn markdown_table(points: &[Point]) -> String {
    let secure = points.iter().any(|p| !p.secure.is_empty());
    let mut s = String::from(
        "| model | heads | test accuracy | online s / image | MB sent per party | rounds | dealer MB |",
    );
    if secure {
        s += " loopback s | LAN s | WAN s |\n|---|---|---|---|---|---|---|---|---|---|\n";
    } else {
        s += "\n|---|---|---|---|---|---|---|\n";
    }
    for p in points {
        s += &format!(
            "| {} | {} | {:.2}% | {:.2} | {:.1} | {} | {:.1} |",
            p.name,
            p.heads,
            100.0 * p.test_acc,
            p.online_seconds,
            p.bytes_per_party as f64 / 1e6,
            p.rounds,
            p.dealer_bytes as f64 / 1e6
        );
        if secure {
            for link in LINKS {
                s += &p
                    .latency_on(link)
                    .map_or(" – |".into(), |l| format!(" {l:.2} |"));
            }
        }
        s.push('\n');
    }
    s
}

/// Write the figure as SVG: accuracy against latency (the WAN's through the three
/// processes when every point has it, else the in-process online latency) and against
/// megabytes per party; with WAN latencies, a third panel of latency relative to the
/// Softmax baseline against μ, ours beside `paper` ([`paper_shape`]).
pub fn write_svg(points: &[Point], paper: &[ShapePoint], title: &str, path: &Path) -> Result<()> {
    if points.is_empty() {
        return Err(Error::Unsupported("no models to plot".into()));
    }
    let plot_err = |e: String| Error::Unsupported(format!("plotting {}: {e}", path.display()));
    let wan = points.iter().all(|p| p.latency_on("wan").is_some());
    let shape = if wan { our_shape(points) } else { Vec::new() };
    let panels_n = if wan { 3 } else { 2 };
    let root = SVGBackend::new(path, (550 * panels_n as u32, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(e.to_string()))?;
    let root = root
        .titled(title, ("sans-serif", 20))
        .map_err(|e| plot_err(e.to_string()))?;
    let panels = root.split_evenly((1, panels_n));
    let acc: Vec<f64> = points.iter().map(|p| 100.0 * p.test_acc).collect();
    let (lo, hi) = span(&acc, 0.5);
    let latency: (&str, XAxis) = if wan {
        ("WAN latency per image, three processes (s)", |p| {
            p.latency_on("wan").unwrap_or(f64::NAN)
        })
    } else {
        ("online latency per image (s)", |p| p.online_seconds)
    };
    let axes: [(&str, XAxis); 2] = [
        latency,
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
    if wan {
        draw_shape(&panels[2], &shape, paper).map_err(|e| plot_err(e.to_string()))?;
    }
    root.present().map_err(|e| plot_err(e.to_string()))?;
    Ok(())
}

/// The shape panel: latency relative to the Softmax baseline against μ, ours (blue,
/// Fashion-MNIST, our WAN) and the paper's (black, CIFAR-10, its WAN).
fn draw_shape<DB: DrawingBackend>(
    panel: &DrawingArea<DB, plotters::coord::Shift>,
    ours: &[ShapePoint],
    paper: &[ShapePoint],
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let hi = ours
        .iter()
        .chain(paper)
        .map(|p| p.relative)
        .fold(1.0f64, f64::max)
        * 1.15;
    let mut chart = ChartBuilder::on(panel)
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(-0.05f64..1.05f64, 0f64..hi)?;
    chart
        .configure_mesh()
        .max_light_lines(1)
        .x_desc("μ (fraction of ReLU-Softmax heads)")
        .y_desc("WAN latency / Softmax baseline's")
        .draw()?;
    chart.draw_series(LineSeries::new(
        [(-0.05, 1.0), (1.05, 1.0)],
        RED.stroke_width(1),
    ))?;
    for (series, color, label) in [(ours, BLUE, "ours"), (paper, BLACK, "paper (CIFAR-10)")] {
        let xy: Vec<(f64, f64)> = series.iter().map(|p| (p.mu, p.relative)).collect();
        chart
            .draw_series(LineSeries::new(xy.clone(), color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2)));
        chart.draw_series(
            xy.into_iter()
                .map(|(x, y)| Circle::new((x, y), 4, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE)
        .border_style(BLACK)
        .draw()?;
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
            mu: if baseline { 0.0 } else { acc },
            secure: Vec::new(),
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
        write_svg(&pts, &[], "t", &path).unwrap();
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
        assert!(write_svg(&[], &[], "t", &path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn e2e(model: &str, link: &str, latency_s: f64) -> E2eRow {
        E2eRow {
            date: "2026-01-01".into(),
            machine: "m".into(),
            model: model.into(),
            mu: 0.5,
            gelu: "erf".into(),
            link: link.into(),
            delay_ms: 0.0,
            mbit: 0.0,
            images: 3,
            latency_s,
            online_s: latency_s,
            rounds: 60,
            bytes_p0: 1,
            bytes_p1: 1,
            dealer_p0: 1,
            dealer_p1: 1,
            relay_fwd_bytes: 0,
            relay_back_bytes: 0,
            relay_in_flight_s: 0.0,
            estimate_s: 0.0,
            agreement: "3/3".into(),
        }
    }

    #[test]
    fn the_secure_front_takes_each_links_last_run_and_the_papers_shape() {
        let rows = [
            e2e("mu0.5", "wan", 9.0),
            e2e("mu0.5", "none", 0.4),
            e2e("mu0.5", "wan", 1.5),
            e2e("softmax", "wan", 3.0),
            e2e("mu0", "wan", 1.2),
            e2e("other", "lan", 0.5),
        ];
        let l = secure_latencies(&rows, "mu0.5");
        assert_eq!(l.len(), 2, "{l:?}");
        assert_eq!((l[0].link.as_str(), l[0].latency_s), ("none", 0.4));
        assert_eq!((l[1].link.as_str(), l[1].latency_s), ("wan", 1.5));
        assert!(secure_latencies(&rows, "absent").is_empty());

        let mut pts = vec![
            point("softmax", 0.9, 1.5, true),
            point("mu0", 0.85, 0.5, false),
            point("mu0.5", 0.89, 0.7, false),
        ];
        for p in &mut pts {
            p.secure = secure_latencies(&rows, &p.name);
        }
        pts[1].mu = 0.0;
        pts[2].mu = 0.5;
        let shape = our_shape(&pts);
        assert_eq!(shape.len(), 2);
        assert!((shape[0].relative - 0.4).abs() < 1e-12 && shape[0].mu == 0.0);
        assert!((shape[1].relative - 0.5).abs() < 1e-12 && shape[1].mu == 0.5);

        let paper_csv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/paper.csv");
        let paper = paper_shape(&mpcvit_bench::report::read_paper(&paper_csv).unwrap());
        assert_eq!(
            paper.iter().map(|p| p.mu).collect::<Vec<_>>(),
            [0.0, 0.1, 0.3, 0.5, 0.7, 1.0]
        );
        let half = paper.iter().find(|p| p.mu == 0.5).unwrap();
        assert!((half.relative - 58.66 / 112.23).abs() < 1e-9, "{half:?}");

        let table = markdown_table(&pts);
        assert!(table.contains("| WAN s |"), "{table}");
        assert!(
            table.contains("| mu0.5 | h | 89.00% | 0.70 | 14.0 | 100 | 0.0 | 0.40 | – | 1.50 |"),
            "{table}"
        );
        let dir = std::env::temp_dir().join(format!("pareto-secure-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.svg");
        write_svg(&pts, &paper, "t", &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("WAN latency per image, three processes (s)"));
        assert!(svg.contains("paper (CIFAR-10)"));
        // Three accuracy points in each of two panels, then 2 of ours and 6 of the paper's.
        assert_eq!(svg.matches("<circle").count(), 6 + 2 + 6);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
