//! Personalised algorithms (docs/algorithms.md Part E) on a tiny quadratic problem whose
//! steps can be worked out by hand.
//!
//! The model: parameters `w` (group `body`, 2 values) and `h` (group `head`, 1 value),
//! θ = [w, h]. A batch of samples x_s ∈ R³ has loss `mean_s ½‖θ − x_s‖²`, so the
//! gradient is `θ − mean(x)` and the Hessian is the identity. Every client's samples are
//! all equal to its target `c`, so every batch has gradient `θ − c`.

use fedpace_algos::apfl::{Apfl, ApflState};
use fedpace_algos::ditto::Ditto;
use fedpace_algos::fedbabu::FedBabu;
use fedpace_algos::fedper::{FedPerConfig, PartialShare};
use fedpace_algos::fedrep::FedRep;
use fedpace_algos::perfedavg::{PerFedAvg, PerFedAvgVariant};
use fedpace_algos::personal::{PersonalGroups, PersonalModel};
use fedpace_algos::pfedme::PFedMe;
use fedpace_algos::{PolicyConfig, StandardClient, StrategyConfig};
use fedpace_core::data::DenseDataset;
use fedpace_core::{
    Batch, Client, ClientData, ClientInfo, EvalIns, EvalStats, Extensions, Inputs, LocalState,
    LocalWork, Model, Payload, PersonalEval, RatePlan, TrainIns,
};
use fedpace_params::{ParamSpec, ParamTree};
use std::sync::Arc;

struct Quadratic {
    spec: Arc<ParamSpec>,
}

fn spec() -> Arc<ParamSpec> {
    Arc::new(
        ParamSpec::builder()
            .add("w", &[2], "body")
            .add("h", &[1], "head")
            .build()
            .unwrap(),
    )
}

impl Model for Quadratic {
    fn spec(&self) -> Arc<ParamSpec> {
        self.spec.clone()
    }
    fn init(&self, _seed: u64) -> fedpace_core::Result<ParamTree> {
        Ok(ParamTree::from_vec(self.spec.clone(), vec![0.0, 0.0, 0.0]).unwrap())
    }
    fn loss_and_grad(
        &mut self,
        params: &ParamTree,
        batch: &Batch,
        grad: &mut [f32],
    ) -> fedpace_core::Result<f32> {
        let Inputs::Dense { data, .. } = &batch.inputs else {
            unreachable!()
        };
        let n = batch.len() as f32;
        let mut loss = 0.0;
        for s in 0..batch.len() {
            for (i, t) in params.as_slice().iter().enumerate() {
                let d = t - data[s * 3 + i];
                loss += 0.5 * d * d / n;
                grad[i] += d / n;
            }
        }
        Ok(loss)
    }
    fn evaluate(&mut self, params: &ParamTree, batch: &Batch) -> fedpace_core::Result<EvalStats> {
        // "Correct" when every coordinate is within 0.5 of the sample.
        let Inputs::Dense { data, .. } = &batch.inputs else {
            unreachable!()
        };
        let mut st = EvalStats::default();
        for s in 0..batch.len() {
            let ok = params
                .as_slice()
                .iter()
                .enumerate()
                .all(|(i, t)| (t - data[s * 3 + i]).abs() < 0.5);
            st.count += 1;
            st.correct += u64::from(ok);
        }
        Ok(st)
    }
}

fn data(c: [f32; 3], n: usize) -> ClientData {
    let feats: Vec<f32> = (0..n).flat_map(|_| c).collect();
    let d = Arc::new(DenseDataset::new(feats, vec![3], vec![0; n], 1).unwrap());
    ClientData {
        train: d.clone(),
        test: d,
        validation: None,
    }
}

fn client(id: u64, c: [f32; 3]) -> StandardClient {
    StandardClient::new(id, Box::new(Quadratic { spec: spec() }), data(c, 8))
}

fn plan(lr: f32, steps: u32) -> RatePlan {
    RatePlan {
        base_lr: lr,
        group_multipliers: vec![],
        schedule: Default::default(),
        work: LocalWork::Steps(steps),
        max_steps: None,
        batch_size: 4,
        optimizer: Default::default(),
        state_mode: Default::default(),
        prox_mu: 0.0,
    }
}

