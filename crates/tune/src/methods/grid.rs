//! Grid search: every point of the grid, full length, in one batch (docs/tuning.md, "Methods").

use super::{Ctx, Method, Outcome, Plan, Request};
use crate::Error;

/// Grid search.
#[derive(Default)]
pub struct Grid {
    requests: Option<Vec<Request>>,
}

impl Method for Grid {
    fn plan(&mut self, ctx: &Ctx) -> Result<Plan, Error> {
        let points = ctx.space.grid()?;
        let mut cost = 0.0;
        let mut requests = Vec::new();
        for (i, p) in points.into_iter().enumerate() {
            cost += ctx.cost(&p, 0, ctx.max_rounds)?;
            requests.push(Request {
                lineage: i,
                point: p,
                rounds: ctx.max_rounds,
                from: None,
                label: "grid".into(),
                last: true,
            });
        }
        let description = format!(
            "grid of {} points × {} seeds × {} rounds",
            requests.len(),
            ctx.seeds,
            ctx.max_rounds
        );
        self.requests = Some(requests);
        Ok(Plan {
            cost,
            fixed: true,
            description,
        })
    }

    fn next(&mut self, _ctx: &Ctx) -> Result<Option<Vec<Request>>, Error> {
        Ok(self.requests.take())
    }

    fn tell(&mut self, _outcomes: &[Outcome]) {}
}
