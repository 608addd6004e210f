//! The results pages: rows the benchmarks append to CSV files, read back
//! and turned into Markdown tables and SVG figures (plotters).
//!
//! Three inputs: `e2e.csv` (one row per `e2e` run: a model, a link),
//! `crypten.csv` (one row per peer run, `bench/peers/`), and the paper's
//! published points (`bench/paper.csv`: reference numbers with their
//! source, not measurements of ours).

use std::fmt::Write as _;
use std::io;
use std::path::Path;

use plotters::prelude::*;

/// Header of `e2e.csv`.
pub const E2E_HEADER: &str = "date,machine,model,mu,gelu,link,delay_ms,mbit,images,latency_s,online_s,rounds,bytes_p0,bytes_p1,dealer_p0,dealer_p1,relay_fwd_bytes,relay_back_bytes,relay_in_flight_s,estimate_s,agreement";

/// One `e2e` run (medians over its images where it says so).
#[derive(Debug, Clone, PartialEq)]
pub struct E2eRow {
    /// `YYYY-MM-DD`.
    pub date: String,
    /// `2 cores, 23 GiB`.
    pub machine: String,
    /// The manifest's name.
    pub model: String,
    /// Fraction of ReLU-Softmax heads.
    pub mu: f64,
    /// `erf` or `quad`.
    pub gelu: String,
    /// `none`, `lan`, `wan` or `DELAY_MS,MBIT`.
    pub link: String,
    /// One-way delay of the relay (0 without one).
    pub delay_ms: f64,
    /// Bandwidth of the relay per direction (0 = none or no limit).
    pub mbit: f64,
    /// Images timed.
    pub images: usize,
    /// End-to-end latency, median.
    pub latency_s: f64,
    /// Party 0's online time, median.
    pub online_s: f64,
    /// Communication rounds of one inference.
    pub rounds: u64,
    /// Bytes party 0 sent to party 1 (protocol payload).
    pub bytes_p0: u64,
    /// Bytes party 1 sent to party 0.
    pub bytes_p1: u64,
    /// Dealer bytes to party 0 per inference.
    pub dealer_p0: u64,
    /// Dealer bytes to party 1 per inference.
    pub dealer_p1: u64,
    /// Bytes the relay carried party 0 → party 1 for one image (TLS, HTTP/2
    /// and protobuf included), median.
    pub relay_fwd_bytes: u64,
    /// The same, party 1 → party 0.
    pub relay_back_bytes: u64,
    /// Time with data inside the relay during one image, median.
    pub relay_in_flight_s: f64,
    /// `rounds × delay + max(bytes) / bandwidth`.
    pub estimate_s: f64,
    /// `agreeing/answers` with the plaintext top-1.
    pub agreement: String,
}

/// Header of `crypten.csv`.
pub const PEER_HEADER: &str =
    "date,machine,peer,model,mu,gelu,latency_s,rounds,bytes_p0,bytes_p1,max_logit_err,top1_same";

/// One peer run on the same checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerRow {
    /// `YYYY-MM-DD`.
    pub date: String,
    /// The machine.
    pub machine: String,
    /// `crypten-0.4.1`.
    pub peer: String,
    /// The checkpoint's name.
    pub model: String,
    /// Fraction of ReLU-Softmax heads.
    pub mu: f64,
    /// `erf` or `quad`.
    pub gelu: String,
    /// Seconds for one inference (median).
    pub latency_s: f64,
    /// Communication calls.
    pub rounds: u64,
    /// Bytes sent by rank 0.
    pub bytes_p0: u64,
    /// Bytes sent by rank 1.
    pub bytes_p1: u64,
    /// Largest |logit − plaintext logit|.
    pub max_logit_err: f64,
    /// Whether the top-1 matched the plaintext model.
    pub top1_same: bool,
}

/// One of the paper's published points.
#[derive(Debug, Clone, PartialEq)]
pub struct PaperRow {
    /// Which model (`vit_7_4_32`).
    pub model: String,
    /// The paper's name of the variant.
    pub variant: String,
    /// Fraction of ReLU-Softmax heads (empty: not a μ point, e.g. Softmax).
    pub mu: Option<f64>,
    /// WAN latency per image.
    pub latency_s: f64,
    /// Where the number comes from.
    pub source: String,
}

