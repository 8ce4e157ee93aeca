//! APFL (Deng, Kamani, Mahdavi 2020), docs/algorithms.md §E.7; docs/personalization.md.
//!
//! Per client: the global copy `w`, a local model `v_i` and a learned mixing weight
//! `α_i ∈ [0, 1]`; the personal model is `v̄ = α v + (1 − α) w` (parameter mixing).
//! Each step on a batch b, with every gradient taken at the step's starting point:
//!
//! ```text
//! g_w = ∇f(w; b);   v̄ = α v + (1 − α) w;   g = ∇f(v̄; b)
//! w ← w − η g_w
//! v ← v − η α g                                  (∇_v f(v̄) = α ∇f(v̄))
//! α ← clip(α − η_α ⟨v − w, g⟩, 0, 1)              (∂f(v̄)/∂α = ⟨v − w, ∇f(v̄)⟩)
//! ```
//!
//! η is the plan's per-group rate; η_α the recipe's `alpha_lr` (0 = fixed α). The `w`
//! and `v` steps are the plan's optimiser (w's state follows the state mode; v's is its
//! own, kept under `keep`); the α step is a plain gradient step. `v` and α persist in
//! the client's state; the server averages `w` (FedAvg).

use crate::config::{Algorithm, BuildCx, Built, Combination, RoundConfig};
use crate::local::{end_state, optimizer_step, scaled_step, start_state, state_bytes, BatchOrder};
use crate::parts::{Recipe, RecipeCx, RecipeRound};
use crate::personal::{build, own_steps, personal_or_global, PersonalHooks, PersonalModel};
use crate::registry::Algorithms;
use fedpace_core::ext::Payload;
use fedpace_core::rng::{stream, Purpose};
use fedpace_core::{Error, EvalIns, Extensions, LocalState, Result, TrainIns, TrainReport};
use fedpace_optim::{State, StateMode};
use fedpace_params::{l2_norm, ParamTree};
use serde::{Deserialize, Serialize};

/// APFL's recipe.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Apfl {
    /// Initial mixing weight α_i (first participation).
    pub alpha_init: f32,
    /// Rate η_α of the α update; 0 keeps α fixed.
    pub alpha_lr: f32,
}

impl Payload for Apfl {
    const NAME: &'static str = "apfl";
}

/// What an APFL client keeps besides its local model: α_i and, under `keep`, the
/// optimiser state of v.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApflState {
    /// The learned mixing weight α_i.
    pub alpha: f32,
    /// v's optimiser state (`state_mode = "keep"` only).
    pub v_optimizer: Option<State>,
}

impl Payload for ApflState {
    const NAME: &'static str = "apfl-state";
    fn heap_bytes(&self) -> usize {
        self.v_optimizer.as_ref().map_or(0, state_bytes)
    }
}

/// `α v + (1 − α) w`.
pub fn mix(alpha: f32, v: &ParamTree, w: &ParamTree) -> ParamTree {
    let mut out = w.clone();
    for (o, (vi, wi)) in out
        .as_mut_slice()
        .iter_mut()
        .zip(v.as_slice().iter().zip(w.as_slice()))
    {
        *o = alpha * vi + (1.0 - alpha) * wi;
    }
    out
}

struct ApflClient;

