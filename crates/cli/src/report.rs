//! `fedpace report RUN_DIR...`: one self-contained HTML page (inline SVG, no scripts, no
//! external files) from run directories, meant to be usable as it is in a paper draft
//! (docs/outputs.md): a summary table that says which runs are complete, global and
//! personalised accuracy per round, the distribution of final per-client personalised
//! accuracy, and for each run a heat map of assigned rates (client × round) and the mean
//! rate per parameter group per round.
//!
//! Runs are named by the shortest suffix of their paths that tells them apart (two runs
//! of one config differ in their timestamped parent, so both are shown in full). Axes
//! get "nice" ticks (1, 2, 2.5 or 5 × 10^k; whole numbers on round axes); histogram bins
//! come from the data (Freedman–Diaconis, on nice edges) and runs are drawn as grouped
//! bars; series differ in colour, dash pattern and marker, so overlapping lines stay
//! distinguishable in print.
//!
//! A directory that holds runs instead of being one (the quickstart's
//! `runs/quickstart-<timestamp>`) stands for its run subdirectories. A run without
//! `summary.json` is shown as incomplete, an interrupted one as interrupted; a cut-off
//! last line of `metrics.jsonl` (a kill mid-write) is skipped with a warning.
//!
//! The page is well-formed XML (XHTML served as HTML): every element closed, text
//! escaped; `tests` check that and count the SVGs (one per plot).

use crate::quickstart::mean_se;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

const PALETTE: [&str; 10] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];
/// Dash patterns, cycled with a period prime to the palette's.
const DASHES: [&str; 3] = ["", "7 3", "2 2"];

/// Marks a page written by `fedpace report` (an existing file is replaced only if it has it).
const MARKER: &str = r#"<meta name="generator" content="fedpace report"/>"#;
/// What pages of earlier versions start with (no marker yet).
const OLD_MARKER: &str = "<title>fedpace report</title>";

/// How far a run got.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Status {
    /// `summary.json` present, not interrupted.
    Complete,
    /// Stopped by a signal; the summary says after which round.
    Interrupted {
        /// The signal (or "a stop request").
        by: String,
        /// Rounds completed.
        completed: u64,
        /// Rounds asked for.
        total: u64,
    },
    /// No `summary.json`: stopped at once, crashed, or still running.
    #[default]
    Incomplete,
}

/// What the report reads from one run directory.
#[derive(Debug, Clone, Default)]
pub struct RunData {
    /// Label (the shortest distinguishing suffix of its path, see [`distinct_labels`]).
    pub label: String,
    /// The run directory.
    pub path: PathBuf,
    /// (round, global accuracy) at evaluated rounds.
    pub global: Vec<(f64, f64)>,
    /// (round, mean personalised accuracy) at evaluated rounds.
    pub personalized: Vec<(f64, f64)>,
    /// Final personalised accuracy per client.
    pub final_client_acc: Vec<f64>,
    /// (round, client, assigned base rate).
    pub rates: Vec<(u32, u64, f64)>,
    /// Group labels.
    pub groups: Vec<String>,
    /// (round, mean assigned rate per group).
    pub group_rates: Vec<(u32, Vec<f64>)>,
    /// Final summary numbers (global accuracy, personalised mean and worst-10 %).
    pub summary: Option<(f64, f64, f64)>,
    /// Whether the run finished.
    pub status: Status,
    /// Rounds in `metrics.jsonl`.
    pub rounds_recorded: u32,
    /// Problems met while reading (shown on the page and printed).
    pub warnings: Vec<String>,
    /// What a learned controller reported each round (`learned` in `metrics.jsonl`):
    /// name → (round, value).
    pub learned: BTreeMap<String, Vec<(f64, f64)>>,
    /// (round, client, per-group multipliers: each group's rate over the base rate).
    pub multipliers: Vec<(u32, u64, Vec<f64>)>,
    /// The run's rate policy (`config.toml`), when it can be read.
    pub policy: Option<String>,
    /// (round, bytes sent, bytes received) of the rounds whose messages were counted
    /// (over the network, or `fedpace run --traffic`).
    pub traffic: Vec<(f64, f64, f64)>,
    /// `summary.json`'s `traffic` (the run's totals), when it has one.
    pub traffic_total: Option<serde_json::Value>,
}

/// Reads `metrics.jsonl`, `clients.csv` and `summary.json` of a run directory.
pub fn load_run(dir: &Path) -> Result<RunData> {
    let metrics = dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&metrics)
        .with_context(|| format!("{}: not a run directory", metrics.display()))?;
    let mut run = RunData {
        label: dir.display().to_string(),
        path: dir.to_path_buf(),
        ..Default::default()
    };
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .collect();
    for (k, &(i, line)) in lines.iter().enumerate() {
        let last = k + 1 == lines.len();
        let v: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            // A kill or a full disk while the last line was written: keep the rest.
            Err(e) if last && (e.is_eof() || !text.ends_with('\n')) => {
                run.warnings.push(format!(
                    "{}:{}: last line is cut off ({e}); skipped",
                    metrics.display(),
                    i + 1
                ));
                break;
            }
            Err(e) => {
                return Err(e).with_context(|| format!("{}:{}: not JSON", metrics.display(), i + 1))
            }
        };
        let round = v["round"].as_u64().unwrap_or(i as u64 + 1) as u32;
        run.rounds_recorded += 1;
        if let Some(g) = v["groups"].as_array() {
            run.groups = g
                .iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect();
        }
        if let Some(e) = v.get("eval").filter(|e| e.is_object()) {
            if let Some(a) = e["global_accuracy"].as_f64() {
                run.global.push((round as f64, a));
            }
            if let Some(a) = e["personalized_mean_accuracy"].as_f64() {
                run.personalized.push((round as f64, a));
            }
        }
        if let (Some(sent), Some(received)) = (
            v["traffic"]["sent"].as_f64(),
            v["traffic"]["received"].as_f64(),
        ) {
            run.traffic.push((round as f64, sent, received));
        }
        let mut sums: Vec<f64> = Vec::new();
        let mut n = 0usize;
        for c in v["clients"].as_array().into_iter().flatten() {
            let (Some(id), Some(lr)) = (c["id"].as_u64(), c["lr"].as_f64()) else {
                continue;
            };
            run.rates.push((round, id, lr));
            if let Some(gr) = c["group_rates"].as_array() {
                if lr > 0.0 {
                    run.multipliers.push((
                        round,
                        id,
                        gr.iter()
                            .map(|r| r.as_f64().unwrap_or(f64::NAN) / lr)
                            .collect(),
                    ));
                }
                if sums.len() < gr.len() {
                    sums.resize(gr.len(), 0.0);
                }
                for (s, r) in sums.iter_mut().zip(gr) {
                    *s += r.as_f64().unwrap_or(0.0);
                }
                n += 1;
            }
        }
        if n > 0 {
            run.group_rates
                .push((round, sums.iter().map(|s| s / n as f64).collect()));
        }
        if let Some(l) = v["learned"].as_object() {
            for (k, x) in l {
                if let Some(x) = x.as_f64() {
                    run.learned
                        .entry(k.clone())
                        .or_default()
                        .push((round as f64, x));
                }
            }
        }
    }
    run.policy = fedpace_experiment::ExperimentConfig::load(&dir.join("config.toml"), &[])
        .ok()
        .map(|c| c.policy.name().to_string());
    if let Ok(csv) = std::fs::read_to_string(dir.join("clients.csv")) {
        let mut lines = csv.lines();
        let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
        if let Some(col) = header.iter().position(|h| *h == "personalized_accuracy") {
            for l in lines {
                if let Some(Ok(a)) = l.split(',').nth(col).map(str::parse::<f64>) {
                    run.final_client_acc.push(a);
                }
            }
        }
    }
    let summary = dir.join("summary.json");
    match std::fs::read_to_string(&summary) {
        Ok(s) => match serde_json::from_str::<serde_json::Value>(&s) {
            Ok(v) => {
                let f = |x: &serde_json::Value| x.as_f64().unwrap_or(f64::NAN);
                run.summary = Some((
                    f(&v["global"]["accuracy"]),
                    f(&v["personalized"]["mean_accuracy"]),
                    f(&v["personalized"]["worst10_accuracy"]),
                ));
                run.traffic_total = v.get("traffic").filter(|t| t.is_object()).cloned();
                run.status = if v["interrupted"].as_bool() == Some(true) {
                    Status::Interrupted {
                        by: v["interrupted_by"]
                            .as_str()
                            .unwrap_or("a stop request")
                            .to_string(),
                        completed: v["rounds_completed"].as_u64().unwrap_or(0),
                        total: v["rounds"].as_u64().unwrap_or(0),
                    }
                } else {
                    Status::Complete
                };
            }
            Err(e) => run
                .warnings
                .push(format!("{}: not JSON ({e}); run shown as incomplete", summary.display())),
        },
        Err(_) => run.warnings.push(format!(
            "{}: no summary.json: the run was stopped at once, failed, or is still running ({} rounds recorded)",
            dir.display(),
            run.rounds_recorded
        )),
    }
    Ok(run)
}

