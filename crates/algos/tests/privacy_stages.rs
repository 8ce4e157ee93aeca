//! Issue 14: differential privacy, private rates, secure aggregation, robust aggregation,
//! compression and attacks as stages of real rounds (docs/privacy.md, "Wiring"): the
//! simulation grid, the standard client and the pipeline, on a toy federation whose
//! updates can be recomputed from the trace.

use fedpace_algos::attack::{AttackConfig, AttackKind};
use fedpace_algos::local::nominal_rate_sums;
use fedpace_algos::pipeline::NoHooks;
use fedpace_algos::stages::compress::{CompressionConfig, CompressionResidual};
use fedpace_algos::stages::dp::{NoisePlacement, PrivacyConfig, RatesMode};
use fedpace_algos::stages::rates::ReleasedStatistics;
use fedpace_algos::stages::robust::RobustConfig;
use fedpace_algos::stages::secure::{
    SecureConfig, SecureForwarded, SecureKeys, SecureMasked, SecurePending, SecureSetup,
    SecureShares, SecureUnmask,
};
use fedpace_algos::{
    AggregationPath, AlgorithmConfig, Built, Normalize, Pipeline, PolicyConfig, Sampling, Settings,
    StagesConfig, StandardClient, StrategyConfig,
};
use fedpace_core::data::DenseDataset;
use fedpace_core::{
    AggregateSummary, Batch, Client, ClientData, ClientFactory, ClientId, ClientInfo, EvalStats,
    ExchangeIns, Extensions, Grid, Inputs, LocalState, LocalWork, Model, Progress, RatePlan, Reply,
    Session, Strategy, TrainIns, TrainRes,
};
use fedpace_optim::{OptimizerSpec, StateMode};
use fedpace_params::{l2_norm, ParamSpec, ParamTree};
use fedpace_privacy::accountant::epsilon_for;
use fedpace_privacy::dp::AdaptiveClipConfig;
use fedpace_privacy::Randomness;
use fedpace_sim::SimGrid;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

// ---------------------------------------------------------------------------------------
// A toy federation: θ = [w (body, D−1 values), h (head)], loss ½‖θ − x‖² per sample.

struct Quadratic(Arc<ParamSpec>);

fn spec(d: usize) -> Arc<ParamSpec> {
    Arc::new(
        ParamSpec::builder()
            .add("w", &[d - 1], "body")
            .add("h", &[1], "head")
            .build()
            .unwrap(),
    )
}

impl Model for Quadratic {
    fn spec(&self) -> Arc<ParamSpec> {
        self.0.clone()
    }
    fn init(&self, _seed: u64) -> fedpace_core::Result<ParamTree> {
        Ok(ParamTree::zeros(self.0.clone()))
    }
    fn loss_and_grad(
        &mut self,
        p: &ParamTree,
        b: &Batch,
        g: &mut [f32],
    ) -> fedpace_core::Result<f32> {
        let Inputs::Dense { data, .. } = &b.inputs else {
            unreachable!()
        };
        let d = p.as_slice().len();
        let n = b.len() as f32;
        let mut loss = 0.0;
        for x in data.chunks(d) {
            for (i, t) in p.as_slice().iter().enumerate() {
                let e = t - x[i];
                loss += 0.5 * e * e / n;
                g[i] += e / n;
            }
        }
        Ok(loss)
    }
    fn evaluate(&mut self, p: &ParamTree, b: &Batch) -> fedpace_core::Result<EvalStats> {
        let mut g = vec![0.0; p.as_slice().len()];
        let l = self.loss_and_grad(p, b, &mut g)?;
        Ok(EvalStats {
            loss_sum: (l * b.len() as f32) as f64,
            correct: 0,
            count: b.len() as u64,
        })
    }
}

/// Client k: 4 + 2(k mod 4) samples around its own target (scaled by `far` for client
/// `far_client`).
fn data(k: u64, d: usize, far: Option<(u64, f32)>) -> ClientData {
    let n = 4 + 2 * (k % 4) as usize;
    let s = match far {
        Some((c, f)) if c == k => f,
        _ => 1.0,
    };
    let feats: Vec<f32> = (0..n)
        .flat_map(|i| {
            (0..d).map(move |j| {
                s * (1.0 + k as f32 * 0.3 + (j % 5) as f32 * 0.2 - i as f32 * 0.1)
                    * if j % 2 == 0 { 1.0 } else { -1.0 }
            })
        })
        .collect();
    let labels: Vec<u32> = (0..n).map(|i| (i % 2) as u32).collect();
    let ds = Arc::new(DenseDataset::new(feats, vec![d], labels, 2).unwrap());
    ClientData {
        train: ds.clone(),
        test: ds.clone(),
        // The learned controllers (fedex, fedhyper, meta-rates) train on validation splits.
        validation: Some(ds),
    }
}

const N: u64 = 12;

fn pool() -> Vec<ClientInfo> {
    (0..N)
        .map(|k| ClientInfo::new(k, 4 + 2 * (k % 4), 4 + 2 * (k % 4)))
        .collect()
}

/// How a federation differs from the plain one.
#[derive(Clone, Default)]
struct Variant {
    d: usize,
    /// This client fails (a neighbouring federation without it).
    absent: Option<u64>,
    /// This client's data is scaled.
    far: Option<(u64, f32)>,
    /// These clients attack.
    attack: Option<(BTreeSet<u64>, AttackConfig)>,
    /// Records secure aggregation's inputs.
    spy: Option<Spy>,
}

fn factory(v: Variant) -> ClientFactory {
    let d = v.d.max(3);
    Arc::new(move |k| {
        if v.absent == Some(k) {
            return Err(fedpace_core::Error::Backend("absent".into()));
        }
        let mut c = StandardClient::new(k, Box::new(Quadratic(spec(d))), data(k, d, v.far));
        if let Some((who, a)) = &v.attack {
            if who.contains(&k) {
                c = c.with_attack(a.attack());
            }
        }
        Ok(match &v.spy {
            Some(s) => Box::new(SpyClient {
                inner: c,
                spy: s.clone(),
                id: k,
            }) as Box<dyn Client>,
            None => Box::new(c) as Box<dyn Client>,
        })
    })
}

fn grid(v: Variant) -> SimGrid {
    SimGrid::new(pool(), factory(v), 2).unwrap()
}