fn tree(v: [f32; 3]) -> Arc<ParamTree> {
    Arc::new(ParamTree::from_vec(spec(), v.to_vec()).unwrap())
}

/// A personalised instruction's payloads: the recipe and the group masks.
fn personal<R: Payload>(recipe: R, personal: [bool; 2], frozen: [bool; 2]) -> Extensions {
    Extensions::new().with(recipe).with(PersonalGroups {
        personal: personal.to_vec(),
        frozen: frozen.to_vec(),
    })
}

fn ins(global: [f32; 3], plan: RatePlan, p: &Extensions, round: u32) -> TrainIns {
    let mut i = TrainIns::new(round, tree(global), plan, 7);
    i.ext = p.clone();
    i
}

fn eval_ins(global: [f32; 3], p: &Extensions, mode: PersonalEval, k: u32) -> EvalIns {
    EvalIns {
        round: 1,
        params: tree(global),
        finetune_steps: k,
        max_test_samples: None,
        plan: plan(0.5, k.max(1)),
        seed: 7,
        personalized: mode,
        ext: p.clone(),
    }
}

/// The client's personal model.
fn kept(state: &LocalState) -> &[f32] {
    &state
        .ext
        .get::<PersonalModel>()
        .expect("a personal model")
        .0
}

/// Client 0's personal model as its recipe defines it (evaluation mode `personal-model`).
fn personal_model(state: &LocalState, global: [f32; 3], p: &Extensions, c: [f32; 3]) -> Vec<f32> {
    let e = eval_ins(global, p, PersonalEval::PersonalModel, 0);
    let recipe = fedpace_algos::builtin()
        .client
        .recipe_for(&e.ext)
        .unwrap()
        .unwrap();
    let mut model = Quadratic { spec: spec() };
    let d = data(c, 8);
    let mut cx = fedpace_algos::parts::RecipeCx {
        id: 0,
        model: &mut model,
        data: &d,
    };
    recipe
        .personal_model(&mut cx, &e, state)
        .unwrap()
        .unwrap()
        .into_vec()
}

fn close(a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= tol, "{a:?} vs {b:?}");
    }
}

#[test]
fn fedper_never_sends_the_head_and_keeps_it_across_rounds() {
    let p = personal(PartialShare, [false, true], [false, false]);
    let mut c = client(0, [1.0, 2.0, 4.0]);
    let mut state = LocalState::default();
    // One SGD step at rate 0.5 from θ = 0: θ ← θ − 0.5 (θ − c) = c / 2.
    let r = c
        .train(&ins([0.0; 3], plan(0.5, 1), &p, 1), &mut state)
        .unwrap();
    assert_eq!(
        r.delta.as_slice(),
        &[0.5, 1.0, 0.0],
        "head delta must be zero"
    );
    assert_eq!(kept(&state)[2], 2.0, "trained head is kept on the client");
    // Round 2: the global model carries a different head value; the client ignores it and
    // continues from its own head (2.0): 2 − 0.5·(2 − 4) = 3.
    let r = c
        .train(&ins([0.0, 0.0, -9.0], plan(0.5, 1), &p, 2), &mut state)
        .unwrap();
    assert_eq!(r.delta.as_slice()[2], 0.0);
    assert_eq!(kept(&state)[2], 3.0);
    // Personal-model evaluation uses the global body and the client's head.
    let pm = personal_model(&state, [0.1, 0.2, -9.0], &p, [1.0, 2.0, 4.0]);
    assert_eq!(pm, vec![0.1, 0.2, 3.0]);
}

#[test]
fn lg_fedavg_keeps_the_body_and_sends_the_head() {
    let p = personal(PartialShare, [true, false], [false, false]);
    let mut c = client(0, [1.0, 2.0, 4.0]);
    let mut state = LocalState::default();
    let r = c
        .train(&ins([0.0; 3], plan(0.5, 1), &p, 1), &mut state)
        .unwrap();
    assert_eq!(r.delta.as_slice(), &[0.0, 0.0, 2.0]);
}