/// The run directories meant by the arguments: each one that holds `metrics.jsonl`,
/// and for one that does not, the run directories directly inside it, in name order
/// (the quickstart writes `runs/quickstart-<timestamp>/{uniform,<policy>}`).
pub fn expand_runs(args: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for a in args {
        if a.join("metrics.jsonl").is_file() {
            out.push(a.clone());
            continue;
        }
        let mut subs: Vec<PathBuf> = std::fs::read_dir(a)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("metrics.jsonl").is_file())
            .collect();
        if subs.is_empty() {
            let why = if a.is_dir() {
                "no metrics.jsonl in it or in the directories directly below"
            } else {
                "no such directory"
            };
            bail!("{}: not a run directory ({why})", a.display());
        }
        subs.sort();
        out.extend(subs);
    }
    Ok(out)
}

fn components(p: &Path) -> Vec<String> {
    p.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .filter(|c| c != "/")
        .collect()
}

/// For each path, its shortest suffix (in whole components) that no other path ends
/// with; the same path given twice gets ` (2)`, ` (3)`… after the first.
pub fn distinct_labels(paths: &[PathBuf]) -> Vec<String> {
    let comps: Vec<Vec<String>> = paths.iter().map(|p| components(p)).collect();
    let suffix = |c: &[String], k: usize| c[c.len().saturating_sub(k)..].join("/");
    let mut labels: Vec<String> = comps
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let others: Vec<&Vec<String>> = comps
                .iter()
                .enumerate()
                .filter(|(j, o)| *j != i && *o != c)
                .map(|(_, o)| o)
                .collect();
            (1..=c.len())
                .find(|&k| others.iter().all(|o| suffix(o, k) != suffix(c, k)))
                .map_or_else(|| c.join("/"), |k| suffix(c, k))
        })
        .collect();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for l in &mut labels {
        let n = seen.entry(l.clone()).or_insert(0);
        *n += 1;
        if *n > 1 {
            *l = format!("{l} ({n})");
        }
    }
    labels
}

/// Escapes text for XML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A linear axis with nice tick values.
#[derive(Debug, Clone, PartialEq)]
struct Axis {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
    decimals: usize,
}

/// 1, 2, 2.5, 5 or 10 × 10^k, the smallest not below `raw` (2.5 only if `quarter`).
fn nice_step(raw: f64, quarter: bool) -> f64 {
    let mag = 10f64.powf(raw.log10().floor());
    let m = raw / mag;
    let nice = [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .filter(|s| quarter || *s != 2.5)
        .find(|s| m <= s * (1.0 + 1e-9))
        .unwrap_or(10.0);
    nice * mag
}

impl Axis {
    /// Covers `[lo, hi]` with at most about `max_ticks` intervals; `integer` keeps steps
    /// whole (rounds); `clamp` bounds the extended range (accuracy stays in [0, 1]).
    fn new(lo: f64, hi: f64, max_ticks: usize, integer: bool, clamp: Option<(f64, f64)>) -> Self {
        let (mut lo, mut hi) = if lo.is_finite() && hi.is_finite() {
            (lo, hi)
        } else {
            (0.0, 1.0)
        };
        if hi - lo < 1e-12 * lo.abs().max(1.0) {
            let pad = if integer {
                1.0
            } else {
                (lo.abs() * 0.1).max(1e-3)
            };
            (lo, hi) = (lo - pad, hi + pad);
            if let Some((a, b)) = clamp {
                (lo, hi) = (lo.max(a), hi.min(b));
            }
        }
        let mut step = nice_step((hi - lo) / max_ticks.max(1) as f64, !integer);
        if integer {
            step = step.max(1.0).round();
        }
        let mut a = (lo / step + 1e-9).floor() * step;
        let mut b = (hi / step - 1e-9).ceil() * step;
        if let Some((cl, ch)) = clamp {
            a = a.max(cl);
            b = b.min(ch);
        }
        let n = ((b - a) / step).round() as usize;
        let ticks = (0..=n).map(|i| a + step * i as f64).collect();
        let mut decimals = 0;
        while decimals < 12
            && ((step * 10f64.powi(decimals as i32)).round() - step * 10f64.powi(decimals as i32))
                .abs()
                > 1e-6
        {
            decimals += 1;
        }
        Axis {
            lo: a,
            hi: b,
            ticks,
            decimals,
        }
    }

    fn label(&self, v: f64) -> String {
        if self.decimals > 4 {
            format!("{v:.1e}")
        } else {
            format!("{v:.*}", self.decimals)
        }
    }
}

/// Chart geometry: a plot area, axes, and room for a legend below.
struct Frame {
    w: f64,
    h: f64,
    left: f64,
    right: f64,
    top: f64,
    plot_h: f64,
    x: Axis,
    y: Axis,
}

const LEGEND_ROW: f64 = 16.0;
/// Characters of a legend line before it wraps.
const LEGEND_CHARS: usize = 78;

/// Splits a label into lines of at most [`LEGEND_CHARS`], preferably after a `/`.
fn wrap(label: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut rest: &str = label;
    while rest.chars().count() > LEGEND_CHARS {
        let cut: usize = rest
            .char_indices()
            .take(LEGEND_CHARS)
            .filter(|(_, c)| *c == '/')
            .map(|(i, _)| i + 1)
            .last()
            .unwrap_or_else(|| {
                rest.char_indices()
                    .nth(LEGEND_CHARS)
                    .map_or(rest.len(), |p| p.0)
            });
        lines.push(rest[..cut].to_string());
        rest = &rest[cut..];
    }
    lines.push(rest.to_string());
    lines
}

impl Frame {
    fn new(x: Axis, y: Axis, legend_lines: usize) -> Self {
        let (top, plot_h, bottom) = (34.0, 230.0, 40.0);
        Frame {
            w: 560.0,
            h: top + plot_h + bottom + legend_lines as f64 * LEGEND_ROW + 6.0,
            left: 62.0,
            right: 18.0,
            top,
            plot_h,
            x,
            y,
        }
    }
    fn px(&self, x: f64) -> f64 {
        self.left + (x - self.x.lo) / (self.x.hi - self.x.lo) * (self.w - self.left - self.right)
    }
    fn py(&self, y: f64) -> f64 {
        self.top + self.plot_h - (y - self.y.lo) / (self.y.hi - self.y.lo) * self.plot_h
    }
    fn bottom(&self) -> f64 {
        self.top + self.plot_h
    }
    fn open(&self, out: &mut String, title: &str, xlabel: &str, ylabel: &str) {
        svg_open(out, self.w, self.h, title);
        let (x0, x1, y0, y1) = (self.left, self.w - self.right, self.top, self.bottom());
        for &fy in &self.y.ticks {
            let _ = write!(
                out,
                r##"<line x1="{x0}" x2="{x1}" y1="{py:.1}" y2="{py:.1}" stroke="#e4e4e4"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                x0 - 5.0,
                self.py(fy) + 4.0,
                self.y.label(fy),
                py = self.py(fy),
            );
        }
        for &fx in &self.x.ticks {
            let _ = write!(
                out,
                r##"<line x1="{px:.1}" x2="{px:.1}" y1="{y1}" y2="{:.1}" stroke="#444"/><text x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                y1 + 4.0,
                y1 + 16.0,
                self.x.label(fx),
                px = self.px(fx),
            );
        }
        let _ = write!(
            out,
            r##"<rect x="{x0}" y="{y0}" width="{:.1}" height="{:.1}" fill="none" stroke="#444"/><text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text><text x="14" y="{:.1}" text-anchor="middle" transform="rotate(-90 14 {:.1})">{}</text>"##,
            x1 - x0,
            y1 - y0,
            (x0 + x1) / 2.0,
            y1 + 32.0,
            esc(xlabel),
            (y0 + y1) / 2.0,
            (y0 + y1) / 2.0,
            esc(ylabel)
        );
    }
    /// Legend entries below the x label: a swatch drawn like the series, then the
    /// label in full (wrapped).
    fn legend(&self, out: &mut String, entries: &[(String, usize)], bar: bool) {
        let mut y = self.bottom() + 50.0;
        for (label, i) in entries {
            let (color, dash) = style(*i);
            let x = self.left;
            if bar {
                let _ = write!(
                    out,
                    r#"<rect x="{x}" y="{:.1}" width="18" height="9" fill="{color}" fill-opacity="0.75"/>"#,
                    y - 8.0
                );
            } else {
                let _ = write!(
                    out,
                    r#"<line x1="{x}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="{color}" stroke-width="{}" stroke-dasharray="{dash}"/>"#,
                    x + 22.0,
                    y - 4.0,
                    y - 4.0,
                    stroke_width(*i)
                );
                marker(out, *i, x + 11.0, y - 4.0);
            }
            for line in wrap(label) {
                let _ = write!(
                    out,
                    r#"<text x="{:.1}" y="{y:.1}">{}</text>"#,
                    x + 28.0,
                    esc(&line)
                );
                y += LEGEND_ROW;
            }
        }
    }
}

fn svg_open(out: &mut String, w: f64, h: f64, title: &str) {
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="11"><title>{t}</title><text x="{cx}" y="20" text-anchor="middle" font-size="13" font-weight="bold">{t}</text>"#,
        cx = w / 2.0,
        t = esc(title)
    );
}