fn plan(lr: f32) -> RatePlan {
    RatePlan {
        base_lr: lr,
        group_multipliers: vec![],
        schedule: Default::default(),
        work: LocalWork::Steps(3),
        max_steps: None,
        batch_size: 4,
        optimizer: OptimizerSpec::default(),
        state_mode: StateMode::Reset,
        prox_mu: 0.0,
    }
}

fn settings(m: usize, aggregation: AggregationPath, stages: StagesConfig) -> Settings {
    Settings {
        sampling: Sampling::Count(m),
        server_lr: 1.0,
        normalize: Normalize::On,
        aggregation,
        base_plan: plan(0.1),
        stages,
    }
}

/// Client 3 trains at 4× the rate of the others, the rest by data size.
fn rates_policy() -> PolicyConfig {
    serde_json::from_str(
        r#"{"name": "compose", "policies": [{"name": "by-data-size"}], "overrides": {"3": 4.0}}"#,
    )
    .unwrap()
}

fn pipeline(s: Settings, policy: &PolicyConfig) -> Pipeline {
    let groups = vec!["body".to_string(), "head".to_string()];
    Pipeline::new(
        "fedavg",
        s,
        policy.build_for(&groups).unwrap(),
        Box::new(NoHooks),
    )
}

fn sim(seed: u64) -> Randomness {
    Randomness::Simulation { seed }
}

fn dp(clip: f64, z: f64) -> PrivacyConfig {
    PrivacyConfig {
        clip: Some(clip),
        noise_multiplier: Some(z),
        ..Default::default()
    }
}

struct NoProgress;
impl Progress for NoProgress {
    fn client_done(&self) {}
}

/// One exchange step: what the server sent, what came back.
type Exchange = (Vec<(ClientId, ExchangeIns)>, Vec<Reply<Extensions>>);

/// One round as `fedpace_core::run` drives it, with the trace kept.
struct Round {
    ins: Vec<(ClientId, TrainIns)>,
    replies: Vec<Reply<TrainRes>>,
    exchanges: Vec<Exchange>,
    summary: AggregateSummary,
    before: ParamTree,
    after: ParamTree,
}

fn round(
    s: &mut dyn Strategy,
    grid: &mut dyn Grid,
    x: &mut ParamTree,
    r: u32,
) -> fedpace_core::Result<Round> {
    let pool = grid.pool();
    let before = x.clone();
    let ins = s.configure_train(r, &Arc::new(x.clone()), pool.as_ref(), 7)?;
    let replies = grid.train(ins.clone(), &NoProgress);
    let mut exchanges = Vec::new();
    let mut answers = None;
    loop {
        let msgs = s.exchange(r, &replies, answers.take())?;
        if msgs.is_empty() {
            break;
        }
        let got = grid.exchange(msgs.clone(), &NoProgress);
        exchanges.push((msgs, got.clone()));
        answers = Some(got);
    }
    let summary = s.aggregate_train(r, x, &replies, pool.as_ref())?;
    Ok(Round {
        ins,
        replies,
        exchanges,
        summary,
        before,
        after: x.clone(),
    })
}

fn rounds(
    s: &mut dyn Strategy,
    grid: &mut dyn Grid,
    n: u32,
) -> fedpace_core::Result<(ParamTree, Vec<Round>)> {
    let mut x = ParamTree::from_vec(spec(3), vec![0.5, -0.5, 0.25]).unwrap();
    let mut out = Vec::new();
    for r in 1..=n {
        out.push(round(s, grid, &mut x, r)?);
    }
    Ok((x, out))
}

fn step(r: &Round) -> Vec<f64> {
    r.after
        .as_slice()
        .iter()
        .zip(r.before.as_slice())
        .map(|(a, b)| *a as f64 - *b as f64)
        .collect()
}

