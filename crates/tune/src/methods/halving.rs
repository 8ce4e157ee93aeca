//! Successive halving and Hyperband (Li et al., JMLR 2018), synchronous: a rung is one
//! batch, and promotion waits for the whole rung, so the result never depends on which
//! trial finished first.
//!
//! Rungs are in rounds, or in client-epochs per trial (a configuration with more local
//! work then gets fewer rounds at the same rung).
//!
//! Specified in docs/tuning.md, "Methods".

use super::{ranking, Ctx, Method, Outcome, Plan, Request, Resource};
use crate::space::{short_float, Point};
use crate::Error;
use rand_chacha::ChaCha8Rng;

/// The most configurations a bracket sizes itself to.
const MAX_TRIALS: usize = 10_000;

/// One bracket or several.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    /// One successive-halving bracket from the smallest rung.
    Single {
        /// Configurations at the first rung (default: sized to the budget).
        trials: Option<usize>,
    },
    /// Every Hyperband bracket, `iterations` times.
    Hyperband {
        /// Passes (default: as many as the budget allows).
        iterations: Option<usize>,
    },
}

#[derive(Debug, Clone)]
struct Bracket {
    label: String,
    /// Resource of each rung (rounds or client-epochs per trial), increasing.
    rungs: Vec<f64>,
    /// Configurations run at each rung.
    keep: Vec<usize>,
    points: Vec<Point>,
}

/// Successive halving / Hyperband.
pub struct Halving {
    eta: f64,
    resource: Resource,
    shape: Shape,
    rng: ChaCha8Rng,
    brackets: Vec<Bracket>,
    bracket: usize,
    rung: usize,
    /// (lineage, point, rounds done) of the configurations still in the bracket.
    alive: Vec<(usize, Point, u32)>,
    next_lineage: usize,
    /// Rounds each alive configuration is asked to reach in the current rung.
    pending: Vec<u32>,
}

impl Halving {
    /// A halving search with reduction factor `eta` over `resource`.
    pub(crate) fn new(eta: f64, resource: Resource, shape: Shape, rng: ChaCha8Rng) -> Self {
        Self {
            eta,
            resource,
            shape,
            rng,
            brackets: Vec::new(),
            bracket: 0,
            rung: 0,
            alive: Vec::new(),
            next_lineage: 0,
            pending: Vec::new(),
        }
    }

    fn max(&self) -> f64 {
        match self.resource {
            Resource::Rounds { max, .. } => max as f64,
            Resource::Epochs { max, .. } => max,
        }
    }

    fn min(&self) -> f64 {
        match self.resource {
            Resource::Rounds { min, .. } => min as f64,
            Resource::Epochs { min, .. } => min,
        }
    }

    /// Rungs of the single bracket: min, min·η, …, max.
    fn single_rungs(&self) -> Vec<f64> {
        let mut rungs = Vec::new();
        let mut r = self.min();
        while r < self.max() * (1.0 - 1e-9) {
            rungs.push(self.snap(r));
            r *= self.eta;
        }
        rungs.push(self.max());
        rungs.dedup();
        rungs
    }

    fn snap(&self, r: f64) -> f64 {
        match self.resource {
            Resource::Rounds { .. } => r.round().max(1.0),
            Resource::Epochs { .. } => r,
        }
    }

    /// Rounds that reach `resource` for `point`, given `done` rounds (at least one more).
    fn rounds_for(&self, ctx: &Ctx, point: &Point, resource: f64, done: u32) -> Result<u32, Error> {
        let r = match self.resource {
            Resource::Rounds { .. } => resource.round() as u32,
            Resource::Epochs { .. } => {
                let per_trial_round = (ctx.round_cost)(point)? / ctx.seeds as f64;
                if per_trial_round > 0.0 {
                    ((resource / per_trial_round + 1e-9).floor() as u32).max(1)
                } else {
                    1
                }
            }
        };
        Ok(r.max(done + 1))
    }