#[test]
fn fedrep_trains_head_then_body_with_their_own_rates() {
    // head multiplier 0.5, body 1; rate 0.5: head rate 0.25, body rate 0.5.
    let p = personal(
        FedRep {
            head_epochs: 1,
            body_epochs: 1,
        },
        [false, true],
        [false, false],
    );
    let mut pl = plan(0.5, 1);
    pl.group_multipliers = vec![1.0, 0.5];
    pl.batch_size = 8; // one step per epoch
    let mut c = client(0, [2.0, 2.0, 4.0]);
    let mut state = LocalState::default();
    let r = c.train(&ins([0.0; 3], pl, &p, 1), &mut state).unwrap();
    // Head phase: h = 0 − 0.25·(0 − 4) = 1, body frozen. Body phase: w = 0 − 0.5·(0 − 2) = 1.
    assert_eq!(r.delta.as_slice(), &[1.0, 1.0, 0.0]);
    assert_eq!(kept(&state)[2], 1.0);
    assert_eq!(r.report.steps, 2);
    // Σ rates: body 0.5 (body phase only), head 0.25 (head phase only).
    assert_eq!(r.report.rate_sum, vec![0.5, 0.25]);
}

#[test]
fn fedbabu_never_trains_the_head() {
    let p = personal(FedBabu, [false, false], [false, true]);
    let mut c = client(0, [2.0, 2.0, 4.0]);
    let mut state = LocalState::default();
    let r = c
        .train(&ins([0.0; 3], plan(0.5, 3), &p, 1), &mut state)
        .unwrap();
    // body: 3 steps of θ ← θ − 0.5(θ − 2): 1, 1.5, 1.75
    assert_eq!(r.delta.as_slice(), &[1.75, 1.75, 0.0]);
    assert!(state.ext.is_empty(), "FedBABU keeps no personal state");
    // Fine-tune-then-test trains the head too (K = 1 at rate 0.5 from the global model).
    let e = c
        .evaluate(
            &eval_ins([2.0, 2.0, 0.0], &p, PersonalEval::Finetune, 1),
            &mut state,
        )
        .unwrap();
    assert_eq!(e.global.correct, 0);
    assert_eq!(e.personalized.unwrap().correct, 0); // h = 2, still 2 away from 4
    let e = c
        .evaluate(
            &eval_ins([2.0, 2.0, 3.2], &p, PersonalEval::Finetune, 1),
            &mut state,
        )
        .unwrap();
    assert_eq!(e.global.correct, 0);
    assert_eq!(e.personalized.unwrap().correct, 8); // h = 3.6
}

#[test]
fn perfedavg_fo_and_hf_steps_match_the_hand_formula() {
    // Gradient θ − c on every batch, Hessian I:
    // FO: w ← w − β(1 − α)(w − c);  HF: w ← w − β(1 − α)²(w − c).
    let (alpha, beta) = (0.25f32, 0.5f32);
    for (variant, factor) in [
        (PerFedAvgVariant::Fo, 1.0 - alpha),
        (PerFedAvgVariant::Hf, (1.0 - alpha) * (1.0 - alpha)),
    ] {
        let p = personal(
            PerFedAvg {
                variant,
                meta_lr: beta,
                hf_delta: 1e-2,
            },
            [false, false],
            [false, false],
        );
        let mut c = client(0, [4.0, -4.0, 8.0]);
        let mut state = LocalState::default();
        let r = c
            .train(&ins([0.0; 3], plan(alpha, 1), &p, 1), &mut state)
            .unwrap();
        let expect: Vec<f32> = [4.0, -4.0, 8.0].iter().map(|x| beta * factor * x).collect();
        close(r.delta.as_slice(), &expect, 1e-4);
        assert!(state.ext.is_empty(), "Per-FedAvg is stateless");
        assert_eq!(r.report.rate_sum, vec![beta as f64; 2]);
    }
}