/// Colour and dash of series `i`: 30 distinct pairs.
fn style(i: usize) -> (&'static str, &'static str) {
    (PALETTE[i % PALETTE.len()], DASHES[i % DASHES.len()])
}

/// Line width of series `i`: later series are thinner, so a line drawn over an equal
/// one leaves it visible.
fn stroke_width(i: usize) -> f64 {
    [3.2, 2.2, 1.4][i.min(2)]
}

/// Marker of series `i`: circle, square, triangle, diamond.
fn marker(out: &mut String, i: usize, x: f64, y: f64) {
    let color = style(i).0;
    let _ = match i % 4 {
        0 => write!(
            out,
            r#"<circle cx="{x:.1}" cy="{y:.1}" r="3" fill="{color}"/>"#
        ),
        1 => write!(
            out,
            r#"<rect x="{:.1}" y="{:.1}" width="5.6" height="5.6" fill="{color}"/>"#,
            x - 2.8,
            y - 2.8
        ),
        2 => write!(
            out,
            r#"<polygon points="{x:.1},{:.1} {:.1},{:.1} {:.1},{:.1}" fill="{color}"/>"#,
            y - 3.6,
            x - 3.4,
            y + 2.6,
            x + 3.4,
            y + 2.6
        ),
        _ => write!(
            out,
            r#"<polygon points="{x:.1},{:.1} {:.1},{y:.1} {x:.1},{:.1} {:.1},{y:.1}" fill="{color}"/>"#,
            y - 3.8,
            x + 3.8,
            y + 3.8,
            x - 3.8
        ),
    };
}

fn range(v: impl Iterator<Item = f64>) -> (f64, f64) {
    v.filter(|x| x.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
            (a.min(x), b.max(x))
        })
}

fn legend_lines(labels: impl Iterator<Item = impl AsRef<str>>) -> usize {
    labels.map(|l| wrap(l.as_ref()).len()).sum()
}

/// Line plot of several series over rounds; `unit` bounds the y axis to [0, 1].
pub fn line_plot(
    title: &str,
    ylabel: &str,
    series: &[(String, Vec<(f64, f64)>)],
    unit: bool,
) -> String {
    let xr = range(series.iter().flat_map(|s| s.1.iter().map(|p| p.0)));
    let yr = range(series.iter().flat_map(|s| s.1.iter().map(|p| p.1)));
    let x = Axis::new(0.0, xr.1, 8, true, None);
    let y = Axis::new(yr.0, yr.1, 6, false, unit.then_some((0.0, 1.0)));
    // A series equal to an earlier one is drawn on top of it: say so in the legend.
    let labels: Vec<String> = series
        .iter()
        .enumerate()
        .map(|(i, (label, pts))| {
            match series[..i].iter().find(|o| !pts.is_empty() && o.1 == *pts) {
                Some(o) => format!("{label} (same values as {})", o.0),
                None => label.clone(),
            }
        })
        .collect();
    let f = Frame::new(x, y, legend_lines(labels.iter()));
    let mut out = String::new();
    f.open(&mut out, title, "round", ylabel);
    for (i, (_, pts)) in series.iter().enumerate() {
        let (color, dash) = style(i);
        let width = stroke_width(i);
        let d: Vec<String> = pts
            .iter()
            .filter(|p| p.1.is_finite())
            .map(|(x, y)| format!("{:.1},{:.1}", f.px(*x), f.py(*y)))
            .collect();
        if !d.is_empty() {
            let _ = write!(
                out,
                r#"<polyline fill="none" stroke="{color}" stroke-width="{width}" stroke-dasharray="{dash}" stroke-opacity="0.9" points="{}"/>"#,
                d.join(" ")
            );
        }
        // Markers on at most ~25 points per series, so dense series stay readable.
        let every = pts.len().div_ceil(25).max(1);
        for (x, y) in pts.iter().filter(|p| p.1.is_finite()).step_by(every) {
            marker(&mut out, i, f.px(*x), f.py(*y));
        }
    }
    let entries: Vec<(String, usize)> = series
        .iter()
        .enumerate()
        .map(|(i, s)| (s.0.clone(), i))
        .collect();
    f.legend(&mut out, &entries, false);
    out.push_str("</svg>");
    out
}

/// Bin edges for `values`: Freedman–Diaconis width (Sturges when the quartiles
/// coincide), aiming at 5 to 12 bins, rounded down to a nice width (so 5 to about 30
/// bins) on nice edges.
fn bin_edges(values: &[f64]) -> Vec<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return vec![0.0, 1.0];
    }
    let (lo, hi) = (v[0], v[v.len() - 1]);
    if hi - lo < 1e-9 {
        let pad = (lo.abs() * 0.05).max(0.005);
        return vec![lo - pad, hi + pad];
    }
    let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    let iqr = q(0.75) - q(0.25);
    let n = v.len() as f64;
    let bins = if iqr > 0.0 {
        ((hi - lo) / (2.0 * iqr / n.cbrt())).ceil()
    } else {
        n.log2().ceil() + 1.0
    };
    let raw = (hi - lo) / bins.clamp(5.0, 12.0);
    // The largest nice width not above `raw`.
    let mut step = nice_step(raw, true);
    if step > raw * (1.0 + 1e-9) {
        let mag = 10f64.powf(step.log10().floor());
        let m = step / mag;
        step = mag
            * [1.0, 2.0, 2.5, 5.0]
                .into_iter()
                .rev()
                .find(|c| *c < m - 1e-9)
                .unwrap_or(0.5);
    }
    let a = (lo / step + 1e-9).floor();
    let b = (hi / step - 1e-9).ceil().max(a + 1.0);
    (a as i64..=b as i64).map(|i| i as f64 * step).collect()
}

