//! A small SVG writer for the search and study plots (docs/tuning.md, "Outputs"):
//! scatter/line panels with linear or log x, and interval ("forest") panels. Plain text,
//! no dependencies, deterministic output.

use std::fmt::Write;

const PALETTE: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// One series of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend name.
    pub name: String,
    /// (x, y) points; non-finite ones are skipped.
    pub points: Vec<(f64, f64)>,
    /// Join the points with a line.
    pub line: bool,
    /// Draw a dot at each point.
    pub markers: bool,
}

/// A panel of series.
#[derive(Debug, Clone)]
pub struct Chart {
    /// Title above the panel.
    pub title: String,
    /// x axis label.
    pub x_label: String,
    /// y axis label.
    pub y_label: String,
    /// Log-scale x.
    pub x_log: bool,
    /// Series.
    pub series: Vec<Series>,
}

/// One row of an interval panel.
#[derive(Debug, Clone)]
pub struct IntervalRow {
    /// Row label.
    pub label: String,
    /// Point estimate.
    pub estimate: f64,
    /// Whisker (low, high).
    pub whisker: (f64, f64),
    /// A second interval drawn as a hollow bar (e.g. a bootstrap interval).
    pub alternative: Option<(f64, f64)>,
}

/// A panel of intervals around a zero line (paired differences).
#[derive(Debug, Clone)]
pub struct IntervalChart {
    /// Title.
    pub title: String,
    /// x axis label.
    pub x_label: String,
    /// Rows, top to bottom.
    pub rows: Vec<IntervalRow>,
}

/// A panel.
#[derive(Debug, Clone)]
pub enum Panel {
    /// Scatter / lines.
    Xy(Chart),
    /// Intervals.
    Intervals(IntervalChart),
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn nice_step(range: f64, target: f64) -> f64 {
    let raw = (range / target).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f < 1.5 {
        1.0
    } else if f < 3.5 {
        2.0
    } else if f < 7.5 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

fn linear_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let step = nice_step(hi - lo, 5.0);
    let first = (lo / step - 1e-9).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    (first..=last).take(20).map(|k| k as f64 * step).collect()
}

fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut out = Vec::new();
    let (a, b) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    for e in a..=b {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powi(e);
            if v >= lo * (1.0 - 1e-9) && v <= hi * (1.0 + 1e-9) {
                out.push(v);
            }
        }
    }
    if out.len() > 8 {
        out.retain(|v| (v.log10() - v.log10().round()).abs() < 1e-9);
    }
    out
}

fn label(v: f64) -> String {
    crate::space::short_float(v)
}

fn padded(lo: f64, hi: f64, log: bool) -> (f64, f64) {
    if log {
        let (a, b) = (lo.ln(), hi.ln());
        let pad = if b > a { (b - a) * 0.05 } else { 0.5 };
        ((a - pad).exp(), (b + pad).exp())
    } else {
        let pad = if hi > lo {
            (hi - lo) * 0.05
        } else {
            lo.abs().max(1.0) * 0.05
        };
        (lo - pad, hi + pad)
    }
}

const W: f64 = 460.0;
const H: f64 = 300.0;
const ML: f64 = 64.0;
const MR: f64 = 16.0;
const MT: f64 = 30.0;
const MB: f64 = 64.0;

