//! `fedpace report RUN_DIR...`: one self-contained HTML page (inline SVG, no scripts, no
//! external files) from run directories: global and personalised accuracy per round for
//! each run, the distribution of final per-client personalised accuracy, and for each
//! run a heat map of assigned rates (client × round) and the mean rate per parameter
//! group per round.
//!
//! The page is well-formed XML (XHTML served as HTML): every element closed, text
//! escaped; `tests` check that and count the SVGs (one per plot).

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

const PALETTE: [&str; 10] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

/// What the report reads from one run directory.
#[derive(Debug, Clone, Default)]
pub struct RunData {
    /// Label (the directory name).
    pub label: String,
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
}

/// Reads `metrics.jsonl`, `clients.csv` and `summary.json` of a run directory.
pub fn load_run(dir: &Path) -> Result<RunData> {
    let metrics = dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&metrics)
        .with_context(|| format!("{}: not a run directory", metrics.display()))?;
    // The last two path components: study layouts name runs `<variant>/<setting>`.
    let parts: Vec<String> = dir
        .components()
        .rev()
        .take(2)
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let label = parts.into_iter().rev().collect::<Vec<_>>().join("/");
    let mut run = RunData {
        label,
        ..Default::default()
    };
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not JSON", metrics.display(), i + 1))?;
        let round = v["round"].as_u64().unwrap_or(i as u64 + 1) as u32;
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
        let mut sums: Vec<f64> = Vec::new();
        let mut n = 0usize;
        for c in v["clients"].as_array().into_iter().flatten() {
            let (Some(id), Some(lr)) = (c["id"].as_u64(), c["lr"].as_f64()) else {
                continue;
            };
            run.rates.push((round, id, lr));
            if let Some(gr) = c["group_rates"].as_array() {
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
    }
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
    if let Ok(s) = std::fs::read_to_string(dir.join("summary.json")) {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&s) {
            run.summary = Some((
                v["global"]["accuracy"].as_f64().unwrap_or(f64::NAN),
                v["personalized"]["mean_accuracy"]
                    .as_f64()
                    .unwrap_or(f64::NAN),
                v["personalized"]["worst10_accuracy"]
                    .as_f64()
                    .unwrap_or(f64::NAN),
            ));
        }
    }
    Ok(run)
}

/// Escapes text for XML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

struct Frame {
    w: f64,
    h: f64,
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
    x: (f64, f64),
    y: (f64, f64),
}

impl Frame {
    fn new(x: (f64, f64), y: (f64, f64)) -> Self {
        let fix = |(a, b): (f64, f64)| {
            if !(a.is_finite() && b.is_finite()) {
                (0.0, 1.0)
            } else if (b - a).abs() < 1e-12 {
                (a - 0.5, b + 0.5)
            } else {
                (a, b)
            }
        };
        Frame {
            w: 560.0,
            h: 300.0,
            left: 60.0,
            right: 150.0,
            top: 30.0,
            bottom: 45.0,
            x: fix(x),
            y: fix(y),
        }
    }
    fn px(&self, x: f64) -> f64 {
        self.left + (x - self.x.0) / (self.x.1 - self.x.0) * (self.w - self.left - self.right)
    }
    fn py(&self, y: f64) -> f64 {
        self.h
            - self.bottom
            - (y - self.y.0) / (self.y.1 - self.y.0) * (self.h - self.top - self.bottom)
    }
    fn open(&self, out: &mut String, title: &str, xlabel: &str, ylabel: &str) {
        let _ = write!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="11"><title>{t}</title><text x="{cx}" y="18" text-anchor="middle" font-size="13">{t}</text>"#,
            w = self.w,
            h = self.h,
            cx = self.w / 2.0,
            t = esc(title)
        );
        let (x0, x1, y0, y1) = (
            self.left,
            self.w - self.right,
            self.top,
            self.h - self.bottom,
        );
        let _ = write!(
            out,
            r##"<rect x="{x0}" y="{y0}" width="{}" height="{}" fill="none" stroke="#444"/>"##,
            x1 - x0,
            y1 - y0
        );
        for i in 0..=4 {
            let fx = self.x.0 + (self.x.1 - self.x.0) * i as f64 / 4.0;
            let fy = self.y.0 + (self.y.1 - self.y.0) * i as f64 / 4.0;
            let _ = write!(
                out,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text><line x1="{x0}" x2="{x1}" y1="{:.1}" y2="{:.1}" stroke="#ddd"/>"##,
                self.px(fx),
                y1 + 14.0,
                tick(fx),
                x0 - 4.0,
                self.py(fy) + 4.0,
                tick(fy),
                self.py(fy),
                self.py(fy)
            );
        }
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text><text x="14" y="{:.1}" text-anchor="middle" transform="rotate(-90 14 {:.1})">{}</text>"#,
            (x0 + x1) / 2.0,
            self.h - 8.0,
            esc(xlabel),
            (y0 + y1) / 2.0,
            (y0 + y1) / 2.0,
            esc(ylabel)
        );
    }
    fn legend(&self, out: &mut String, i: usize, label: &str, color: &str) {
        let x = self.w - self.right + 10.0;
        let y = self.top + 6.0 + 15.0 * i as f64;
        let _ = write!(
            out,
            r#"<rect x="{x}" y="{:.1}" width="10" height="10" fill="{color}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            y - 8.0,
            x + 14.0,
            y + 1.0,
            esc(&shorten(label, 22))
        );
    }
}