/// Histogram of final per-client accuracy: one bar per run in each bin (grouped).
pub fn histogram(title: &str, series: &[(String, Vec<f64>)]) -> String {
    let all: Vec<f64> = series.iter().flat_map(|s| s.1.iter().copied()).collect();
    let edges = bin_edges(&all);
    let nb = edges.len() - 1;
    let counts: Vec<Vec<f64>> = series
        .iter()
        .map(|(_, v)| {
            let mut c = vec![0.0; nb];
            let finite: Vec<f64> = v.iter().copied().filter(|a| a.is_finite()).collect();
            for a in &finite {
                let b = edges
                    .partition_point(|e| e <= a)
                    .saturating_sub(1)
                    .min(nb - 1);
                c[b] += 1.0;
            }
            let n = finite.len().max(1) as f64;
            c.iter().map(|x| x / n).collect()
        })
        .collect();
    let ymax = counts.iter().flatten().fold(0.0f64, |a, b| a.max(*b));
    let mut x = Axis::new(edges[0], edges[nb], 7, false, None);
    x.ticks
        .retain(|t| *t >= edges[0] - 1e-9 && *t <= edges[nb] + 1e-9);
    (x.lo, x.hi) = (edges[0], edges[nb]);
    let y = Axis::new(0.0, ymax.max(0.05), 5, false, Some((0.0, 1.0)));
    let f = Frame::new(x, y, legend_lines(series.iter().map(|s| &s.0)));
    let mut out = String::new();
    f.open(
        &mut out,
        title,
        "final personalised accuracy",
        "fraction of clients",
    );
    let k = series.len().max(1) as f64;
    for (b, w) in edges.windows(2).enumerate() {
        let (x0, x1) = (f.px(w[0]), f.px(w[1]));
        let slot = (x1 - x0 - 2.0).max(0.5) / k;
        for (i, c) in counts.iter().enumerate() {
            if c[b] <= 0.0 {
                continue;
            }
            let (color, _) = style(i);
            let _ = write!(
                out,
                r#"<rect x="{:.2}" y="{:.2}" width="{:.2}" height="{:.2}" fill="{color}" fill-opacity="0.75"/>"#,
                x0 + 1.0 + slot * i as f64,
                f.py(c[b]),
                slot,
                f.bottom() - f.py(c[b])
            );
        }
    }
    let entries: Vec<(String, usize)> = series
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let n = s.1.iter().filter(|a| a.is_finite()).count();
            (format!("{} ({n} clients)", s.0), i)
        })
        .collect();
    f.legend(&mut out, &entries, true);
    out.push_str("</svg>");
    out
}

/// Heat map of assigned rates, clients (rows) × rounds (columns), log colour scale.
pub fn heat_map(title: &str, rates: &[(u32, u64, f64)]) -> String {
    let clients: Vec<u64> = {
        let mut c: Vec<u64> = rates.iter().map(|r| r.1).collect();
        c.sort_unstable();
        c.dedup();
        c
    };
    let rounds = rates.iter().map(|r| r.0).max().unwrap_or(1);
    let (lo, hi) = range(rates.iter().filter(|r| r.2 > 0.0).map(|r| r.2.ln()));
    let (w, h, left, top, right) = (560.0, 310.0, 62.0, 34.0, 110.0);
    let (pw, ph) = (w - left - right, h - top - 44.0);
    let cw = pw / rounds as f64;
    let ch = ph / clients.len().max(1) as f64;
    let row: BTreeMap<u64, usize> = clients.iter().enumerate().map(|(i, c)| (*c, i)).collect();
    let color = |v: f64| -> String {
        let t = if v > 0.0 && hi > lo {
            ((v.ln() - lo) / (hi - lo)).clamp(0.0, 1.0)
        } else if v > 0.0 {
            0.5
        } else {
            return "#000000".into();
        };
        // light yellow → dark blue
        let (r, g, b) = (
            255.0 + t * (8.0 - 255.0),
            255.0 + t * (48.0 - 255.0),
            204.0 + t * (107.0 - 204.0),
        );
        format!("#{:02x}{:02x}{:02x}", r as u8, g as u8, b as u8)
    };
    let mut out = String::new();
    svg_open(&mut out, w, h, title);
    for (round, client, v) in rates {
        let _ = write!(
            out,
            r#"<rect x="{:.2}" y="{:.2}" width="{:.2}" height="{:.2}" fill="{}"/>"#,
            left + (*round as f64 - 1.0) * cw,
            top + row[client] as f64 * ch,
            cw.max(0.5),
            ch.max(0.5),
            color(*v)
        );
    }
    // Round ticks at cell centres, whole rounds only.
    let axis = Axis::new(1.0, rounds as f64, 8, true, None);
    for &r in axis
        .ticks
        .iter()
        .filter(|r| **r >= 1.0 && **r <= rounds as f64)
    {
        let x = left + (r - 0.5) * cw;
        let _ = write!(
            out,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="{:.1}" y2="{:.1}" stroke="#444"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            top + ph,
            top + ph + 4.0,
            top + ph + 16.0,
            axis.label(r)
        );
    }
    let _ = write!(
        out,
        r##"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#444"/><text x="{:.1}" y="{:.1}" text-anchor="middle">round</text><text x="14" y="{:.1}" text-anchor="middle" transform="rotate(-90 14 {:.1})">client ({} sampled at least once)</text>"##,
        left + pw / 2.0,
        h - 8.0,
        top + ph / 2.0,
        top + ph / 2.0,
        clients.len()
    );
    // Colour bar, with its caption below it (never near the title).
    let bx = w - right + 22.0;
    for i in 0..20 {
        let t = i as f64 / 19.0;
        let v = (lo + t * (hi - lo)).exp();
        let _ = write!(
            out,
            r#"<rect x="{bx}" y="{:.1}" width="14" height="{:.1}" fill="{}"/>"#,
            top + ph - (i as f64 + 1.0) * ph / 20.0,
            ph / 20.0 + 0.5,
            color(if hi > lo { v } else { lo.exp() })
        );
    }
    let fmt = |v: f64| {
        if v != 0.0 && (v.abs() < 1e-2 || v.abs() >= 1e4) {
            format!("{v:.2e}")
        } else {
            format!("{v:.4}")
        }
    };
    let _ = write!(
        out,
        r##"<rect x="{bx}" y="{top}" width="14" height="{ph}" fill="none" stroke="#444"/><text x="{:.1}" y="{:.1}">{}</text><text x="{:.1}" y="{:.1}">{}</text><text x="{:.1}" y="{:.1}" text-anchor="middle">rate</text><text x="{:.1}" y="{:.1}" text-anchor="middle">(log scale)</text></svg>"##,
        bx + 18.0,
        top + 9.0,
        fmt(hi.exp()),
        bx + 18.0,
        top + ph,
        fmt(lo.exp()),
        bx + 7.0,
        top + ph + 16.0,
        bx + 7.0,
        top + ph + 29.0
    );
    out
}

