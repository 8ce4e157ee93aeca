//! The round's stages shared by every synchronous algorithm (issue 11): aggregation-side
//! policies and server optimisers under SCAFFOLD and the personalised strategies, the
//! linear aggregation path, the round observation with evaluation, the step-controller
//! seam, and save/restore of every stage's state (N rounds straight = k rounds, a save,
//! a fresh strategy restored from it, N − k more).

mod common;
use common::*;
use fedpace_algos::fedhyper::{FedHyperClReport, FedHyperConfig};
use fedpace_algos::fedopt::ServerOptimizerConfig;
use fedpace_algos::{AggregationPath, Normalize, PolicyConfig, StrategyConfig};
use fedpace_core::round::{Observer, RoundRecord, RunOptions};
use fedpace_core::{
    ClientInfo, Grid, Progress, RatePlan, RatePolicy, RoundSummary, Strategy, TrainIns,
};
use fedpace_params::ParamTree;
use fedpace_sim::SimGrid;
use std::sync::{Arc, Mutex};

struct Quiet(Vec<RoundRecord>);
impl Observer for Quiet {
    fn progress(&self) -> &dyn Progress {
        &NoProgress
    }
    fn round_finished(&mut self, r: &RoundRecord, _g: &ParamTree) -> fedpace_core::Result<()> {
        self.0.push(r.clone());
        Ok(())
    }
}

fn opts(rounds: u32) -> RunOptions {
    RunOptions {
        rounds,
        seed: 4,
        eval_every: 1,
        finetune_steps: 0,
        personalized: Default::default(),
        max_test_samples: None,
        keep_records: false,
        eval_clients: None,
    }
}

fn build(s: &StrategyConfig, policy: &PolicyConfig, base: RatePlan) -> Box<dyn Strategy> {
    s.build(base, policy.build()).unwrap().into_sync().unwrap()
}

fn init() -> ParamTree {
    ParamTree::from_vec(spec(), vec![0.5, -1.0]).unwrap()
}

/// Runs `rounds` rounds of a fresh strategy on a fresh grid of 6 clients.
fn run(s: &mut dyn Strategy, rounds: u32) -> (ParamTree, Vec<RoundRecord>) {
    let mut grid = SimGrid::new(pool(6), factory(), 1).unwrap();
    let mut obs = Quiet(Vec::new());
    let out = fedpace_core::run(s, &mut grid, init(), &opts(rounds), &mut obs).unwrap();
    (out.global, obs.0)
}

