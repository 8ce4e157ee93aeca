//! The rate machinery through the real round loop (library level, no binary): client
//! rates reach clients, FedAdam over real rounds matches a hand re-derivation, kept and
//! server-initialised optimiser state, Δ-SGD reports the rates it used.

use fedpace_algos::fedopt::FedAdamConfig;
use fedpace_algos::local::{OptimizerStateDown, OptimizerStateUp};
use fedpace_algos::{PolicyConfig, StandardClient, StrategyConfig};
use fedpace_core::round::{Observer, RoundRecord, RunOptions};
use fedpace_core::{
    AggregateSummary, Client, ClientFactory, ClientId, ClientInfo, LocalState, LocalWork, Progress,
    RatePlan, Reply, TrainIns, TrainRes,
};
use fedpace_optim::{OptimizerSpec, StateMode};
use fedpace_params::ParamTree;
use fedpace_sim::SimGrid;
use std::sync::Arc;

struct NoProgress;
impl Progress for NoProgress {
    fn client_done(&self) {}
}

/// (global in, instructions, replies, global out) of one round.
type RoundTrace = (
    ParamTree,
    Vec<(ClientId, TrainIns)>,
    Vec<Reply<TrainRes>>,
    ParamTree,
);

/// Records every round's trace: (global in, instructions, replies, global out).
#[derive(Default)]
struct Recorder {
    rounds: Vec<RoundTrace>,
    summaries: Vec<AggregateSummary>,
}

impl Observer for Recorder {
    fn progress(&self) -> &dyn Progress {
        &NoProgress
    }
    fn wants_trace(&self) -> bool {
        true
    }
    fn trace(
        &mut self,
        _round: u32,
        global_in: &ParamTree,
        ins: &[(ClientId, TrainIns)],
        replies: &[Reply<TrainRes>],
        summary: &AggregateSummary,
        global_out: &ParamTree,
    ) -> fedpace_core::Result<()> {
        self.rounds.push((
            global_in.clone(),
            ins.to_vec(),
            replies.to_vec(),
            global_out.clone(),
        ));
        self.summaries.push(summary.clone());
        Ok(())
    }
    fn round_finished(&mut self, _r: &RoundRecord, _g: &ParamTree) -> fedpace_core::Result<()> {
        Ok(())
    }
}

struct Setup {
    grid: SimGrid,
    init: ParamTree,
    factory: ClientFactory,
    groups: Vec<String>,
}

fn setup(clients: usize) -> Setup {
    let data: fedpace_data::DataConfig = toml::from_str(&format!(
        "source = \"synthetic\"\nalpha = 1.0\nbeta = 1.0\nnum_clients = {clients}\n"
    ))
    .unwrap();
    let fed = fedpace_data::build(&data, 3, std::path::Path::new("data")).unwrap();
    let input = match &fed.sample_shape {
        fedpace_data::InputShape::Dense(s) => fedpace_nn::InputShape::Dense(s.clone()),
        _ => unreachable!(),
    };
    let models = fedpace_nn::factory(
        &fedpace_nn::ModelConfig::LogisticRegression,
        &input,
        fed.num_classes,
    )
    .unwrap();
    let model = models().unwrap();
    let groups = model.spec().groups().to_vec();
    let init = model.init(7).unwrap();
    let d = fed.data.clone();
    let pool: Vec<ClientInfo> = (0..d.num_clients())
        .map(|id| {
            let c = d.client(id).unwrap();
            ClientInfo::new(id as u64, c.train.len() as u64, c.test.len() as u64)
        })
        .collect();
    let factory: ClientFactory = Arc::new(move |id| {
        let c = d.client(id as usize)?;
        Ok(Box::new(StandardClient::new(id, models()?, c)) as Box<dyn Client>)
    });
    Setup {
        grid: SimGrid::new(pool, factory.clone(), 2).unwrap(),
        init,
        factory,
        groups,
    }
}

fn plan(lr: f32) -> RatePlan {
    RatePlan {
        base_lr: lr,
        group_multipliers: vec![],
        schedule: Default::default(),
        work: LocalWork::Steps(5),
        max_steps: None,
        batch_size: 10,
        optimizer: OptimizerSpec::default(),
        state_mode: StateMode::Reset,
        prox_mu: 0.0,
    }
}

fn run(
    s: &mut Setup,
    strategy: StrategyConfig,
    policy: PolicyConfig,
    base: RatePlan,
    rounds: u32,
) -> (fedpace_core::round::RunOutcome, Recorder) {
    let (out, rec) = try_run(s, strategy, policy, base, rounds);
    (out.unwrap(), rec)
}