fn shorten(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let t: String = s.chars().take(n - 1).collect();
        format!("{t}…")
    }
}

fn tick(v: f64) -> String {
    if v != 0.0 && (v.abs() < 1e-2 || v.abs() >= 1e4) {
        format!("{v:.1e}")
    } else if v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

fn range(v: impl Iterator<Item = f64>) -> (f64, f64) {
    v.filter(|x| x.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
            (a.min(x), b.max(x))
        })
}

/// Line plot of several series.
pub fn line_plot(title: &str, ylabel: &str, series: &[(String, Vec<(f64, f64)>)]) -> String {
    let xr = range(series.iter().flat_map(|s| s.1.iter().map(|p| p.0)));
    let yr = range(series.iter().flat_map(|s| s.1.iter().map(|p| p.1)));
    let f = Frame::new(xr, (yr.0.min(0.0).max(yr.0 - 0.05), yr.1));
    let mut out = String::new();
    f.open(&mut out, title, "round", ylabel);
    for (i, (label, pts)) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let d: Vec<String> = pts
            .iter()
            .filter(|p| p.1.is_finite())
            .map(|(x, y)| format!("{:.1},{:.1}", f.px(*x), f.py(*y)))
            .collect();
        if !d.is_empty() {
            let _ = write!(
                out,
                r#"<polyline fill="none" stroke="{color}" stroke-width="1.8" points="{}"/>"#,
                d.join(" ")
            );
        }
        if pts.len() <= 30 {
            for (x, y) in pts.iter().filter(|p| p.1.is_finite()) {
                let _ = write!(
                    out,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{color}"/>"#,
                    f.px(*x),
                    f.py(*y)
                );
            }
        }
        f.legend(&mut out, i, label, color);
    }
    out.push_str("</svg>");
    out
}

/// Histogram of final per-client accuracy, one outline per run.
pub fn histogram(title: &str, series: &[(String, Vec<f64>)]) -> String {
    const BINS: usize = 10;
    let counts: Vec<Vec<f64>> = series
        .iter()
        .map(|(_, v)| {
            let mut c = [0.0; BINS];
            for a in v.iter().filter(|a| a.is_finite()) {
                c[((a * BINS as f64) as usize).min(BINS - 1)] += 1.0;
            }
            let n = v.len().max(1) as f64;
            c.iter().map(|x| x / n).collect()
        })
        .collect();
    let ymax = counts.iter().flatten().fold(0.0f64, |a, b| a.max(*b));
    let f = Frame::new((0.0, 1.0), (0.0, ymax.max(0.1)));
    let mut out = String::new();
    f.open(
        &mut out,
        title,
        "final personalised accuracy",
        "fraction of clients",
    );
    for (i, ((label, _), c)) in series.iter().zip(&counts).enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let mut pts = vec![format!("{:.1},{:.1}", f.px(0.0), f.py(0.0))];
        for (b, h) in c.iter().enumerate() {
            let (x0, x1) = (b as f64 / BINS as f64, (b + 1) as f64 / BINS as f64);
            pts.push(format!("{:.1},{:.1}", f.px(x0), f.py(*h)));
            pts.push(format!("{:.1},{:.1}", f.px(x1), f.py(*h)));
        }
        pts.push(format!("{:.1},{:.1}", f.px(1.0), f.py(0.0)));
        let _ = write!(
            out,
            r#"<polyline fill="{color}" fill-opacity="0.15" stroke="{color}" stroke-width="1.6" points="{}"/>"#,
            pts.join(" ")
        );
        f.legend(&mut out, i, label, color);
    }
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
    let (w, h, left, top) = (560.0, 300.0, 60.0, 30.0);
    let (pw, ph) = (w - left - 150.0, h - top - 45.0);
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
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="11"><title>{t}</title><text x="{}" y="18" text-anchor="middle" font-size="13">{t}</text>"#,
        w / 2.0,
        t = esc(title)
    );
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
    let _ = write!(
        out,
        r##"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#444"/><text x="{:.1}" y="{:.1}" text-anchor="middle">round (1 … {rounds})</text><text x="14" y="{:.1}" text-anchor="middle" transform="rotate(-90 14 {:.1})">client ({} sampled)</text>"##,
        left + pw / 2.0,
        h - 8.0,
        top + ph / 2.0,
        top + ph / 2.0,
        clients.len()
    );
    // colour bar
    let bx = w - 130.0;
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
    let _ = write!(
        out,
        r#"<text x="{:.1}" y="{:.1}">{}</text><text x="{:.1}" y="{:.1}">{}</text><text x="{:.1}" y="{:.1}">rate (log)</text></svg>"#,
        bx + 18.0,
        top + 10.0,
        tick(hi.exp()),
        bx + 18.0,
        top + ph,
        tick(lo.exp()),
        bx - 2.0,
        top - 6.0
    );
    out
}