impl Recipe for ApflClient {
    fn payload(&self) -> &'static str {
        Apfl::NAME
    }
    fn train(
        &self,
        cx: &mut RecipeCx<'_>,
        ins: &TrainIns,
        state: &mut LocalState,
        reply: &mut Extensions,
    ) -> Result<RecipeRound> {
        let k = *ins.ext.get::<Apfl>().expect("switched on by its payload");
        let plan = &ins.plan;
        let global = ins.params.as_ref();
        let mut w = global.clone();
        let mut v = personal_or_global(global, state);
        let kept = state.ext.remove::<ApflState>();
        let mut alpha = kept.as_ref().map_or(k.alpha_init, |s| s.alpha);
        let spec = w.spec().clone();
        let groups = spec.num_groups();
        let data = cx.data.train.clone();
        let steps = plan.steps_for(data.len());
        let offset = state.steps_done;
        let rng = stream(ins.seed, ins.round as u64, cx.id, Purpose::Shuffle);
        let mut order = BatchOrder::new(data.len(), plan.batch_size as usize, rng);
        let tx = plan.optimizer.build()?;
        let mut w_opt = start_state(plan, &ins.ext, state).unwrap_or_else(|| tx.init(&spec));
        let keep = plan.state_mode == StateMode::Keep;
        let mut v_opt = kept
            .and_then(|s| s.v_optimizer)
            .filter(|_| keep)
            .unwrap_or_else(|| tx.init(&spec));
        let d = spec.total_len();
        let (mut gw, mut g) = (vec![0f32; d], vec![0f32; d]);
        let mut eta = Vec::with_capacity(groups);
        let mut report = TrainReport {
            rate_sum: vec![0.0; groups],
            ..Default::default()
        };
        let mut loss_sum = 0f64;
        for s in 0..steps {
            let step = offset + s as u64;
            plan.group_rates(groups, step, &mut eta);
            let batch = data.batch(&order.next_batch());
            gw.fill(0.0);
            let loss = cx.model.loss_and_grad(&w, &batch, &mut gw)?;
            if s == 0 {
                report.loss_before = loss;
                report.grad_norm = l2_norm(&gw);
            }
            loss_sum += loss as f64;
            let bar = mix(alpha, &v, &w);
            g.fill(0.0);
            cx.model.loss_and_grad(&bar, &batch, &mut g)?;
            let grad_alpha: f64 = v
                .as_slice()
                .iter()
                .zip(w.as_slice())
                .zip(&g)
                .map(|((vi, wi), gi)| (*vi as f64 - *wi as f64) * *gi as f64)
                .sum();
            optimizer_step(tx.as_ref(), &mut w_opt, &mut w, &mut gw, &eta, step)?;
            let a = alpha;
            scaled_step(plan, tx.as_ref(), &mut v_opt, &mut v, &mut g, a, &eta, step)?;
            alpha = (a as f64 - k.alpha_lr as f64 * grad_alpha).clamp(0.0, 1.0) as f32;
            for (acc, r) in report.rate_sum.iter_mut().zip(&eta) {
                *acc += *r as f64;
            }
        }
        end_state(plan, Some(w_opt), state, reply);
        report.steps = steps;
        if steps > 0 {
            report.train_loss = (loss_sum / steps as f64) as f32;
            report.loss_after = report.train_loss;
        }
        state.ext.insert(PersonalModel(v.into_vec()));
        state.ext.insert(ApflState {
            alpha,
            v_optimizer: keep.then_some(v_opt),
        });
        Ok(RecipeRound { trained: w, report })
    }
    fn personal_model(
        &self,
        _cx: &mut RecipeCx<'_>,
        ins: &EvalIns,
        state: &LocalState,
    ) -> Result<Option<ParamTree>> {
        let k = *ins.ext.get::<Apfl>().expect("switched on by its payload");
        let v = personal_or_global(&ins.params, state);
        let a = state
            .ext
            .get::<ApflState>()
            .map_or(k.alpha_init, |s| s.alpha);
        Ok(Some(mix(a, &v, &ins.params)))
    }
}

/// `apfl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApflConfig {
    /// Train every client each round, aggregate only the sampled ones (default false).
    pub train_all: bool,
    /// Initial mixing weight α (default 0.5).
    pub alpha_init: f64,
    /// Rate of the α update (default `client.lr`; 0 = fixed α).
    pub alpha_lr: Option<f64>,
}

impl Default for ApflConfig {
    fn default() -> Self {
        Self {
            train_all: false,
            alpha_init: 0.5,
            alpha_lr: None,
        }
    }
}

impl Algorithm for ApflConfig {
    const NAME: &'static str = "apfl";
    fn validate(&self, _round: &RoundConfig) -> Result<()> {
        if !(0.0..=1.0).contains(&self.alpha_init) {
            return Err(Error::invalid(
                "strategy.alpha_init",
                self.alpha_init,
                "a weight in [0, 1]",
            ));
        }
        if let Some(a) = self.alpha_lr {
            if !(a.is_finite() && a >= 0.0) {
                return Err(Error::invalid("strategy.alpha_lr", a, "must be >= 0"));
            }
            crate::config::check_f32("strategy.alpha_lr", a)?;
        }
        Ok(())
    }
    fn check(&self, c: &Combination<'_>) -> std::result::Result<(), String> {
        own_steps(Self::NAME, c)
    }
    fn register(a: &mut Algorithms) {
        a.payload::<Apfl>().payload::<ApflState>();
        a.parts().add_recipe(ApflClient);
    }
    fn build(&self, cx: BuildCx) -> Result<Built> {
        let recipe = Apfl {
            alpha_init: self.alpha_init as f32,
            alpha_lr: self
                .alpha_lr
                .map_or(cx.settings.base_plan.base_lr, |a| a as f32),
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
