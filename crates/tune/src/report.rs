//! Tables and files of a search: the console table, `evaluations.csv`, `trials.csv`,
//! `results.md`, `summary.json` and `plot.svg` (docs/tuning.md, "Outputs").

use crate::files::write;
use crate::search::SearchReport;
use crate::space::{describe, short_float, Domain};
use crate::svg::{render, Chart, Panel, Series};
use crate::trial::{MetricInfo, MetricSource};
use crate::Error;
use std::collections::BTreeSet;
use std::fmt::Write;
use std::path::Path;

/// A CSV field, quoted when needed.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// A number for CSV: full precision, empty when missing or not finite.
pub fn csv_num(v: Option<f64>) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x}"),
        _ => String::new(),
    }
}

/// The warning every table carries when the objective is not on validation data.
pub fn stand_in_warning(objective: &str, info: &MetricInfo) -> Option<String> {
    match &info.source {
        MetricSource::Validation => None,
        MetricSource::StandIn { actual } => Some(format!(
            "WARNING: {objective} is not a validation metric yet: it is {actual}. Selection on it is selection on test data; the numbers chosen with it are optimistic."
        )),
        MetricSource::Test => Some(format!("WARNING: {objective} is a test metric: selection on it is selection on test data.")),
    }
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or("failed".to_string(), |x| format!("{x:.4}"))
}

impl SearchReport {
    /// Full-length evaluations, best first (failed last).
    fn ranked(&self) -> Vec<usize> {
        let mut idx: Vec<usize> = self
            .evaluations
            .iter()
            .filter(|e| e.last)
            .map(|e| e.index)
            .collect();
        let sign = if self.objective_info.maximize {
            1.0
        } else {
            -1.0
        };
        idx.sort_by(|&a, &b| {
            let (x, y) = (self.evaluations[a].objective, self.evaluations[b].objective);
            match (x, y) {
                (Some(x), Some(y)) => (sign * y).total_cmp(&(sign * x)).then(a.cmp(&b)),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => a.cmp(&b),
            }
        });
        idx
    }

