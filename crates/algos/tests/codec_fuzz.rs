//! The payload codec's decoders (`fedpace_core::codec`) — what the server runs on every
//! training reply, evaluation result, exchange answer and registration a client sends,
//! and what a node runs on every instruction and on its stored state — never panic and
//! never allocate more than a bounded multiple of their input, on a million random and
//! mutated inputs decoded with the built-in registry (docs/network.md, "Fuzzing").
//!
//! Every case draws from its own generator, seeded by the case index: a failure names the
//! case, and `FEDPACE_FUZZ_CASE=N` replays that case alone. `FEDPACE_FUZZ_CASES=N`
//! changes the count (default 1,000,000).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use fedpace_algos::apfl::{Apfl, ApflState};
use fedpace_algos::ditto::{Ditto, DittoPersonalOptimizer};
use fedpace_algos::feddyn::{FedDynDown, FedDynState};
use fedpace_algos::fedhyper::{FedHyperClDown, FedHyperClReport};
use fedpace_algos::fedl2p::{Fedl2pGrad, Fedl2pNet, Fedl2pReport};
use fedpace_algos::fedrep::{FedRep, FedRepHead};
use fedpace_algos::local::{OptimizerStateDown, OptimizerStateUp, PreScale, PreScaled};
use fedpace_algos::perfedavg::{PerFedAvg, PerFedAvgVariant};
use fedpace_algos::personal::{PersonalGroups, PersonalModel};
use fedpace_algos::pfedhn::PfedhnModel;
use fedpace_algos::pfedme::PFedMe;
use fedpace_algos::probe::{ValidationProbe, ValidationSignal};
use fedpace_algos::scaffold::{ScaffoldDown, ScaffoldOption, ScaffoldState, ScaffoldUp};
use fedpace_algos::stages::compress::{self, Compress, CompressionConfig};
use fedpace_algos::stages::dp::{DpClient, DpScaled};
use fedpace_algos::stages::rates::{
    LocalRate, LocalRateMemory, LocalRule, RateRelease, ReleasedStatistics,
};
use fedpace_algos::stages::secure::{
    SecureDirectory, SecureForwarded, SecureInput, SecureKeys, SecureMasked, SecurePending,
    SecureSetup, SecureShares, SecureUnmask, SecureUnmaskRequest, TailLayout,
};
use fedpace_core::codec::{self, Kind, FORMAT_VERSION, MAGIC};
use fedpace_core::ext::Payload;
use fedpace_core::{
    ClientInfo, EvalIns, EvalRes, EvalStats, ExchangeIns, Extensions, LabelHistogram, LocalState,
    LocalWork, PersonalEval, RatePlan, Registry, SplitStats, TrainIns, TrainReport, TrainRes,
};
use fedpace_optim::{OptimizerSpec, Schedule, State, StateMode};
use fedpace_params::{ParamSpec, ParamTree};
use fedpace_privacy::secagg::messages::{
    EncryptedShares, ForwardedShare, ForwardedShares, KeyDirectory, MaskedInput, OwnedShare,
    PublicKeys, Setup, ShareKeys, UnmaskRequest, UnmaskShares,
};
use fedpace_privacy::secagg::shamir::{Share, CHUNKS};
use fedpace_privacy::secagg::{Quantization, SecAggConfig};
use fedpace_privacy::Randomness;
use rand::SeedableRng;

#[path = "../../../test-support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::{peak_of, MEASURING};

/// xorshift64*: small, seeded, good enough to drive mutations.
struct Rng(u64);