/// Builds the page for the runs.
pub fn render(runs: &[RunData]) -> String {
    let mut html = String::from(
        "<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\"><head><meta charset=\"utf-8\"/><title>fedpace report</title><style>body{font-family:sans-serif;max-width:1200px;margin:1em auto;color:#222}figure{display:inline-block;margin:0.5em;vertical-align:top}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}th:first-child,td:first-child{text-align:left}</style></head><body><h1>fedpace report</h1>",
    );
    html.push_str("<table><tr><th>run</th><th>global acc.</th><th>personalised mean</th><th>personalised worst 10 %</th></tr>");
    for r in runs {
        let f = |x: f64| {
            if x.is_finite() {
                format!("{:.2} %", 100.0 * x)
            } else {
                "–".into()
            }
        };
        let (g, p, w) = r.summary.unwrap_or((f64::NAN, f64::NAN, f64::NAN));
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.label),
            f(g),
            f(p),
            f(w)
        );
    }
    html.push_str("</table><h2>Accuracy per round</h2>");
    let fig = |html: &mut String, svg: String| {
        let _ = write!(html, "<figure class=\"plot\">{svg}</figure>");
    };
    fig(
        &mut html,
        line_plot(
            "Global model accuracy",
            "accuracy",
            &runs
                .iter()
                .map(|r| (r.label.clone(), r.global.clone()))
                .collect::<Vec<_>>(),
        ),
    );
    fig(
        &mut html,
        line_plot(
            "Personalised accuracy (mean over clients)",
            "accuracy",
            &runs
                .iter()
                .map(|r| (r.label.clone(), r.personalized.clone()))
                .collect::<Vec<_>>(),
        ),
    );
    html.push_str("<h2>Final per-client personalised accuracy</h2>");
    fig(
        &mut html,
        histogram(
            "Distribution over clients",
            &runs
                .iter()
                .map(|r| (r.label.clone(), r.final_client_acc.clone()))
                .collect::<Vec<_>>(),
        ),
    );
    html.push_str("<h2>Rates</h2>");
    for r in runs {
        let _ = write!(html, "<h3>{}</h3>", esc(&r.label));
        fig(
            &mut html,
            heat_map(&format!("Assigned rate η_k: {}", r.label), &r.rates),
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
            line_plot(
                &format!("Mean rate per layer group: {}", r.label),
                "rate",
                &series,
            ),
        );
    }
    html.push_str("</body></html>\n");
    html
}

/// Number of plots [`render`] draws for `runs` runs.
#[cfg(test)]
pub fn plot_count(runs: usize) -> usize {
    3 + 2 * runs
}

/// Reads the runs and writes the page to `out`.
pub fn write_report(dirs: &[PathBuf], out: Option<&Path>, force: bool) -> Result<PathBuf> {
    if dirs.is_empty() {
        bail!("report: give at least one run directory");
    }
    let _ = force;
    let out = out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("report.html"));
    let runs = dirs
        .iter()
        .map(|d| load_run(d))
        .collect::<Result<Vec<_>>>()?;
    crate::files::write_bytes_atomic(&out, render(&runs).as_bytes())?;
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

    fn fake_run(label: &str, dir: &Path, lr: f64) {
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
        std::fs::write(
            dir.join("summary.json"),
            r#"{"global":{"accuracy":0.4},"personalized":{"mean_accuracy":0.6,"worst10_accuracy":0.5}}"#,
        )
        .unwrap();
        let _ = label;
    }

    #[test]
    fn page_is_well_formed_with_one_svg_per_plot() {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("uniform & co");
        let b = tmp.path().join("by<label>");
        fake_run("a", &a, 0.05);
        fake_run("b", &b, 0.1);
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
}
