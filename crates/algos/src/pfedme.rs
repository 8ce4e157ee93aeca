//! pFedMe (Dinh, Tran, Nguyen, NeurIPS 2020), docs/algorithms.md §E.2;
//! docs/personalization.md.
//!
//! Moreau-envelope objective `F_i(w) = min_θ f_i(θ) + (λ/2)‖θ − w‖²`. Per local round
//! (one mini-batch D each; the round count is the plan's local work):
//!
//! ```text
//! repeat K times on the same D:  θ ← θ − η_p (∇f(θ; D) + λ(θ − w_local) + μ_reg θ)
//! w_local ← w_local − η λ (w_local − θ)
//! ```
//!
//! θ and w_local start from the global model each round (as in the reference code);
//! θ at the end of the round is the client's personal model. The server mixes
//! `w ← (1 − β) w + β · avg(w_local)`, i.e. the FedAvg step with server rate η_g = β.
//! η is the plan's rate and η_p the recipe's `personal_lr`, both scaled per group by the
//! plan's multipliers and schedule. The plan's optimiser (and state mode) drives the
//! `w_local` step on the envelope's gradient `λ(w_local − θ)`; θ's inner steps solve
//! the inner problem with plain gradient steps, as pFedMe defines them.

use crate::config::{Algorithm, BuildCx, Built, Combination, RoundConfig};
use crate::local::{end_state, rates_with_base, scaled_step, start_state, BatchOrder, GroupMap};
use crate::parts::{Recipe, RecipeCx, RecipeRound};
use crate::personal::{build, own_steps, personal_or_global, PersonalHooks, PersonalModel};
use crate::registry::Algorithms;
use fedpace_core::ext::Payload;
use fedpace_core::rng::{stream, Purpose};
use fedpace_core::{Error, EvalIns, Extensions, LocalState, Model, Result, TrainIns, TrainReport};
use fedpace_params::{l2_norm, ParamTree};
use serde::{Deserialize, Serialize};

/// pFedMe's recipe (its client knobs).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PFedMe {
    /// Inner steps K on the same mini-batch.
    pub inner_steps: u32,
    /// Moreau-envelope weight λ.
    pub lambda: f32,
    /// Personal rate η_p (scaled by the plan's group multipliers).
    pub personal_lr: f32,
    /// L2 term μ_reg of the inner problem (1e-3 in the reference code).
    pub mu_reg: f32,
}

impl Payload for PFedMe {
    const NAME: &'static str = "pfedme";
}

/// The inner problem on one batch: K steps of
/// `θ ← θ − η_p,g (∇f(θ; D) + λ(θ − w) + μ θ)` from `theta`.
pub fn inner_solve(
    model: &mut dyn Model,
    batch: &fedpace_core::Batch,
    theta: &mut ParamTree,
    w: &ParamTree,
    k: PFedMe,
    personal_rates: &[f32],
    map: &GroupMap,
) -> Result<f32> {
    let d = w.as_slice().len();
    let mut g = vec![0f32; d];
    let mut first = 0.0;
    for i in 0..k.inner_steps {
        g.fill(0.0);
        let loss = model.loss_and_grad(theta, batch, &mut g)?;
        if i == 0 {
            first = loss;
        }
        for ((gi, t), wi) in g.iter_mut().zip(theta.as_slice()).zip(w.as_slice()) {
            *gi += k.lambda * (t - wi) + k.mu_reg * t;
        }
        map.step(theta.as_mut_slice(), &g, personal_rates);
    }
    Ok(first)
}

struct PFedMeClient;

