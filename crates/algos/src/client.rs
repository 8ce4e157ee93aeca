//! The client: one dispatch over the parts of algorithms ([`ClientParts`]) that an
//! instruction's payloads switch on. Without a recipe it runs the standard local loop
//! (`crate::local`) with the terms of its hooks (SCAFFOLD, FedDyn) and the plan's step
//! controller; with a personalised recipe it runs the recipe (`crate::personal`). Either
//! way the round's stages finish the update last (`crate::stages::finish_client`:
//! pre-scaling for linear aggregation, DP clipping, compression, secure aggregation), and
//! protocol messages after training go to the part registered for them. A payload that
//! no part handles is an error, never ignored.

use crate::attack::{Attack, AttackKind, FlippedLabels};
use crate::local::{evaluate_splits, local_train_controlled, run_local};
pub use crate::local::{BatchOrder, GradientCorrection};
use crate::parts::{ClientParts, Finish, RecipeCx, Terms};
use crate::personal;
use crate::stages::finish_client;
use crate::stages::rates::{local_plan, LocalRate};
use fedpace_core::rng::{stream, Purpose};
use fedpace_core::{
    Client, ClientData, ClientId, EvalIns, EvalRes, ExchangeIns, Extensions, LocalState, Model,
    PersonalEval, Result, Session, TrainIns, TrainRes,
};
use fedpace_core::{Dataset, RatePlan, TrainReport};
use fedpace_optim::State;
use fedpace_params::{l2_norm, ParamTree};
use rand::Rng;
use std::sync::Arc;

/// The standard local loop with the plan's step controller (Δ-SGD for `delta-sgd`):
/// `steps` steps from `params` under `plan` from cumulative step `step_offset`, from
/// optimiser state `opt_state` (`None`: fresh; it holds the state after the last step on
/// return). See [`crate::local::local_train_controlled`].
#[allow(clippy::too_many_arguments)]
pub fn local_train(
    model: &mut dyn Model,
    data: &dyn Dataset,
    params: &mut ParamTree,
    plan: &RatePlan,
    steps: u32,
    step_offset: u64,
    rng: impl Rng,
    opt_state: &mut Option<State>,
) -> Result<TrainReport> {
    local_train_with(
        model,
        data,
        params,
        plan,
        steps,
        step_offset,
        rng,
        opt_state,
        GradientCorrection::default(),
    )
}

/// [`local_train`] with a [`GradientCorrection`] added to every gradient.
#[allow(clippy::too_many_arguments)]
pub fn local_train_with(
    model: &mut dyn Model,
    data: &dyn Dataset,
    params: &mut ParamTree,
    plan: &RatePlan,
    steps: u32,
    step_offset: u64,
    rng: impl Rng,
    opt_state: &mut Option<State>,
    correction: GradientCorrection<'_>,
) -> Result<TrainReport> {
    let mut controller = crate::policies::curvature::step_controller(plan);
    local_train_controlled(
        model,
        data,
        params,
        plan,
        steps,
        step_offset,
        rng,
        opt_state,
        correction,
        controller.as_deref_mut(),
    )
}

/// A client that trains a [`Model`] on its [`ClientData`], with the parts of every
/// algorithm it knows (the built-in ones by default).
pub struct StandardClient {
    id: ClientId,
    model: Box<dyn Model>,
    data: ClientData,
    parts: Arc<ClientParts>,
    attack: Option<Attack>,
}

impl StandardClient {
    /// A client `id` with its model instance and data, knowing the built-in algorithms.
    pub fn new(id: ClientId, model: Box<dyn Model>, data: ClientData) -> Self {
        Self::with_parts(id, model, data, crate::registry::builtin().client.clone())
    }

    /// A client with a given set of algorithm parts (built-in ones plus your own).
    pub fn with_parts(
        id: ClientId,
        model: Box<dyn Model>,
        data: ClientData,
        parts: Arc<ClientParts>,
    ) -> Self {
        Self {
            id,
            model,
            data,
            parts,
            attack: None,
        }
    }

    /// This client attacks (simulation, `[attack]`): `label-flip` trains on flipped
    /// labels, the other kinds replace the update it sends (`crate::attack`).
    pub fn with_attack(mut self, attack: Attack) -> Self {
        if attack.kind == AttackKind::LabelFlip {
            self.data.train = Arc::new(FlippedLabels(self.data.train.clone()));
        } else {
            self.attack = Some(attack);
        }
        self
    }

