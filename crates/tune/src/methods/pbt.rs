//! Population-based training (Jaderberg et al., 2017), synchronous: every member trains
//! `interval` rounds (one batch), then the worst `fraction` copy the state of a member of
//! the best `fraction` (exploit) and perturb its configuration (explore). Needs a runner
//! that continues a trial from its state with a changed configuration.
//!
//! Specified in docs/tuning.md, "Methods".

use super::{ranking, Ctx, Method, Outcome, Plan, Request};
use crate::space::{short_float, Point};
use crate::Error;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Population-based training.
pub struct Pbt {
    population: usize,
    interval: u32,
    fraction: f64,
    perturb: f64,
    resample: f64,
    rng: ChaCha8Rng,
    /// Current configuration of each member (member i is lineage i).
    members: Vec<Point>,
    /// Rounds done by every member.
    done: u32,
    scores: Vec<Option<f64>>,
}

impl Pbt {
    /// A PBT search.
    pub fn new(
        population: usize,
        interval: u32,
        fraction: f64,
        perturb: f64,
        resample: f64,
        rng: ChaCha8Rng,
    ) -> Self {
        Self {
            population,
            interval,
            fraction,
            perturb,
            resample,
            rng,
            members: Vec::new(),
            done: 0,
            scores: Vec::new(),
        }
    }
}

impl Method for Pbt {
    fn needs_continue(&self) -> bool {
        true
    }

    fn plan(&mut self, ctx: &Ctx) -> Result<Plan, Error> {
        self.members = (0..self.population)
            .map(|_| ctx.space.sample(&mut self.rng))
            .collect();
        // Explored points are not known yet: the initial population's mean stands in.
        let mean = super::mean_round_cost(ctx, &self.members)?;
        let generations = ctx.max_rounds.div_ceil(self.interval);
        Ok(Plan {
            cost: mean * ctx.max_rounds as f64 * self.population as f64,
            fixed: true,
            description: format!(
                "population-based training: {} members × {} seeds × {} rounds, exploit/explore every {} rounds ({} generations), replacing the worst {}",
                self.population,
                ctx.seeds,
                ctx.max_rounds,
                self.interval,
                generations,
                short_float(self.fraction)
            ),
        })
    }

    fn next(&mut self, ctx: &Ctx) -> Result<Option<Vec<Request>>, Error> {
        if self.done >= ctx.max_rounds {
            return Ok(None);
        }
        let rounds = (self.done + self.interval).min(ctx.max_rounds);
        let generation = self.done / self.interval + 1;
        let last = rounds == ctx.max_rounds;
        let mut from: Vec<Option<usize>> = (0..self.population)
            .map(|i| (self.done > 0).then_some(i))
            .collect();
        let mut labels = vec![format!("generation {generation}"); self.population];
        if self.done > 0 {
            let order = ranking(&self.scores);
            let q = ((self.fraction * self.population as f64).floor() as usize).max(1);
            let top: Vec<usize> = order[..q].to_vec();
            for &loser in &order[self.population - q..] {
                let donor = top[self.rng.gen_range(0..q)];
                let point = ctx.space.perturb(
                    &self.members[donor],
                    self.perturb,
                    self.resample,
                    &mut self.rng,
                );
                self.members[loser] = point;
                from[loser] = Some(donor);
                labels[loser] = format!("generation {generation}: copies member {donor}");
            }
        }
        Ok(Some(
            (0..self.population)
                .map(|i| Request {
                    lineage: i,
                    point: self.members[i].clone(),
                    rounds,
                    from: from[i],
                    label: labels[i].clone(),
                    last,
                })
                .collect(),
        ))
    }

    fn tell(&mut self, outcomes: &[Outcome]) {
        self.scores = (0..self.population)
            .map(|i| outcomes.get(i).and_then(|o| o.score))
            .collect();
        if let Some(o) = outcomes.first() {
            self.done = o.request.rounds;
        }
    }
}
