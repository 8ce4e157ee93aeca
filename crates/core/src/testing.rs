//! Test helpers for the save/restore contract every stateful part keeps
//! (docs/checkpoints.md, "Writing a stateful part").
//!
//! A part that keeps anything across rounds — a rate policy's running means, a
//! strategy stage's control variate, an arrival source's clock — implements
//! `save_state` / `restore_state` on its trait ([`RatePolicy`], `Strategy`,
//! `pipeline::ServerHooks`, `AsyncStrategy`, `ArrivalSource`). The contract: **k rounds,
//! save, restore into a freshly built part, n − k more rounds = n rounds straight**,
//! bit for bit; and restoring then saving again gives the same bytes. [`check_resumes`]
//! checks it for any part with a driver; [`check_policy_resumes`] drives a rate policy
//! through plans, reports, aggregation-side scaling and whole-round observations. The
//! strategy-level check (a grid, client states included) is
//! `fedpace_sim::testing::check_strategy_resumes`.
//!
//! [`plan`] is the plain rate plan tests build instructions with;
//! [`check_overwrites_grad`] checks a model's [`Model::overwrites_grad`] claim.

use crate::summary::{AggregateSummary, ClientAggregate, EvalSummary};
use crate::traits::{RatePolicy, RoundSummary};
use crate::{Batch, ClientInfo, Model, RatePlan, Result, TrainReport};
use fedpace_params::{ParamSpec, ParamTree};
use std::fmt::Debug;
use std::sync::Arc;

/// Checks [`Model::overwrites_grad`] on one batch: the model claims it, and a gradient
/// buffer full of NaN before `loss_and_grad` gives the same loss and gradient bits as a
/// zeroed one (so a local step may skip the zeroing). Panics naming `what` otherwise.
pub fn check_overwrites_grad(m: &mut dyn Model, params: &ParamTree, batch: &Batch, what: &str) {
    assert!(m.overwrites_grad(), "{what}: the model does not claim it");
    let len = params.as_slice().len();
    let (mut zeros, mut nans) = (vec![0.0f32; len], vec![f32::NAN; len]);
    let lz = m.loss_and_grad(params, batch, &mut zeros).unwrap();
    let ln = m.loss_and_grad(params, batch, &mut nans).unwrap();
    assert_eq!(lz.to_bits(), ln.to_bits(), "{what}: loss");
    let bits = |g: &[f32]| g.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&zeros), bits(&nans), "{what}: gradient");
}

/// A plain plan for tests: rate 0.1 for every group, one local SGD step on batches of
/// 10, optimiser state reset each round, no proximal term.
pub fn plan() -> RatePlan {
    RatePlan {
        base_lr: 0.1,
        group_multipliers: vec![],
        schedule: fedpace_optim::Schedule::default(),
        work: crate::LocalWork::Steps(1),
        max_steps: None,
        batch_size: 10,
        optimizer: fedpace_optim::OptimizerSpec::default(),
        state_mode: fedpace_optim::StateMode::Reset,
        prox_mu: 0.0,
    }
}

/// Checks the save/restore contract of a part built by `make` and driven one round at
/// a time by `drive(part, round)` (which returns what the round produced):
///
/// * rounds `1..=k` on one part, `save`, `restore` into a new part, rounds `k+1..=n`
///   there give what rounds `1..=n` on one part give;
/// * saving the restored part gives the bytes it was restored from;
/// * restoring bytes that are not a saved state is an error, not a silent default.
///
/// Panics (with the round) where the contract breaks.
pub fn check_resumes<P, O: PartialEq + Debug>(
    make: impl Fn() -> P,
    save: impl Fn(&P) -> Result<Vec<u8>>,
    restore: impl Fn(&mut P, &[u8]) -> Result<()>,
    mut drive: impl FnMut(&mut P, u32) -> O,
    k: u32,
    n: u32,
) {
    assert!(k < n, "check_resumes: k = {k} must be below n = {n}");
    let mut straight = make();
    let expected: Vec<O> = (1..=n).map(|r| drive(&mut straight, r)).collect();
    let mut first = make();
    for r in 1..=k {
        let got = drive(&mut first, r);
        assert_eq!(got, expected[r as usize - 1], "round {r} before the save");
    }
    let bytes = save(&first).expect("save_state");
    let mut second = make();
    restore(&mut second, &bytes).expect("restore_state of what save_state wrote");
    assert_eq!(
        save(&second).expect("save_state after a restore"),
        bytes,
        "saving a restored part gives other bytes than it was restored from"
    );
    for r in k + 1..=n {
        let got = drive(&mut second, r);
        assert_eq!(
            got,
            expected[r as usize - 1],
            "round {r} after a save at round {k} and a restore differs from the straight run"
        );
    }
    assert!(
        restore(&mut make(), b"\xff not a saved state").is_err(),
        "restoring junk must be an error"
    );
}

