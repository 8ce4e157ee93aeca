//! The search space: which dotted config keys a search sets, over which values
//! (docs/tuning.md, "Declaring a space").
//!
//! A space is read from a TOML table whose leaves are one-key tables naming the domain:
//! `client.lr = { log = [0.001, 1.0], grid = 5 }`, `client.epochs = { int = [1, 5] }`,
//! `strategy.normalize = { choice = ["off", "auto"] }`. The keys are opaque to this crate:
//! the runner applies them as `--set key=value` overrides.

use crate::Error;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One value a parameter takes: what a `--set key=value` override carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
}

impl Value {
    /// The value as a TOML literal (strings quoted), for a `key=value` override.
    pub fn literal(&self) -> String {
        match self {
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            // `{:?}` keeps a decimal point or an exponent, so TOML reads a float back.
            Value::Float(f) => format!("{f:?}"),
            Value::Str(s) => toml::Value::String(s.clone()).to_string(),
        }
    }

    /// The value as a number, when it is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    fn from_toml(v: &toml::Value) -> Option<Self> {
        match v {
            toml::Value::Boolean(b) => Some(Value::Bool(*b)),
            toml::Value::Integer(i) => Some(Value::Int(*i)),
            toml::Value::Float(f) if f.is_finite() => Some(Value::Float(*f)),
            toml::Value::String(s) => Some(Value::Str(s.clone())),
            _ => None,
        }
    }
}

impl std::fmt::Display for Value {
    /// Short form for tables: floats with 4 significant digits, strings unquoted.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Float(x) => f.write_str(&short_float(*x)),
            Value::Str(s) => f.write_str(s),
            other => f.write_str(&other.literal()),
        }
    }
}

/// `x` with 4 significant digits, in plain or scientific notation, whichever is shorter.
pub fn short_float(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let e = x.abs().log10().floor() as i32;
    if (-3..5).contains(&e) {
        let decimals = (3 - e).max(0) as usize;
        let s = format!("{x:.decimals$}");
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    } else {
        let s = format!("{x:.3e}");
        let (m, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let m = if m.contains('.') {
            m.trim_end_matches('0').trim_end_matches('.')
        } else {
            m
        };
        format!("{m}e{exp}")
    }
}

/// One configuration of the searched keys, in key order.
pub type Point = BTreeMap<String, Value>;

/// The `key=value` overrides of a point.
pub fn overrides(point: &Point) -> Vec<String> {
    point
        .iter()
        .map(|(k, v)| format!("{k}={}", v.literal()))
        .collect()
}

/// A point in one line, e.g. `client.lr=0.01 policy.gamma=-0.5`.
pub fn describe(point: &Point) -> String {
    point
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The values one parameter ranges over.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Domain {
    /// Log-uniform on `[low, high]`, `low > 0`; `grid` points spaced evenly in log.
    Log {
        /// Lower end.
        low: f64,
        /// Upper end.
        high: f64,
        /// Points for grid search.
        grid: Option<usize>,
    },
    /// Uniform on `[low, high]`; `grid` points spaced evenly.
    Linear {
        /// Lower end.
        low: f64,
        /// Upper end.
        high: f64,
        /// Points for grid search.
        grid: Option<usize>,
    },
    /// Integers `low..=high`, uniformly; grid search takes every one (or `grid` of them).
    Int {
        /// Lower end.
        low: i64,
        /// Upper end (inclusive).
        high: i64,
        /// Points for grid search (default every integer).
        grid: Option<usize>,
    },
    /// One of a list (unordered: one-hot for the surrogate).
    Choice(Vec<Value>),
}

/// One searched key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Param {
    /// Dotted config key, e.g. `client.lr`.
    pub key: String,
    /// Its domain.
    pub domain: Domain,
}

/// The most points a grid may have.
pub const MAX_GRID: usize = 100_000;

impl Param {
    /// Grid values of this parameter.
    fn grid(&self) -> Result<Vec<Value>, Error> {
        let need = |kind: &str| {
            Error::Config(format!(
                "space.{}: a {kind} range needs `grid = N` (N ≥ 2 points) for grid search",
                self.key
            ))
        };
        Ok(match &self.domain {
            Domain::Log { low, high, grid } => {
                let n = grid.ok_or_else(|| need("log"))?;
                let (a, b) = (low.ln(), high.ln());
                (0..n)
                    .map(|i| Value::Float(snap((a + (b - a) * i as f64 / (n - 1) as f64).exp())))
                    .collect()
            }
            Domain::Linear { low, high, grid } => {
                let n = grid.ok_or_else(|| need("linear"))?;
                (0..n)
                    .map(|i| Value::Float(snap(low + (high - low) * i as f64 / (n - 1) as f64)))
                    .collect()
            }
            Domain::Int { low, high, grid } => match grid {
                None => (*low..=*high).map(Value::Int).collect(),
                Some(n) => {
                    let mut v: Vec<i64> = (0..*n)
                        .map(|i| {
                            (*low as f64 + (*high - *low) as f64 * i as f64 / (*n - 1) as f64)
                                .round() as i64
                        })
                        .collect();
                    v.dedup();
                    v.into_iter().map(Value::Int).collect()
                }
            },
            Domain::Choice(v) => v.clone(),
        })
    }

    fn sample(&self, rng: &mut impl Rng) -> Value {
        match &self.domain {
            Domain::Log { low, high, .. } => {
                Value::Float((low.ln() + (high.ln() - low.ln()) * rng.gen::<f64>()).exp())
            }
            Domain::Linear { low, high, .. } => Value::Float(low + (high - low) * rng.gen::<f64>()),
            Domain::Int { low, high, .. } => Value::Int(rng.gen_range(*low..=*high)),
            Domain::Choice(v) => v[rng.gen_range(0..v.len())].clone(),
        }
    }

    /// Width of this parameter in the encoded unit cube.
    fn dims(&self) -> usize {
        match &self.domain {
            Domain::Choice(v) => v.len(),
            _ => 1,
        }
    }
}

/// Rounds grid values to 12 significant digits, so that `0.1·3` prints as `0.3`.
fn snap(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let e = 11 - x.abs().log10().floor() as i32;
    let p = 10f64.powi(e);
    (x * p).round() / p
}

/// A search space: parameters in key order.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Space {
    /// The parameters, sorted by key.
    pub params: Vec<Param>,
}