    /// The standard local round: the plan under its state mode, the hooks' terms, then
    /// the hooks' state updates.
    fn train_standard(&mut self, ins: &TrainIns, state: &mut LocalState) -> Result<TrainRes> {
        let hooks = self.parts.hooks_for(&ins.ext);
        let mut terms = Terms {
            prox_mu: ins.plan.prox_mu,
            ..Default::default()
        };
        for h in &hooks {
            h.prepare(ins, state, &mut terms)?;
        }
        let x = ins.params.as_slice();
        let mut params = (*ins.params).clone();
        let steps = ins.plan.steps_for(self.data.train.len());
        let rng = stream(ins.seed, ins.round as u64, self.id, Purpose::Shuffle);
        let mut reply = Extensions::new();
        let mut cl = crate::fedhyper::client_controller(ins)?;
        let mut own = match cl {
            Some(_) => None,
            None => crate::policies::curvature::step_controller(&ins.plan),
        };
        let controller: Option<&mut (dyn crate::local::StepController + 'static)> =
            match cl.as_mut() {
                Some(c) => Some(c),
                None => own.as_deref_mut(),
            };
        let mut report = run_local(
            self.model.as_mut(),
            self.data.train.as_ref(),
            &mut params,
            &ins.plan,
            steps,
            state.steps_done,
            rng,
            &ins.ext,
            state,
            &mut reply,
            GradientCorrection {
                proximal: Some((terms.prox_mu, x)),
                linear: terms.linear.as_deref(),
                clip: terms.clip,
            },
            controller,
        )?;
        if let Some(c) = &cl {
            report.ext.insert(c.report());
        }
        let mut delta = params.into_vec();
        for (d, x) in delta.iter_mut().zip(x) {
            *d -= x;
        }
        for h in &hooks {
            h.finish(&mut Finish {
                id: self.id,
                ins,
                state,
                delta: &delta,
                report: &report,
                reply: &mut reply,
                model: self.model.as_mut(),
                data: &self.data,
            })?;
        }
        report.update_norm = l2_norm(&delta);
        state.rounds_trained += 1;
        state.steps_done += steps as u64;
        Ok(TrainRes {
            delta: ParamTree::from_vec(ins.params.spec().clone(), delta)?,
            num_examples: self.data.train.len() as u64,
            report,
            ext: reply,
        })
    }

    /// Global model on the test split; the personalised model is the global model
    /// fine-tuned `finetune_steps` steps (`finetune`), or none (`personal-model`: without
    /// a recipe there is no personal model).
    fn evaluate_standard(&mut self, ins: &EvalIns, state: &LocalState) -> Result<EvalRes> {
        let personal = if ins.personalized == PersonalEval::Finetune
            && ins.finetune_steps > 0
            && !self.data.train.is_empty()
        {
            let mut cx = RecipeCx {
                id: self.id,
                model: self.model.as_mut(),
                data: &self.data,
            };
            Some(personal::finetune(
                &mut cx,
                (*ins.params).clone(),
                ins,
                state,
            )?)
        } else {
            None
        };
        evaluate_splits(
            self.model.as_mut(),
            &self.data,
            &ins.params,
            personal.as_ref(),
            ins.max_test_samples,
        )
    }
}

impl Client for StandardClient {
    fn train(&mut self, ins: &TrainIns, state: &mut LocalState) -> Result<TrainRes> {
        self.parts.check_handled(&ins.ext)?;
        // `privacy.rates = "local"`: the client sets its own rate.
        let local;
        let ins = match ins.ext.get::<LocalRate>() {
            Some(p) => {
                local = TrainIns {
                    plan: local_plan(p, &ins.plan, state)?,
                    ..ins.clone()
                };
                &local
            }
            None => ins,
        };
        let mut res = match self.parts.recipe_for(&ins.ext)? {
            Some(recipe) => {
                let mut cx = RecipeCx {
                    id: self.id,
                    model: self.model.as_mut(),
                    data: &self.data,
                };
                personal::train(recipe.as_ref(), &mut cx, ins, state)?
            }
            None => self.train_standard(ins, state)?,
        };
        crate::probe::report_signal(&mut res);
        finish_client(self.id, ins, &mut res, state, self.attack.as_ref())?;
        Ok(res)
    }

    fn exchange(
        &mut self,
        ins: &ExchangeIns,
        state: &mut LocalState,
        session: &mut Session,
    ) -> Result<Extensions> {
        self.parts
            .exchange_for(&ins.msg)?
            .exchange(self.id, ins, state, session)
    }

    fn evaluate(&mut self, ins: &EvalIns, state: &mut LocalState) -> Result<EvalRes> {
        self.parts.check_handled(&ins.ext)?;
        match self.parts.recipe_for(&ins.ext)? {
            Some(recipe) => {
                let mut cx = RecipeCx {
                    id: self.id,
                    model: self.model.as_mut(),
                    data: &self.data,
                };
                personal::evaluate(recipe.as_ref(), &mut cx, ins, state)
            }
            None => self.evaluate_standard(ins, state),
        }
    }
}