fn try_run(
    s: &mut Setup,
    strategy: StrategyConfig,
    policy: PolicyConfig,
    base: RatePlan,
    rounds: u32,
) -> (
    fedpace_core::Result<fedpace_core::round::RunOutcome>,
    Recorder,
) {
    let mut st = strategy
        .build(base, policy.build_for(&s.groups).unwrap())
        .unwrap()
        .into_sync()
        .unwrap();
    let mut rec = Recorder::default();
    let opts = RunOptions {
        rounds,
        seed: 11,
        eval_every: 0,
        finetune_steps: 0,
        max_test_samples: None,
        keep_records: true,
        eval_clients: None,
        personalized: Default::default(),
    };
    let out = fedpace_core::run(st.as_mut(), &mut s.grid, s.init.clone(), &opts, &mut rec);
    (out, rec)
}

fn strategy(name: &str) -> StrategyConfig {
    StrategyConfig::named(name)
        .unwrap()
        .with_clients_per_round(4)
}

#[test]
fn a_zero_client_rate_leaves_the_model_unchanged_and_a_positive_one_does_not() {
    let mut s = setup(8);
    // A run in which no client ever has a rate above 0 cannot learn: it stops with an
    // error naming the cause once every round of it trained nothing.
    let (out, rec) = try_run(
        &mut s,
        strategy("fedavg"),
        PolicyConfig::Constant,
        plan(0.0),
        2,
    );
    let e = out.unwrap_err().to_string();
    assert!(
        e.starts_with(
            "round 2: no client trained in 2 consecutive round(s) (every client's rates were 0"
        ),
        "{e}"
    );
    assert_eq!(rec.rounds.len(), 2);
    for (global_in, ins, replies, global_out) in &rec.rounds {
        assert_eq!(global_in.as_slice(), s.init.as_slice());
        assert_eq!(global_out.as_slice(), s.init.as_slice());
        assert!(ins.iter().all(|(_, i)| i.plan.base_lr == 0.0));
        for r in replies {
            let res = r.result.as_ref().unwrap();
            assert!(res.delta.as_slice().iter().all(|d| *d == 0.0));
            assert_eq!(res.report.rate_sum, vec![0.0; s.groups.len()]);
        }
    }
    let (out, _) = run(
        &mut s,
        strategy("fedavg"),
        PolicyConfig::Constant,
        plan(0.05),
        1,
    );
    assert_ne!(out.global.as_slice(), s.init.as_slice());
}

#[test]
fn fedadam_over_real_rounds_matches_a_hand_rederivation() {
    for flower in [false, true] {
        let mut s = setup(8);
        let mut cfg = StrategyConfig::new(FedAdamConfig {
            flower_compatible: flower,
            ..Default::default()
        })
        .with_clients_per_round(4)
        .with_server_lr(0.03);
        if flower {
            // Flower does not normalise (the config makes `off` the default with the flag).
            cfg.round.normalize = fedpace_algos::Normalize::Off;
        }
        let (_, rec) = run(&mut s, cfg, PolicyConfig::Constant, plan(0.05), 3);
        let (b1, b2, tau, eta) = (0.9f64, 0.99f64, 1e-3f64, 0.03f64);
        let d = s.init.as_slice().len();
        let v0 = if flower { 0.0 } else { tau * tau };
        let (mut m, mut v) = (vec![0f64; d], vec![v0; d]);
        for (t, (x_in, _, replies, x_out)) in rec.rounds.iter().enumerate() {
            // Δ̄: example-weighted mean of the clients' deltas (equal rates: no normalisation)
            let ok: Vec<&TrainRes> = replies.iter().map(|r| r.result.as_ref().unwrap()).collect();
            let n: f64 = ok.iter().map(|r| r.num_examples as f64).sum();
            let round = (t + 1) as i32;
            let step = if flower {
                eta * (1.0 - b2.powi(round + 1)).sqrt() / (1.0 - b1.powi(round + 1))
            } else {
                eta
            };
            for i in 0..d {
                let mean: f64 = ok
                    .iter()
                    .map(|r| r.num_examples as f64 / n * r.delta.as_slice()[i] as f64)
                    .sum();
                m[i] = b1 * m[i] + (1.0 - b1) * mean;
                v[i] = b2 * v[i] + (1.0 - b2) * mean * mean;
                let expect = x_in.as_slice()[i] as f64 + step * m[i] / (v[i].sqrt() + tau);
                let got = x_out.as_slice()[i] as f64;
                assert!(
                    (got - expect).abs() <= 1e-5 * expect.abs().max(1e-2),
                    "flower={flower} round {round} coord {i}: {got} vs {expect}"
                );
            }
        }
        assert!(rec.summaries.iter().all(|s| s.server_lr == 0.03));
    }
}