fn dist(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// Λ_ref of the toy's base plan (3 fixed steps of plain SGD).
fn reference() -> Vec<f64> {
    nominal_rate_sums(&plan(0.1), 2, 3)
}

/// d_k = clip_C(Δ_k ⊙ Λ_ref/Λ_k), recomputed from a reply.
fn clipped(res: &TrainRes, c: f64) -> Vec<f64> {
    let lref = reference();
    let spec = res.delta.spec();
    let mut d: Vec<f64> = res.delta.as_slice().iter().map(|v| *v as f64).collect();
    for e in spec.entries() {
        let f = lref[e.group] / res.report.rate_sum[e.group];
        d[e.range()].iter_mut().for_each(|v| *v *= f);
    }
    let n = d.iter().map(|v| v * v).sum::<f64>().sqrt();
    if n > c {
        d.iter_mut().for_each(|v| *v *= c / n);
    }
    d
}

// ---------------------------------------------------------------------------------------
// Differential privacy.

/// The sensitivity bound in a real run, checked from the trace: every accepted client's
/// contribution, recomputed independently (normalised to the reference rate, then
/// clipped), has norm ≤ C whatever its rate (client 3 trains at 4×, the others by data
/// size), and the server's aggregate is exactly their sum over qW — nothing else enters.
#[test]
fn every_clipped_contribution_respects_the_bound_in_a_dp_run_with_personalised_rates() {
    let c = 0.05;
    let stages = StagesConfig {
        privacy: Some(dp(c, 0.0)),
        randomness: sim(1),
        ..Default::default()
    };
    let mut p = pipeline(
        settings(6, AggregationPath::PerClient, stages),
        &rates_policy(),
    );
    let mut g = grid(Variant::default());
    let (_, trace) = rounds(&mut p, &mut g, 4).unwrap();
    let q = 6.0 / N as f64;
    let mut rates_seen = BTreeSet::new();
    let mut clipped_some = false;
    for r in &trace {
        let mut sum = [0f64; 3];
        for reply in &r.replies {
            let res = reply.result.as_ref().unwrap();
            let raw = l2_norm(res.delta.as_slice());
            let d = clipped(res, c);
            let n = d.iter().map(|v| v * v).sum::<f64>().sqrt();
            assert!(n <= c * (1.0 + 1e-6), "contribution {n} > C = {c}");
            clipped_some |= raw * reference()[0] / res.report.rate_sum[0] > c;
            rates_seen.insert((res.report.rate_sum[0] * 1e6) as i64);
            sum.iter_mut().zip(&d).for_each(|(s, v)| *s += v);
        }
        let want: Vec<f64> = sum.iter().map(|s| s / (q * N as f64)).collect();
        let got = step(r);
        assert!(dist(&got, &want) < 1e-6, "{got:?} vs {want:?}");
        let priv_ = r.summary.privacy.as_ref().unwrap();
        assert_eq!(priv_.clip, c);
        assert_eq!(priv_.noise_std, 0.0);
    }
    assert!(clipped_some, "no update was large enough to be clipped");
    assert!(
        rates_seen.len() >= 3,
        "rates did not differ: {rates_seen:?}"
    );
}

/// Neighbouring federations (with and without client 3, whose data is far away and whose
/// rate is 4×), same seed and so the same Poisson cohort and noise draws: the round's
/// aggregates differ by at most the sensitivity C/(qW).
#[test]
fn neighbouring_federations_move_the_aggregate_by_at_most_the_sensitivity() {
    let c = 0.05;
    let mk = |absent| {
        let stages = StagesConfig {
            privacy: Some(dp(c, 1.0)),
            randomness: sim(3),
            ..Default::default()
        };
        let mut p = pipeline(
            settings(6, AggregationPath::PerClient, stages),
            &rates_policy(),
        );
        let mut g = grid(Variant {
            absent,
            far: Some((3, 50.0)),
            ..Default::default()
        });
        let mut x = ParamTree::from_vec(spec(3), vec![0.5, -0.5, 0.25]).unwrap();
        // A round whose Poisson cohort holds client 3 (seed 7, q = ½).
        let mut last = None;
        for r in 1..=6 {
            let t = round(&mut p, &mut g, &mut x, r).unwrap();
            let sampled = t.ins.iter().any(|(id, _)| *id == 3);
            if sampled {
                last = Some((r, t));
                break;
            }
        }
        last.expect("client 3 is sampled in one of the first rounds")
    };
    let (ra, a) = mk(None);
    let (rb, b) = mk(Some(3));
    assert_eq!(ra, rb);
    let bound = c / (0.5 * N as f64);
    let diff = dist(&step(&a), &step(&b));
    assert!(diff > 0.5 * bound, "client 3 hardly contributed: {diff}");
    assert!(diff <= bound * (1.0 + 1e-5), "{diff} > C/(qW) = {bound}");
}

/// ε after each round is the accountant's ε for (q, z, rounds, δ); adaptive clipping
/// moves C by the geometric rule from the share of updates within C (here with an
/// unnoised count, to recompute it from the trace).
#[test]
fn the_accountant_and_adaptive_clipping_follow_the_round() {
    let z = 1.1;
    let cfg = PrivacyConfig {
        adaptive_clip: Some(AdaptiveClipConfig {
            initial_clip: 0.1,
            count_noise_std: Some(0.0),
            ..Default::default()
        }),
        noise_multiplier: Some(z),
        ..Default::default()
    };
    let stages = StagesConfig {
        privacy: Some(cfg),
        randomness: sim(5),
        ..Default::default()
    };
    let mut p = pipeline(
        settings(6, AggregationPath::PerClient, stages),
        &rates_policy(),
    );
    let mut g = grid(Variant::default());
    let (_, trace) = rounds(&mut p, &mut g, 4).unwrap();
    let q = 0.5;
    let mut c = 0.1;
    for (i, r) in trace.iter().enumerate() {
        let s = r.summary.privacy.as_ref().unwrap();
        let want = epsilon_for(q, z, i as u64 + 1, 1e-5).unwrap().epsilon;
        assert!(
            (s.epsilon - want).abs() < 1e-9 * want,
            "{} vs {want}",
            s.epsilon
        );
        assert!((s.round_epsilon - epsilon_for(q, z, 1, 1e-5).unwrap().epsilon).abs() < 1e-12);
        assert!(
            (s.clip - c).abs() < 1e-12,
            "round {}: C {} vs {c}",
            i + 1,
            s.clip
        );
        let within = r
            .replies
            .iter()
            .filter(|x| {
                let res = x.result.as_ref().unwrap();
                let mut d = clipped(res, f64::INFINITY);
                d.iter_mut().for_each(|v| *v = v.abs());
                d.iter().map(|v| v * v).sum::<f64>().sqrt() <= c
            })
            .count();
        let b = within as f64 / (q * N as f64);
        assert!((s.unclipped_fraction.unwrap() - b).abs() < 1e-12);
        c *= (-0.2 * (b - 0.5)).exp();
        // The noise is on the update: z_Δ = z (the count takes no share at σ_b = 0).
        assert!((s.noise_std - z * s.clip / (q * N as f64)).abs() < 1e-12);
    }
}

/// The DP stage's state (adaptive C, spent budget) survives save and restore: k rounds,
/// save, restore into a fresh strategy, the rest = all rounds straight, bit for bit.
#[test]
fn dp_state_round_trips_through_save_and_restore() {
    let cfg = PrivacyConfig {
        adaptive_clip: Some(AdaptiveClipConfig::default()),
        // Below 2σ_b = 2·6/20: the count's share leaves the update some noise.
        noise_multiplier: Some(0.5),
        ..Default::default()
    };
    let stages = StagesConfig {
        privacy: Some(cfg),
        randomness: sim(8),
        ..Default::default()
    };
    let mk = || {
        pipeline(
            settings(6, AggregationPath::PerClient, stages.clone()),
            &rates_policy(),
        )
    };
    let mut straight = mk();
    let (want, t) = rounds(&mut straight, &mut grid(Variant::default()), 4).unwrap();
    let mut first = mk();
    let mut g = grid(Variant::default());
    let mut x = ParamTree::from_vec(spec(3), vec![0.5, -0.5, 0.25]).unwrap();
    for r in 1..=2 {
        round(&mut first, &mut g, &mut x, r).unwrap();
    }
    let mut second = mk();
    second.restore_state(&first.save_state().unwrap()).unwrap();
    let mut last = None;
    for r in 3..=4 {
        last = Some(round(&mut second, &mut g, &mut x, r).unwrap());
    }
    assert_eq!(x.as_slice(), want.as_slice());
    assert_eq!(
        last.unwrap().summary.privacy,
        t[3].summary.privacy,
        "clip and ε continue"
    );
}

// ---------------------------------------------------------------------------------------
// Private rates.

/// `rates = "noised"`: two federations that differ only in client 2's private statistic
/// (its data, so its loss), with the same noise draws. The released statistics differ
/// only in client 2's value, by exactly the difference of its bounded statistic; and every
/// plan of the next round is what the policy computes from the released values alone —
/// feeding a fresh policy federation A's released values with client 2's replaced by B's
/// reproduces federation B's plans exactly.
#[test]
fn noised_rate_statistics_are_all_the_plans_depend_on() {
    let cfg = PrivacyConfig {
        rates: RatesMode::Noised,
        // Small multipliers (noise std z_s·√2 ≈ 0.14 of the bound), so that the released
        // values are rarely clamped and client 2's change reaches the plans.
        rate_noise_multiplier: Some(0.1),
        loss_bound: 20.0,
        ..dp(0.5, 0.05)
    };
    let policy: PolicyConfig = serde_json::from_str(r#"{"name": "loss-based"}"#).unwrap();
    let stages = StagesConfig {
        privacy: Some(cfg),
        randomness: sim(11),
        ..Default::default()
    };
    let run = |far| {
        let mut p = pipeline(
            settings(N as usize, AggregationPath::PerClient, stages.clone()),
            &policy,
        );
        let mut g = grid(Variant {
            far,
            ..Default::default()
        });
        rounds(&mut p, &mut g, 2).unwrap().1
    };
    let a = run(None);
    let b = run(Some((2, 1.5)));
    let released = |t: &Round| -> BTreeMap<ClientId, ReleasedStatistics> {
        t.replies
            .iter()
            .map(|r| {
                let res = r.result.as_ref().unwrap();
                (r.client, *res.ext.get::<ReleasedStatistics>().unwrap())
            })
            .collect()
    };
    let (ra, rb) = (released(&a[0]), released(&b[0]));
    for (id, sa) in &ra {
        let sb = &rb[id];
        if *id == 2 {
            let loss = |t: &Round| {
                let r = t.replies.iter().find(|r| r.client == 2).unwrap();
                (r.result.as_ref().unwrap().report.loss_before as f64).min(20.0) / 20.0
            };
            let want = loss(&b[0]) - loss(&a[0]);
            assert!(want.abs() > 1e-3);
            assert!((sb.loss - sa.loss - want).abs() < 1e-6, "same noise draw");
        } else {
            assert_eq!(sa, sb, "client {id}: other clients' releases are unchanged");
        }
    }
    // Round 2's plans from the released values alone.
    let groups = vec!["body".to_string(), "head".to_string()];
    let mut fresh = policy.build_for(&groups).unwrap();
    let release = fedpace_algos::stages::rates::RateRelease {
        clip: 0.5,
        reference: reference(),
        loss_bound: 20.0,
        noise_std: 0.0,
        randomness: sim(0),
    };
    for (id, s) in &ra {
        let s = if *id == 2 { &rb[id] } else { s };
        let rep = fedpace_algos::stages::rates::released_report(s, &release, 3);
        fresh.observe(1, &pool()[*id as usize], &rep);
    }
    for (id, ins) in &b[1].ins {
        let want = fresh
            .plan(2, &pool()[*id as usize], &plan(0.1))
            .unwrap()
            .base_lr;
        assert_eq!(ins.plan.base_lr, want, "client {id}");
    }
    let differ = a[1]
        .ins
        .iter()
        .zip(&b[1].ins)
        .filter(|(x, y)| x.1.plan.base_lr != y.1.plan.base_lr)
        .count();
    assert!(differ > 0, "the noised value moves the plans");
}

// ---------------------------------------------------------------------------------------
// Secure aggregation.

/// Records each client's quantised input when the protocol starts and whether it sent a
/// masked input.
#[derive(Clone, Default)]
struct Spy(Arc<Mutex<SpyLog>>);

#[derive(Default)]
struct SpyLog {
    inputs: BTreeMap<ClientId, Vec<u64>>,
    masked: BTreeSet<ClientId>,
}

struct SpyClient {
    inner: StandardClient,
    spy: Spy,
    id: ClientId,
}

impl Client for SpyClient {
    fn train(&mut self, ins: &TrainIns, s: &mut LocalState) -> fedpace_core::Result<TrainRes> {
        self.inner.train(ins, s)
    }
    fn evaluate(
        &mut self,
        ins: &fedpace_core::EvalIns,
        s: &mut LocalState,
    ) -> fedpace_core::Result<fedpace_core::EvalRes> {
        self.inner.evaluate(ins, s)
    }
    fn exchange(
        &mut self,
        ins: &ExchangeIns,
        s: &mut LocalState,
        session: &mut Session,
    ) -> fedpace_core::Result<Extensions> {
        if ins.msg.contains::<SecureSetup>() {
            let mut log = self.spy.0.lock().unwrap();
            if let Some(p) = s.ext.get::<SecurePending>() {
                log.inputs.insert(self.id, p.input.clone());
            }
        }
        let out = self.inner.exchange(ins, s, session)?;
        if out.contains::<SecureMasked>() {
            self.spy.0.lock().unwrap().masked.insert(self.id);
        }
        Ok(out)
    }
}

fn secure(dropout: f64, num_shares: Option<usize>) -> StagesConfig {
    StagesConfig {
        secure_aggregation: Some(SecureConfig {
            dropout,
            num_shares,
            ..Default::default()
        }),
        randomness: sim(21),
        ..Default::default()
    }
}

/// Inside a real run, with 0 %, 10 % and 30 % of the cohort dropping out at every stage of
/// the protocol (SecAgg and SecAgg+): the server's unmasked sum equals the plain sum of
/// the surviving clients' quantised inputs exactly, and the survivors are exactly the
/// clients that sent a masked input.
#[test]
fn secure_sum_is_exact_with_0_10_and_30_percent_dropouts_in_a_run() {
    // SecAgg+ with k = 9 of 10, t = 5: a client keeps ≥ 5 live share holders among its 8
    // neighbours when 3 of the 10 drop (smaller k could lose too many and abort, as the
    // protocol should).
    for (dropout, shares) in [(0.0, None), (0.1, None), (0.3, None), (0.3, Some(9))] {
        let spy = Spy::default();
        let mut p = pipeline(
            settings(10, AggregationPath::Linear, secure(dropout, shares)),
            &PolicyConfig::Constant,
        );
        let mut g = grid(Variant {
            spy: Some(spy.clone()),
            ..Default::default()
        });
        let mut x = ParamTree::from_vec(spec(3), vec![0.5, -0.5, 0.25]).unwrap();
        let mut dropped = 0;
        for r in 1..=3 {
            *spy.0.lock().unwrap() = SpyLog::default();
            let t = round(&mut p, &mut g, &mut x, r).unwrap();
            let raw = p.secure_stage().unwrap().last_sum().unwrap().clone();
            let log = spy.0.lock().unwrap();
            let survivors: BTreeSet<ClientId> = raw.survivors.iter().copied().collect();
            assert_eq!(survivors, log.masked, "dropout {dropout}, round {r}");
            let mut plain = vec![0u64; raw.sum.len()];
            for id in &survivors {
                for (s, v) in plain.iter_mut().zip(&log.inputs[id]) {
                    *s = (*s + v) % (1u64 << 32);
                }
            }
            assert_eq!(plain, raw.sum, "dropout {dropout}, round {r}");
            let sec = t.summary.secure.as_ref().unwrap();
            assert_eq!(sec.survivors, survivors.len());
            dropped += sec.participants - sec.survivors;
        }
        if dropout > 0.0 {
            assert!(dropped > 0, "dropout {dropout}: nobody dropped in 3 rounds");
        } else {
            assert_eq!(dropped, 0);
        }
    }
}

/// What the server sees of one client under secure aggregation: a zero update, a report
/// with its step count and nominal rates only, and protocol messages whose masked vector
/// shares (almost) no coordinate with the client's input.
#[test]
fn the_server_sees_only_masked_vectors() {
    let spy = Spy::default();
    let mut p = pipeline(
        settings(10, AggregationPath::Linear, secure(0.0, None)),
        &PolicyConfig::Constant,
    );
    let mut g = grid(Variant {
        d: 400,
        spy: Some(spy.clone()),
        ..Default::default()
    });
    let mut x = ParamTree::zeros(spec(400));
    let t = round(&mut p, &mut g, &mut x, 1).unwrap();
    for r in &t.replies {
        let res = r.result.as_ref().unwrap();
        assert!(res.delta.as_slice().iter().all(|v| *v == 0.0));
        assert!(res.ext.is_empty(), "{:?}", res.ext);
        assert!(res.report.loss_before.is_nan() && res.report.update_norm == 0.0);
        assert!(res.report.grad_norm == 0.0 && res.report.ext.is_empty());
    }
    let client_to_server = [
        <SecureKeys as fedpace_core::Payload>::NAME,
        <SecureShares as fedpace_core::Payload>::NAME,
        <SecureMasked as fedpace_core::Payload>::NAME,
        <SecureUnmask as fedpace_core::Payload>::NAME,
    ];
    let log = spy.0.lock().unwrap();
    for (_, answers) in &t.exchanges {
        for a in answers {
            let ext = a.result.as_ref().unwrap();
            let names: Vec<&str> = ext.names().collect();
            assert_eq!(names.len(), 1);
            assert!(client_to_server.contains(&names[0]), "{names:?}");
            if let Some(m) = ext.get::<SecureMasked>() {
                let input = &log.inputs[&a.client];
                let same = m.0.masked.iter().zip(input).filter(|(a, b)| a == b).count();
                assert!(same < 5, "client {}: {same} coordinates unmasked", a.client);
            }
        }
    }
    assert!(t.exchanges.len() == 4, "four protocol steps");
    let _ = <SecureForwarded as fedpace_core::Payload>::NAME;
}

/// Secure aggregation computes the linear path's aggregate: the model after three rounds
/// equals the one without it, within the quantisation error, with per-client rates and
/// example weights.
#[test]
fn secure_aggregation_gives_the_linear_aggregate() {
    let run = |stages: StagesConfig| {
        let mut p = pipeline(
            settings(10, AggregationPath::Linear, stages),
            &rates_policy(),
        );
        rounds(&mut p, &mut grid(Variant::default()), 3).unwrap().0
    };
    let plain = run(StagesConfig::default());
    let secure = run(secure(0.0, Some(5)));
    for (a, b) in plain.as_slice().iter().zip(secure.as_slice()) {
        assert!((a - b).abs() < 1e-4, "{plain:?} vs {secure:?}");
    }
    assert_ne!(
        plain.as_slice(),
        secure.as_slice(),
        "quantised, not bypassed"
    );
}

/// Fewer survivors than the threshold abort the round with the protocol's error.
#[test]
fn fewer_survivors_than_the_threshold_abort_the_round() {
    let mut p = pipeline(
        settings(10, AggregationPath::Linear, secure(0.8, None)),
        &PolicyConfig::Constant,
    );
    let e = rounds(&mut p, &mut grid(Variant::default()), 3)
        .err()
        .expect("aborted")
        .to_string();
    assert!(
        e.contains("secure aggregation") && e.contains("the threshold is 6; round aborted"),
        "{e}"
    );
}

/// DP on the linear path with distributed noise under SecAgg: the clients clip, weight and
/// add their noise shares; with z = 0 the result is the central path's, within the
/// quantisation error; with z > 0 the accountant runs.
#[test]
fn distributed_dp_under_secure_aggregation_matches_central_dp() {
    let c = 0.05;
    let run = |aggregation, privacy: PrivacyConfig, sa: Option<SecureConfig>| {
        let stages = StagesConfig {
            privacy: Some(privacy),
            secure_aggregation: sa,
            randomness: sim(31),
            ..Default::default()
        };
        let mut p = pipeline(settings(8, aggregation, stages), &rates_policy());
        rounds(&mut p, &mut grid(Variant::default()), 3).unwrap()
    };
    let (central, _) = run(AggregationPath::PerClient, dp(c, 0.0), None);
    let distributed = PrivacyConfig {
        noise: NoisePlacement::Distributed,
        ..dp(c, 0.0)
    };
    let (secure, _) = run(
        AggregationPath::Linear,
        distributed.clone(),
        Some(SecureConfig::default()),
    );
    for (a, b) in central.as_slice().iter().zip(secure.as_slice()) {
        assert!((a - b).abs() < 1e-4, "{central:?} vs {secure:?}");
    }
    let noisy = PrivacyConfig {
        noise_multiplier: Some(1.0),
        ..distributed
    };
    let (_, t) = run(
        AggregationPath::Linear,
        noisy,
        Some(SecureConfig::default()),
    );
    let s = t[2].summary.privacy.as_ref().unwrap();
    let want = epsilon_for(8.0 / N as f64, 1.0, 3, 1e-5).unwrap().epsilon;
    assert!((s.epsilon - want).abs() < 1e-9 * want);
    assert!(t[2].summary.secure.is_some());
}

// ---------------------------------------------------------------------------------------
// Robust aggregation and attacks.

/// Two of twelve clients send sign-flipped updates ×4: the weighted mean is dragged away
/// from the honest clients' mean; each robust rule stays much closer to it.
#[test]
fn robust_rules_resist_sign_flipping_attackers() {
    let attack = AttackConfig {
        kind: AttackKind::SignFlip,
        fraction: 0.0,
        scale: None,
    };
    let attackers: BTreeSet<u64> = [1, 6].into_iter().collect();
    let run = |robust: Option<RobustConfig>, attack_on: bool| {
        let stages = StagesConfig {
            robust,
            ..Default::default()
        };
        let mut p = pipeline(
            settings(N as usize, AggregationPath::PerClient, stages),
            &PolicyConfig::Constant,
        );
        let mut g = grid(Variant {
            attack: attack_on.then(|| (attackers.clone(), attack)),
            ..Default::default()
        });
        let mut x = ParamTree::from_vec(spec(3), vec![0.5, -0.5, 0.25]).unwrap();
        let t = round(&mut p, &mut g, &mut x, 1).unwrap();
        (step(&t), t)
    };
    let (_, honest_trace) = run(None, false);
    // The honest clients' mean update (the attackers' honest updates excluded).
    let mut honest = vec![0f64; 3];
    let mut k = 0.0;
    for r in &honest_trace.replies {
        if attackers.contains(&r.client) {
            continue;
        }
        let d = r.result.as_ref().unwrap().delta.as_slice();
        honest.iter_mut().zip(d).for_each(|(h, v)| *h += *v as f64);
        k += 1.0;
    }
    honest.iter_mut().for_each(|h| *h /= k);
    let (mean, _) = run(None, true);
    let err_mean = dist(&mean, &honest);
    for rule in [
        RobustConfig::Median {},
        RobustConfig::TrimmedMean { beta: 0.2 },
        RobustConfig::Krum { byzantine: 2 },
        RobustConfig::MultiKrum {
            byzantine: 2,
            select: None,
        },
        // n = 12 ≥ 4f + 3 for f = 2.
        RobustConfig::Bulyan { byzantine: 2 },
    ] {
        let (got, t) = run(Some(rule), true);
        let err = dist(&got, &honest);
        assert!(
            err < 0.3 * err_mean,
            "{}: {err} vs mean's {err_mean}",
            rule.name()
        );
        if let RobustConfig::Krum { .. } = rule {
            let chosen: Vec<_> = t
                .summary
                .clients
                .iter()
                .filter(|c| c.weight == 1.0)
                .collect();
            assert_eq!(chosen.len(), 1);
            assert!(!attackers.contains(&chosen[0].client));
        }
    }
    // Norm bounding at the largest honest norm leaves honest updates as they are and
    // cuts the ×4 attackers down to it: they still pull the other way (the bound limits,
    // it does not exclude), by about (1 + 1)/(1 + 4) of what they did unbounded.
    let max_norm = honest_trace
        .replies
        .iter()
        .map(|r| l2_norm(r.result.as_ref().unwrap().delta.as_slice()))
        .fold(0.0, f64::max);
    let (nb, _) = run(Some(RobustConfig::NormBound { max_norm }), true);
    assert!(
        dist(&nb, &honest) < 0.75 * err_mean,
        "{} vs {err_mean}",
        dist(&nb, &honest)
    );
}

/// The attackers are an exact, seeded share of the pool, and label flipping trains on
/// y ← C − 1 − y.
#[test]
fn attackers_are_an_exact_seeded_share_and_labels_flip() {
    let a = AttackConfig {
        kind: AttackKind::LabelFlip,
        fraction: 0.3,
        scale: None,
    };
    let who = a.attackers(100, 4);
    assert_eq!(who.len(), 30);
    assert_eq!(who, a.attackers(100, 4));
    assert_ne!(who, a.attackers(100, 5));
    let d: Arc<dyn fedpace_core::Dataset> =
        Arc::new(DenseDataset::new(vec![0.0; 3], vec![1], vec![0, 2, 9], 10).unwrap());
    let f = fedpace_algos::attack::FlippedLabels(d);
    assert_eq!(
        fedpace_core::Dataset::batch(&f, &[0, 1, 2]).labels,
        vec![9, 7, 0]
    );
    let bad = AttackConfig {
        scale: Some(2.0),
        ..a
    };
    assert!(bad
        .validate()
        .unwrap_err()
        .to_string()
        .starts_with("attack.scale = 2"));
}

// ---------------------------------------------------------------------------------------
// Compression.

/// QSGD 8/4-bit and top-k: the reply carries the encoding in place of the dense update, so
/// the bytes a client uploads (its encoded reply frame) fall to about a quarter, an eighth,
/// a tenth; top-k's residual stays in the client's state and survives the state codec.
#[test]
fn compression_shrinks_replies_and_keeps_the_residual_in_client_state() {
    let d = 4000;
    let run = |c: Option<CompressionConfig>| {
        let stages = StagesConfig {
            compression: c,
            ..Default::default()
        };
        let mut p = pipeline(
            settings(4, AggregationPath::PerClient, stages),
            &PolicyConfig::Constant,
        );
        let mut g = grid(Variant {
            d,
            ..Default::default()
        });
        let mut x = ParamTree::zeros(spec(d));
        let t = round(&mut p, &mut g, &mut x, 1).unwrap();
        (t.summary.upload_bytes.unwrap(), x, g, t)
    };
    let (dense, x0, _, _) = run(None);
    let (q8, x8, _, _) = run(Some(CompressionConfig::Qsgd {
        bits: 8,
        bucket_size: 512,
    }));
    let (q4, _, _, _) = run(Some(CompressionConfig::Qsgd {
        bits: 4,
        bucket_size: 512,
    }));
    let (tk, _, mut g, t) = run(Some(CompressionConfig::TopK { fraction: 0.05 }));
    assert!(dense > 4.0 * d as f64, "{dense}");
    assert!((q8 / dense - 0.25).abs() < 0.03, "8-bit: {q8} / {dense}");
    assert!((q4 / dense - 0.125).abs() < 0.03, "4-bit: {q4} / {dense}");
    assert!((tk / dense - 0.10).abs() < 0.03, "top-5%: {tk} / {dense}");
    // Unbiased 8-bit quantisation barely moves the aggregate.
    let err = dist(
        &x8.as_slice().iter().map(|v| *v as f64).collect::<Vec<_>>(),
        &x0.as_slice().iter().map(|v| *v as f64).collect::<Vec<_>>(),
    );
    // QSGD's variance bound, E‖Q(v) − v‖² ≤ (√b/s)‖v‖² with b = 512, s = 127, gives a
    // relative RMS error ≤ 0.18 per client; the mean of 4 independent draws ≤ 0.09.
    let bound = 0.09 * l2_norm(x0.as_slice());
    assert!(err > 0.0 && err < bound, "{err} vs {bound}");
    let id = t.replies[0].client;
    let st = g.state_of(id).unwrap();
    let res = st.ext.get::<CompressionResidual>().expect("a residual");
    assert_eq!(res.0.residual().len(), d);
    let reg = &fedpace_algos::builtin().codecs;
    let back = fedpace_core::codec::decode_local_state(
        &fedpace_core::codec::encode_local_state(&st).unwrap(),
        reg,
    )
    .unwrap();
    assert_eq!(back, st);
}

// ---------------------------------------------------------------------------------------
// What composes with what.

fn stage_tables() -> Vec<(&'static str, StagesConfig, AggregationPath)> {
    let r = sim(1);
    let dp_cfg = dp(0.5, 0.5);
    vec![
        (
            "dp",
            StagesConfig {
                privacy: Some(dp_cfg.clone()),
                randomness: r,
                ..Default::default()
            },
            AggregationPath::PerClient,
        ),
        (
            "dp-linear-secagg",
            StagesConfig {
                privacy: Some(PrivacyConfig {
                    noise: NoisePlacement::Distributed,
                    ..dp_cfg
                }),
                secure_aggregation: Some(SecureConfig::default()),
                randomness: r,
                ..Default::default()
            },
            AggregationPath::Linear,
        ),
        (
            "secagg",
            StagesConfig {
                secure_aggregation: Some(SecureConfig {
                    num_shares: Some(3),
                    ..Default::default()
                }),
                randomness: r,
                ..Default::default()
            },
            AggregationPath::Linear,
        ),
        (
            "robust",
            StagesConfig {
                robust: Some(RobustConfig::TrimmedMean { beta: 0.2 }),
                ..Default::default()
            },
            AggregationPath::PerClient,
        ),
        (
            "compression",
            StagesConfig {
                compression: Some(CompressionConfig::TopK { fraction: 0.5 }),
                ..Default::default()
            },
            AggregationPath::PerClient,
        ),
    ]
}

/// Every algorithm × every stage (and the policies that matter to them) either runs two
/// rounds with the stage doing its job, or is refused at configuration time in one line
/// naming both sides.
#[test]
fn every_strategy_with_every_stage_runs_or_is_refused_in_one_line() {
    let policies: Vec<PolicyConfig> = [
        r#"{"name": "constant"}"#,
        r#"{"name": "by-data-size"}"#,
        r#"{"name": "loss-based"}"#,
        r#"{"name": "clip-updates"}"#,
        r#"{"name": "fedlalr"}"#,
    ]
    .iter()
    .map(|s| serde_json::from_str(s).unwrap())
    .collect();
    let groups = vec!["body".to_string(), "head".to_string()];
    let (mut ran, mut refused) = (0, 0);
    for name in AlgorithmConfig::NAMES {
        for (stage, cfg, path) in stage_tables() {
            for policy in &policies {
                let mut s = StrategyConfig::named(name)
                    .unwrap()
                    .with_clients_per_round(4);
                if !s.is_async() {
                    s = s.with_aggregation(path);
                    if path == AggregationPath::Linear {
                        s = s.with_normalize(Normalize::On);
                    }
                }
                let what = format!("{name} × {stage} × {}", policy.name());
                let checked = s
                    .check_combination(policy, &OptimizerSpec::default(), StateMode::Reset)
                    .and_then(|_| cfg.check(&s, policy, StateMode::Reset));
                if let Err(e) = checked {
                    assert_eq!(e.lines().count(), 1, "{what}: {e}");
                    refused += 1;
                    continue;
                }
                let mut base = plan(0.1);
                if policy.forces_server_init() {
                    base.state_mode = StateMode::ServerInit;
                }
                let built = s
                    .build_with(base, policy.build_for(&groups).unwrap(), cfg.clone())
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                let Built::Sync(mut st) = built else {
                    panic!("{what}: an asynchronous strategy passed the check")
                };
                let mut g = grid(Variant::default());
                let (x, t) =
                    rounds(st.as_mut(), &mut g, 2).unwrap_or_else(|e| panic!("{what}: {e}"));
                assert!(x.all_finite(), "{what}");
                let last = &t[1].summary;
                match stage {
                    "dp" | "dp-linear-secagg" => assert!(last.privacy.is_some(), "{what}"),
                    _ => {}
                }
                if stage.contains("secagg") {
                    assert!(last.secure.is_some(), "{what}");
                }
                ran += 1;
            }
        }
    }
    eprintln!("stages × strategies × policies: {ran} run, {refused} refused");
    assert!(ran > 100 && refused > 50, "{ran} {refused}");
}

/// The refusals read as one line naming both sides.
#[test]
fn refusals_name_both_sides() {
    let s = StrategyConfig::named("fedavg").unwrap();
    let dp_only = StagesConfig {
        privacy: Some(dp(0.5, 1.0)),
        ..Default::default()
    };
    let loss: PolicyConfig = serde_json::from_str(r#"{"name": "loss-based"}"#).unwrap();
    assert_eq!(
        dp_only.check(&s, &loss, StateMode::Reset).unwrap_err(),
        "policy loss-based: reads clients' statistics in the clear, outside [privacy]'s ε under \
         fedavg; set privacy.rates = \"noised\" (or \"local\" with [secure_aggregation])"
    );
    let sa = secure(0.0, None);
    assert_eq!(
        sa.check(&s, &PolicyConfig::Constant, StateMode::Reset)
            .unwrap_err(),
        "[secure_aggregation]: needs strategy.aggregation = \"linear\" under fedavg (the server \
         may only sum what it cannot see)"
    );
    let scaffold = StrategyConfig::named("scaffold").unwrap();
    assert!(dp_only
        .check(&scaffold, &PolicyConfig::Constant, StateMode::Reset)
        .unwrap_err()
        .starts_with("[privacy]: not supported by scaffold"));
    let fedasync = StrategyConfig::named("fedasync").unwrap();
    assert!(dp_only
        .check(&fedasync, &PolicyConfig::Constant, StateMode::Reset)
        .unwrap_err()
        .starts_with("[privacy]: not supported by fedasync"));
}

/// `rates = "local"` under secure aggregation: every instruction carries the base rate
/// (the server computes no per-client rate) and one broadcast mean; each client keeps its
/// own statistic in its state; round 2's broadcast mean is the geometric mean of the
/// round-1 clients' statistics, learned only from the secure sum.
#[test]
fn local_rates_never_leave_the_client() {
    use fedpace_algos::stages::rates::{LocalRate, LocalRateMemory};
    let policy: PolicyConfig = serde_json::from_str(r#"{"name": "loss-based"}"#).unwrap();
    let stages = StagesConfig {
        privacy: Some(PrivacyConfig {
            rates: RatesMode::Local,
            ..Default::default()
        }),
        secure_aggregation: Some(SecureConfig::default()),
        randomness: sim(41),
        ..Default::default()
    }
    .for_policy(&policy)
    .unwrap();
    let mut p = pipeline(settings(10, AggregationPath::Linear, stages), &policy);
    let mut g = grid(Variant::default());
    let mut x = ParamTree::from_vec(spec(3), vec![0.5, -0.5, 0.25]).unwrap();
    let t = round(&mut p, &mut g, &mut x, 1).unwrap();
    let mut logs = Vec::new();
    for (id, ins) in &t.ins {
        assert_eq!(ins.plan.base_lr, 0.1);
        assert_eq!(ins.ext.get::<LocalRate>().unwrap().mean, None);
        let st = g.state_of(*id).unwrap();
        logs.push(st.ext.get::<LocalRateMemory>().unwrap().last.ln());
    }
    for r in &t.replies {
        assert!(r.result.as_ref().unwrap().report.loss_before.is_nan());
    }
    let want = (logs.iter().sum::<f64>() / logs.len() as f64).exp();
    let pool = g.pool();
    let ins = p
        .configure_train(2, &Arc::new(x.clone()), pool.as_ref(), 7)
        .unwrap();
    for (_, i) in &ins {
        assert_eq!(i.plan.base_lr, 0.1);
        let got = i.ext.get::<LocalRate>().unwrap().mean.unwrap();
        assert!((got / want - 1.0).abs() < 1e-4, "{got} vs {want}");
    }
}

/// `rates = "local"` inside `compose`: the server plans with the public parts only (here
/// by-data-size; the loss-based part never sees a statistic, so its factor is 1), and each
/// client multiplies by its own loss-based factor, then clamps to compose's range — an
/// overridden client keeps its override. Two statistic-reading parts are refused.
#[test]
fn local_rates_inside_compose_apply_the_clients_factor_then_the_clamp() {
    use fedpace_algos::stages::rates::{local_plan, LocalRate, LocalRateMemory};
    let composed = |parts: &str| -> PolicyConfig {
        serde_json::from_str(&format!(
            r#"{{"name": "compose", "min": 0.5, "max": 2.0, "overrides": {{"3": 4.0}},
                "policies": [{parts}]}}"#
        ))
        .unwrap()
    };
    let policy = composed(
        r#"{"name": "by-data-size"}, {"name": "loss-based", "kappa": 4.0, "min": 0.1, "max": 10.0}"#,
    );
    let public_only = composed(r#"{"name": "by-data-size"}"#);
    let local = |p: &PolicyConfig| {
        StagesConfig {
            privacy: Some(PrivacyConfig {
                rates: RatesMode::Local,
                ..Default::default()
            }),
            secure_aggregation: Some(SecureConfig::default()),
            randomness: sim(43),
            ..Default::default()
        }
        .for_policy(p)
    };
    let stages = local(&policy).unwrap();
    let fedavg = StrategyConfig::named("fedavg")
        .unwrap()
        .with_aggregation(AggregationPath::Linear);
    stages.check(&fedavg, &policy, StateMode::Reset).unwrap();

    let mut p = pipeline(settings(10, AggregationPath::Linear, stages), &policy);
    let mut reference = pipeline(
        settings(10, AggregationPath::Linear, StagesConfig::default()),
        &public_only,
    );
    let mut g = grid(Variant::default());
    let mut x = ParamTree::from_vec(spec(3), vec![0.5, -0.5, 0.25]).unwrap();
    let pool = g.pool();
    let public = reference
        .configure_train(1, &Arc::new(x.clone()), pool.as_ref(), 7)
        .unwrap();
    let t = round(&mut p, &mut g, &mut x, 1).unwrap();
    // compose's [0.5, 2] × η_base, η_base = 0.1 as the plan's f32 holds it.
    let (lo, hi) = (0.5 * 0.1f32 as f64, 2.0 * 0.1f32 as f64);
    for ((id, ins), (_, want)) in t.ins.iter().zip(&public) {
        assert_eq!(
            ins.plan.base_lr, want.plan.base_lr,
            "client {id}: public parts"
        );
        let lr = ins.ext.get::<LocalRate>().unwrap();
        assert_eq!((lr.mean, lr.bounds), (None, Some([lo, hi])));
        assert_eq!(lr.fixed, *id == 3);
    }
    let ins = p
        .configure_train(2, &Arc::new(x.clone()), pool.as_ref(), 7)
        .unwrap();
    let (mut clamped, mut free) = (0, 0);
    for (id, i) in &ins {
        let lr = i.ext.get::<LocalRate>().unwrap();
        let state = g.state_of(*id).unwrap();
        let got = local_plan(lr, &i.plan, &state).unwrap().base_lr;
        if *id == 3 {
            assert_eq!(got, i.plan.base_lr, "the override stands");
            assert!((got - 0.4).abs() < 1e-7);
            continue;
        }
        // A client that has not trained yet has no statistic: factor 1.
        let factor = match state.ext.get::<LocalRateMemory>() {
            Some(m) => (m.last / lr.mean.unwrap()).powf(4.0).clamp(0.1, 10.0),
            None => 1.0,
        };
        let raw = i.plan.base_lr as f64 * factor;
        let want = raw.clamp(lo, hi);
        assert_eq!(got, want as f32, "client {id}");
        if raw == want {
            free += 1;
        } else {
            clamped += 1;
        }
    }
    assert!(clamped > 0 && free > 0, "clamped {clamped}, free {free}");

    let two = composed(r#"{"name": "loss-based"}, {"name": "grad-norm-ratio"}"#);
    let e = local(&two).unwrap_err();
    assert!(
        e.starts_with("privacy.rates = \"local\": not supported by policy compose"),
        "{e}"
    );
}