impl Space {
    /// Reads a space from a TOML table; `origin` names it in errors (e.g. `tune.toml: space`).
    pub fn from_table(table: &toml::Table, origin: &str) -> Result<Self, Error> {
        let mut params = Vec::new();
        collect(table, "", origin, &mut params)?;
        if params.is_empty() {
            return Err(Error::Config(format!(
                "{origin}: empty; expected at least one parameter, e.g. client.lr = {{ log = [0.001, 1.0] }}"
            )));
        }
        params.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Self { params })
    }

    /// Parameter by key.
    pub fn get(&self, key: &str) -> Option<&Param> {
        self.params.iter().find(|p| p.key == key)
    }

    /// Every grid point (the Cartesian product), in key-major order.
    pub fn grid(&self) -> Result<Vec<Point>, Error> {
        let axes: Vec<Vec<Value>> = self
            .params
            .iter()
            .map(Param::grid)
            .collect::<Result<_, _>>()?;
        let total = axes
            .iter()
            .try_fold(1usize, |a, v| a.checked_mul(v.len()))
            .unwrap_or(usize::MAX);
        if total > MAX_GRID {
            return Err(Error::Config(format!(
                "space: the grid has {total} points; expected at most {MAX_GRID} (use fewer grid points, or random search)"
            )));
        }
        let mut points = vec![Point::new()];
        for (p, axis) in self.params.iter().zip(&axes) {
            points = points
                .into_iter()
                .flat_map(|pt| {
                    axis.iter().map(move |v| {
                        let mut q = pt.clone();
                        q.insert(p.key.clone(), v.clone());
                        q
                    })
                })
                .collect();
        }
        Ok(points)
    }

    /// A point drawn from the prior (log-uniform, uniform, uniform integer, uniform choice).
    pub fn sample(&self, rng: &mut impl Rng) -> Point {
        self.params
            .iter()
            .map(|p| (p.key.clone(), p.sample(rng)))
            .collect()
    }

    /// Dimension of the encoded unit cube (categorical parameters one-hot).
    pub fn dims(&self) -> usize {
        self.params.iter().map(Param::dims).sum()
    }

    /// A point in the unit cube: log ranges in log scale, integers as continuous,
    /// choices one-hot.
    pub fn encode(&self, point: &Point) -> Vec<f64> {
        let mut x = Vec::with_capacity(self.dims());
        for p in &self.params {
            let v = point.get(&p.key);
            let num = v.and_then(Value::as_f64).unwrap_or(f64::NAN);
            match &p.domain {
                Domain::Log { low, high, .. } => {
                    x.push(unit(num.ln(), low.ln(), high.ln()));
                }
                Domain::Linear { low, high, .. } => x.push(unit(num, *low, *high)),
                Domain::Int { low, high, .. } => x.push(unit(num, *low as f64, *high as f64)),
                Domain::Choice(vals) => {
                    for c in vals {
                        x.push(if Some(c) == v { 1.0 } else { 0.0 });
                    }
                }
            }
        }
        x
    }

    /// The point of a unit-cube vector: clamped, integers rounded, the largest one-hot
    /// entry chosen.
    pub fn decode(&self, x: &[f64]) -> Point {
        let mut i = 0;
        let mut point = Point::new();
        for p in &self.params {
            let v = match &p.domain {
                Domain::Log { low, high, .. } => {
                    let u = x[i].clamp(0.0, 1.0);
                    Value::Float(
                        (low.ln() + (high.ln() - low.ln()) * u)
                            .exp()
                            .clamp(*low, *high),
                    )
                }
                Domain::Linear { low, high, .. } => {
                    Value::Float((low + (high - low) * x[i].clamp(0.0, 1.0)).clamp(*low, *high))
                }
                Domain::Int { low, high, .. } => {
                    let f = *low as f64 + (*high - *low) as f64 * x[i].clamp(0.0, 1.0);
                    Value::Int((f.round() as i64).clamp(*low, *high))
                }
                Domain::Choice(vals) => {
                    let slice = &x[i..i + vals.len()];
                    let mut best = 0;
                    for (j, s) in slice.iter().enumerate() {
                        if *s > slice[best] {
                            best = j;
                        }
                    }
                    vals[best].clone()
                }
            };
            i += p.dims();
            point.insert(p.key.clone(), v);
        }
        point
    }

    /// PBT's explore step: each parameter is, with probability `resample`, drawn anew
    /// from the prior; otherwise a log range is multiplied by `1 ± perturb`, a linear
    /// range moved by `± perturb·(high − low)`, an integer moved by ±1 (each sign with
    /// probability ½), a choice kept. Results stay inside the ranges.
    pub fn perturb(&self, point: &Point, perturb: f64, resample: f64, rng: &mut impl Rng) -> Point {
        let mut out = Point::new();
        for p in &self.params {
            let old = point.get(&p.key).cloned().unwrap_or_else(|| p.sample(rng));
            let up = rng.gen::<bool>();
            let new = if rng.gen::<f64>() < resample {
                p.sample(rng)
            } else {
                let x = old.as_f64().unwrap_or(f64::NAN);
                match &p.domain {
                    Domain::Log { low, high, .. } => {
                        let f = if up { 1.0 + perturb } else { 1.0 - perturb };
                        Value::Float((x * f).clamp(*low, *high))
                    }
                    Domain::Linear { low, high, .. } => {
                        let d = perturb * (high - low);
                        Value::Float((if up { x + d } else { x - d }).clamp(*low, *high))
                    }
                    Domain::Int { low, high, .. } => {
                        let i = x as i64 + if up { 1 } else { -1 };
                        Value::Int(i.clamp(*low, *high))
                    }
                    Domain::Choice(_) => old,
                }
            };
            out.insert(p.key.clone(), new);
        }
        out
    }
}