/// The current date in UTC, `YYYY-MM-DD`.
pub fn today_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    civil_date((secs / 86_400) as i64)
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
pub fn civil_date(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Split one CSV line: commas separate, a field in double quotes may hold
/// commas, `""` inside quotes is a quote.
pub fn split_csv_line(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// Quote a field when it holds a comma or a quote.
pub fn csv_field(s: &str) -> String {
    if s.contains(',') || s.contains('"') {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The data rows of a CSV file with `header` as its first line (a missing
/// file has none).
fn records(path: &Path, header: &str) -> io::Result<Vec<Vec<String>>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let first = lines.next().unwrap_or_default();
    if split_csv_line(first) != split_csv_line(header) {
        return Err(bad(&format!(
            "{}: header is {first:?}, expected {header:?}",
            path.display()
        )));
    }
    let n = split_csv_line(header).len();
    lines
        .map(|l| {
            let f = split_csv_line(l);
            if f.len() == n {
                Ok(f)
            } else {
                Err(bad(&format!(
                    "{}: {} fields in {l:?}",
                    path.display(),
                    f.len()
                )))
            }
        })
        .collect()
}

fn num<T: std::str::FromStr>(s: &str, what: &str) -> io::Result<T> {
    s.trim()
        .parse()
        .map_err(|_| bad(&format!("{what}: not a number: {s:?}")))
}

impl E2eRow {
    /// The row as a CSV line (no newline).
    pub fn to_csv(&self) -> String {
        [
            csv_field(&self.date),
            csv_field(&self.machine),
            csv_field(&self.model),
            self.mu.to_string(),
            csv_field(&self.gelu),
            csv_field(&self.link),
            self.delay_ms.to_string(),
            self.mbit.to_string(),
            self.images.to_string(),
            format!("{:.4}", self.latency_s),
            format!("{:.4}", self.online_s),
            self.rounds.to_string(),
            self.bytes_p0.to_string(),
            self.bytes_p1.to_string(),
            self.dealer_p0.to_string(),
            self.dealer_p1.to_string(),
            self.relay_fwd_bytes.to_string(),
            self.relay_back_bytes.to_string(),
            format!("{:.4}", self.relay_in_flight_s),
            format!("{:.4}", self.estimate_s),
            csv_field(&self.agreement),
        ]
        .join(",")
    }

    fn from_fields(f: &[String]) -> io::Result<Self> {
        Ok(E2eRow {
            date: f[0].clone(),
            machine: f[1].clone(),
            model: f[2].clone(),
            mu: num(&f[3], "mu")?,
            gelu: f[4].clone(),
            link: f[5].clone(),
            delay_ms: num(&f[6], "delay_ms")?,
            mbit: num(&f[7], "mbit")?,
            images: num(&f[8], "images")?,
            latency_s: num(&f[9], "latency_s")?,
            online_s: num(&f[10], "online_s")?,
            rounds: num(&f[11], "rounds")?,
            bytes_p0: num(&f[12], "bytes_p0")?,
            bytes_p1: num(&f[13], "bytes_p1")?,
            dealer_p0: num(&f[14], "dealer_p0")?,
            dealer_p1: num(&f[15], "dealer_p1")?,
            relay_fwd_bytes: num(&f[16], "relay_fwd_bytes")?,
            relay_back_bytes: num(&f[17], "relay_back_bytes")?,
            relay_in_flight_s: num(&f[18], "relay_in_flight_s")?,
            estimate_s: num(&f[19], "estimate_s")?,
            agreement: f[20].clone(),
        })
    }

    /// Append the row to `path`, writing the header first if the file is new.
    pub fn append(&self, path: &Path) -> io::Result<()> {
        append_line(path, E2E_HEADER, &self.to_csv())
    }

    /// Share of the latency the model estimate attributes to the link.
    pub fn link_share_estimate(&self) -> f64 {
        self.estimate_s / self.latency_s
    }

    /// Share of the latency the relay measured data in flight.
    pub fn link_share_measured(&self) -> f64 {
        self.relay_in_flight_s / self.latency_s
    }
}

fn append_line(path: &Path, header: &str, line: &str) -> io::Result<()> {
    use std::io::Write;
    let new = !path.exists();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    if new {
        writeln!(f, "{header}")?;
    }
    writeln!(f, "{line}")
}

/// Every row of an `e2e.csv`.
pub fn read_e2e(path: &Path) -> io::Result<Vec<E2eRow>> {
    records(path, E2E_HEADER)?
        .iter()
        .map(|f| E2eRow::from_fields(f))
        .collect()
}

/// Every row of a `crypten.csv`.
pub fn read_peers(path: &Path) -> io::Result<Vec<PeerRow>> {
    records(path, PEER_HEADER)?
        .iter()
        .map(|f| {
            Ok(PeerRow {
                date: f[0].clone(),
                machine: f[1].clone(),
                peer: f[2].clone(),
                model: f[3].clone(),
                mu: num(&f[4], "mu")?,
                gelu: f[5].clone(),
                latency_s: num(&f[6], "latency_s")?,
                rounds: num(&f[7], "rounds")?,
                bytes_p0: num(&f[8], "bytes_p0")?,
                bytes_p1: num(&f[9], "bytes_p1")?,
                max_logit_err: num(&f[10], "max_logit_err")?,
                top1_same: match f[11].trim() {
                    "true" | "True" | "1" => true,
                    "false" | "False" | "0" => false,
                    other => return Err(bad(&format!("top1_same: {other:?}"))),
                },
            })
        })
        .collect()
}

/// Header of `paper.csv`.
pub const PAPER_HEADER: &str = "model,variant,mu,latency_s,source";

/// The paper's points.
pub fn read_paper(path: &Path) -> io::Result<Vec<PaperRow>> {
    records(path, PAPER_HEADER)?
        .iter()
        .map(|f| {
            Ok(PaperRow {
                model: f[0].clone(),
                variant: f[1].clone(),
                mu: if f[2].trim().is_empty() {
                    None
                } else {
                    Some(num(&f[2], "mu")?)
                },
                latency_s: num(&f[3], "latency_s")?,
                source: f[4].clone(),
            })
        })
        .collect()
}

/// Everything the pages are made of.
#[derive(Debug, Clone, Default)]
pub struct Results {
    /// Our runs.
    pub e2e: Vec<E2eRow>,
    /// Peer runs.
    pub peers: Vec<PeerRow>,
    /// The paper's points.
    pub paper: Vec<PaperRow>,
}

impl Results {
    /// The last run of `vit_7_4_32` at μ with this GeLU and link (later rows
    /// replace earlier ones: a rerun appends).
    pub fn vit7(&self, mu: f64, gelu: &str, link: &str) -> Option<&E2eRow> {
        self.e2e.iter().rev().find(|r| {
            r.model.starts_with("vit_7_4_32")
                && (r.mu - mu).abs() < 1e-9
                && r.gelu == gelu
                && r.link == link
        })
    }

    /// The μ values measured for `vit_7_4_32`, ascending.
    pub fn vit7_mus(&self) -> Vec<f64> {
        let mut mus: Vec<f64> = self
            .e2e
            .iter()
            .filter(|r| r.model.starts_with("vit_7_4_32"))
            .map(|r| r.mu)
            .collect();
        mus.sort_by(f64::total_cmp);
        mus.dedup_by(|a, b| (*a - *b).abs() < 1e-9);
        mus
    }

    /// The latest peer run of each (μ, GeLU).
    pub fn latest_peers(&self) -> Vec<&PeerRow> {
        let mut out: Vec<&PeerRow> = Vec::new();
        for c in self.peers.iter().rev() {
            if !out
                .iter()
                .any(|o| (o.mu - c.mu).abs() < 1e-9 && o.gelu == c.gelu)
            {
                out.push(c);
            }
        }
        out.reverse();
        out
    }

    /// The last peer run of that GeLU at μ.
    pub fn peer(&self, mu: f64, gelu: &str) -> Option<&PeerRow> {
        self.peers
            .iter()
            .rev()
            .find(|r| (r.mu - mu).abs() < 1e-9 && r.gelu == gelu)
    }
}

/// μ for display: at most three decimals (`0.107` for 3 of 28 heads).
pub fn fmt_mu(mu: f64) -> String {
    let s = format!("{mu:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-" {
        "0".into()
    } else {
        s.to_string()
    }
}

/// How far a measured μ (a whole number of heads: 3 of 28 is 0.107) may be
/// from one of the paper's nominal values to sit in its row.
pub const MU_MATCH: f64 = 0.02;

impl Results {
    /// The paper's `vit_7_4_32` point nearest `mu`, within [`MU_MATCH`].
    pub fn paper_near(&self, mu: f64) -> Option<&PaperRow> {
        self.paper
            .iter()
            .filter(|p| p.model == "vit_7_4_32")
            .filter(|p| p.mu.is_some_and(|m| (m - mu).abs() <= MU_MATCH))
            .min_by(|a, b| {
                let d = |p: &PaperRow| (p.mu.unwrap_or(f64::INFINITY) - mu).abs();
                d(a).total_cmp(&d(b))
            })
    }

    /// The rows of the latency-vs-μ table: our μ values, and the paper's that
    /// none of ours is near.
    pub fn table_mus(&self) -> Vec<f64> {
        let mut mus = self.vit7_mus();
        for m in self
            .paper
            .iter()
            .filter(|p| p.model == "vit_7_4_32")
            .filter_map(|p| p.mu)
        {
            if !mus.iter().any(|&o| (o - m).abs() <= MU_MATCH) {
                mus.push(m);
            }
        }
        mus.sort_by(f64::total_cmp);
        mus
    }
}

fn mb(b: u64) -> String {
    format!("{:.1}", b as f64 / 1e6)
}

fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map_or("—".into(), f)
}

/// The Markdown page.
pub fn markdown(r: &Results, regenerate: &str) -> String {
    let mut s = String::new();
    let dates: std::collections::BTreeSet<&str> = r
        .e2e
        .iter()
        .map(|x| x.date.as_str())
        .chain(r.peers.iter().map(|x| x.date.as_str()))
        .collect();
    let machines: std::collections::BTreeSet<&str> = r
        .e2e
        .iter()
        .map(|x| x.machine.as_str())
        .chain(r.peers.iter().map(|x| x.machine.as_str()))
        .collect();
    let join =
        |v: &std::collections::BTreeSet<&str>| v.iter().copied().collect::<Vec<_>>().join("; ");
    let _ = writeln!(s, "# Results: latency, rounds and bytes on LAN and WAN\n");
    let _ = writeln!(
        s,
        "Generated by `mpcvit-bench report` from `e2e.csv`, `crypten.csv` and `../paper.csv`; \
         do not edit by hand. Regenerate everything with `{regenerate}`.\n"
    );
    let _ = writeln!(s, "- measured: {}", join(&dates));
    let _ = writeln!(s, "- machine: {}", join(&machines));
    let _ = writeln!(
        s,
        "- load: the machine's cores may be shared with other work; `load.txt` (when present) \
         lists the load average before each run, and a later run of the same configuration \
         replaces an earlier one in the tables (all are listed at the end)"
    );
    let _ = writeln!(
        s,
        "- setup: dealer, party 0 and party 1 as three processes on loopback with mutual TLS, a \
         client in the benchmark's process; the party 0 ↔ party 1 link goes through the \
         benchmark's relay (`mpcvit_bench::relay`): LAN = 1 Gbit/s and 0.25 ms each way, WAN = \
         400 Mbit/s and 20 ms each way (the paper's, as in Cheetah: 40 ms round trip). The \
         client and dealer links stay on loopback. Latency is one image end to end with the \
         pool full (offline material ready), median over the images of a run; every answer is \
         checked against the plaintext model's top-1.\n"
    );

    // Headline: the same work by the paper, CrypTen and us.
    let _ = writeln!(
        s,
        "## Same work: `vit_7_4_32`, μ = 0.5 (14 of 28 heads ReLU-Softmax)\n"
    );
    let _ = writeln!(
        s,
        "| system | GeLU | network | latency / image | rounds | MB sent per party |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    for p in r.paper.iter().filter(|p| p.mu == Some(0.5)) {
        let _ = writeln!(
            s,
            "| MPCViT paper: {} (SecretFlow SPU SEMI-2K, 2PC; `paper.csv`) | paper's | WAN | {:.2} s | — | — |",
            p.variant, p.latency_s
        );
    }
    for gelu in ["quad", "erf"] {
        if let Some(c) = r.peer(0.5, gelu) {
            let wan = crate::relay::LinkSpec::WAN
                .estimate(c.rounds, c.bytes_p0.max(c.bytes_p1))
                .as_secs_f64();
            let _ = writeln!(
                s,
                "| {} (2 processes, same checkpoint{}) | {gelu} | loopback | {:.2} s (WAN estimate ≥ {:.1} s) | {} | {} |",
                c.peer,
                if c.top1_same && c.max_logit_err < 0.1 {
                    String::new()
                } else {
                    format!(", WRONG: max logit error {:.1e}", c.max_logit_err)
                },
                c.latency_s,
                c.latency_s + wan,
                c.rounds,
                mb(c.bytes_p0.max(c.bytes_p1))
            );
        }
        for (link, name) in [("none", "loopback"), ("lan", "LAN"), ("wan", "WAN")] {
            if let Some(e) = r.vit7(0.5, gelu, link) {
                let _ = writeln!(
                    s,
                    "| mpcvit (3 processes, TLS) | {gelu} | {name} | **{:.2} s** | {} | {} |",
                    e.latency_s,
                    e.rounds,
                    mb(e.bytes_p0.max(e.bytes_p1))
                );
            }
        }
    }
    if !r.peers.is_empty() {
        let _ = writeln!(
            s,
            "\nA peer's WAN figure is an estimate, not a run: its loopback latency + rounds × 20 ms \
             + bytes / 400 Mbit/s (CrypTen's gloo processes dial each other at addresses they \
             exchange, so the relay cannot sit between them)."
        );
    }
    if let (Some(c), Some(e)) = (r.peer(0.5, "quad"), r.vit7(0.5, "quad", "none")) {
        let _ = writeln!(
            s,
            "\nOn loopback, quad GeLU, the same checkpoint: mpcvit is **{:.1}× faster** than {} \
             with **{:.2}×** its bytes per party and {:.2}× its rounds.",
            c.latency_s / e.latency_s,
            c.peer,
            e.bytes_p0.max(e.bytes_p1) as f64 / c.bytes_p0.max(c.bytes_p1) as f64,
            e.rounds as f64 / c.rounds as f64
        );
    }
    if let (Some(p), Some(e)) = (
        r.paper.iter().find(|p| p.mu == Some(0.5)),
        r.vit7(0.5, "erf", "wan"),
    ) {
        let _ = writeln!(
            s,
            "\nOn the paper's WAN, erf GeLU: {:.2} s against the paper's {:.2} s ({:.1}× less; \
             different protocols, machines and implementations: SecretFlow SPU SEMI-2K there).",
            e.latency_s,
            p.latency_s,
            p.latency_s / e.latency_s
        );
    }

    // Latency vs μ.
    let _ = writeln!(s, "\n## Latency vs μ (`vit_7_4_32`)\n");
    let _ = writeln!(s, "![latency vs mu](latency_vs_mu.svg)\n");
    let _ = writeln!(
        s,
        "| μ | paper WAN | WAN erf | WAN quad | LAN erf | LAN quad | loopback erf | loopback quad |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
    for mu in r.table_mus() {
        let paper = r.paper_near(mu);
        let cell = |g: &str, l: &str| opt(r.vit7(mu, g, l), |e| format!("{:.2} s", e.latency_s));
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            fmt_mu(mu),
            opt(paper, |p| format!(
                "{:.2} s (μ = {})",
                p.latency_s,
                opt(p.mu, fmt_mu)
            )),
            cell("erf", "wan"),
            cell("quad", "wan"),
            cell("erf", "lan"),
            cell("quad", "lan"),
            cell("erf", "none"),
            cell("quad", "none"),
        );
    }
    let _ = writeln!(
        s,
        "\nThe paper's μ = 0 and μ = 1 points are its ScaleAttn ViT and ReLU-Softmax ViT; its \
         accuracies are for trained models, ours are random-weight models of the same shape \
         and head mix (latency does not depend on the weights)."
    );

    // Rounds and bytes.
    let _ = writeln!(s, "\n## Rounds and bytes per inference (`vit_7_4_32`)\n");
    let _ = writeln!(s, "![rounds and bytes vs mu](rounds_bytes_vs_mu.svg)\n");
    let _ = writeln!(
        s,
        "| μ | GeLU | rounds | MB sent party 0 / 1 | dealer MB → party 0 / 1 |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|");
    for &mu in &r.vit7_mus() {
        for gelu in ["quad", "erf"] {
            let e = ["wan", "lan", "none"]
                .iter()
                .find_map(|l| r.vit7(mu, gelu, l));
            if let Some(e) = e {
                let _ = writeln!(
                    s,
                    "| {} | {gelu} | {} | {} / {} | {} / {} |",
                    fmt_mu(mu),
                    e.rounds,
                    mb(e.bytes_p0),
                    mb(e.bytes_p1),
                    mb(e.dealer_p0),
                    mb(e.dealer_p1)
                );
            }
        }
    }
    // each peer configuration once (its rounds and bytes do not vary by run)
    for c in r.latest_peers() {
        let _ = writeln!(
            s,
            "| {} ({}) | {} | {} | {} / {} | — (its TTP sends other material) |",
            c.mu,
            c.peer,
            c.gelu,
            c.rounds,
            mb(c.bytes_p0),
            mb(c.bytes_p1)
        );
    }

    // Where the time goes on the link.
    let _ = writeln!(
        s,
        "\n## Every run, and the share of latency spent on the link\n"
    );
    let _ = writeln!(
        s,
        "`estimate` = rounds × one-way delay + max(bytes per party) / bandwidth (the link model); \
         `in flight` = time the relay held data of this image in either direction (measured; \
         it includes TLS, HTTP/2 and protobuf framing, and the relay's own bytes are the \
         `relay MB` columns). `online` is party 0's online time.\n"
    );
    let _ = writeln!(
        s,
        "| date | model | μ | GeLU | link | latency | online | rounds | MB p0 / p1 | relay MB → / ← | estimate (share) | in flight (share) | top-1 |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for e in &r.e2e {
        let relayed = e.link != "none";
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {:.3} s | {:.3} s | {} | {} / {} | {} | {} | {} | {} |",
            e.date,
            e.model,
            fmt_mu(e.mu),
            e.gelu,
            e.link,
            e.latency_s,
            e.online_s,
            e.rounds,
            mb(e.bytes_p0),
            mb(e.bytes_p1),
            if relayed {
                format!("{} / {}", mb(e.relay_fwd_bytes), mb(e.relay_back_bytes))
            } else {
                "—".into()
            },
            if relayed {
                format!(
                    "{:.2} s ({:.0}%)",
                    e.estimate_s,
                    100.0 * e.link_share_estimate()
                )
            } else {
                "—".into()
            },
            if relayed {
                format!(
                    "{:.2} s ({:.0}%)",
                    e.relay_in_flight_s,
                    100.0 * e.link_share_measured()
                )
            } else {
                "—".into()
            },
            e.agreement
        );
    }
    if !r.peers.is_empty() {
        let _ = writeln!(s, "\n## Peer runs\n");
        let _ = writeln!(
            s,
            "| date | peer | model | μ | GeLU | latency | rounds (communication calls) | MB rank 0 / 1 | max logit error | same top-1 |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
        for c in &r.peers {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {:.2} s | {} | {} / {} | {:.1e} | {} |",
                c.date,
                c.peer,
                c.model,
                c.mu,
                c.gelu,
                c.latency_s,
                c.rounds,
                mb(c.bytes_p0),
                mb(c.bytes_p1),
                c.max_logit_err,
                c.top1_same
            );
        }
    }
    let _ = writeln!(s, "\n## The paper's points (`../paper.csv`)\n");
    let _ = writeln!(s, "| model | variant | μ | WAN latency | source |");
    let _ = writeln!(s, "|---|---|---|---|---|");
    for p in &r.paper {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.2} s | {} |",
            p.model,
            p.variant,
            opt(p.mu, |m| m.to_string()),
            p.latency_s,
            p.source
        );
    }
    s
}

/// `latency_vs_mu.csv`: one line per μ, the table of the page.
pub fn latency_table_csv(r: &Results) -> String {
    let mut s = String::from(
        "mu,paper_wan_s,wan_erf_s,wan_quad_s,lan_erf_s,lan_quad_s,loopback_erf_s,loopback_quad_s\n",
    );
    for mu in r.table_mus() {
        let paper = r
            .paper_near(mu)
            .map_or(String::new(), |p| p.latency_s.to_string());
        let cell = |g: &str, l: &str| {
            r.vit7(mu, g, l)
                .map_or(String::new(), |e| format!("{:.4}", e.latency_s))
        };
        let _ = writeln!(
            s,
            "{mu},{paper},{},{},{},{},{},{}",
            cell("erf", "wan"),
            cell("quad", "wan"),
            cell("erf", "lan"),
            cell("quad", "lan"),
            cell("erf", "none"),
            cell("quad", "none")
        );
    }
    s
}

/// A named line of points in a colour.
type Series = (String, Vec<(f64, f64)>, RGBColor);

fn plot_err(path: &Path) -> impl Fn(String) -> io::Error + '_ {
    move |e| io::Error::other(format!("plotting {}: {e}", path.display()))
}