impl Recipe for PFedMeClient {
    fn payload(&self) -> &'static str {
        PFedMe::NAME
    }
    fn train(
        &self,
        cx: &mut RecipeCx<'_>,
        ins: &TrainIns,
        state: &mut LocalState,
        reply: &mut Extensions,
    ) -> Result<RecipeRound> {
        let k = *ins.ext.get::<PFedMe>().expect("switched on by its payload");
        let plan = &ins.plan;
        let mut w = ins.params.as_ref().clone();
        let spec = w.spec().clone();
        let groups = spec.num_groups();
        let map = GroupMap::new(&spec);
        let data = cx.data.train.clone();
        let steps = plan.steps_for(data.len());
        let offset = state.steps_done;
        let rng = stream(ins.seed, ins.round as u64, cx.id, Purpose::Shuffle);
        let mut order = BatchOrder::new(data.len(), plan.batch_size as usize, rng);
        let tx = plan.optimizer.build()?;
        let mut opt = start_state(plan, &ins.ext, state).unwrap_or_else(|| tx.init(&spec));
        let mut theta = w.clone();
        let mut eta = Vec::with_capacity(groups);
        let mut grad = vec![0f32; spec.total_len()];
        let mut report = TrainReport {
            rate_sum: vec![0.0; groups],
            ..Default::default()
        };
        let mut loss_sum = 0f64;
        for s in 0..steps {
            let step = offset + s as u64;
            let batch = data.batch(&order.next_batch());
            let personal = rates_with_base(plan, k.personal_lr, groups, step);
            let loss = inner_solve(cx.model, &batch, &mut theta, &w, k, &personal, &map)?;
            if s == 0 {
                report.loss_before = loss;
                let mut g = vec![0f32; spec.total_len()];
                cx.model.loss_and_grad(&w, &batch, &mut g)?;
                report.grad_norm = l2_norm(&g);
            }
            loss_sum += loss as f64;
            plan.group_rates(groups, step, &mut eta);
            // w_local ← w_local − η·λ(w_local − θ)
            for ((g, wi), t) in grad.iter_mut().zip(w.as_slice()).zip(theta.as_slice()) {
                *g = wi - t;
            }
            scaled_step(
                plan,
                tx.as_ref(),
                &mut opt,
                &mut w,
                &mut grad,
                k.lambda,
                &eta,
                step,
            )?;
            for (acc, r) in report.rate_sum.iter_mut().zip(&eta) {
                *acc += *r as f64;
            }
        }
        end_state(plan, Some(opt), state, reply);
        report.steps = steps;
        if steps > 0 {
            report.train_loss = (loss_sum / steps as f64) as f32;
            report.loss_after = report.train_loss;
        }
        state.ext.insert(PersonalModel(theta.into_vec()));
        Ok(RecipeRound { trained: w, report })
    }
    fn personal_model(
        &self,
        _cx: &mut RecipeCx<'_>,
        ins: &EvalIns,
        state: &LocalState,
    ) -> Result<Option<ParamTree>> {
        Ok(Some(personal_or_global(&ins.params, state)))
    }
}

/// `pfedme`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PFedMeConfig {
    /// Train every client each round, aggregate only the sampled ones (the reference
    /// code's behaviour; default false).
    pub train_all: bool,
    /// Inner steps K per mini-batch (default 5).
    pub inner_steps: u32,
    /// λ (default 15).
    pub lambda: f64,
    /// Personal rate η_p (default 0.1).
    pub personal_lr: f64,
    /// L2 weight μ_reg of the inner problem (default 1e-3, the reference code's).
    pub mu_reg: f64,
}

impl Default for PFedMeConfig {
    fn default() -> Self {
        Self {
            train_all: false,
            inner_steps: 5,
            lambda: 15.0,
            personal_lr: 0.1,
            mu_reg: 1e-3,
        }
    }
}

impl Algorithm for PFedMeConfig {
    const NAME: &'static str = "pfedme";
    fn validate(&self, _round: &RoundConfig) -> Result<()> {
        if self.inner_steps == 0 {
            return Err(Error::invalid("strategy.inner_steps", 0, "at least 1"));
        }
        if !(self.lambda.is_finite() && self.lambda >= 0.0) {
            return Err(Error::invalid(
                "strategy.lambda",
                self.lambda,
                "must be >= 0",
            ));
        }
        if !(self.personal_lr.is_finite() && self.personal_lr > 0.0) {
            return Err(Error::invalid(
                "strategy.personal_lr",
                self.personal_lr,
                "must be > 0",
            ));
        }
        if !(self.mu_reg.is_finite() && self.mu_reg >= 0.0) {
            return Err(Error::invalid(
                "strategy.mu_reg",
                self.mu_reg,
                "must be >= 0",
            ));
        }
        for (k, v) in [
            ("strategy.lambda", self.lambda),
            ("strategy.personal_lr", self.personal_lr),
            ("strategy.mu_reg", self.mu_reg),
        ] {
            crate::config::check_f32(k, v)?;
        }
        Ok(())
    }
    fn check(&self, c: &Combination<'_>) -> std::result::Result<(), String> {
        own_steps(Self::NAME, c)
    }
    fn register(a: &mut Algorithms) {
        a.payload::<PFedMe>();
        a.parts().add_recipe(PFedMeClient);
    }
    fn build(&self, cx: BuildCx) -> Result<Built> {
        let recipe = PFedMe {
            inner_steps: self.inner_steps,
            lambda: self.lambda as f32,
            personal_lr: self.personal_lr as f32,
            mu_reg: self.mu_reg as f32,
        };
        let hooks = PersonalHooks::new(
            Extensions::new().with(recipe),
            Vec::new(),
            Vec::new(),
            false,
            self.train_all,
        );
        build(Self::NAME, cx, hooks)
    }
}