fn unit(x: f64, lo: f64, hi: f64) -> f64 {
    if hi > lo {
        ((x - lo) / (hi - lo)).clamp(0.0, 1.0)
    } else {
        0.5
    }
}

const KINDS: [&str; 4] = ["log", "linear", "int", "choice"];

fn collect(
    table: &toml::Table,
    prefix: &str,
    origin: &str,
    out: &mut Vec<Param>,
) -> Result<(), Error> {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        let Some(t) = v.as_table() else {
            return Err(Error::Config(format!(
                "{origin}.{key} = {v}: expected a domain table such as {{ log = [0.001, 1.0] }}, \
                 {{ linear = [-1.0, 1.0] }}, {{ int = [1, 5] }} or {{ choice = [\"off\", \"auto\"] }}"
            )));
        };
        if t.keys().any(|k| KINDS.contains(&k.as_str())) {
            out.push(Param {
                domain: domain(t, &format!("{origin}.{key}"))?,
                key,
            });
        } else {
            collect(t, &key, origin, out)?;
        }
    }
    Ok(())
}

fn domain(t: &toml::Table, at: &str) -> Result<Domain, Error> {
    let err = |m: String| Err(Error::Config(format!("{at}: {m}")));
    let kinds: Vec<&str> = t
        .keys()
        .map(String::as_str)
        .filter(|k| KINDS.contains(k))
        .collect();
    if kinds.len() != 1 {
        return err(format!(
            "has {}; expected exactly one of log, linear, int, choice",
            kinds.join(" and ")
        ));
    }
    for k in t.keys() {
        if !KINDS.contains(&k.as_str()) && k != "grid" {
            return err(format!(
                "unknown key `{k}`; a domain takes one of log, linear, int, choice, and grid"
            ));
        }
    }
    let kind = kinds[0];
    let grid = match t.get("grid") {
        None => None,
        Some(toml::Value::Integer(n)) if *n >= 2 && *n <= MAX_GRID as i64 => Some(*n as usize),
        Some(v) => {
            return err(format!(
                "grid = {v}: expected an integer number of points ≥ 2"
            ))
        }
    };
    let value = &t[kind];
    if kind == "choice" {
        if grid.is_some() {
            return err("grid = ...: a choice is searched over its whole list; remove grid".into());
        }
        let Some(list) = value.as_array().filter(|l| !l.is_empty()) else {
            return err(format!(
                "choice = {value}: expected a non-empty list of values"
            ));
        };
        let mut vals: Vec<Value> = Vec::new();
        for v in list {
            let Some(x) = Value::from_toml(v) else {
                return err(format!("choice: {v}: expected a string, number or boolean"));
            };
            if vals.contains(&x) {
                return err(format!("choice: {v} is listed twice"));
            }
            vals.push(x);
        }
        return Ok(Domain::Choice(vals));
    }
    let pair = value.as_array().filter(|a| a.len() == 2);
    let Some(pair) = pair else {
        return err(format!("{kind} = {value}: expected [low, high]"));
    };
    if kind == "int" {
        let (Some(lo), Some(hi)) = (pair[0].as_integer(), pair[1].as_integer()) else {
            return err(format!("int = {value}: expected two integers [low, high]"));
        };
        if lo >= hi {
            return err(format!("int = {value}: expected low < high"));
        }
        return Ok(Domain::Int {
            low: lo,
            high: hi,
            grid,
        });
    }
    let num = |v: &toml::Value| v.as_float().or_else(|| v.as_integer().map(|i| i as f64));
    let (Some(lo), Some(hi)) = (num(&pair[0]), num(&pair[1])) else {
        return err(format!(
            "{kind} = {value}: expected two numbers [low, high]"
        ));
    };
    if !(lo.is_finite() && hi.is_finite() && lo < hi) {
        return err(format!("{kind} = {value}: expected finite low < high"));
    }
    if kind == "log" {
        if lo <= 0.0 {
            return err(format!(
                "log = {value}: expected 0 < low < high (a log range is positive)"
            ));
        }
        Ok(Domain::Log {
            low: lo,
            high: hi,
            grid,
        })
    } else {
        Ok(Domain::Linear {
            low: lo,
            high: hi,
            grid,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn space(text: &str) -> Result<Space, Error> {
        let t: toml::Table = text.parse().unwrap();
        Space::from_table(&t, "t.toml: space")
    }

    #[test]
    fn nested_and_quoted_keys_are_the_same_parameter() {
        let a = space("client.lr = { log = [0.001, 1.0] }\n").unwrap();
        let b = space("\"client.lr\" = { log = [0.001, 1.0] }\n").unwrap();
        let c = space("[client]\nlr = { log = [0.001, 1.0] }\n").unwrap();
        assert_eq!(a.params[0].key, "client.lr");
        assert_eq!(
            b.params,
            vec![Param {
                key: "client.lr".into(),
                domain: Domain::Log {
                    low: 0.001,
                    high: 1.0,
                    grid: None
                }
            }]
        );
        assert_eq!(a, c);
    }

    #[test]
    fn grid_is_the_product_in_key_order_with_log_spacing() {
        let s = space(
            "client.lr = { log = [0.001, 0.1], grid = 3 }\nstrategy.normalize = { choice = [\"off\", \"auto\"] }\nclient.epochs = { int = [1, 2] }\n",
        )
        .unwrap();
        let g = s.grid().unwrap();
        assert_eq!(g.len(), 12);
        assert_eq!(
            describe(&g[0]),
            "client.epochs=1 client.lr=0.001 strategy.normalize=off"
        );
        assert_eq!(g[2].get("client.lr"), Some(&Value::Float(0.01)));
        assert_eq!(g[3].get("client.lr"), Some(&Value::Float(0.01)));
        assert_eq!(
            describe(&g[11]),
            "client.epochs=2 client.lr=0.1 strategy.normalize=auto"
        );
    }

    #[test]
    fn bad_domains_name_the_key_value_and_expectation() {
        let cases = [
            (
                "client.lr = { log = [0.0, 1.0] }",
                "t.toml: space.client.lr: log = [0.0, 1.0]: expected 0 < low < high",
            ),
            (
                "client.lr = { log = [1.0] }",
                "t.toml: space.client.lr: log = [1.0]: expected [low, high]",
            ),
            (
                "client.lr = 0.1",
                "t.toml: space.client.lr = 0.1: expected a domain table",
            ),
            (
                "x = { int = [1.5, 2] }",
                "t.toml: space.x: int = [1.5, 2]: expected two integers",
            ),
            (
                "x = { choice = [] }",
                "t.toml: space.x: choice = []: expected a non-empty list",
            ),
            (
                "x = { choice = [1, 1] }",
                "t.toml: space.x: choice: 1 is listed twice",
            ),
            (
                "x = { log = [0.1, 1.0], linear = [0, 1] }",
                "t.toml: space.x: has linear and log",
            ),
            (
                "x = { log = [0.1, 1.0], gird = 3 }",
                "t.toml: space.x: unknown key `gird`",
            ),
            (
                "x = { linear = [0, 1], grid = 1 }",
                "t.toml: space.x: grid = 1: expected an integer number of points ≥ 2",
            ),
        ];
        for (text, want) in cases {
            let e = space(text).unwrap_err().to_string();
            assert!(e.starts_with(want), "{text}: {e}");
            assert!(!e.contains('\n'));
        }
        assert!(space("").unwrap_err().to_string().contains("empty"));
        let e = space("x = { linear = [0, 1] }")
            .unwrap()
            .grid()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("space.x: a linear range needs `grid = N`"),
            "{e}"
        );
    }

    #[test]
    fn encode_decode_round_trips_and_samples_stay_in_range() {
        let s = space(
            "a = { log = [0.001, 10.0] }\nb = { linear = [-1, 1] }\nc = { int = [1, 5] }\nd = { choice = [\"x\", \"y\", \"z\"] }\n",
        )
        .unwrap();
        assert_eq!(s.dims(), 6);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for _ in 0..200 {
            let p = s.sample(&mut rng);
            let x = s.encode(&p);
            assert!(x.iter().all(|u| (0.0..=1.0).contains(u)));
            let q = s.decode(&x);
            for (k, v) in &p {
                match (v, &q[k]) {
                    (Value::Float(a), Value::Float(b)) => {
                        assert!((a - b).abs() <= 1e-9 * a.abs().max(1.0))
                    }
                    (a, b) => assert_eq!(a, b),
                }
            }
            let r = s.perturb(&p, 0.2, 0.25, &mut rng);
            let a = r["a"].as_f64().unwrap();
            assert!((0.001..=10.0).contains(&a));
            let c = r["c"].as_f64().unwrap();
            assert!((1.0..=5.0).contains(&c));
        }
    }

    #[test]
    fn literals_parse_back_as_toml() {
        for v in [
            Value::Float(1e-5),
            Value::Float(2.0),
            Value::Int(3),
            Value::Bool(true),
            Value::Str("a \"b\"".into()),
        ] {
            let t: toml::Table = format!("v = {}", v.literal()).parse().unwrap();
            assert_eq!(Value::from_toml(&t["v"]).unwrap(), v);
        }
        assert_eq!(short_float(0.012345678), "0.01235");
        assert_eq!(short_float(3e-6), "3e-6");
        assert_eq!(short_float(250.0), "250");
    }
}