/// [`check_resumes`] for a rate policy: each round every client of a small pool (sizes
/// and device classes differ) is planned from `base`, reports a deterministic, varied
/// [`TrainReport`] that the policy observes, is weighted and scaled by
/// [`RatePolicy::adjust_aggregation`], and the round is observed whole (with an
/// evaluation every other round). The output compared is every plan, weight and scale.
///
/// ```
/// use fedpace_core::{RatePlan, RatePolicy, ClientInfo, Result};
/// struct Constant;
/// impl RatePolicy for Constant {
///     fn describe(&self) -> String { "constant".into() }
///     fn plan(&mut self, _r: u32, _c: &ClientInfo, base: &RatePlan) -> Result<RatePlan> {
///         Ok(base.clone())
///     }
/// }
/// let base = RatePlan {
///     base_lr: 0.1,
///     group_multipliers: vec![1.0, 1.0],
///     schedule: Default::default(),
///     work: fedpace_core::LocalWork::Steps(5),
///     max_steps: None,
///     batch_size: 10,
///     optimizer: Default::default(),
///     state_mode: Default::default(),
///     prox_mu: 0.0,
/// };
/// fedpace_core::testing::check_policy_resumes(|| Box::new(Constant), &base, 3, 6);
/// ```
pub fn check_policy_resumes(
    make: impl Fn() -> Box<dyn RatePolicy>,
    base: &RatePlan,
    k: u32,
    n: u32,
) {
    let groups = base.group_multipliers.len().max(1);
    let mut b = ParamSpec::builder();
    for g in 0..groups {
        b = b.add(&format!("w{g}"), &[2], &format!("g{g}"));
    }
    let spec = Arc::new(b.build().expect("a small spec"));
    let pool: Vec<ClientInfo> = (0..6u64)
        .map(|i| {
            let mut c = ClientInfo::new(i, 10 + 7 * i, 3 + i);
            c.device = Some(["slow", "fast"][(i % 2) as usize].to_string());
            c
        })
        .collect();
    let started = |p: &mut Box<dyn RatePolicy>| {
        p.start(&pool).expect("policy start");
    };
    let make = || {
        let mut p = make();
        started(&mut p);
        p
    };
    let drive = |p: &mut Box<dyn RatePolicy>, round: u32| {
        let mut plans = Vec::new();
        let mut reports = Vec::new();
        for c in &pool {
            let plan = p.plan(round, c, base).expect("plan");
            let x = (round as f64 + 1.0) * (c.id as f64 + 2.0);
            let report = TrainReport {
                steps: 3 + (round + c.id as u32) % 4,
                rate_sum: vec![plan.base_lr as f64 * 3.0; groups],
                loss_before: (2.0 + (x % 1.7)) as f32,
                loss_after: (1.0 + (x % 0.9)) as f32,
                train_loss: (1.5 + (x % 1.1)) as f32,
                update_norm: 0.1 + x % 2.3,
                grad_norm: 0.5 + x % 3.1,
                ext: Default::default(),
            };
            p.observe(round, c, &report);
            plans.push(plan);
            reports.push(report);
        }
        let pairs: Vec<(&ClientInfo, &TrainReport)> = pool.iter().zip(&reports).collect();
        let mut weights: Vec<f64> = pool.iter().map(|c| c.num_train as f64).collect();
        let mut scales = vec![1.0; pool.len()];
        p.adjust_aggregation(round, &pairs, &mut weights, &mut scales);
        let aggregate = AggregateSummary {
            clients: pool
                .iter()
                .zip(&weights)
                .map(|(c, w)| ClientAggregate {
                    client: c.id,
                    weight: *w,
                    cosine_to_aggregate: 0.5,
                })
                .collect(),
            normalized: false,
            step_norm: 0.1 * round as f64,
            server_lr: 1.0,
            ..Default::default()
        };
        let eval = EvalSummary {
            global_loss: 1.0 / round as f64,
            global_accuracy: 1.0 - 0.5 / round as f64,
            samples: 100,
            ..Default::default()
        };
        let global = ParamTree::from_vec(
            spec.clone(),
            (0..spec.total_len())
                .map(|i| i as f32 * 0.1 + round as f32)
                .collect(),
        )
        .expect("a small tree");
        p.observe_round(
            round,
            &RoundSummary {
                aggregate: &aggregate,
                eval: round.is_multiple_of(2).then_some(&eval),
                global: &global,
            },
        );
        (plans, weights, scales)
    };
    check_resumes(
        make,
        |p| p.save_state(),
        |p, b| p.restore_state(b),
        drive,
        k,
        n,
    );
}