/// `latency_vs_mu.svg`: seconds per image (log scale) against μ, ours on
/// LAN and WAN beside the paper's WAN points.
pub fn latency_svg(r: &Results, path: &Path) -> io::Result<()> {
    let err = plot_err(path);
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut all: Vec<f64> = r.e2e.iter().map(|e| e.latency_s).collect();
    all.extend(r.paper.iter().map(|p| p.latency_s));
    all.extend(r.peers.iter().map(|p| p.latency_s));
    let lo = all.iter().copied().fold(f64::INFINITY, f64::min).min(1.0) * 0.5;
    // Head room above the paper's points for the legend.
    let hi = all.iter().copied().fold(0.0, f64::max).max(1.0) * 30.0;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "vit_7_4_32: seconds per image vs μ (fraction of ReLU-Softmax heads)",
            ("sans-serif", 18),
        )
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(-0.05f64..1.05f64, (lo..hi).log_scale())
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("μ")
        .y_desc("seconds per image (log scale)")
        .draw()
        .map_err(|e| err(e.to_string()))?;
    let mut paper: Vec<(f64, f64)> = r
        .paper
        .iter()
        .filter(|p| p.model == "vit_7_4_32")
        .filter_map(|p| p.mu.map(|m| (m, p.latency_s)))
        .collect();
    paper.sort_by(|a, b| a.0.total_cmp(&b.0));
    let series: Vec<Series> = {
        let mut v = vec![(
            "MPCViT paper, WAN (SecretFlow SEMI-2K)".to_string(),
            paper,
            BLACK,
        )];
        for (gelu, link, name, color) in [
            ("erf", "wan", "mpcvit WAN, erf", RGBColor(200, 30, 30)),
            ("quad", "wan", "mpcvit WAN, quad", RGBColor(240, 130, 40)),
            ("erf", "lan", "mpcvit LAN, erf", RGBColor(30, 60, 200)),
            ("quad", "lan", "mpcvit LAN, quad", RGBColor(60, 160, 230)),
            (
                "quad",
                "none",
                "mpcvit loopback, quad",
                RGBColor(40, 150, 60),
            ),
        ] {
            let pts: Vec<(f64, f64)> = r
                .vit7_mus()
                .into_iter()
                .filter_map(|mu| r.vit7(mu, gelu, link).map(|e| (mu, e.latency_s)))
                .collect();
            if !pts.is_empty() {
                v.push((name.to_string(), pts, color));
            }
        }
        v
    };
    for (name, pts, color) in series {
        if pts.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(|e| err(e.to_string()))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))
            .map_err(|e| err(e.to_string()))?;
    }
    // The latest correct (quad) peer run per μ: the erf runs are wrong.
    let peers: Vec<(f64, f64)> = r
        .latest_peers()
        .into_iter()
        .filter(|c| c.gelu == "quad")
        .map(|c| (c.mu, c.latency_s))
        .collect();
    if !peers.is_empty() {
        let purple = RGBColor(130, 50, 160);
        chart
            .draw_series(
                peers
                    .iter()
                    .map(|&p| TriangleMarker::new(p, 7, purple.filled())),
            )
            .map_err(|e| err(e.to_string()))?
            .label("CrypTen 0.4.1, loopback, quad (same checkpoint)")
            .legend(move |(x, y)| TriangleMarker::new((x + 10, y), 6, purple.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}

/// `rounds_bytes_vs_mu.svg`: rounds (left) and MB sent per party (right)
/// against μ, per GeLU, with the peer's points.
pub fn rounds_bytes_svg(r: &Results, path: &Path) -> io::Result<()> {
    let err = plot_err(path);
    let root = SVGBackend::new(path, (1100, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let root = root
        .titled(
            "vit_7_4_32: rounds and bytes per inference vs μ",
            ("sans-serif", 18),
        )
        .map_err(|e| err(e.to_string()))?;
    let panels = root.split_evenly((1, 2));
    type Metric = fn(u64, u64, u64) -> f64;
    let metrics: [(&str, Metric); 2] = [
        ("rounds", |rounds, _, _| rounds as f64),
        ("MB sent per party (the larger)", |_, b0, b1| {
            b0.max(b1) as f64 / 1e6
        }),
    ];
    for (panel, (label, metric)) in panels.iter().zip(metrics) {
        let mut pts: Vec<Series> = Vec::new();
        for (gelu, color) in [
            ("quad", RGBColor(240, 130, 40)),
            ("erf", RGBColor(200, 30, 30)),
        ] {
            let v: Vec<(f64, f64)> = r
                .vit7_mus()
                .into_iter()
                .filter_map(|mu| {
                    ["wan", "lan", "none"]
                        .iter()
                        .find_map(|l| r.vit7(mu, gelu, l))
                        .map(|e| (mu, metric(e.rounds, e.bytes_p0, e.bytes_p1)))
                })
                .collect();
            pts.push((format!("mpcvit, {gelu} GeLU"), v, color));
        }
        let peers: Vec<(f64, f64)> = r
            .latest_peers()
            .into_iter()
            .map(|c| (c.mu, metric(c.rounds, c.bytes_p0, c.bytes_p1)))
            .collect();
        let hi = pts
            .iter()
            .flat_map(|(_, v, _)| v.iter().map(|p| p.1))
            .chain(peers.iter().map(|p| p.1))
            .fold(1.0, f64::max)
            * 1.15;
        let mut chart = ChartBuilder::on(panel)
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.05f64..1.05f64, 0.0..hi)
            .map_err(|e| err(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("μ")
            .y_desc(label)
            .draw()
            .map_err(|e| err(e.to_string()))?;
        for (name, v, color) in pts {
            if v.is_empty() {
                continue;
            }
            chart
                .draw_series(LineSeries::new(v.clone(), color.stroke_width(2)))
                .map_err(|e| err(e.to_string()))?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            chart
                .draw_series(v.iter().map(|&p| Circle::new(p, 4, color.filled())))
                .map_err(|e| err(e.to_string()))?;
        }
        if !peers.is_empty() {
            let purple = RGBColor(130, 50, 160);
            chart
                .draw_series(
                    peers
                        .iter()
                        .map(|&p| TriangleMarker::new(p, 7, purple.filled())),
                )
                .map_err(|e| err(e.to_string()))?
                .label("CrypTen 0.4.1 (quad below, erf above)")
                .legend(move |(x, y)| TriangleMarker::new((x + 10, y), 6, purple.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(e.to_string()))?;
    }
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}

/// Read the inputs and write `README.md`, `latency_vs_mu.csv` and the two
/// SVG figures into `out`.
pub fn write_all(
    e2e: &Path,
    peers: &Path,
    paper: &Path,
    out: &Path,
    regenerate: &str,
) -> io::Result<Results> {
    let r = Results {
        e2e: read_e2e(e2e)?,
        peers: read_peers(peers)?,
        paper: read_paper(paper)?,
    };
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join("README.md"), markdown(&r, regenerate))?;
    std::fs::write(out.join("latency_vs_mu.csv"), latency_table_csv(&r))?;
    latency_svg(&r, &out.join("latency_vs_mu.svg"))?;
    rounds_bytes_svg(&r, &out.join("rounds_bytes_vs_mu.svg"))?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(mu: f64, gelu: &str, link: &str, latency: f64) -> E2eRow {
        E2eRow {
            date: "2026-12-01".into(),
            machine: "2 cores, 23 GiB".into(),
            model: format!("vit_7_4_32_mu{mu}"),
            mu,
            gelu: gelu.into(),
            link: link.into(),
            delay_ms: 20.0,
            mbit: 400.0,
            images: 3,
            latency_s: latency,
            online_s: latency * 0.9,
            rounds: 200,
            bytes_p0: 17_800_000,
            bytes_p1: 17_700_000,
            dealer_p0: 1,
            dealer_p1: 2,
            relay_fwd_bytes: 18_000_000,
            relay_back_bytes: 17_900_000,
            relay_in_flight_s: latency * 0.8,
            estimate_s: latency * 0.7,
            agreement: "3/3".into(),
        }
    }

    #[test]
    fn mu_display_and_paper_match() {
        assert_eq!(fmt_mu(0.0), "0");
        assert_eq!(fmt_mu(1.0), "1");
        assert_eq!(fmt_mu(0.5), "0.5");
        assert_eq!(fmt_mu(3.0 / 28.0), "0.107");
        let mut r = Results::default();
        for (mu, s) in [(0.1, 48.03), (0.3, 52.88), (0.9, 70.0)] {
            r.paper.push(PaperRow {
                model: "vit_7_4_32".into(),
                variant: "MPCViT".into(),
                mu: Some(mu),
                latency_s: s,
                source: "paper".into(),
            });
        }
        r.e2e.push(row(3.0 / 28.0, "erf", "wan", 5.0));
        r.e2e.push(row(8.0 / 28.0, "erf", "wan", 5.5));
        assert_eq!(r.paper_near(3.0 / 28.0).unwrap().latency_s, 48.03);
        assert_eq!(r.paper_near(8.0 / 28.0).unwrap().latency_s, 52.88);
        assert!(r.paper_near(0.5).is_none());
        // Ours at 3/28 and 8/28, and the paper's 0.9 that nothing of ours is near.
        assert_eq!(r.table_mus(), vec![3.0 / 28.0, 8.0 / 28.0, 0.9]);
        let md = markdown(&r, "x");
        assert!(
            md.contains("| 0.107 | 48.03 s (μ = 0.1) | 5.00 s |"),
            "{md}"
        );
    }

    #[test]
    fn dates() {
        assert_eq!(civil_date(0), "1970-01-01");
        assert_eq!(civil_date(11_016), "2000-02-29");
        assert_eq!(civil_date(20_788), "2026-12-01");
        assert_eq!(civil_date(-1), "1969-12-31");
        assert_eq!(today_utc().len(), 10);
    }

    #[test]
    fn csv_round_trip_with_quoted_fields() {
        assert_eq!(
            split_csv_line(r#"a,"b, c","say ""hi""",,d"#),
            vec!["a", "b, c", "say \"hi\"", "", "d"]
        );
        let dir = std::env::temp_dir().join(format!("mpcvit-report-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("e2e.csv");
        let a = row(0.5, "erf", "wan", 6.3);
        let b = row(0.0, "quad", "lan", 0.4);
        a.append(&path).unwrap();
        b.append(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().next(), Some(E2E_HEADER));
        assert_eq!(text.lines().count(), 3);
        let back = read_e2e(&path).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].machine, "2 cores, 23 GiB");
        assert_eq!(back[0].rounds, a.rounds);
        assert!((back[1].latency_s - 0.4).abs() < 1e-9);
        // A wrong header is refused, not misread.
        std::fs::write(&path, "date,model\n2026-12-01,x\n").unwrap();
        assert!(read_e2e(&path).is_err());
        assert!(read_e2e(&dir.join("missing.csv")).unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn pages_hold_every_run_and_the_later_rerun_wins() {
        let mut r = Results::default();
        r.e2e.push(row(0.5, "erf", "wan", 9.0));
        r.e2e.push(row(0.5, "erf", "wan", 6.3));
        r.e2e.push(row(0.5, "quad", "none", 0.4));
        r.e2e.push(row(1.0, "erf", "lan", 1.1));
        r.paper.push(PaperRow {
            model: "vit_7_4_32".into(),
            variant: "MPCViT".into(),
            mu: Some(0.5),
            latency_s: 58.66,
            source: "paper".into(),
        });
        r.peers.push(PeerRow {
            date: "2026-12-01".into(),
            machine: "m".into(),
            peer: "crypten-0.4.1".into(),
            model: "vit_7_4_32_mu05".into(),
            mu: 0.5,
            gelu: "quad".into(),
            latency_s: 4.0,
            rounds: 964,
            bytes_p0: 61_500_000,
            bytes_p1: 61_500_000,
            max_logit_err: 1e-3,
            top1_same: true,
        });
        // a second run of the same peer configuration
        let again = PeerRow {
            date: "2026-12-02".into(),
            ..r.peers[0].clone()
        };
        r.peers.push(again);
        assert_eq!(r.vit7(0.5, "erf", "wan").unwrap().latency_s, 6.3);
        let md = markdown(&r, "bash bench/run.sh");
        assert_eq!(
            md.matches("| 0.5 (crypten-0.4.1) | quad |").count(),
            1,
            "a peer configuration's rounds once: {md}"
        );
        assert!(
            md.contains("| 2026-12-01 | crypten") && md.contains("| 2026-12-02 | crypten"),
            "every peer run is listed: {md}"
        );
        assert!(md.contains("| 0.5 | 58.66 s (μ = 0.5) | 6.30 s |"), "{md}");
        assert!(md.contains("10.0× faster"), "{md}");
        assert!(md.contains("9.000 s"), "every run is listed: {md}");
        let csv = latency_table_csv(&r);
        assert!(
            csv.lines().any(|l| l.starts_with("0.5,58.66,6.3000,")),
            "{csv}"
        );
        let dir = std::env::temp_dir().join(format!("mpcvit-svg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        latency_svg(&r, &dir.join("l.svg")).unwrap();
        rounds_bytes_svg(&r, &dir.join("r.svg")).unwrap();
        let svg = std::fs::read_to_string(dir.join("l.svg")).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("mpcvit WAN, erf"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