fn xy(out: &mut String, c: &Chart, ox: f64, oy: f64) {
    let pts: Vec<(f64, f64)> = c
        .series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .filter(|(x, y)| x.is_finite() && y.is_finite() && (!c.x_log || *x > 0.0))
        .collect();
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" font-size="13" font-weight="bold">{}</text>"#,
        ox + ML,
        oy + 18.0,
        esc(&c.title)
    );
    if pts.is_empty() {
        let _ = writeln!(
            out,
            r##"<text x="{:.1}" y="{:.1}" font-size="12" fill="#666">no data</text>"##,
            ox + W / 2.0 - 20.0,
            oy + H / 2.0
        );
        return;
    }
    let (x0, x1) = pts.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |a, p| {
        (a.0.min(p.0), a.1.max(p.0))
    });
    let (y0, y1) = pts.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |a, p| {
        (a.0.min(p.1), a.1.max(p.1))
    });
    let (x0, x1) = padded(x0, x1, c.x_log);
    let (y0, y1) = padded(y0, y1, false);
    let pw = W - ML - MR;
    let ph = H - MT - MB;
    let sx = |x: f64| {
        let u = if c.x_log {
            (x.ln() - x0.ln()) / (x1.ln() - x0.ln())
        } else {
            (x - x0) / (x1 - x0)
        };
        ox + ML + u * pw
    };
    let sy = |y: f64| oy + MT + ph - (y - y0) / (y1 - y0) * ph;
    let _ = writeln!(
        out,
        r##"<rect x="{:.1}" y="{:.1}" width="{pw:.1}" height="{ph:.1}" fill="none" stroke="#999"/>"##,
        ox + ML,
        oy + MT
    );
    let xt = if c.x_log {
        log_ticks(x0, x1)
    } else {
        linear_ticks(x0, x1)
    };
    for t in xt {
        let x = sx(t);
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#eee"/><text x="{x:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"##,
            oy + MT,
            oy + MT + ph,
            oy + MT + ph + 14.0,
            label(t)
        );
    }
    for t in linear_ticks(y0, y1) {
        let y = sy(t);
        let _ = writeln!(
            out,
            r##"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
            ox + ML,
            ox + ML + pw,
            ox + ML - 4.0,
            y + 4.0,
            label(t)
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">{}</text>"#,
        ox + ML + pw / 2.0,
        oy + MT + ph + 30.0,
        esc(&c.x_label)
    );
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle" transform="rotate(-90 {:.1} {:.1})">{}</text>"#,
        ox + 14.0,
        oy + MT + ph / 2.0,
        ox + 14.0,
        oy + MT + ph / 2.0,
        esc(&c.y_label)
    );
    let mut legend_x = ox + ML;
    for (i, s) in c.series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let ok: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite() && (!c.x_log || *x > 0.0))
            .collect();
        if s.line && ok.len() > 1 {
            let d: Vec<String> = ok
                .iter()
                .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
                .collect();
            let _ = writeln!(
                out,
                r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="1.5"/>"#,
                d.join(" ")
            );
        }
        if s.markers {
            for (x, y) in &ok {
                let _ = writeln!(
                    out,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}" fill-opacity="0.7"/>"#,
                    sx(*x),
                    sy(*y)
                );
            }
        }
        if c.series.len() > 1 {
            let y = oy + H - 12.0;
            let _ = writeln!(
                out,
                r#"<rect x="{legend_x:.1}" y="{:.1}" width="10" height="10" fill="{color}"/><text x="{:.1}" y="{y:.1}" font-size="11">{}</text>"#,
                y - 9.0,
                legend_x + 14.0,
                esc(&s.name)
            );
            legend_x += 24.0 + 6.5 * s.name.chars().count() as f64;
        }
    }
}

