//! Random search: points drawn from the prior, full length, in one batch
//! (docs/tuning.md, "Methods").

use super::{Ctx, Method, Outcome, Plan, Request};
use crate::Error;
use rand_chacha::ChaCha8Rng;

/// The most trials random search sizes itself to.
const MAX_TRIALS: usize = 10_000;

/// Random search.
pub struct Random {
    trials: Option<usize>,
    rng: ChaCha8Rng,
    requests: Option<Vec<Request>>,
}

impl Random {
    /// `trials` points, or as many as the budget allows.
    pub fn new(trials: Option<usize>, rng: ChaCha8Rng) -> Self {
        Self {
            trials,
            rng,
            requests: None,
        }
    }
}

impl Method for Random {
    fn plan(&mut self, ctx: &Ctx) -> Result<Plan, Error> {
        let mut cost = 0.0;
        let mut requests = Vec::new();
        // The points are one stream: sizing to the budget takes a prefix of it.
        loop {
            if Some(requests.len()) == self.trials || requests.len() == MAX_TRIALS {
                break;
            }
            let p = ctx.space.sample(&mut self.rng);
            let c = ctx.cost(&p, 0, ctx.max_rounds)?;
            if self.trials.is_none() && cost + c > ctx.budget {
                break;
            }
            cost += c;
            requests.push(Request {
                lineage: requests.len(),
                point: p,
                rounds: ctx.max_rounds,
                from: None,
                label: "random".into(),
                last: true,
            });
        }
        let description = format!(
            "{} random points × {} seeds × {} rounds{}",
            requests.len(),
            ctx.seeds,
            ctx.max_rounds,
            if self.trials.is_none() {
                " (as many as the budget allows)"
            } else {
                ""
            }
        );
        if requests.is_empty() {
            return Err(Error::Budget(format!(
                "random: one full-length trial costs more than the budget of {} client-epochs",
                crate::space::short_float(ctx.budget)
            )));
        }
        self.requests = Some(requests);
        Ok(Plan {
            cost,
            fixed: self.trials.is_some(),
            description,
        })
    }

    fn next(&mut self, _ctx: &Ctx) -> Result<Option<Vec<Request>>, Error> {
        Ok(self.requests.take())
    }

    fn tell(&mut self, _outcomes: &[Outcome]) {}
}