    /// The console table: header, warnings, the best `top` full-length configurations.
    pub fn table(&self, top: usize) -> String {
        let mut s = String::new();
        let dir = if self.objective_info.maximize {
            "maximise"
        } else {
            "minimise"
        };
        let _ = writeln!(
            s,
            "method {} · objective {} ({dir}) · seeds {:?}",
            self.method, self.objective, self.seeds
        );
        if let Some(w) = stand_in_warning(&self.objective, &self.objective_info) {
            let _ = writeln!(s, "{w}");
        }
        let _ = writeln!(s, "plan: {}", self.plan);
        let _ = writeln!(
            s,
            "budget {} client-epochs · spent {} (nominal {}, planned {}) · {}{}",
            short_float(self.budget),
            short_float(self.spent),
            short_float(self.nominal_spent),
            short_float(self.planned),
            self.stop,
            if self.continued || !self.evaluations.iter().any(|e| e.from.is_some()) {
                ""
            } else {
                " · promotions re-ran from round 0 (no resume), charged in full"
            }
        );
        let failed = self
            .evaluations
            .iter()
            .filter(|e| e.objective.is_none())
            .count();
        let full = self.evaluations.iter().filter(|e| e.last).count();
        let _ = writeln!(
            s,
            "{} evaluations ({full} full length, {failed} failed), {} training runs",
            self.evaluations.len(),
            self.jobs.len()
        );
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{:>4}  {:>18}  {:>6}  {:>10}  configuration",
            "rank", "objective ± se", "rounds", "cost"
        );
        for (rank, &i) in self.ranked().iter().take(top).enumerate() {
            let e = &self.evaluations[i];
            let obj = match (e.objective, e.objective_se) {
                (Some(v), Some(se)) => format!("{v:.4} ± {se:.4}"),
                (v, _) => fmt_opt(v),
            };
            let _ = writeln!(
                s,
                "{:>4}  {:>18}  {:>6}  {:>10}  {}",
                rank + 1,
                obj,
                e.rounds,
                short_float(e.cost),
                describe(&e.point)
            );
        }
        match self.best {
            Some(b) => {
                let e = &self.evaluations[b];
                let _ = writeln!(
                    s,
                    "\nchosen: {} ({} {})",
                    describe(&e.point),
                    self.objective,
                    fmt_opt(e.objective)
                );
                if self.method == "pbt" {
                    if let Some(steps) = self.schedules.get(&e.lineage) {
                        let _ = writeln!(s, "its schedule: {}", schedule_line(steps));
                    }
                }
            }
            None => {
                let _ = writeln!(
                    s,
                    "\nchosen: nothing (no full-length configuration finished)"
                );
            }
        }
        s
    }

    /// Writes `evaluations.csv`, `trials.csv`, `results.md`, `summary.json`, `plot.svg`.
    pub fn write(&self, dir: &Path, title: &str) -> Result<(), Error> {
        let keys: Vec<String> = self.space.params.iter().map(|p| p.key.clone()).collect();
        // evaluations.csv
        let mut e = String::new();
        let seed_cols: Vec<String> = self
            .seeds
            .iter()
            .map(|s| format!("objective_seed_{s}"))
            .collect();
        let _ = writeln!(
            e,
            "index,batch,lineage,from,label,rounds,last,{},objective,objective_se,{},cost",
            keys.iter()
                .map(|k| csv_field(k))
                .collect::<Vec<_>>()
                .join(","),
            seed_cols.join(",")
        );
        for ev in &self.evaluations {
            let vals: Vec<String> = keys
                .iter()
                .map(|k| {
                    ev.point
                        .get(k)
                        .map_or(String::new(), |v| csv_field(&v.literal()))
                })
                .collect();
            let per: Vec<String> = ev.per_seed.iter().map(|v| csv_num(*v)).collect();
            let _ = writeln!(
                e,
                "{},{},{},{},{},{},{},{},{},{},{},{}",
                ev.index,
                ev.batch,
                ev.lineage,
                ev.from.map_or(String::new(), |f| f.to_string()),
                csv_field(&ev.label),
                ev.rounds,
                ev.last,
                vals.join(","),
                csv_num(ev.objective),
                csv_num(ev.objective_se),
                per.join(","),
                ev.cost
            );
        }
        write(&dir.join("evaluations.csv"), &e)?;
        // trials.csv
        let metric_names: BTreeSet<&String> =
            self.jobs.iter().flat_map(|j| j.metrics.keys()).collect();
        let mut t = String::new();
        let _ = writeln!(
            t,
            "job,evaluation,lineage,seed,from_rounds,rounds,{},nominal_cost,cost,{},error,dir",
            keys.iter()
                .map(|k| csv_field(k))
                .collect::<Vec<_>>()
                .join(","),
            metric_names
                .iter()
                .map(|k| csv_field(k))
                .collect::<Vec<_>>()
                .join(",")
        );
        for j in &self.jobs {
            let vals: Vec<String> = keys
                .iter()
                .map(|k| {
                    j.point
                        .get(k)
                        .map_or(String::new(), |v| csv_field(&v.literal()))
                })
                .collect();
            let ms: Vec<String> = metric_names
                .iter()
                .map(|k| csv_num(j.metrics.get(*k).copied()))
                .collect();
            let _ = writeln!(
                t,
                "{},{},{},{},{},{},{},{},{},{},{},{}",
                j.job,
                j.evaluation,
                j.lineage,
                j.seed,
                j.from_rounds,
                j.rounds,
                vals.join(","),
                j.nominal_cost,
                j.cost,
                ms.join(","),
                csv_field(j.error.as_deref().unwrap_or("")),
                csv_field(&j.dir.display().to_string())
            );
        }
        write(&dir.join("trials.csv"), &t)?;
        // results.md
        let mut md = format!("# {title}\n\n```\n{}```\n", self.table(usize::MAX));
        if self.method == "pbt" {
            md.push_str("\n## Schedules (PBT)\n\n| member | rounds → configuration |\n|---|---|\n");
            for (l, steps) in &self.schedules {
                let _ = writeln!(md, "| {l} | {} |", schedule_line(steps));
            }
        }
        md.push_str("\nFiles: `evaluations.csv` (one row per configuration and rung), `trials.csv` (one row per training run), `summary.json`, `plot.svg`, and each run's directory under `trials/`.\n");
        write(&dir.join("results.md"), &md)?;
        let json = serde_json::to_string_pretty(self).map_err(|e| Error::Invalid(e.to_string()))?;
        write(&dir.join("summary.json"), &json)?;
        write(&dir.join("plot.svg"), &self.plot())?;
        Ok(())
    }

    /// The search's plot: objective against client-epochs spent, against each numeric
    /// parameter, and the learning curves of the best configurations.
    pub fn plot(&self) -> String {
        let mut panels = Vec::new();
        let mut spent = 0.0;
        let mut all = Vec::new();
        let mut best_line = Vec::new();
        let mut best: Option<f64> = None;
        let sign = if self.objective_info.maximize {
            1.0
        } else {
            -1.0
        };
        for e in &self.evaluations {
            spent += e.cost;
            if let Some(v) = e.objective {
                all.push((spent, v));
                if e.last && best.is_none_or(|b| sign * v > sign * b) {
                    best = Some(v);
                }
            }
            if let Some(b) = best {
                best_line.push((spent, b));
            }
        }
        panels.push(Panel::Xy(Chart {
            title: format!("{} by budget spent", self.objective),
            x_label: "client-epochs spent".into(),
            y_label: self.objective.clone(),
            x_log: false,
            series: vec![
                Series {
                    name: "each evaluation".into(),
                    points: all,
                    line: false,
                    markers: true,
                },
                Series {
                    name: "best full-length so far".into(),
                    points: best_line,
                    line: true,
                    markers: false,
                },
            ],
        }));
        for p in &self.space.params {
            let x_log = matches!(p.domain, Domain::Log { .. });
            let at = |last: bool| -> Vec<(f64, f64)> {
                self.evaluations
                    .iter()
                    .filter(|e| e.last == last)
                    .filter_map(|e| {
                        let x = match &p.domain {
                            Domain::Choice(vals) => vals
                                .iter()
                                .position(|v| Some(v) == e.point.get(&p.key))
                                .map(|i| i as f64),
                            _ => e.point.get(&p.key).and_then(|v| v.as_f64()),
                        };
                        Some((x?, e.objective?))
                    })
                    .collect()
            };
            let mut series = vec![Series {
                name: "full length".into(),
                points: at(true),
                line: false,
                markers: true,
            }];
            let early = at(false);
            if !early.is_empty() {
                series.push(Series {
                    name: "lower rungs / earlier generations".into(),
                    points: early,
                    line: false,
                    markers: true,
                });
            }
            let x_label = match &p.domain {
                Domain::Choice(vals) => format!(
                    "{} ({})",
                    p.key,
                    vals.iter()
                        .enumerate()
                        .map(|(i, v)| format!("{i}={v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                _ => p.key.clone(),
            };
            panels.push(Panel::Xy(Chart {
                title: format!("{} by {}", self.objective, p.key),
                x_label,
                y_label: self.objective.clone(),
                x_log,
                series,
            }));
        }
        let mut curves = Vec::new();
        for &i in self.ranked().iter().take(6) {
            let e = &self.evaluations[i];
            // Mean over seeds of the objective at each evaluated round, across continuations.
            let mut by_round: std::collections::BTreeMap<u32, (f64, usize)> = Default::default();
            for job in self
                .jobs
                .iter()
                .filter(|j| self.lineage_jobs(e.index).contains(&j.job))
            {
                for r in &job.curve {
                    if let Some(v) = r.metrics.get(&self.objective) {
                        let entry = by_round.entry(r.round).or_insert((0.0, 0));
                        entry.0 += v;
                        entry.1 += 1;
                    }
                }
            }
            let pts: Vec<(f64, f64)> = by_round
                .into_iter()
                .map(|(r, (s, n))| (r as f64, s / n as f64))
                .collect();
            let mut name = describe(&e.point);
            if name.chars().count() > 28 {
                name = name.chars().take(27).collect::<String>() + "…";
            }
            curves.push(Series {
                name,
                points: pts,
                line: true,
                markers: false,
            });
        }
        panels.push(Panel::Xy(Chart {
            title: "learning curves of the best".into(),
            x_label: "round".into(),
            y_label: self.objective.clone(),
            x_log: false,
            series: curves,
        }));
        render(&panels, 2)
    }

    /// Jobs on the line that ends at evaluation `index`, following continuations back
    /// through the evaluations they continued.
    fn lineage_jobs(&self, index: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut current = Some(index);
        while let Some(i) = current {
            let e = &self.evaluations[i];
            out.extend(e.jobs.iter().copied());
            if !self.continued {
                break; // a re-run from round 0 already holds the whole curve
            }
            current = e.from.and_then(|from| {
                self.evaluations[..i]
                    .iter()
                    .rposition(|p| p.lineage == from)
            });
        }
        out
    }
}

fn schedule_line(steps: &[(u32, crate::space::Point)]) -> String {
    let mut out = Vec::new();
    let mut from = 0;
    for (r, p) in steps {
        out.push(format!("rounds {}–{}: {}", from + 1, r, describe(p)));
        from = *r;
    }
    out.join("; ")
}