fn intervals(out: &mut String, c: &IntervalChart, ox: f64, oy: f64) {
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" font-size="13" font-weight="bold">{}</text>"#,
        ox + 8.0,
        oy + 18.0,
        esc(&c.title)
    );
    let label_w = 150.0;
    let pw = W - label_w - MR;
    let ph = H - MT - MB;
    let mut lo: f64 = 0.0;
    let mut hi: f64 = 0.0;
    for r in &c.rows {
        for v in [r.estimate, r.whisker.0, r.whisker.1] {
            if v.is_finite() {
                lo = lo.min(v);
                hi = hi.max(v);
            }
        }
        if let Some((a, b)) = r.alternative {
            lo = lo.min(a);
            hi = hi.max(b);
        }
    }
    let (lo, hi) = padded(lo, hi, false);
    let sx = |x: f64| ox + label_w + (x - lo) / (hi - lo) * pw;
    let _ = writeln!(
        out,
        r##"<rect x="{:.1}" y="{:.1}" width="{pw:.1}" height="{ph:.1}" fill="none" stroke="#999"/>"##,
        ox + label_w,
        oy + MT
    );
    for t in linear_ticks(lo, hi) {
        let x = sx(t);
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="{}"/><text x="{x:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"##,
            oy + MT,
            oy + MT + ph,
            if t == 0.0 { "#333" } else { "#eee" },
            oy + MT + ph + 14.0,
            label(t)
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">{}</text>"#,
        ox + label_w + pw / 2.0,
        oy + MT + ph + 30.0,
        esc(&c.x_label)
    );
    let n = c.rows.len().max(1) as f64;
    for (i, r) in c.rows.iter().enumerate() {
        let y = oy + MT + ph * (i as f64 + 0.5) / n;
        let color = PALETTE[i % PALETTE.len()];
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"#,
            ox + label_w - 6.0,
            y + 4.0,
            esc(&r.label)
        );
        if let Some((a, b)) = r.alternative {
            let _ = writeln!(
                out,
                r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="10" fill="none" stroke="{color}" stroke-dasharray="3,2"/>"#,
                sx(a),
                y - 5.0,
                (sx(b) - sx(a)).max(1.0)
            );
        }
        if r.whisker.0.is_finite() && r.whisker.1.is_finite() {
            let _ = writeln!(
                out,
                r#"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{color}" stroke-width="2"/>"#,
                sx(r.whisker.0),
                sx(r.whisker.1)
            );
        }
        if r.estimate.is_finite() {
            let _ = writeln!(
                out,
                r#"<circle cx="{:.1}" cy="{y:.1}" r="4" fill="{color}"/>"#,
                sx(r.estimate)
            );
        }
    }
}

/// Renders panels on a grid of `cols` columns as one SVG document.
pub fn render(panels: &[Panel], cols: usize) -> String {
    let cols = cols.max(1).min(panels.len().max(1));
    let rows = panels.len().div_ceil(cols).max(1);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{:.0}" height="{:.0}" font-family="sans-serif">"#,
        W * cols as f64,
        H * rows as f64
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    for (i, p) in panels.iter().enumerate() {
        let (ox, oy) = ((i % cols) as f64 * W, (i / cols) as f64 * H);
        match p {
            Panel::Xy(c) => xy(&mut out, c, ox, oy),
            Panel::Intervals(c) => intervals(&mut out, c, ox, oy),
        }
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_is_well_formed_and_escapes_text() {
        let chart = Chart {
            title: "a < b & c".into(),
            x_label: "client.lr".into(),
            y_label: "val".into(),
            x_log: true,
            series: vec![Series {
                name: "s".into(),
                points: vec![(0.001, 0.5), (0.1, 0.7), (f64::NAN, 1.0)],
                line: true,
                markers: true,
            }],
        };
        let forest = IntervalChart {
            title: "diff".into(),
            x_label: "points".into(),
            rows: vec![IntervalRow {
                label: "v".into(),
                estimate: 0.5,
                whisker: (-0.1, 1.1),
                alternative: Some((-0.3, 1.3)),
            }],
        };
        let s = render(&[Panel::Xy(chart), Panel::Intervals(forest)], 2);
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert!(s.contains("a &lt; b &amp; c"));
        assert_eq!(s.matches("<circle").count(), 3);
        assert!(!s.contains("NaN") && !s.contains("inf"));
        assert_eq!(
            log_ticks(0.001, 0.1),
            vec![0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1]
        );
        let t: Vec<String> = linear_ticks(0.0, 1.0).into_iter().map(label).collect();
        assert_eq!(t, ["0", "0.2", "0.4", "0.6", "0.8", "1"]);
    }
}