/// The value at quantile `p` of sorted `v` (nearest rank, as [`bin_edges`]' quartiles).
fn quantile(v: &[f64], p: f64) -> f64 {
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// A labelled line: (label, (round, value) points).
pub type Series = (String, Vec<(f64, f64)>);

/// Whether `fedpace report` draws the learned-rates panel for this run: it reports
/// learned scalars (FedEx, FedHyper, meta-rates) or its policy learns the rates (the
/// hypernetwork policy).
pub fn is_learned(r: &RunData) -> bool {
    !r.learned.is_empty() || r.policy.as_deref() == Some("hypernet")
}

/// The learned scalars of a run as plots: one per family. A name `prefix=value` is one
/// candidate of a categorical distribution (FedEx's θ: `fedex.all.rate=0.01`), drawn with
/// its siblings on a [0, 1] axis; any other name goes with the names that share its
/// first component (`fedhyper.a`, `fedhyper.server_rate`; `meta.w.*`, `meta.offset.*`).
pub fn learned_families(
    learned: &BTreeMap<String, Vec<(f64, f64)>>,
) -> Vec<(String, bool, Vec<Series>)> {
    let mut fam: BTreeMap<(String, bool), Vec<Series>> = BTreeMap::new();
    for (k, pts) in learned {
        let (family, label, unit) = match k.split_once('=') {
            Some((f, v)) => (f.to_string(), v.to_string(), true),
            None => (
                k.split('.').next().unwrap_or(k).to_string(),
                k.clone(),
                false,
            ),
        };
        fam.entry((family, unit))
            .or_default()
            .push((label, pts.clone()));
    }
    fam.into_iter().map(|((f, u), s)| (f, u, s)).collect()
}

/// The learned-rates panel of one run (docs/outputs.md, "report"): the learned scalars
/// per family; the base rate of a few representative clients (the most often sampled)
/// over rounds; the distribution of the round's client rates (quantiles, a histogram per
/// round in five numbers); with several parameter groups whose multipliers move, each
/// group's multiplier (group rate over base rate) over the round's clients.
pub fn learned_panel(r: &RunData) -> Vec<String> {
    let mut out = Vec::new();
    for (family, unit, series) in learned_families(&r.learned) {
        let (title, ylabel) = if unit {
            (
                format!("Learned distribution {family} (probability of each candidate)"),
                "probability",
            )
        } else {
            (format!("Learned values: {family}"), "value")
        };
        out.push(line_plot(&title, ylabel, &series, unit));
    }
    if r.rates.is_empty() {
        return out;
    }
    let mut count: BTreeMap<u64, usize> = BTreeMap::new();
    for (_, c, _) in &r.rates {
        *count.entry(*c).or_default() += 1;
    }
    let mut by_count: Vec<(u64, usize)> = count.into_iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let picked: Vec<(String, Vec<(f64, f64)>)> = by_count
        .iter()
        .take(4)
        .map(|&(c, n)| {
            (
                format!("client {c} (sampled {n}×)"),
                r.rates
                    .iter()
                    .filter(|x| x.1 == c)
                    .map(|x| (x.0 as f64, x.2))
                    .collect(),
            )
        })
        .collect();
    out.push(line_plot(
        "Base rate of the most often sampled clients",
        "rate",
        &picked,
        false,
    ));
    let mut per_round: BTreeMap<u32, Vec<f64>> = BTreeMap::new();
    for (round, _, lr) in &r.rates {
        per_round.entry(*round).or_default().push(*lr);
    }
    let qs = [
        ("max", 1.0),
        ("90th percentile", 0.9),
        ("median", 0.5),
        ("10th percentile", 0.1),
        ("min", 0.0),
    ];
    let mut sorted: Vec<(u32, Vec<f64>)> = per_round.into_iter().collect();
    sorted
        .iter_mut()
        .for_each(|(_, v)| v.sort_by(f64::total_cmp));
    let series: Vec<(String, Vec<(f64, f64)>)> = qs
        .iter()
        .map(|(name, p)| {
            (
                name.to_string(),
                sorted
                    .iter()
                    .map(|(round, v)| (*round as f64, quantile(v, *p)))
                    .collect(),
            )
        })
        .collect();
    out.push(line_plot(
        "Base rate over the round's clients (quantiles)",
        "rate",
        &series,
        false,
    ));
    let groups = r.groups.len();
    let moves = r
        .multipliers
        .iter()
        .any(|(_, _, m)| m.iter().any(|x| x.is_finite() && (x - 1.0).abs() > 1e-6));
    if groups >= 2 && moves {
        let mut series = Vec::new();
        for (g, name) in r.groups.iter().enumerate() {
            let mut per_round: BTreeMap<u32, Vec<f64>> = BTreeMap::new();
            for (round, _, m) in &r.multipliers {
                if let Some(x) = m.get(g).filter(|x| x.is_finite()) {
                    per_round.entry(*round).or_default().push(*x);
                }
            }
            for v in per_round.values_mut() {
                v.sort_by(f64::total_cmp);
            }
            for (q, p) in [("10th pct", 0.1), ("median", 0.5), ("90th pct", 0.9)] {
                series.push((
                    format!("{name}: {q}"),
                    per_round
                        .iter()
                        .map(|(round, v)| (*round as f64, quantile(v, p)))
                        .collect(),
                ));
            }
        }
        out.push(line_plot(
            "Per-group multiplier over the round's clients",
            "group rate / base rate",
            &series,
            false,
        ));
    }
    out
}

fn status_text(r: &RunData) -> String {
    match &r.status {
        Status::Complete => "complete".into(),
        Status::Interrupted {
            by,
            completed,
            total,
        } => format!("interrupted by {by} after round {completed} of {total}"),
        Status::Incomplete => format!(
            "incomplete: no summary.json ({} rounds recorded)",
            r.rounds_recorded
        ),
    }
}

/// The label in legends: the run's label, flagged when it did not finish.
fn legend_label(r: &RunData) -> String {
    match &r.status {
        Status::Complete => r.label.clone(),
        Status::Interrupted { completed, .. } => {
            format!("{} (interrupted at round {completed})", r.label)
        }
        Status::Incomplete => format!("{} (incomplete)", r.label),
    }
}

/// The table of a quickstart directory's `seeds.csv` (every paired seed, where only the
/// first seed's runs are written in full): per run the mean ± standard error over seeds
/// of global, personalised mean and worst-10 % accuracy, and each run's paired
/// difference to the first run (`uniform`) with the seeds better / worse / tied. `None`
/// when the file cannot be read as such a table.
pub fn seeds_table(csv: &str) -> Option<String> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next()?.split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let (seed, run) = (col("seed")?, col("run")?);
    let cols = [
        col("global_accuracy")?,
        col("personal_mean_accuracy")?,
        col("personal_worst10_accuracy")?,
    ];
    // run → seed → figures, runs in order of appearance.
    let mut order: Vec<String> = Vec::new();
    let mut rows: BTreeMap<String, BTreeMap<u64, [f64; 3]>> = BTreeMap::new();
    for l in lines.filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = l.split(',').collect();
        let s: u64 = f.get(seed)?.parse().ok()?;
        let name = f.get(run)?.to_string();
        let mut v = [f64::NAN; 3];
        for (x, c) in v.iter_mut().zip(cols) {
            *x = f.get(c)?.parse().ok()?;
        }
        if !order.contains(&name) {
            order.push(name.clone());
        }
        rows.entry(name).or_default().insert(s, v);
    }
    let base = order.first()?;
    let mut h = String::new();
    let n = rows[base].len();
    let _ = write!(
        h,
        "<table><tr><th class=\"l\">run (every seed, seeds.csv)</th><th>seeds</th><th>global acc.</th><th>personalised mean</th><th>personalised worst 10 %</th></tr>"
    );
    for name in &order {
        let r = &rows[name];
        let cells: Vec<String> = (0..3)
            .map(|k| {
                let v: Vec<f64> = r.values().map(|x| 100.0 * x[k]).collect();
                let (m, se) = mean_se(&v);
                format!("{m:.2} ± {se:.2} %")
            })
            .collect();
        let _ = write!(
            h,
            "<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(name),
            r.len(),
            cells[0],
            cells[1],
            cells[2]
        );
    }
    for name in order.iter().skip(1) {
        let (a, b) = (&rows[base], &rows[name]);
        let paired: Vec<(&[f64; 3], &[f64; 3])> = b
            .iter()
            .filter_map(|(s, y)| a.get(s).map(|x| (x, y)))
            .collect();
        let cells: Vec<String> = (0..3)
            .map(|k| {
                let d: Vec<f64> = paired.iter().map(|(x, y)| 100.0 * (y[k] - x[k])).collect();
                let (m, se) = mean_se(&d);
                let better = d.iter().filter(|x| **x > 0.0).count();
                let worse = d.iter().filter(|x| **x < 0.0).count();
                format!(
                    "{m:+.2} ± {se:.2} points ({better}/{worse}/{})",
                    d.len() - better - worse
                )
            })
            .collect();
        let _ = write!(
            h,
            "<tr><td class=\"l\">{} − {} (paired)</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(name),
            esc(base),
            paired.len(),
            cells[0],
            cells[1],
            cells[2]
        );
    }
    let _ = write!(
        h,
        "</table><p>Mean ± standard error over {n} seeds; differences seed by seed, in points, with the seeds better / worse / tied. The plots below show the first seed's runs only.</p>"
    );
    Some(h)
}

/// Builds the page for the runs.
#[cfg(test)]
pub fn render(runs: &[RunData]) -> String {
    render_with(runs, &[])
}