#[test]
fn pfedme_inner_problem_matches_the_closed_form() {
    // argmin_θ ½‖θ − c‖² + λ/2‖θ − w‖² + μ/2‖θ‖² = (c + λ w) / (1 + λ + μ).
    let (lambda, mu) = (15.0f32, 1e-3f32);
    let k = PFedMe {
        inner_steps: 500,
        lambda,
        personal_lr: 0.05,
        mu_reg: mu,
    };
    let c = [1.0f32, -2.0, 3.0];
    let w = tree([0.5, 0.5, -1.0]);
    let mut theta = (*w).clone();
    let d = data(c, 4);
    let batch = fedpace_core::Dataset::batch(d.train.as_ref(), &[0, 1, 2, 3]);
    let map_rates = vec![0.05f32, 0.05];
    let spec = spec();
    fedpace_algos::pfedme::inner_solve(
        &mut Quadratic { spec: spec.clone() },
        &batch,
        &mut theta,
        &w,
        k,
        &map_rates,
        &fedpace_algos::local::GroupMap::new(&spec),
    )
    .unwrap();
    let expect: Vec<f32> = c
        .iter()
        .zip(w.as_slice())
        .map(|(ci, wi)| (ci + lambda * wi) / (1.0 + lambda + mu))
        .collect();
    close(theta.as_slice(), &expect, 1e-5);
}

#[test]
fn pfedme_one_local_round_by_hand() {
    // K = 1, η_p = 0.1, λ = 15, μ = 0, η = 0.01, w = 0, c = [1, 1, 1]:
    // θ = 0 − 0.1(0 − 1 + 0) = 0.1; w_local = 0 − 0.01·15·(0 − 0.1) = 0.015.
    let p = personal(
        PFedMe {
            inner_steps: 1,
            lambda: 15.0,
            personal_lr: 0.1,
            mu_reg: 0.0,
        },
        [false, false],
        [false, false],
    );
    let mut c = client(0, [1.0, 1.0, 1.0]);
    let mut state = LocalState::default();
    let r = c
        .train(&ins([0.0; 3], plan(0.01, 1), &p, 1), &mut state)
        .unwrap();
    close(r.delta.as_slice(), &[0.015; 3], 1e-7);
    close(kept(&state), &[0.1; 3], 1e-7);
}

#[test]
fn ditto_large_lambda_stays_at_the_global_model_and_zero_lambda_is_local_training() {
    let global = [0.5f32, -0.5, 1.0];
    let c = [3.0f32, 3.0, 3.0];
    // λ = 1e6 with η_p λ = 0.5: v → (c + λ w)/(1 + λ) = w + O(1/λ).
    let p = personal(
        Ditto {
            lambda: 1e6,
            personal_lr: Some(0.5e-6),
        },
        [false, false],
        [false, false],
    );
    let mut cl = client(0, c);
    let mut state = LocalState::default();
    let r = cl
        .train(&ins(global, plan(0.5, 40), &p, 1), &mut state)
        .unwrap();
    close(kept(&state), &global, 1e-5);
    // The global half is plain local SGD: 40 halvings of the gap to c.
    let expect: Vec<f32> = global
        .iter()
        .zip(&c)
        .map(|(g, ci)| ci - g - (ci - g) * 0.5f32.powi(40))
        .collect();
    close(r.delta.as_slice(), &expect, 1e-5);
    // λ = 0, η_p = 0.5, one step from v = w: v = w − 0.5(w − c).
    let p = personal(
        Ditto {
            lambda: 0.0,
            personal_lr: None,
        },
        [false, false],
        [false, false],
    );
    let mut state = LocalState::default();
    cl.train(&ins(global, plan(0.5, 1), &p, 1), &mut state)
        .unwrap();
    let expect: Vec<f32> = global
        .iter()
        .zip(&c)
        .map(|(g, ci)| (g + ci) / 2.0)
        .collect();
    close(kept(&state), &expect, 1e-7);
}