/// `clip-updates` with a tiny first bound caps the step of SCAFFOLD and FedProx alike
/// (it did nothing outside FedAvg before the stages: silently).
#[test]
fn clip_updates_bounds_the_step_of_every_synchronous_strategy() {
    let clip: PolicyConfig =
        serde_json::from_str(r#"{"name": "clip-updates", "initial": 1e-3, "lr": 0.0}"#).unwrap();
    for name in ["fedavg", "fedprox", "scaffold", "fednova", "fedadam"] {
        let s = StrategyConfig::named(name)
            .unwrap()
            .with_clients_per_round(3);
        let (_, recs) = run(build(&s, &clip, plan(0.1, 4)).as_mut(), 1);
        let step = recs[0].aggregate.step_norm;
        // Every update is clipped to 1e-3, so their average is within 1e-3·η_g (FedAdam's
        // first step is η_g·sign-like: bounded by η_g per coordinate instead).
        let bound = if name == "fedadam" {
            0.1 * 2f64.sqrt()
        } else {
            1e-3
        };
        assert!(step <= bound * (1.0 + 1e-6), "{name}: step {step}");
        let (_, free) = run(build(&s, &PolicyConfig::Constant, plan(0.1, 4)).as_mut(), 1);
        assert!(
            free[0].aggregate.step_norm > 10.0 * step.min(1e-3),
            "{name}"
        );
    }
}

/// SCAFFOLD with a server Adam: the configured η_g is the server rate and the model is
/// not SGD's (a server optimiser was impossible under SCAFFOLD before).
#[test]
fn scaffold_takes_any_server_optimizer() {
    let base = StrategyConfig::named("scaffold")
        .unwrap()
        .with_clients_per_round(3);
    let adam = base
        .clone()
        .with_server_optimizer(ServerOptimizerConfig::Adam {
            beta1: 0.9,
            beta2: 0.99,
            tau: 1e-3,
            flower_compatible: false,
        });
    assert_eq!(adam.server_lr(), 0.1);
    let (x_sgd, _) = run(
        build(&base, &PolicyConfig::Constant, plan(0.1, 3)).as_mut(),
        2,
    );
    let (x_adam, recs) = run(
        build(&adam, &PolicyConfig::Constant, plan(0.1, 3)).as_mut(),
        2,
    );
    assert!(recs.iter().all(|r| r.aggregate.server_lr == 0.1));
    assert_ne!(x_sgd.as_slice(), x_adam.as_slice());
    // `server_optimizer` is not a key of the algorithms that are a server optimiser.
    let e = StrategyConfig::from_map(
        serde_json::from_str(r#"{"name": "fedyogi", "server_optimizer": {"name": "adam"}}"#)
            .unwrap(),
    )
    .unwrap_err();
    assert!(
        e.starts_with("strategy.server_optimizer: not used by fedyogi"),
        "{e}"
    );
}

/// The linear path (clients pre-scale, the server sums) gives the per-client path's
/// model up to rounding, with and without normalisation, for FedAvg, SCAFFOLD and a
/// personalised recipe.
#[test]
fn the_linear_path_matches_the_per_client_path() {
    for name in ["fedavg", "scaffold", "pfedme"] {
        for normalize in [Normalize::Off, Normalize::On] {
            let s = StrategyConfig::named(name)
                .unwrap()
                .with_clients_per_round(4)
                .with_normalize(normalize);
            let lin = s.clone().with_aggregation(AggregationPath::Linear);
            s.check_combination(
                &PolicyConfig::Constant,
                &Default::default(),
                Default::default(),
            )
            .unwrap();
            lin.check_combination(
                &PolicyConfig::Constant,
                &Default::default(),
                Default::default(),
            )
            .unwrap();
            // by-data-size makes rates differ, so normalisation matters.
            let policy: PolicyConfig =
                serde_json::from_str(r#"{"name": "by-data-size", "gamma": -1.0}"#).unwrap();
            let mut pool6 = pool(6);
            for c in &mut pool6 {
                c.num_train = 3 + c.id;
            }
            let go = |cfg: &StrategyConfig| {
                let mut st = build(cfg, &policy, plan(0.1, 3));
                let mut grid = SimGrid::new(pool6.clone(), factory(), 1).unwrap();
                let mut obs = Quiet(Vec::new());
                fedpace_core::run(st.as_mut(), &mut grid, init(), &opts(3), &mut obs)
                    .unwrap()
                    .global
            };
            let (a, b) = (go(&s), go(&lin));
            for (x, y) in a.as_slice().iter().zip(b.as_slice()) {
                assert!(
                    (x - y).abs() <= 1e-5 * y.abs().max(1.0),
                    "{name} {normalize:?}: {a:?} vs {b:?}"
                );
            }
        }
    }
    // What cannot be linear is refused in one line.
    let lin = StrategyConfig::named("fedavg")
        .unwrap()
        .with_aggregation(AggregationPath::Linear);
    let e = lin
        .check_combination(
            &PolicyConfig::Constant,
            &Default::default(),
            Default::default(),
        )
        .unwrap_err();
    assert!(
        e.starts_with(
            "strategy.normalize = \"auto\": not supported with strategy.aggregation = \"linear\""
        ),
        "{e}"
    );
    let lin = lin.with_normalize(Normalize::Off);
    let e = lin
        .check_combination(
            &serde_json::from_str(r#"{"name": "inverse-variance"}"#).unwrap(),
            &Default::default(),
            Default::default(),
        )
        .unwrap_err();
    assert!(
        e.starts_with("policy inverse-variance: not supported with strategy.aggregation"),
        "{e}"
    );
    let e = StrategyConfig::named("feddyn")
        .unwrap()
        .with_normalize(Normalize::Off)
        .with_aggregation(AggregationPath::Linear)
        .check_combination(
            &PolicyConfig::Constant,
            &Default::default(),
            Default::default(),
        )
        .unwrap_err();
    assert!(e.contains("not supported by feddyn"), "{e}");
}

/// A policy sees each finished round with the aggregate and, on evaluated rounds, the
/// evaluation: the reward signal of learned controllers.
#[test]
fn the_policy_observes_every_round_with_its_evaluation() {
    #[derive(Default)]
    struct Seen(Mutex<Vec<(u32, bool, f64)>>);
    struct Spy(Arc<Seen>);
    impl RatePolicy for Spy {
        fn describe(&self) -> String {
            "spy".into()
        }
        fn plan(
            &mut self,
            _r: u32,
            _c: &ClientInfo,
            base: &RatePlan,
        ) -> fedpace_core::Result<RatePlan> {
            Ok(base.clone())
        }
        fn observe_round(&mut self, round: u32, s: &RoundSummary<'_>) {
            self.0
                 .0
                .lock()
                .unwrap()
                .push((round, s.eval.is_some(), s.aggregate.step_norm));
        }
    }
    let seen = Arc::new(Seen::default());
    let mut st = StrategyConfig::named("scaffold")
        .unwrap()
        .with_clients_per_round(2)
        .build(plan(0.1, 2), Box::new(Spy(seen.clone())))
        .unwrap()
        .into_sync()
        .unwrap();
    let mut grid = SimGrid::new(pool(4), factory(), 1).unwrap();
    let mut o = opts(4);
    o.eval_every = 2;
    fedpace_core::run(st.as_mut(), &mut grid, init(), &o, &mut Quiet(Vec::new())).unwrap();
    let v = seen.0.lock().unwrap().clone();
    assert_eq!(
        v.iter().map(|x| (x.0, x.1)).collect::<Vec<_>>(),
        vec![(1, false), (2, true), (3, false), (4, true)]
    );
    assert!(v.iter().all(|x| x.2 > 0.0));
}

/// Every stage's state survives a save and a restore into a freshly built strategy:
/// N rounds straight equal k rounds, save, restore, N − k rounds, bit for bit (server
/// optimiser moments, SCAFFOLD's c, FedDyn's h, server-initialised client state, and the
/// policy's per-client statistics). The clients' states stay in the grid.
#[test]
fn every_stage_state_survives_save_and_restore() {
    let adam = ServerOptimizerConfig::Adam {
        beta1: 0.9,
        beta2: 0.99,
        tau: 1e-3,
        flower_compatible: false,
    };
    let policy: PolicyConfig = serde_json::from_str(
        r#"{"name": "compose", "policies": [{"name": "grad-norm-ratio"}, {"name": "inverse-variance"}]}"#,
    )
    .unwrap();
    let mut server_init = plan(0.1, 3);
    server_init.optimizer = serde_json::from_str(r#"{"name": "adam"}"#).unwrap();
    server_init.state_mode = fedpace_optim::StateMode::ServerInit;
    for (s, base) in [
        (
            StrategyConfig::named("scaffold")
                .unwrap()
                .with_server_optimizer(adam.clone()),
            plan(0.1, 3),
        ),
        (StrategyConfig::named("feddyn").unwrap(), plan(0.1, 3)),
        (StrategyConfig::named("fedavg").unwrap(), server_init),
        (StrategyConfig::named("fedex").unwrap(), plan(0.1, 3)),
        (StrategyConfig::named("fedhyper").unwrap(), plan(0.1, 3)),
        (StrategyConfig::named("meta-rates").unwrap(), plan(0.1, 3)),
        (
            StrategyConfig::new(FedHyperConfig {
                server_local: true,
                client_local: true,
                ..Default::default()
            }),
            plan(0.1, 3),
        ),
    ] {
        let s = s.with_clients_per_round(3);
        let (n, k) = (5, 2);
        let straight = {
            let mut st = build(&s, &policy, base.clone());
            run(st.as_mut(), n).0
        };
        let mut grid = SimGrid::new(pool(6), factory(), 1).unwrap();
        let mut first = build(&s, &policy, base.clone());
        let mid = fedpace_core::run(
            first.as_mut(),
            &mut grid,
            init(),
            &opts(k),
            &mut Quiet(Vec::new()),
        )
        .unwrap()
        .global;
        let saved = first.save_state().unwrap();
        let mut second = build(&s, &policy, base.clone());
        second.restore_state(&saved).unwrap();
        // Rounds k+1..=n: the round loop counts from 1, so run the remaining rounds by hand.
        let mut x = mid;
        let pool = grid.pool();
        for round in k + 1..=n {
            let ins: Vec<(u64, TrainIns)> = second
                .configure_train(round, &Arc::new(x.clone()), pool.as_ref(), 4)
                .unwrap();
            let replies = grid.train(ins, &NoProgress);
            second
                .aggregate_train(round, &mut x, &replies, pool.as_ref())
                .unwrap();
        }
        assert_eq!(x.as_slice(), straight.as_slice(), "{}", s.name());
        // A fresh strategy without the saved state does not continue the same way.
        assert!(build(&s, &policy, base).restore_state(b"junk").is_err());
    }
}

/// FedHyper-CL end to end: every client schedules its own rate inside the round, reports
/// its factors, and the rates it really used reach the normalisation: with plain SGD at
/// 0.1 for 3 steps, Λ = 0.1·(b_0 + b_1 + b_2) = 0.3 × the mean factor. The server
/// reports the clients' mean factor (`learned`).
#[test]
fn fedhyper_cl_clients_schedule_and_report_their_rates() {
    let s = StrategyConfig::new(FedHyperConfig {
        client_local: true,
        ..Default::default()
    })
    .with_clients_per_round(3);
    let (_, recs) = run(build(&s, &PolicyConfig::Constant, plan(0.1, 3)).as_mut(), 2);
    let mut moved = false;
    for rec in &recs {
        assert!(rec
            .aggregate
            .learned
            .contains_key("fedhyper.cl_factor_mean"));
        for c in rec.clients.iter() {
            let r = c.report.as_ref().unwrap();
            let cl = r.ext.get::<FedHyperClReport>().unwrap();
            let want = 0.3 * cl.mean_factor;
            assert!(
                (r.rate_sum[0] - want).abs() < 1e-6,
                "{} vs {want}",
                r.rate_sum[0]
            );
            moved |= (cl.mean_factor - 1.0).abs() > 1e-6;
        }
    }
    assert!(moved, "no client's factor moved from 1");
}

/// The step-controller seam: any controller plugged into the local loop scales the
/// rates it reports; Δ-SGD is one (a plan asking for `delta-sgd` without a controller is
/// an error, never plain SGD).
#[test]
fn a_step_controller_scales_the_rates_the_loop_reports() {
    use fedpace_algos::local::{local_train_controlled, GradientCorrection, StepController};
    struct Double;
    impl StepController for Double {
        fn factor(
            &mut self,
            _m: &mut dyn fedpace_core::Model,
            _b: &fedpace_core::Batch,
            _p: &ParamTree,
            _g: &[f32],
        ) -> fedpace_core::Result<f64> {
            Ok(2.0)
        }
    }
    let data: Arc<dyn fedpace_core::Dataset> = Arc::new(Points(points(1)));
    let train = |c: Option<&mut (dyn StepController + 'static)>, p: &RatePlan| {
        let mut x = init();
        local_train_controlled(
            &mut Quadratic,
            data.as_ref(),
            &mut x,
            p,
            4,
            0,
            rand::rngs::mock::StepRng::new(0, 1),
            &mut None,
            GradientCorrection::default(),
            c,
        )
        .map(|r| r.rate_sum[0])
    };
    assert!((train(None, &plan(0.1, 4)).unwrap() - 0.4).abs() < 1e-6);
    assert!((train(Some(&mut Double), &plan(0.1, 4)).unwrap() - 0.8).abs() < 1e-6);
    let mut dsgd = plan(0.1, 4);
    dsgd.optimizer = serde_json::from_str(r#"{"name": "delta-sgd"}"#).unwrap();
    let e = train(None, &dsgd).unwrap_err().to_string();
    assert!(e.starts_with("plan.optimizer = delta-sgd"), "{e}");
}

/// A payload no part of the client handles is an error of that client, not ignored.
#[test]
fn an_instruction_payload_without_a_client_part_is_an_error() {
    use fedpace_core::Client;
    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Stranger;
    impl fedpace_core::Payload for Stranger {
        const NAME: &'static str = "test-stranger";
    }
    let mut ins = TrainIns::new(1, Arc::new(init()), plan(0.1, 2), 0);
    ins.ext.insert(Stranger);
    let e = client(0)
        .train(&ins, &mut Default::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"test-stranger\""), "{e}");
}