impl Rng {
    /// The generator of case `case`: splitmix64 of the run's seed and the index, so any
    /// case can be replayed alone.
    fn for_case(case: u64) -> Self {
        let mut z = 0x5eed_c0de_2026_1207u64 ^ case.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Self((z ^ (z >> 31)) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// What a frame is decoded as: one per decoder of `fedpace_core::codec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Msg {
    Params,
    TrainIns,
    TrainRes,
    EvalIns,
    EvalRes,
    LocalState,
    ExchangeIns,
    ExchangeRes,
    ClientInfo,
}

const MSGS: [Msg; 9] = [
    Msg::Params,
    Msg::TrainIns,
    Msg::TrainRes,
    Msg::EvalIns,
    Msg::EvalRes,
    Msg::LocalState,
    Msg::ExchangeIns,
    Msg::ExchangeRes,
    Msg::ClientInfo,
];

impl Msg {
    /// The frame kind byte.
    fn kind(self) -> Kind {
        match self {
            Msg::Params => Kind::ParamTree,
            Msg::TrainIns => Kind::TrainIns,
            Msg::TrainRes => Kind::TrainRes,
            Msg::EvalIns => Kind::EvalIns,
            Msg::EvalRes => Kind::EvalRes,
            Msg::LocalState => Kind::LocalState,
            Msg::ExchangeIns => Kind::ExchangeIns,
            Msg::ExchangeRes => Kind::ExchangeRes,
            Msg::ClientInfo => Kind::ClientInfo,
        }
    }
}

/// The most values of any seed's tree: the model size a server passes to
/// `decode_train_res_within`, as `deploy::grid` should with its model's.
const MODEL_VALUES: usize = 256;

/// Decodes `b` as `m`; whether it was accepted. What is measured.
fn decodes(m: Msg, b: &[u8], reg: &Registry) -> bool {
    match m {
        Msg::Params => codec::decode_params(b).is_ok(),
        Msg::TrainIns => codec::decode_train_ins(b, reg).is_ok(),
        Msg::TrainRes => codec::decode_train_res_within(b, reg, MODEL_VALUES).is_ok(),
        Msg::EvalIns => codec::decode_eval_ins(b, reg).is_ok(),
        Msg::EvalRes => codec::decode_eval_res(b).is_ok(),
        Msg::LocalState => codec::decode_local_state(b, reg).is_ok(),
        Msg::ExchangeIns => codec::decode_exchange_ins(b, reg).is_ok(),
        Msg::ExchangeRes => codec::decode_exchange_res(b, reg).is_ok(),
        Msg::ClientInfo => codec::decode_client_info(b, reg).is_ok(),
    }
}

/// Decodes `b` as `m` and encodes the value again (`None` when `b` is refused).
fn reencode(m: Msg, b: &[u8], reg: &Registry) -> Option<Vec<u8>> {
    let ok = |r: fedpace_core::Result<Vec<u8>>| Some(r.expect("a decoded value encodes"));
    match m {
        Msg::Params => Some(codec::encode_params(&codec::decode_params(b).ok()?)),
        Msg::TrainIns => ok(codec::encode_train_ins(
            &codec::decode_train_ins(b, reg).ok()?,
        )),
        Msg::TrainRes => ok(codec::encode_train_res(
            &codec::decode_train_res_within(b, reg, MODEL_VALUES).ok()?,
        )),
        Msg::EvalIns => ok(codec::encode_eval_ins(
            &codec::decode_eval_ins(b, reg).ok()?,
        )),
        Msg::EvalRes => Some(codec::encode_eval_res(&codec::decode_eval_res(b).ok()?)),
        Msg::LocalState => ok(codec::encode_local_state(
            &codec::decode_local_state(b, reg).ok()?,
        )),
        Msg::ExchangeIns => ok(codec::encode_exchange_ins(
            &codec::decode_exchange_ins(b, reg).ok()?,
        )),
        Msg::ExchangeRes => ok(codec::encode_exchange_res(
            &codec::decode_exchange_res(b, reg).ok()?,
        )),
        Msg::ClientInfo => ok(codec::encode_client_info(
            &codec::decode_client_info(b, reg).ok()?,
        )),
    }
}

/// Deterministic values with the awkward ones mixed in (−0.0, a subnormal, large).
fn values(n: usize, salt: u32) -> Vec<f32> {
    (0..n)
        .map(|i| match (i as u32 + salt) % 11 {
            3 => -0.0,
            7 => f32::MIN_POSITIVE / 8.0,
            9 => 3.0e38,
            k => (k as f32 - 5.0) * 0.125 + salt as f32,
        })
        .collect()
}

/// Parameter trees of different shapes: an MLP with two groups, a small CNN with a
/// scalar and a 4-d kernel, one vector.
fn trees() -> Vec<ParamTree> {
    let specs = [
        ParamSpec::builder()
            .add("fc1.weight", &[4, 3], "body")
            .add("fc1.bias", &[4], "body")
            .add("fc2.weight", &[2, 4], "head")
            .add("fc2.bias", &[2], "head"),
        ParamSpec::builder()
            .add("conv.weight", &[2, 1, 3, 3], "features")
            .add("conv.bias", &[2], "features")
            .add("temperature", &[], "scale")
            .add("fc.weight", &[10, 18], "classifier"),
        ParamSpec::builder().add("w", &[5], "all"),
    ];
    specs
        .into_iter()
        .enumerate()
        .map(|(i, b)| {
            let spec = Arc::new(b.build().unwrap());
            let n = spec.total_len();
            assert!(n <= MODEL_VALUES);
            ParamTree::from_vec(spec, values(n, i as u32)).unwrap()
        })
        .collect()
}

fn plans() -> Vec<RatePlan> {
    vec![
        RatePlan {
            base_lr: 0.05,
            group_multipliers: vec![1.0, 0.5],
            schedule: Schedule::Constant,
            work: LocalWork::Steps(5),
            max_steps: None,
            batch_size: 32,
            optimizer: OptimizerSpec::Sgd { weight_decay: 0.0 },
            state_mode: StateMode::Reset,
            prox_mu: 0.0,
        },
        RatePlan {
            base_lr: 1e-3,
            group_multipliers: vec![1.0, 2.0, 0.25, 1.5],
            schedule: Schedule::Warmup {
                steps: 10,
                start_factor: 0.1,
                then: Box::new(Schedule::Cosine {
                    total_steps: 500,
                    floor: 0.01,
                }),
            },
            work: LocalWork::Epochs(2),
            max_steps: Some(40),
            batch_size: 16,
            optimizer: OptimizerSpec::Adam {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 1e-4,
            },
            state_mode: StateMode::Keep,
            prox_mu: 0.01,
        },
    ]
}

/// An optimiser state with buffers and a child (a combinator's).
fn optimizer_state(n: usize) -> State {
    State {
        count: 12,
        buffers: vec![values(n, 1), values(n, 2)],
        children: vec![State {
            count: 3,
            buffers: vec![values(3, 4)],
            children: vec![],
        }],
    }
}

/// Builds extension sets and keeps every payload's CBOR body, to be sent later under
/// every registered name.
#[derive(Default)]
struct Payloads {
    bodies: Vec<Vec<u8>>,
    names: std::collections::BTreeSet<&'static str>,
}

impl Payloads {
    fn put<T: Payload>(&mut self, e: &mut Extensions, v: T) {
        self.bodies.push(codec::to_cbor(&v).unwrap());
        self.names.insert(T::NAME);
        e.insert(v);
    }
}

macro_rules! ext {
    ($p:expr $(, $v:expr)* $(,)?) => {{
        let mut e = Extensions::new();
        $($p.put(&mut e, $v);)*
        e
    }};
}

fn stats(loss_sum: f64, correct: u64, count: u64) -> EvalStats {
    EvalStats {
        loss_sum,
        correct,
        count,
    }
}

fn report(steps: u32, groups: usize, ext: Extensions) -> TrainReport {
    TrainReport {
        steps,
        rate_sum: (0..groups)
            .map(|g| 0.05 * steps as f64 / (g + 1) as f64)
            .collect(),
        loss_before: 2.3,
        loss_after: 1.7,
        train_loss: 1.9,
        update_norm: 0.42,
        grad_norm: 3.5,
        ext,
    }
}

/// Valid encodings of every message kind, from the real encoders: the mutations' seeds.
/// Also returns every payload body and the names the seeds cover.
fn seeds() -> (Vec<(Msg, Vec<u8>)>, Payloads) {
    let mut p = Payloads::default();
    let trees = trees();
    let plans = plans();
    let rnd = Randomness::Simulation { seed: 7 };
    let quantization = Quantization {
        clipping_range: 4.0,
        levels: 1 << 16,
        modulus_bits: 40,
    };
    let mut out = Vec::new();
    for t in &trees {
        out.push((Msg::Params, codec::encode_params(t)));
    }

    // Instructions: the payloads each algorithm and stage sends down.
    let n0 = trees[0].as_slice().len();
    let train_ins = [
        TrainIns {
            round: 1,
            params: Arc::new(trees[0].clone()),
            plan: plans[0].clone(),
            seed: 42,
            ext: Extensions::new(),
        },
        TrainIns {
            round: 7,
            params: Arc::new(trees[0].clone()),
            plan: plans[1].clone(),
            seed: 42,
            ext: ext!(
                p,
                ScaffoldDown {
                    server_control: Arc::new(values(n0, 3)),
                    option: ScaffoldOption::II,
                },
                OptimizerStateDown(Arc::new(optimizer_state(n0))),
                ValidationProbe {
                    hypergradient: true
                },
                Compress(CompressionConfig::Qsgd {
                    bits: 8,
                    bucket_size: 16,
                }),
                PreScale {
                    by_examples: true,
                    normalize: false,
                    weight_scale: 0.25,
                },
                LocalRate {
                    rule: LocalRule::LossBased {
                        kappa: 1.0,
                        min: 0.5,
                        max: 2.0,
                    },
                    mean: Some(1.25),
                    bounds: Some([0.5, 2.0]),
                    fixed: false,
                },
            ),
        },
        TrainIns {
            round: 3,
            params: Arc::new(trees[1].clone()),
            plan: plans[1].clone(),
            seed: 9,
            ext: ext!(
                p,
                FedDynDown {
                    alpha: 0.01,
                    max_grad_norm: Some(10.0),
                },
                PersonalGroups {
                    personal: vec![false, false, true, true],
                    frozen: vec![true, false, false, false],
                },
                Ditto {
                    lambda: 0.1,
                    personal_lr: Some(0.02),
                },
                SecureInput {
                    tail: TailLayout {
                        pre_scaled: Some(vec![1.0, 0.5]),
                        dp_bit: true,
                        local_statistic: false,
                    },
                    quantization,
                    randomness: rnd,
                },
                DpClient {
                    clip: 1.5,
                    reference: vec![0.1, 0.2, 0.3],
                    weight: 12.0,
                    noise_std: 0.8,
                    count_noise_std: 2.0,
                    randomness: rnd,
                },
                RateRelease {
                    clip: 4.0,
                    reference: vec![1.0, 2.0],
                    loss_bound: 10.0,
                    noise_std: 0.5,
                    randomness: rnd,
                },
            ),
        },
        TrainIns {
            round: 12,
            params: Arc::new(trees[2].clone()),
            plan: plans[0].clone(),
            seed: u64::MAX,
            ext: ext!(
                p,
                PFedMe {
                    inner_steps: 5,
                    lambda: 15.0,
                    personal_lr: 0.01,
                    mu_reg: 0.0,
                },
                Apfl {
                    alpha_init: 0.25,
                    alpha_lr: 0.1,
                },
                PerFedAvg {
                    variant: PerFedAvgVariant::Hf,
                    meta_lr: 0.002,
                    hf_delta: 0.001,
                },
                FedRep {
                    head_epochs: 2,
                    body_epochs: 1,
                },
                fedpace_algos::fedper::PartialShare,
                fedpace_algos::fedbabu::FedBabu,
                PfedhnModel(Arc::new(values(5, 8))),
                Fedl2pNet {
                    hidden: 4,
                    params: Arc::new(values(17, 5)),
                    meta_steps: 3,
                    min: 0.1,
                    max: 10.0,
                    clip: 1.0,
                    meta_step: true,
                },
                FedHyperClDown {
                    previous: Arc::new(values(5, 6)),
                    global_weight: 0.5,
                    cap: 2.0,
                    min: 0.1,
                    max: 5.0,
                },
            ),
        },
    ];
    for i in &train_ins {
        out.push((Msg::TrainIns, codec::encode_train_ins(i).unwrap()));
    }
    for (k, i) in train_ins.iter().enumerate() {
        let e = EvalIns {
            round: i.round,
            params: i.params.clone(),
            finetune_steps: k as u32 * 3,
            max_test_samples: (k % 2 == 0).then_some(500),
            plan: i.plan.clone(),
            seed: i.seed,
            personalized: if k % 2 == 0 {
                PersonalEval::Finetune
            } else {
                PersonalEval::PersonalModel
            },
            ext: if k == 3 {
                ext!(p, PersonalModel(values(5, 9)))
            } else {
                Extensions::new()
            },
        };
        out.push((Msg::EvalIns, codec::encode_eval_ins(&e).unwrap()));
    }

    // Replies: dense updates with what each algorithm reports, and layout-only ones whose
    // update travels compressed.
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut compressed = |config: CompressionConfig, t: &ParamTree, state: &mut LocalState| {
        let mut delta = t.as_slice().to_vec();
        let c = compress::encode(&config, &mut delta, state, &mut rng).unwrap();
        assert!(delta.iter().all(|v| v.to_bits() == 0));
        c
    };
    let mut topk_state = LocalState::default();
    let qsgd = compressed(
        CompressionConfig::Qsgd {
            bits: 4,
            bucket_size: 8,
        },
        &trees[1],
        &mut LocalState::default(),
    );
    let topk = compressed(
        CompressionConfig::TopK { fraction: 0.3 },
        &trees[0],
        &mut topk_state,
    );
    let n1 = trees[1].as_slice().len();
    let train_res = [
        TrainRes {
            delta: trees[0].clone(),
            num_examples: 120,
            report: report(5, 2, Extensions::new()),
            ext: Extensions::new(),
        },
        TrainRes {
            delta: trees[0].clone(),
            num_examples: 64,
            report: report(
                40,
                2,
                ext!(
                    p,
                    ValidationSignal {
                        before: stats(12.5, 7, 10),
                        after: stats(9.0, 8, 10),
                        hypergradient: Some(-0.3),
                        group_hypergradients: vec![-0.1, 0.2],
                    },
                    FedHyperClReport {
                        mean_factor: 1.1,
                        last_factor: 0.9,
                    },
                    ReleasedStatistics {
                        loss: 1.2,
                        norm: 0.8,
                    },
                ),
            ),
            ext: ext!(
                p,
                ScaffoldUp {
                    control_delta: values(n0, 11),
                },
                OptimizerStateUp(optimizer_state(n0)),
                PreScaled {
                    weight: 64.0,
                    weighted_rate_sum: vec![3.2, 1.6],
                },
                DpScaled { centred_bit: 0.5 },
            ),
        },
        TrainRes {
            delta: ParamTree::zeros(trees[1].spec().clone()),
            num_examples: 33,
            report: report(
                12,
                4,
                ext!(
                    p,
                    Fedl2pReport {
                        multipliers: vec![1.0, 0.9, 1.1, 1.2],
                        val_loss_before: 2.0,
                        val_loss_after: 1.5,
                        hypergrad: vec![0.1, -0.2, 0.3, 0.0],
                        stats: vec![1.0, 2.0],
                        signal: "validation".into(),
                    },
                ),
            ),
            ext: ext!(
                p,
                qsgd,
                Fedl2pGrad {
                    hidden: 4,
                    grad: values(17, 12),
                    weight: 33.0,
                },
            ),
        },
        TrainRes {
            delta: ParamTree::zeros(trees[0].spec().clone()),
            num_examples: 7,
            report: report(1, 2, Extensions::new()),
            ext: ext!(p, topk),
        },
    ];
    for r in &train_res {
        out.push((Msg::TrainRes, codec::encode_train_res(r).unwrap()));
    }

    for e in [
        EvalRes {
            global: stats(40.5, 77, 100),
            personalized: None,
            validation: None,
        },
        EvalRes {
            global: stats(0.0, 0, 0),
            personalized: Some(stats(31.0, 80, 100)),
            validation: Some(SplitStats {
                global: stats(4.0, 8, 10),
                personalized: Some(stats(3.5, 9, 10)),
            }),
        },
    ] {
        out.push((Msg::EvalRes, codec::encode_eval_res(&e)));
    }

    // What clients keep between rounds (a node decodes it from its own store).
    let states = [
        LocalState::default(),
        LocalState {
            rounds_trained: 4,
            steps_done: 200,
            optimizer: Some(optimizer_state(n0)),
            ext: ext!(
                p,
                ScaffoldState {
                    control: values(n0, 13),
                },
                FedDynState {
                    gradient: values(n0, 14),
                },
                LocalRateMemory { last: 1.3 },
                topk_state
                    .ext
                    .remove::<compress::CompressionResidual>()
                    .unwrap(),
            ),
        },
        LocalState {
            rounds_trained: 9,
            steps_done: 1 << 33,
            optimizer: None,
            ext: ext!(
                p,
                ApflState {
                    alpha: 0.3,
                    v_optimizer: Some(optimizer_state(n1)),
                },
                DittoPersonalOptimizer(optimizer_state(4)),
                FedRepHead(State::default()),
                PersonalModel(values(n1, 15)),
                SecurePending {
                    round: 9,
                    input: (0..20).map(|i| i * 0x1234_5678).collect(),
                    randomness: Randomness::Os {},
                },
            ),
        },
    ];
    for s in &states {
        out.push((Msg::LocalState, codec::encode_local_state(s).unwrap()));
    }

    // Secure aggregation's exchange, both directions, for a cohort of four.
    let config = SecAggConfig {
        num_shares: Some(3),
        threshold: 2,
        quantization,
    };
    let keys = |c: u64| PublicKeys {
        client: c,
        encryption_key: [c as u8 + 1; 32],
        mask_key: [0xa0 ^ c as u8; 32],
    };
    let share = |x: u64| Share {
        x,
        y: std::array::from_fn(|i| (x << 20) ^ (i as u64 * 0x0101_0101)),
    };
    let exchange_ins = [
        ext!(
            p,
            SecureSetup(Setup {
                session: 77,
                config: config.clone(),
                dimension: n0 + 3,
                client: 1,
                neighbours: vec![0, 2],
            }),
        ),
        ext!(
            p,
            SecureDirectory(KeyDirectory {
                keys: (0..3).map(keys).collect(),
            }),
        ),
        ext!(
            p,
            SecureForwarded(ForwardedShares {
                shares: [0u64, 2]
                    .iter()
                    .map(|&f| ForwardedShare {
                        from: f,
                        ciphertext: vec![f as u8 ^ 0x5a; 60],
                    })
                    .collect(),
            }),
        ),
        ext!(
            p,
            SecureUnmaskRequest(UnmaskRequest {
                survivors: vec![0, 1],
                dropped: vec![2],
            }),
        ),
    ];
    for (k, msg) in exchange_ins.into_iter().enumerate() {
        let e = ExchangeIns {
            round: 5,
            seed: k as u64,
            msg,
        };
        out.push((Msg::ExchangeIns, codec::encode_exchange_ins(&e).unwrap()));
    }
    let exchange_res = [
        Extensions::new(),
        ext!(p, SecureKeys(keys(1))),
        ext!(
            p,
            SecureShares(ShareKeys {
                client: 1,
                shares: [0u64, 2]
                    .iter()
                    .map(|&to| EncryptedShares {
                        to,
                        ciphertext: vec![to as u8 ^ 0x3c; 60],
                    })
                    .collect(),
            }),
        ),
        ext!(
            p,
            SecureMasked(MaskedInput {
                client: 1,
                masked: (0..n0 as u64 + 3)
                    .map(|i| i.wrapping_mul(0x9e37_79b9) % (1 << 40))
                    .collect(),
            }),
        ),
        ext!(
            p,
            SecureUnmask(UnmaskShares {
                client: 1,
                self_mask_shares: vec![OwnedShare {
                    owner: 0,
                    share: share(2),
                }],
                mask_key_shares: vec![OwnedShare {
                    owner: 2,
                    share: share(2),
                }],
            }),
        ),
    ];
    assert_eq!(CHUNKS, share(1).y.len());
    for e in &exchange_res {
        out.push((Msg::ExchangeRes, codec::encode_exchange_res(e).unwrap()));
    }

    // Registrations, with and without a device class and a label histogram.
    let mut info = ClientInfo::new(17, 600, 150);
    info.device = Some("phone-mid".into());
    p.put(&mut info.metadata, LabelHistogram(vec![60, 0, 120, 3, 417]));
    for c in [info, ClientInfo::new(0, 1, 0)] {
        out.push((Msg::ClientInfo, codec::encode_client_info(&c).unwrap()));
    }
    (out, p)
}

/// A frame header of kind `m`: magic, version, kind, reserved zero.
fn header(m: Msg) -> Vec<u8> {
    let mut b = MAGIC.to_vec();
    b.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    b.push(m.kind() as u8);
    b.push(0);
    b
}

/// An exchange answer holding one payload `body` under `name`, written by hand (the
/// typed encoders cannot put one type's bytes under another's name).
fn foreign(name: &str, body: &[u8]) -> Vec<u8> {
    let mut b = header(Msg::ExchangeRes);
    b.extend_from_slice(&1u32.to_le_bytes());
    b.extend_from_slice(&(name.len() as u64).to_le_bytes());
    b.extend_from_slice(name.as_bytes());
    b.extend_from_slice(&(body.len() as u64).to_le_bytes());
    b.extend_from_slice(body);
    b
}

/// Length prefixes that claim far more than any input holds.
const HUGE: [u64; 6] = [u64::MAX, 1 << 62, 1 << 40, 1 << 32, 0xffff_fff0, 1 << 20];

/// CBOR heads that claim huge arrays, maps, byte and text strings, or open an
/// indefinite container: the allocation bait of the payloads.
const CBOR_BAIT: [&[u8]; 8] = [
    &[0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    &[0x9a, 0xff, 0xff, 0xff, 0xff],
    &[0x99, 0xff, 0xff],
    &[0xba, 0x7f, 0xff, 0xff, 0xff],
    &[0x5a, 0xff, 0xff, 0xff, 0xff],
    &[0x7b, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00],
    &[0x9f],
    &[0xbf],
];

fn mutate(rng: &mut Rng, body: &mut Vec<u8>, seeds: &[(Msg, Vec<u8>)]) {
    for _ in 0..1 + rng.below(4) {
        let n = body.len().max(1);
        let at = rng.below(body.len() + 1);
        match rng.below(10) {
            0 if !body.is_empty() => body[at.min(n - 1)] ^= 1 << rng.below(8),
            1 if !body.is_empty() => body[at.min(n - 1)] = rng.next() as u8,
            2 => body.insert(at, [0x00, 0x01, 0x7f, 0x80, 0xff, 0x9f, 0xf6][rng.below(7)]),
            3 if !body.is_empty() => {
                let len = (1 + rng.below(8)).min(body.len() - at.min(n - 1));
                body.drain(at.min(n - 1)..at.min(n - 1) + len);
            }
            4 => body.truncate(rng.below(n + 1)),
            5 => {
                // A huge u64 length (or u32 count), written over what is there or inserted.
                let v = HUGE[rng.below(HUGE.len())].to_le_bytes();
                let w = if rng.below(2) == 0 { 8 } else { 4 };
                if rng.below(2) == 0 && body.len() >= w {
                    let i = rng.below(body.len() - w + 1);
                    body[i..i + w].copy_from_slice(&v[..w]);
                } else {
                    body.splice(at..at, v[..w].iter().copied());
                }
            }
            6 => {
                // A CBOR head claiming a huge container, over or before a payload's bytes.
                let h = CBOR_BAIT[rng.below(CBOR_BAIT.len())];
                if rng.below(2) == 0 && body.len() >= h.len() {
                    let i = rng.below(body.len() - h.len() + 1);
                    body[i..i + h.len()].copy_from_slice(h);
                } else {
                    body.splice(at..at, h.iter().copied());
                }
            }
            7 => {
                // Crossover: a slice of another seed.
                let (_, other) = &seeds[rng.below(seeds.len())];
                let a = rng.below(other.len());
                let b = (a + 1 + rng.below(64)).min(other.len());
                body.splice(at..at, other[a..b].iter().copied());
            }
            8 if !body.is_empty() => {
                // A small length or count nudged by one, so it still nearly fits.
                let i = at.min(n - 1);
                body[i] = body[i].wrapping_add(if rng.below(2) == 0 { 1 } else { 255 });
            }
            _ => {
                // Repeat a slice (a field or an entry duplicated).
                if body.len() > 2 {
                    let a = rng.below(body.len() - 1);
                    let b = (a + 1 + rng.below(24)).min(body.len());
                    let chunk = body[a..b].to_vec();
                    for _ in 0..1 + rng.below(32) {
                        body.splice(b..b, chunk.iter().copied());
                    }
                }
            }
        }
    }
}

/// One case: the input and the decoder it is sent to.
fn case_input(
    rng: &mut Rng,
    seeds: &[(Msg, Vec<u8>)],
    bodies: &[Vec<u8>],
    names: &[&'static str],
) -> (Msg, Vec<u8>) {
    let (m, b) = match rng.below(16) {
        // A quarter random bytes, half of them behind a valid header.
        0..=3 => {
            let len = if rng.below(8) == 0 {
                rng.below(4096)
            } else {
                rng.below(600)
            };
            let m = MSGS[rng.below(MSGS.len())];
            let mut b = if rng.below(2) == 0 {
                header(m)
            } else {
                Vec::new()
            };
            b.extend((0..len).map(|_| rng.next() as u8));
            (m, b)
        }
        // A payload's body under any registered name, so every payload decoder runs.
        4 => {
            let mut body = bodies[rng.below(bodies.len())].clone();
            if rng.below(2) == 0 {
                mutate(rng, &mut body, seeds);
            }
            (
                Msg::ExchangeRes,
                foreign(names[rng.below(names.len())], &body),
            )
        }
        // The rest mutations of valid encodings.
        _ => {
            let (m, seed) = &seeds[rng.below(seeds.len())];
            let mut b = seed.clone();
            mutate(rng, &mut b, seeds);
            (*m, b)
        }
    };
    // One in eight to a wrong decoder.
    if rng.below(8) == 0 {
        (MSGS[rng.below(MSGS.len())], b)
    } else {
        (m, b)
    }
}

/// The most a decode may allocate for `len` input bytes. serde reserves at most one
/// element per CBOR item present (the codec checks the counts first), each item takes a
/// byte, and the largest element of a registered payload's sequence is 72 bytes (a
/// secure-aggregation key pair): 72 × the input, which
/// `crafted_claims_reserve_at_most_one_element_per_item_present` reaches; a layout takes
/// about 10 × its bytes while it is built. The constant covers error messages and the
/// decoders' fixed structures.
fn bound(len: usize) -> usize {
    80 * len + 16 * 1024
}

#[test]
fn payload_decoding_survives_a_million_random_and_mutated_inputs() {
    let _measuring = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let reg = &fedpace_algos::builtin().codecs;
    let (seeds, payloads) = seeds();
    // The seeds are meaningful: each decodes, re-encodes to the same bytes, and is
    // refused by every other decoder.
    for (m, b) in &seeds {
        assert_eq!(reencode(*m, b, reg).as_ref(), Some(b), "{m:?} seed");
        for other in MSGS.iter().filter(|o| *o != m) {
            assert!(!decodes(*other, b, reg), "{m:?} seed decoded as {other:?}");
        }
    }
    // Every payload the built-in registry decodes travels in some seed.
    let names: Vec<&'static str> = reg.names().collect();
    for n in &names {
        assert!(
            payloads.names.contains(n),
            "payload {n:?} is registered but no seed carries it: add one to `seeds`"
        );
    }

    let only: Option<u64> = std::env::var("FEDPACE_FUZZ_CASE")
        .ok()
        .and_then(|v| v.parse().ok());
    let cases: u64 = std::env::var("FEDPACE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let range = match only {
        Some(c) => c..c + 1,
        None => 0..cases,
    };
    let started = std::time::Instant::now();
    let (mut accepted, mut worst_ratio, mut worst_case, mut worst_small) = (0u64, 0f64, 0u64, 0);
    for case in range.clone() {
        let mut rng = Rng::for_case(case);
        let (m, body) = case_input(&mut rng, &seeds, &payloads.bodies, &names);
        let (outcome, peak) = peak_of(|| catch_unwind(AssertUnwindSafe(|| decodes(m, &body, reg))));
        let ok = outcome.unwrap_or_else(|_| {
            panic!(
                "case {case}: decoding {} bytes as {m:?} panicked (replay: FEDPACE_FUZZ_CASE={case}); \
                 input starts {:02x?}",
                body.len(),
                &body[..body.len().min(64)]
            )
        });
        assert!(
            peak <= bound(body.len()),
            "case {case}: decoding {} bytes as {m:?} allocated {peak} bytes (bound {}; replay: \
             FEDPACE_FUZZ_CASE={case}); input starts {:02x?}",
            body.len(),
            bound(body.len()),
            &body[..body.len().min(64)]
        );
        if body.len() >= 256 {
            let ratio = peak as f64 / body.len() as f64;
            if ratio > worst_ratio {
                (worst_ratio, worst_case) = (ratio, case);
            }
        } else {
            worst_small = worst_small.max(peak);
        }
        if ok {
            accepted += 1;
            // An accepted input re-encodes to a fixed point of decode ∘ encode.
            let once = reencode(m, &body, reg).expect("decoded once");
            let twice = reencode(m, &once, reg);
            assert_eq!(twice.as_ref(), Some(&once), "case {case}: {m:?} round trip");
        }
    }
    let n = range.end - range.start;
    eprintln!(
        "{n} cases in {:.1?}, {accepted} ({:.1} %) decoded as valid, no panic; peak allocation \
         at most {worst_ratio:.1} × the input for inputs ≥ 256 bytes (case {worst_case}) and \
         {worst_small} bytes for smaller ones (bound 80 × input + 16 KiB)",
        started.elapsed(),
        100.0 * accepted as f64 / n.max(1) as f64
    );
    if only.is_none() {
        assert!(
            accepted > n / 100,
            "mutations should still reach valid decodes: {accepted}"
        );
    }
}

/// The worst a payload can make serde reserve: a sequence whose head claims as many
/// elements as there are bytes after it, each a one-byte item that is not an element.
/// Decoding fails at the first; what was reserved is one element per byte.
#[test]
fn crafted_claims_reserve_at_most_one_element_per_item_present() {
    let _measuring = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let reg = &fedpace_algos::builtin().codecs;
    let n = 4096u32;
    // `{"keys": [n items]}` (a key directory: 72-byte elements) and `{"count": 0,
    // "buffers": [], "children": [n items]}` (an optimiser state: 56-byte elements).
    let mut directory = vec![0xa1, 0x64];
    directory.extend_from_slice(b"keys");
    let mut state = vec![0xa3, 0x65];
    state.extend_from_slice(b"count");
    state.extend_from_slice(&[0x00, 0x67]);
    state.extend_from_slice(b"buffers");
    state.extend_from_slice(&[0x80, 0x68]);
    state.extend_from_slice(b"children");
    for (name, mut body) in [
        (SecureDirectory::NAME, directory),
        (OptimizerStateUp::NAME, state),
    ] {
        body.push(0x9a);
        body.extend_from_slice(&n.to_be_bytes());
        body.extend(std::iter::repeat_n(0u8, n as usize));
        let frame = foreign(name, &body);
        let (result, peak) = peak_of(|| codec::decode_exchange_res(&frame, reg));
        let e = result.unwrap_err().to_string();
        assert!(e.contains(name), "{e}");
        let ratio = peak as f64 / frame.len() as f64;
        eprintln!(
            "{name}: {} bytes reserved {peak} ({ratio:.1} ×)",
            frame.len()
        );
        assert!(peak <= bound(frame.len()), "{name}: {peak} bytes");
        // Claiming more elements than there are bytes is refused before serde runs.
        let mut over = body.clone();
        over.pop();
        let frame = foreign(name, &over);
        let (result, peak) = peak_of(|| codec::decode_exchange_res(&frame, reg));
        let e = result.unwrap_err().to_string();
        assert!(e.contains("claims 4096 entries"), "{e}");
        assert!(peak < 4096, "{name}: {peak} bytes for a refused claim");
    }
}