#[test]
fn every_server_strategy_runs_and_logs_its_server_rate() {
    for name in ["fedavgm", "fedadagrad", "fedyogi", "fedexp", "fednova"] {
        let mut s = setup(8);
        let (out, rec) = run(
            &mut s,
            strategy(name),
            PolicyConfig::Constant,
            plan(0.05),
            2,
        );
        assert!(out.global.all_finite());
        let lr = rec.summaries[0].server_lr;
        match name {
            "fedexp" => assert!(lr >= 1.0),
            "fednova" | "fedavgm" => assert_eq!(lr, 1.0),
            _ => assert_eq!(lr, 0.1),
        }
        if name == "fednova" {
            assert!(rec.summaries.iter().all(|s| s.normalized));
        }
    }
}

#[test]
fn kept_state_survives_rounds_and_a_serde_checkpoint() {
    let s = setup(2);
    let mut p = plan(0.05);
    p.optimizer = OptimizerSpec::Adam {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
    };
    p.state_mode = StateMode::Keep;
    let ins = |round| TrainIns::new(round, Arc::new(s.init.clone()), p.clone(), 1);
    let mut state = LocalState::default();
    let mut c = (s.factory)(0).unwrap();
    c.train(&ins(1), &mut state).unwrap();
    let st = state.optimizer.clone().expect("kept");
    assert_eq!(st.children[0].count, 5);
    c.train(&ins(2), &mut state).unwrap();
    assert_eq!(state.optimizer.as_ref().unwrap().children[0].count, 10);
    // checkpoint: encode, decode, continue — identical to continuing in memory
    let bytes = fedpace_core::codec::encode_local_state(&state).unwrap();
    let mut restored =
        fedpace_core::codec::decode_local_state(&bytes, &fedpace_algos::builtin().codecs).unwrap();
    assert_eq!(restored, state);
    let a = (s.factory)(0).unwrap().train(&ins(3), &mut state).unwrap();
    let b = (s.factory)(0)
        .unwrap()
        .train(&ins(3), &mut restored)
        .unwrap();
    assert_eq!(a.delta.as_slice(), b.delta.as_slice());
    // and a reset client's state is not kept
    let mut fresh = LocalState::default();
    let mut reset = ins(1);
    reset.plan.state_mode = StateMode::Reset;
    (s.factory)(0).unwrap().train(&reset, &mut fresh).unwrap();
    assert!(fresh.optimizer.is_none());
}

#[test]
fn server_init_sends_the_average_of_returned_states() {
    let mut s = setup(8);
    let mut p = plan(0.05);
    p.optimizer = OptimizerSpec::Adam {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
    };
    p.state_mode = StateMode::ServerInit;
    let (_, rec) = run(&mut s, strategy("fedavg"), PolicyConfig::Constant, p, 2);
    let (_, ins1, replies1, _) = &rec.rounds[0];
    assert!(ins1.iter().all(|(_, i)| i.ext.is_empty()));
    let states: Vec<(&fedpace_optim::State, f64)> = replies1
        .iter()
        .map(|r| {
            let res = r.result.as_ref().unwrap();
            let s = res
                .ext
                .get::<OptimizerStateUp>()
                .expect("server-init client returned no state");
            (&s.0, res.num_examples as f64)
        })
        .collect();
    let n: f64 = states.iter().map(|s| s.1).sum();
    let (_, ins2, _, _) = &rec.rounds[1];
    let sent = &ins2[0]
        .1
        .ext
        .get::<OptimizerStateDown>()
        .expect("round 2 carries no state")
        .0;
    // Adam's first moment (buffer 0 of the adam child), averaged by hand
    let adam = &sent.children[0];
    for i in 0..adam.buffers[0].len() {
        let expect: f64 = states
            .iter()
            .map(|(s, w)| w / n * s.children[0].buffers[0][i] as f64)
            .sum();
        assert!((adam.buffers[0][i] as f64 - expect).abs() < 1e-6);
    }
}

#[test]
fn delta_sgd_adapts_the_rate_and_reports_what_it_used() {
    let s = setup(2);
    let mut p = plan(0.01);
    p.work = LocalWork::Steps(20);
    p.optimizer = OptimizerSpec::DeltaSgd {
        gamma: 2.0,
        delta: 0.1,
        eps: 1e-8,
    };
    let ins = TrainIns::new(1, Arc::new(s.init.clone()), p, 1);
    let res = (s.factory)(0)
        .unwrap()
        .train(&ins, &mut LocalState::default())
        .unwrap();
    // The step grows by √(1+δθ) while the smoothness bound allows: Σ rates ≠ 20·0.01.
    let lam = res.report.rate_sum[0];
    assert!((lam - 0.2).abs() > 1e-3, "Σ rates {lam}");
    assert!(res.report.loss_after < res.report.loss_before);
}