    /// Nominal cost of a bracket with its first `n` points, from per-point rung costs.
    fn bracket_cost(keep: &[usize], per_point: &[Vec<f64>], n: usize) -> f64 {
        let mut total = 0.0;
        for (i, k) in keep.iter().enumerate() {
            let mean = per_point[..n].iter().map(|c| c[i]).sum::<f64>() / n as f64;
            total += *k as f64 * mean;
        }
        total
    }

    /// Cost of running `point` through every rung (each entry: that rung's charge).
    fn rung_costs(&self, ctx: &Ctx, point: &Point, rungs: &[f64]) -> Result<Vec<f64>, Error> {
        let mut done = 0;
        let mut out = Vec::with_capacity(rungs.len());
        for (i, r) in rungs.iter().enumerate() {
            let rounds = self.rounds_for(ctx, point, *r, if i == 0 { 0 } else { done })?;
            out.push(ctx.cost(point, done, rounds)?);
            done = rounds;
        }
        Ok(out)
    }

    fn keep_of(&self, n: usize, rungs: usize) -> Vec<usize> {
        (0..rungs)
            .map(|i| ((n as f64 / self.eta.powi(i as i32) + 1e-9).floor() as usize).max(1))
            .collect()
    }

    /// Hyperband's brackets for one iteration, points drawn now.
    fn hyperband_iteration(
        &mut self,
        ctx: &Ctx,
        iteration: usize,
    ) -> Result<(Vec<Bracket>, f64), Error> {
        let ratio = self.max() / self.min();
        let s_max = (ratio.ln() / self.eta.ln() + 1e-9).floor() as i32;
        let mut brackets = Vec::new();
        let mut cost = 0.0;
        for s in (0..=s_max).rev() {
            let n = (((s_max + 1) as f64 / (s + 1) as f64) * self.eta.powi(s)).ceil() as usize;
            let rungs: Vec<f64> = (0..=s)
                .map(|i| {
                    if i == s {
                        self.max()
                    } else {
                        self.snap(self.max() * self.eta.powi(i - s))
                    }
                })
                .collect();
            let keep = self.keep_of(n, rungs.len());
            let points: Vec<Point> = (0..n).map(|_| ctx.space.sample(&mut self.rng)).collect();
            let per_point: Vec<Vec<f64>> = points
                .iter()
                .map(|p| self.rung_costs(ctx, p, &rungs))
                .collect::<Result<_, _>>()?;
            cost += Self::bracket_cost(&keep, &per_point, n);
            brackets.push(Bracket {
                label: format!("iteration {} bracket {}", iteration + 1, s_max - s + 1),
                rungs,
                keep,
                points,
            });
        }
        Ok((brackets, cost))
    }

    fn unit(&self) -> &'static str {
        match self.resource {
            Resource::Rounds { .. } => "rounds",
            Resource::Epochs { .. } => "client-epochs per trial",
        }
    }
}