/// Builds the page for the runs, with the paired-seed tables of the directories that
/// hold a `seeds.csv` (directory, table HTML from [`seeds_table`]).
pub fn render_with(runs: &[RunData], seeds: &[(PathBuf, String)]) -> String {
    let mut html = format!(
        "<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\"><head><meta charset=\"utf-8\"/>{MARKER}<title>fedpace report</title><style>body{{font-family:sans-serif;max-width:1180px;margin:1em auto;color:#222}}figure{{display:inline-block;margin:0.4em;vertical-align:top}}table{{border-collapse:collapse;margin-bottom:1em}}td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}td.l,th.l{{text-align:left}}.warn{{color:#8a4b00}}.bad{{color:#b00020}}</style></head><body><h1>fedpace report</h1>"
    );
    let warnings: Vec<&String> = runs.iter().flat_map(|r| &r.warnings).collect();
    if !warnings.is_empty() {
        html.push_str("<ul class=\"warn\">");
        for w in warnings {
            let _ = write!(html, "<li>{}</li>", esc(w));
        }
        html.push_str("</ul>");
    }
    html.push_str("<table><tr><th class=\"l\">run</th><th class=\"l\">directory</th><th>rounds</th><th class=\"l\">status</th><th>global acc.</th><th>personalised mean</th><th>personalised worst 10 %</th></tr>");
    for r in runs {
        let f = |x: f64| {
            if x.is_finite() {
                format!("{:.2} %", 100.0 * x)
            } else {
                "–".into()
            }
        };
        let (g, p, w) = r.summary.unwrap_or((f64::NAN, f64::NAN, f64::NAN));
        let class = if r.status == Status::Complete {
            "l"
        } else {
            "l bad"
        };
        let _ = write!(
            html,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td class=\"{class}\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.label),
            esc(&r.path.display().to_string()),
            r.rounds_recorded,
            esc(&status_text(r)),
            f(g),
            f(p),
            f(w)
        );
    }
    html.push_str("</table>");
    for (dir, table) in seeds {
        let _ = write!(
            html,
            "<h2>Every seed of {}</h2>{table}",
            esc(&dir.display().to_string())
        );
    }
    html.push_str("<h2>Accuracy per round</h2>");
    let fig = |html: &mut String, svg: String| {
        let _ = write!(html, "<figure class=\"plot\">{svg}</figure>");
    };
    let series = |get: fn(&RunData) -> &Vec<(f64, f64)>| -> Vec<(String, Vec<(f64, f64)>)> {
        runs.iter()
            .map(|r| (legend_label(r), get(r).clone()))
            .collect()
    };
    fig(
        &mut html,
        line_plot(
            "Global model accuracy",
            "accuracy",
            &series(|r| &r.global),
            true,
        ),
    );
    fig(
        &mut html,
        line_plot(
            "Personalised accuracy (mean over clients)",
            "accuracy",
            &series(|r| &r.personalized),
            true,
        ),
    );
    html.push_str("<h2>Final per-client personalised accuracy</h2>");
    fig(
        &mut html,
        histogram(
            "Distribution over clients",
            &runs
                .iter()
                .map(|r| (legend_label(r), r.final_client_acc.clone()))
                .collect::<Vec<_>>(),
        ),
    );
    if runs.iter().any(|r| !r.traffic.is_empty()) {
        communication(&mut html, runs);
    }
    html.push_str("<h2>Rates</h2>");
    for r in runs {
        let _ = write!(html, "<h3>{}</h3>", esc(&legend_label(r)));
        fig(
            &mut html,
            heat_map("Assigned base rate per client and round", &r.rates),
        );
        let series: Vec<(String, Vec<(f64, f64)>)> = r
            .groups
            .iter()
            .enumerate()
            .map(|(g, name)| {
                (
                    name.clone(),
                    r.group_rates
                        .iter()
                        .map(|(round, v)| (*round as f64, v.get(g).copied().unwrap_or(f64::NAN)))
                        .collect(),
                )
            })
            .collect();
        fig(
            &mut html,
            line_plot("Mean assigned rate per layer group", "rate", &series, false),
        );
        if is_learned(r) {
            html.push_str("<h4>Learned rates</h4>");
            for svg in learned_panel(r) {
                fig(&mut html, svg);
            }
        }
    }
    html.push_str("</body></html>\n");
    html
}

/// The "Communication" section: the bytes of the messages per round (plot) and the
/// run's totals by part (table), for runs that counted them.
fn communication(html: &mut String, runs: &[RunData]) {
    html.push_str("<h2>Communication</h2><table><tr><th class=\"l\">run</th><th>rounds</th><th>sent MB</th><th>received MB</th><th>sent MB / round</th><th>received MB / round</th><th>model MB</th><th>plans kB</th><th>instruction payloads kB</th><th>updates MB</th><th>reply payloads kB</th></tr>");
    for r in runs {
        let Some(t) = &r.traffic_total else { continue };
        let b = |k: &str, scale: f64| match t[k].as_f64() {
            Some(x) => format!("{:.3}", x / scale),
            None => "–".into(),
        };
        let _ = write!(
            html,
            "<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&legend_label(r)),
            t["rounds"],
            b("sent", 1e6),
            b("received", 1e6),
            b("sent_per_round", 1e6),
            b("received_per_round", 1e6),
            b("model", 1e6),
            b("plan", 1e3),
            b("instruction_payloads", 1e3),
            b("update", 1e6),
            b("reply_payloads", 1e3),
        );
    }
    html.push_str("</table>");
    let mut series = Vec::new();
    for r in runs.iter().filter(|r| !r.traffic.is_empty()) {
        let label = legend_label(r);
        series.push((
            format!("{label} sent"),
            r.traffic.iter().map(|t| (t.0, t.1 / 1e6)).collect(),
        ));
        series.push((
            format!("{label} received"),
            r.traffic.iter().map(|t| (t.0, t.2 / 1e6)).collect(),
        ));
    }
    let _ = write!(
        html,
        "<figure class=\"plot\">{}</figure>",
        line_plot("Bytes per round", "MB", &series, false)
    );
}

/// Number of plots [`render`] draws for `runs` runs.
#[cfg(test)]
pub fn plot_count(runs: usize) -> usize {
    3 + 2 * runs
}

/// Where the page goes without `--out`: `report.html` in the one directory given (a run
/// or a directory of runs), else in the current directory.
pub fn default_out(args: &[PathBuf]) -> PathBuf {
    match args {
        [one] => one.join("report.html"),
        _ => PathBuf::from("report.html"),
    }
}

/// Refuses to replace a file that is not a fedpace report (unless `force`).
fn check_out(out: &Path, force: bool) -> Result<()> {
    if out.is_dir() {
        bail!("--out {}: is a directory (give a file name)", out.display());
    }
    if force || !out.exists() {
        return Ok(());
    }
    let mut head = vec![0u8; 4096];
    let n = std::fs::File::open(out)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .with_context(|| format!("--out {}", out.display()))?;
    let head = String::from_utf8_lossy(&head[..n]);
    if head.contains(MARKER) || head.contains(OLD_MARKER) {
        return Ok(());
    }
    bail!(
        "--out {}: exists and is not a fedpace report; choose another file, or pass --force to replace it",
        out.display()
    )
}