#[test]
fn apfl_one_step_matches_a_hand_computation() {
    // w = 0, v = 0 (first participation: v from the global model), α = 0.5, η = 0.5,
    // η_α = 0.1, c = [2, 2, 2]. v̄ = 0; g_w = g = −c.
    // w ← 0 + 0.5·2 = 1;  v ← 0 + 0.5·0.5·2 = 0.5;  ⟨v − w, g⟩ = 0 ⇒ α stays 0.5.
    // Step 2 (same c): v̄ = 0.5·0.5 + 0.5·1 = 0.75; g_w = 1 − 2 = −1; g = 0.75 − 2 = −1.25;
    // ⟨v − w, g⟩ = 3·(0.5 − 1)(−1.25) = 1.875 ⇒ α = 0.5 − 0.1·1.875 = 0.3125;
    // w ← 1 + 0.5 = 1.5;  v ← 0.5 + 0.5·0.5·1.25 = 0.8125.
    let p = personal(
        Apfl {
            alpha_init: 0.5,
            alpha_lr: 0.1,
        },
        [false, false],
        [false, false],
    );
    let mut c = client(0, [2.0, 2.0, 2.0]);
    let mut state = LocalState::default();
    let r = c
        .train(&ins([0.0; 3], plan(0.5, 2), &p, 1), &mut state)
        .unwrap();
    close(r.delta.as_slice(), &[1.5; 3], 1e-6);
    close(kept(&state), &[0.8125; 3], 1e-6);
    let alpha = state.ext.get::<ApflState>().unwrap().alpha;
    assert!((alpha - 0.3125).abs() < 1e-6);
    // α survives into the next round and the personal model is α v + (1 − α) w.
    let pm = personal_model(&state, [1.0; 3], &p, [2.0; 3]);
    close(&pm, &[0.3125 * 0.8125 + 0.6875; 3], 1e-6);
}

/// A whole run through the round loop and the simulation grid: personal state survives
/// rounds and evaluation, and FedPer's global head never moves.
#[test]
fn fedper_through_the_round_loop_keeps_state_and_the_global_head() {
    use fedpace_core::round::{run, Observer, RoundRecord, RunOptions};
    struct Quiet;
    impl fedpace_core::Progress for Quiet {
        fn client_done(&self) {}
    }
    struct Obs(Quiet);
    impl Observer for Obs {
        fn progress(&self) -> &dyn fedpace_core::Progress {
            &self.0
        }
        fn round_finished(&mut self, _: &RoundRecord, _: &ParamTree) -> fedpace_core::Result<()> {
            Ok(())
        }
    }
    let targets = [[1.8f32, 1.8, 5.0], [2.2, 2.2, -5.0]];
    let pool: Vec<ClientInfo> = (0..2u64).map(|id| ClientInfo::new(id, 8, 8)).collect();
    let factory: fedpace_core::ClientFactory =
        Arc::new(move |id| Ok(Box::new(client(id, targets[id as usize])) as Box<dyn Client>));
    let mut grid = fedpace_sim::SimGrid::new(pool, factory, 2).unwrap();
    let cfg = StrategyConfig::new(FedPerConfig::default()).with_clients_per_round(2);
    let mut strategy = cfg
        .build(plan(0.5, 4), PolicyConfig::Constant.build())
        .unwrap()
        .into_sync()
        .unwrap();
    let init = ParamTree::from_vec(spec(), vec![0.0, 0.0, 0.25]).unwrap();
    let opts = RunOptions {
        rounds: 6,
        seed: 1,
        eval_every: 1,
        finetune_steps: 0,
        personalized: PersonalEval::PersonalModel,
        max_test_samples: None,
        keep_records: true,
        eval_clients: None,
    };
    let out = run(strategy.as_mut(), &mut grid, init, &opts, &mut Obs(Quiet)).unwrap();
    assert_eq!(
        out.global.as_slice()[2],
        0.25,
        "the global head never moves"
    );
    // Body → the mean of the targets (2); each head → its own target.
    close(&out.global.as_slice()[..2], &[2.0, 2.0], 0.05);
    for (id, t) in targets.iter().enumerate() {
        let s = grid.state_of(id as u64).unwrap();
        assert!((kept(&s)[2] - t[2]).abs() < 1e-3);
    }
    // The shared body (≈ 2) is within 0.5 of both clients' samples; only the personal
    // heads are: personalised accuracy 1, global accuracy 0.
    let e = out.final_eval;
    assert_eq!(e.global_accuracy, 0.0);
    assert_eq!(e.personalized_mean_accuracy, 1.0);
    assert_eq!(e.personalized_worst10_accuracy, 1.0);
}
