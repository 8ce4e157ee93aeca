//! Bayesian optimisation: `initial` random points, then batches of `batch` points that
//! maximise expected improvement under a Gaussian-process surrogate (kriging believer:
//! within a batch, each chosen point is added with its predicted mean before the next is
//! chosen). Failed trials enter the surrogate at the worst score seen.
//!
//! Specified in docs/tuning.md, "Methods".

use super::{Ctx, Method, Outcome, Plan, Request};
use crate::gp::{expected_improvement, Gp};
use crate::space::{short_float, Point};
use crate::Error;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// The most trials BO sizes itself to (the surrogate is O(n³)).
const MAX_TRIALS: usize = 500;

/// Bayesian optimisation.
pub struct Bo {
    initial: usize,
    trials: Option<usize>,
    batch: usize,
    candidates: usize,
    xi: f64,
    rng: ChaCha8Rng,
    /// Sized at plan time.
    total: usize,
    /// Every proposed point, in order.
    proposed: Vec<Point>,
    /// Points and scores told so far (`None`: failed).
    observed: Vec<(Point, Option<f64>)>,
}

impl Bo {
    /// A BO search.
    pub fn new(
        initial: usize,
        trials: Option<usize>,
        batch: usize,
        candidates: usize,
        xi: f64,
        rng: ChaCha8Rng,
    ) -> Self {
        Self {
            initial,
            trials,
            batch,
            candidates,
            xi,
            rng,
            total: 0,
            proposed: Vec::new(),
            observed: Vec::new(),
        }
    }

    fn request(&mut self, point: Point, ctx: &Ctx) -> Request {
        self.proposed.push(point.clone());
        Request {
            lineage: self.proposed.len() - 1,
            point,
            rounds: ctx.max_rounds,
            from: None,
            label: if self.proposed.len() <= self.initial {
                "initial".into()
            } else {
                "bo".into()
            },
            last: true,
        }
    }

    /// Chooses up to `q` new points by expected improvement.
    fn propose(&mut self, ctx: &Ctx, q: usize) -> Result<Vec<Point>, Error> {
        let worst = self
            .observed
            .iter()
            .filter_map(|o| o.1)
            .fold(f64::INFINITY, f64::min);
        let mut x: Vec<Vec<f64>> = Vec::new();
        let mut y: Vec<f64> = Vec::new();
        for (p, s) in &self.observed {
            x.push(ctx.space.encode(p));
            y.push(s.unwrap_or(if worst.is_finite() { worst } else { 0.0 }));
        }
        let mean = y.iter().sum::<f64>() / y.len() as f64;
        let sd = (y.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / y.len() as f64).sqrt();
        let sd = if sd > 1e-12 { sd } else { 1.0 };
        let mut ys: Vec<f64> = y.iter().map(|v| (v - mean) / sd).collect();
        let hyper_seed = self.rng.gen::<u64>();
        let fitted = Gp::fit_hyperparameters(&x, &ys, hyper_seed)?;
        let kernel = fitted.kernel().clone();
        let mut gp = fitted;
        let dims = ctx.space.dims();
        let mut chosen = Vec::new();
        for _ in 0..q {
            let best = ys.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            // Candidates: draws from the prior, and local moves around the best points.
            let mut cands: Vec<Vec<f64>> = (0..self.candidates)
                .map(|_| ctx.space.encode(&ctx.space.sample(&mut self.rng)))
                .collect();
            let mut order: Vec<usize> = (0..ys.len()).collect();
            order.sort_by(|&a, &b| ys[b].total_cmp(&ys[a]).then(a.cmp(&b)));
            for &i in order.iter().take(3) {
                for _ in 0..self.candidates / 10 {
                    let c: Vec<f64> = (0..dims)
                        .map(|j| {
                            (x[i][j] + 0.1 * (self.rng.gen::<f64>() * 2.0 - 1.0)).clamp(0.0, 1.0)
                        })
                        .collect();
                    cands.push(c);
                }
            }
            let mut top: Option<(f64, Point)> = None;
            for c in cands {
                // Snap to the space (integers, choices) so the score is of a real point.
                let p = ctx.space.decode(&c);
                if self.proposed.contains(&p) || chosen.contains(&p) {
                    continue;
                }
                let (m, v) = gp.predict(&ctx.space.encode(&p));
                let ei = expected_improvement(m, v.sqrt(), best, self.xi);
                if top.as_ref().is_none_or(|t| ei > t.0) {
                    top = Some((ei, p));
                }
            }
            let Some((_, p)) = top else {
                break; // every candidate has been tried: a small discrete space is exhausted
            };
            let xp = ctx.space.encode(&p);
            let (m, _) = gp.predict(&xp);
            x.push(xp);
            ys.push(m);
            gp = Gp::fit(&x, &ys, kernel.clone())?;
            chosen.push(p);
        }
        Ok(chosen)
    }
}

impl Method for Bo {
    fn plan(&mut self, ctx: &Ctx) -> Result<Plan, Error> {
        // Cost is known only for points not yet chosen: estimate with prior draws from a
        // copy of the stream, so the search's own draws are unaffected.
        let mut probe = self.rng.clone();
        let samples: Vec<Point> = (0..32).map(|_| ctx.space.sample(&mut probe)).collect();
        let mut per_trial = 0.0;
        for p in &samples {
            per_trial += ctx.cost(p, 0, ctx.max_rounds)?;
        }
        per_trial /= samples.len() as f64;
        self.total = match self.trials {
            Some(t) => t,
            None => ((ctx.budget / per_trial + 1e-9).floor() as usize).min(MAX_TRIALS),
        };
        if self.total == 0 {
            return Err(Error::Budget(format!(
                "bo: one full-length trial costs about {} client-epochs, more than the budget of {}",
                short_float(per_trial),
                short_float(ctx.budget)
            )));
        }
        Ok(Plan {
            cost: per_trial * self.total as f64,
            fixed: self.trials.is_some(),
            description: format!(
                "Bayesian optimisation (GP Matérn 5/2, expected improvement): {} trials ({} random first, batches of {}) × {} seeds × {} rounds{}",
                self.total,
                self.initial.min(self.total),
                self.batch,
                ctx.seeds,
                ctx.max_rounds,
                if self.trials.is_none() { " (as many as the budget allows)" } else { "" }
            ),
        })
    }

    fn next(&mut self, ctx: &Ctx) -> Result<Option<Vec<Request>>, Error> {
        let left = self.total.saturating_sub(self.proposed.len());
        if left == 0 {
            return Ok(None);
        }
        let points = if self.proposed.len() < self.initial {
            let n = (self.initial - self.proposed.len()).min(left);
            (0..n).map(|_| ctx.space.sample(&mut self.rng)).collect()
        } else {
            self.propose(ctx, self.batch.min(left))?
        };
        if points.is_empty() {
            return Ok(None);
        }
        Ok(Some(
            points.into_iter().map(|p| self.request(p, ctx)).collect(),
        ))
    }

    fn tell(&mut self, outcomes: &[Outcome]) {
        self.observed
            .extend(outcomes.iter().map(|o| (o.request.point.clone(), o.score)));
    }
}