/// Reads the runs and writes the page (to `out`, or [`default_out`]); returns its path.
pub fn write_report(args: &[PathBuf], out: Option<&Path>, force: bool) -> Result<PathBuf> {
    if args.is_empty() {
        bail!("report: give at least one run directory");
    }
    let dirs = expand_runs(args)?;
    let out = out.map_or_else(|| default_out(args), Path::to_path_buf);
    check_out(&out, force)?;
    let mut runs = dirs
        .iter()
        .map(|d| load_run(d))
        .collect::<Result<Vec<_>>>()?;
    for (r, label) in runs.iter_mut().zip(distinct_labels(&dirs)) {
        r.label = label;
    }
    for w in runs.iter().flat_map(|r| &r.warnings) {
        eprintln!("warning: {w}");
    }
    let seeds: Vec<(PathBuf, String)> = args
        .iter()
        .filter_map(|a| {
            let csv = std::fs::read_to_string(a.join("seeds.csv")).ok()?;
            match seeds_table(&csv) {
                Some(t) => Some((a.clone(), t)),
                None => {
                    eprintln!(
                        "warning: {}: not a seeds table; skipped",
                        a.join("seeds.csv").display()
                    );
                    None
                }
            }
        })
        .collect();
    crate::files::write_bytes_atomic(&out, render_with(&runs, &seeds).as_bytes())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks that every tag is closed in order (a minimal XML well-formedness check:
    /// nesting, self-closing tags, no stray `<` or `&` in text).
    pub fn check_well_formed(s: &str) -> std::result::Result<usize, String> {
        let body = s.trim_start_matches("<!DOCTYPE html>").trim();
        let mut stack: Vec<String> = Vec::new();
        let mut elements = 0;
        let mut rest = body;
        while let Some(i) = rest.find('<') {
            let text = &rest[..i];
            if let Some(j) = text.find('&') {
                let ent = &text[j..];
                if !["&amp;", "&lt;", "&gt;", "&quot;"]
                    .iter()
                    .any(|e| ent.starts_with(e))
                {
                    return Err(format!("bare & in {text:?}"));
                }
            }
            let end = rest[i..].find('>').ok_or("unclosed <")? + i;
            let tag = &rest[i + 1..end];
            if let Some(name) = tag.strip_prefix('/') {
                let open = stack.pop().ok_or(format!("stray </{name}>"))?;
                if open != name.trim() {
                    return Err(format!("<{open}> closed by </{name}>"));
                }
            } else if !tag.ends_with('/') {
                let name = tag.split_whitespace().next().unwrap_or("").to_string();
                stack.push(name);
                elements += 1;
            } else {
                elements += 1;
            }
            rest = &rest[end + 1..];
        }
        if !stack.is_empty() {
            return Err(format!("unclosed {stack:?}"));
        }
        Ok(elements)
    }

    fn fake_run(dir: &Path, lr: f64, summary: bool) {
        std::fs::create_dir_all(dir).unwrap();
        let mut m = String::new();
        for r in 1..=4 {
            let eval = format!(
                r#"{{"global_accuracy":{},"personalized_mean_accuracy":{}}}"#,
                0.1 * r as f64,
                0.15 * r as f64
            );
            m += &format!(
                r#"{{"round":{r},"groups":["body","head"],"eval":{eval},"clients":[{{"id":0,"lr":{lr},"group_rates":[{lr},{}]}},{{"id":3,"lr":{},"group_rates":[1,2]}}]}}"#,
                lr * 10.0,
                lr * 2.0
            );
            m.push('\n');
        }
        std::fs::write(dir.join("metrics.jsonl"), m).unwrap();
        std::fs::write(
            dir.join("clients.csv"),
            "id,device,personalized_accuracy\n0,,0.5\n1,,0.75\n3,a<b,0.95\n",
        )
        .unwrap();
        if summary {
            std::fs::write(
                dir.join("summary.json"),
                r#"{"global":{"accuracy":0.4},"personalized":{"mean_accuracy":0.6,"worst10_accuracy":0.5}}"#,
            )
            .unwrap();
        }
    }

    #[test]
    fn page_is_well_formed_with_one_svg_per_plot() {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("uniform & co");
        let b = tmp.path().join("by<label>");
        fake_run(&a, 0.05, true);
        fake_run(&b, 0.1, true);
        let out = tmp.path().join("report.html");
        write_report(&[a.clone(), b.clone()], Some(&out), false).unwrap();
        let html = std::fs::read_to_string(&out).unwrap();
        check_well_formed(&html).unwrap();
        assert_eq!(html.matches("<svg ").count(), plot_count(2));
        assert_eq!(html.matches("<figure").count(), plot_count(2));
        assert!(html.contains("uniform &amp; co") && html.contains("by&lt;label&gt;"));
        assert!(!html.contains("<script") && !html.contains("href="));
        let run = load_run(&a).unwrap();
        assert_eq!(run.global.len(), 4);
        assert_eq!(run.final_client_acc, vec![0.5, 0.75, 0.95]);
        assert_eq!(
            run.group_rates[0].1,
            vec![(0.05 + 1.0) / 2.0, (0.5 + 2.0) / 2.0]
        );
        assert!(check_well_formed("<a><b></a></b>").is_err());
    }

    /// A run with FedEx-like learned scalars gets the learned-rates panel: θ on a unit
    /// axis, the baseline, representative clients, quantiles and group multipliers.
    #[test]
    fn learned_runs_get_the_learned_rates_panel() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("fedex");
        fake_run(&d, 0.05, true);
        let plain = load_run(&d).unwrap();
        assert!(!is_learned(&plain), "no learned values, no panel");
        let m = std::fs::read_to_string(d.join("metrics.jsonl")).unwrap();
        let with: String = m
            .lines()
            .enumerate()
            .map(|(i, l)| {
                let p = 0.5 + 0.1 * i as f64;
                format!(
                    "{},\"learned\":{{\"fedex.all.rate=0.01\":{p},\"fedex.all.rate=0.1\":{},\"fedex.all.baseline\":1.5}}}}\n",
                    l.trim_end_matches('}'),
                    1.0 - p
                )
            })
            .collect();
        std::fs::write(d.join("metrics.jsonl"), with).unwrap();
        let run = load_run(&d).unwrap();
        assert!(is_learned(&run));
        assert_eq!(run.learned["fedex.all.rate=0.01"][2], (3.0, 0.7));
        let fams = learned_families(&run.learned);
        assert_eq!(fams.len(), 2);
        assert_eq!((fams[0].0.as_str(), fams[0].1), ("fedex", false));
        assert_eq!((fams[1].0.as_str(), fams[1].1), ("fedex.all.rate", true));
        assert_eq!(fams[1].2[0].0, "0.01");
        // client 0: group rates [lr, 10 lr] → multipliers [1, 10].
        assert_eq!(run.multipliers[0], (1, 0, vec![1.0, 10.0]));
        let page = render(&[run]);
        check_well_formed(&page).unwrap();
        for title in [
            "Learned rates",
            "Learned distribution fedex.all.rate (probability of each candidate)",
            "Learned values: fedex",
            "Base rate of the most often sampled clients",
            "Base rate over the round&#39;s clients (quantiles)",
            "Per-group multiplier over the round&#39;s clients",
        ] {
            let title = title.replace("&#39;", "'");
            assert!(page.contains(&title), "{title}");
        }
        assert_eq!(page.matches("<svg ").count(), plot_count(1) + 5);
    }

    /// Hand derivation: personalised mean of `uniform` 0.5, 0.6, 0.7 → 60 %, sample
    /// variance 100, SE √(100/3) = 5.77; `p` − `uniform` = +1, +2, 0 points → mean +1,
    /// variance ((0)² + 1² + (−1)²)/2 = 1, SE √(1/3) = 0.58, 2 better, 0 worse, 1 tied.
    #[test]
    fn seeds_table_gives_means_and_paired_differences() {
        let csv = "seed,run,global_accuracy,personal_mean_accuracy,personal_worst10_accuracy\n\
                   0,uniform,0.8,0.5,0.1\n0,p,0.8,0.51,0.1\n\
                   1,uniform,0.8,0.6,0.1\n1,p,0.8,0.62,0.1\n\
                   2,uniform,0.8,0.7,0.1\n2,p,0.8,0.70,0.1\n";
        let t = seeds_table(csv).unwrap();
        assert!(t.contains("60.00 ± 5.77 %"), "{t}");
        assert!(t.contains("p − uniform (paired)"), "{t}");
        assert!(t.contains("+1.00 ± 0.58 points (2/0/1)"), "{t}");
        assert!(seeds_table("a,b\n1,2\n").is_none());
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("quickstart-x");
        fake_run(&root.join("uniform"), 0.05, true);
        std::fs::write(root.join("seeds.csv"), csv).unwrap();
        let out = write_report(std::slice::from_ref(&root), None, false).unwrap();
        let page = std::fs::read_to_string(out).unwrap();
        check_well_formed(&page).unwrap();
        assert!(page.contains("Every seed of") && page.contains("+1.00 ± 0.58 points"));
    }

    /// A run whose messages were counted gets a Communication table (its totals by part)
    /// and one plot of the bytes per round; one without does not.
    #[test]
    fn counted_traffic_gets_a_communication_table_and_plot() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("net"), tmp.path().join("sim"));
        fake_run(&a, 0.05, false);
        fake_run(&b, 0.05, true);
        let mut m = String::new();
        for r in 1..=3u64 {
            m += &format!(
                r#"{{"round":{r},"clients":[],"traffic":{{"sent":{},"received":{}}}}}"#,
                1_000_000 * r,
                500_000 * r
            );
            m.push('\n');
        }
        std::fs::write(a.join("metrics.jsonl"), m).unwrap();
        std::fs::write(
            a.join("summary.json"),
            r#"{"global":{"accuracy":0.4},"personalized":{"mean_accuracy":0.6,"worst10_accuracy":0.5},
               "traffic":{"rounds":3,"sent":6000000,"received":3000000,"sent_per_round":2000000.0,
               "received_per_round":1000000.0,"model":5900000,"plan":30000,"instruction_payloads":0,
               "update":2900000,"reply_payloads":1500}}"#,
        )
        .unwrap();
        let run = load_run(&a).unwrap();
        assert_eq!(
            run.traffic,
            vec![(1.0, 1e6, 5e5), (2.0, 2e6, 1e6), (3.0, 3e6, 1.5e6)]
        );
        let out = tmp.path().join("report.html");
        write_report(&[a, b], Some(&out), false).unwrap();
        let html = std::fs::read_to_string(&out).unwrap();
        check_well_formed(&html).unwrap();
        assert_eq!(html.matches("<svg ").count(), plot_count(2) + 1);
        assert!(html.contains("<h2>Communication</h2>"));
        // 6 MB sent, 2 MB a round, 5.9 MB of it the model, 30 kB of plans.
        for cell in [
            "<td>6.000</td>",
            "<td>2.000</td>",
            "<td>5.900</td>",
            "<td>30.000</td>",
        ] {
            assert!(html.contains(cell), "{cell}");
        }
    }

    #[test]
    fn missing_run_directory_is_a_clear_error() {
        let e = write_report(
            &[PathBuf::from("/nonexistent/run")],
            Some(Path::new("/tmp/x.html")),
            false,
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("not a run directory"), "{e:#}");
    }

    /// Regression (newcomer review #2): labels were cut to 21 characters, so the two
    /// runs of one config (`quickstart-<ts>/uniform`, twice) read the same.
    #[test]
    fn labels_are_the_shortest_suffixes_that_tell_runs_apart() {
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(
            distinct_labels(&[
                p("runs/quickstart-20261204-193017/uniform"),
                p("runs/quickstart-20261204-193512/uniform"),
                p("runs/quickstart-20261204-193512/by-data-size"),
            ]),
            [
                "quickstart-20261204-193017/uniform",
                "quickstart-20261204-193512/uniform",
                "by-data-size"
            ]
        );
        assert_eq!(distinct_labels(&[p("./a/"), p("/x/b")]), ["a", "b"]);
        assert_eq!(distinct_labels(&[p("a/r"), p("r")]), ["a/r", "r"]);
        assert_eq!(distinct_labels(&[p("r"), p("r")]), ["r", "r (2)"]);
        let long = "x".repeat(200);
        assert!(wrap(&long)
            .iter()
            .all(|l| l.chars().count() <= LEGEND_CHARS));
        assert_eq!(wrap(&long).concat(), long, "wrapping loses nothing");
    }

    /// Regression (newcomer review #16): ticks like `32.500` on a round axis.
    #[test]
    fn axes_have_nice_ticks_and_rounds_are_whole() {
        let rounds = Axis::new(1.0, 40.0, 8, true, None);
        assert_eq!(
            rounds.ticks,
            [0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0]
        );
        assert_eq!(rounds.label(35.0), "35");
        let few = Axis::new(1.0, 3.0, 8, true, None);
        assert_eq!(few.ticks, [1.0, 2.0, 3.0]);
        let acc = Axis::new(0.286, 0.917, 6, false, Some((0.0, 1.0)));
        assert_eq!((acc.lo, acc.hi), (0.2, 1.0));
        assert_eq!(acc.label(0.4), "0.4");
        let fine = Axis::new(0.9, 0.975, 6, false, Some((0.0, 1.0)));
        assert!(fine
            .ticks
            .iter()
            .all(|t| ((t * 100.0).round() - t * 100.0).abs() < 1e-9));
        assert_eq!(fine.label(0.95), "0.950".trim_end_matches('0'));
        let flat = Axis::new(0.05, 0.05, 6, false, None);
        assert!(flat.lo < 0.05 && flat.hi > 0.05);
    }

    /// Regression (newcomer review #16): 0.1-wide bins put all 100 MNIST clients in one.
    #[test]
    fn histogram_bins_follow_the_data() {
        // 100 clients between 0.90 and 1.00, as on MNIST.
        let acc: Vec<f64> = (0..100)
            .map(|i| 0.9 + 0.1 * (i as f64 / 99.0).powi(2))
            .collect();
        let edges = bin_edges(&acc);
        assert!(edges.len() > 5, "{edges:?}");
        assert!(edges[0] <= 0.9 && *edges.last().unwrap() >= 1.0);
        assert!(edges[1] - edges[0] <= 0.02 + 1e-9, "{edges:?}");
        let svg = histogram("h", &[("a".into(), acc.clone()), ("b".into(), acc)]);
        // Two runs × several bins, side by side, not stacked on one another.
        assert!(svg.matches("fill-opacity=\"0.75\"/>").count() >= 2 * 5);
    }

    #[test]
    fn a_cut_off_last_line_is_skipped_with_a_warning() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("torn");
        fake_run(&d, 0.05, false);
        let mut m = std::fs::read_to_string(d.join("metrics.jsonl")).unwrap();
        m.push_str(r#"{"round":5,"groups":["body","he"#);
        std::fs::write(d.join("metrics.jsonl"), &m).unwrap();
        let run = load_run(&d).unwrap();
        assert_eq!(run.rounds_recorded, 4);
        assert_eq!(run.status, Status::Incomplete);
        assert!(run
            .warnings
            .iter()
            .any(|w| w.contains(":5: last line is cut off")));
        let page = render(&[run]);
        assert!(page.contains("incomplete: no summary.json (4 rounds recorded)"));
        // A broken line before the last is still an error.
        m.push_str("\n{\"round\":6}\n");
        std::fs::write(d.join("metrics.jsonl"), &m).unwrap();
        let e = load_run(&d).unwrap_err();
        assert!(format!("{e:#}").contains(":5: not JSON"), "{e:#}");
    }

    /// Regression (newcomer review #7): the directory the quickstart prints holds runs.
    #[test]
    fn a_directory_of_runs_stands_for_its_runs() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("quickstart-20261204-193017");
        fake_run(&root.join("uniform"), 0.05, true);
        fake_run(&root.join("by-data-size"), 0.1, true);
        std::fs::create_dir_all(root.join("not-a-run")).unwrap();
        assert_eq!(
            expand_runs(std::slice::from_ref(&root)).unwrap(),
            [root.join("by-data-size"), root.join("uniform")]
        );
        let out = write_report(std::slice::from_ref(&root), None, false).unwrap();
        assert_eq!(out, root.join("report.html"));
        let e = expand_runs(&[root.join("not-a-run")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a run directory"), "{e}");
    }

    /// Regression (reliability review D13): `report --out` replaced any file.
    #[test]
    fn report_replaces_only_a_report_unless_forced() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("run");
        fake_run(&run, 0.05, true);
        let data = run.join("metrics.jsonl");
        let before = std::fs::read(&data).unwrap();
        let e = write_report(std::slice::from_ref(&run), Some(&data), false).unwrap_err();
        assert!(
            e.to_string().contains("not a fedpace report") && e.to_string().contains("--force")
        );
        assert_eq!(std::fs::read(&data).unwrap(), before);
        let page = tmp.path().join("page.html");
        write_report(std::slice::from_ref(&run), Some(&page), false).unwrap();
        write_report(std::slice::from_ref(&run), Some(&page), false).unwrap();
        std::fs::write(&page, "<html>someone's page</html>").unwrap();
        assert!(write_report(std::slice::from_ref(&run), Some(&page), false).is_err());
        write_report(std::slice::from_ref(&run), Some(&page), true).unwrap();
    }
}