impl Method for Halving {
    fn plan(&mut self, ctx: &Ctx) -> Result<Plan, Error> {
        match self.shape {
            Shape::Single { trials } => {
                let rungs = self.single_rungs();
                let mut points = Vec::new();
                let mut per_point = Vec::new();
                let mut best: Option<(usize, f64)> = None;
                let target = trials.unwrap_or(MAX_TRIALS);
                while points.len() < target {
                    let p = ctx.space.sample(&mut self.rng);
                    per_point.push(self.rung_costs(ctx, &p, &rungs)?);
                    points.push(p);
                    let n = points.len();
                    let keep = self.keep_of(n, rungs.len());
                    let c = Self::bracket_cost(&keep, &per_point, n);
                    if trials.is_none() && c > ctx.budget {
                        break;
                    }
                    best = Some((n, c));
                }
                let Some((n, cost)) = best else {
                    return Err(Error::Budget(format!(
                        "halving: one configuration through every rung costs more than the budget of {} client-epochs",
                        short_float(ctx.budget)
                    )));
                };
                points.truncate(n);
                let keep = self.keep_of(n, rungs.len());
                let description = format!(
                    "successive halving, η = {}: {} configurations × {} seeds, rungs {} {}, keeping {}{}",
                    short_float(self.eta),
                    n,
                    ctx.seeds,
                    rungs.iter().map(|r| short_float(*r)).collect::<Vec<_>>().join("/"),
                    self.unit(),
                    keep.iter().map(|k| k.to_string()).collect::<Vec<_>>().join("/"),
                    if trials.is_none() { " (as many as the budget allows)" } else { "" }
                );
                self.brackets = vec![Bracket {
                    label: "bracket 1".into(),
                    rungs,
                    keep,
                    points,
                }];
                Ok(Plan {
                    cost,
                    fixed: trials.is_some(),
                    description,
                })
            }
            Shape::Hyperband { iterations } => {
                let mut total = 0.0;
                let mut all = Vec::new();
                let mut count = 0;
                loop {
                    if Some(count) == iterations || count == 1000 {
                        break;
                    }
                    let (b, c) = self.hyperband_iteration(ctx, count)?;
                    if iterations.is_none() && total + c > ctx.budget {
                        break;
                    }
                    total += c;
                    all.extend(b);
                    count += 1;
                }
                if count == 0 {
                    return Err(Error::Budget(format!(
                        "hyperband: one iteration over the brackets costs more than the budget of {} client-epochs",
                        short_float(ctx.budget)
                    )));
                }
                let per_iter = all.len() / count;
                let description = format!(
                    "Hyperband, η = {}: {} iteration(s) of {} brackets ({} configurations each) × {} seeds, rungs from {} to {} {}{}",
                    short_float(self.eta),
                    count,
                    per_iter,
                    all[..per_iter].iter().map(|b| b.points.len().to_string()).collect::<Vec<_>>().join("/"),
                    ctx.seeds,
                    short_float(self.min()),
                    short_float(self.max()),
                    self.unit(),
                    if iterations.is_none() { " (as many as the budget allows)" } else { "" }
                );
                self.brackets = all;
                Ok(Plan {
                    cost: total,
                    fixed: iterations.is_some(),
                    description,
                })
            }
        }
    }

    fn next(&mut self, ctx: &Ctx) -> Result<Option<Vec<Request>>, Error> {
        loop {
            let Some(b) = self.brackets.get(self.bracket) else {
                return Ok(None);
            };
            if self.rung >= b.rungs.len() || (self.rung > 0 && self.alive.is_empty()) {
                self.bracket += 1;
                self.rung = 0;
                self.alive.clear();
                continue;
            }
            let b = b.clone();
            if self.rung == 0 {
                self.alive = b
                    .points
                    .iter()
                    .map(|p| {
                        self.next_lineage += 1;
                        (self.next_lineage - 1, p.clone(), 0)
                    })
                    .collect();
            }
            let last = self.rung + 1 == b.rungs.len();
            let mut reqs = Vec::new();
            self.pending.clear();
            for (lineage, point, done) in &self.alive {
                let rounds = self.rounds_for(ctx, point, b.rungs[self.rung], *done)?;
                self.pending.push(rounds);
                reqs.push(Request {
                    lineage: *lineage,
                    point: point.clone(),
                    rounds,
                    from: (self.rung > 0).then_some(*lineage),
                    label: format!("{} rung {}/{}", b.label, self.rung + 1, b.rungs.len()),
                    last,
                });
            }
            return Ok(Some(reqs));
        }
    }

    fn tell(&mut self, outcomes: &[Outcome]) {
        let Some(b) = self.brackets.get(self.bracket) else {
            return;
        };
        let scores: Vec<Option<f64>> = self
            .alive
            .iter()
            .enumerate()
            .map(|(i, _)| outcomes.get(i).and_then(|o| o.score))
            .collect();
        for (i, rounds) in self.pending.iter().enumerate() {
            self.alive[i].2 = *rounds;
        }
        let keep = b.keep.get(self.rung + 1).copied().unwrap_or(0);
        let order = ranking(&scores);
        let mut kept: Vec<usize> = order.into_iter().take(keep).collect();
        kept.sort_unstable();
        self.alive = kept.into_iter().map(|i| self.alive[i].clone()).collect();
        self.rung += 1;
    }
}
