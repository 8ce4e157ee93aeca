//! Issue 14: secure aggregation over real sockets (docs/privacy.md, "Secure aggregation
//! over the network"). The four protocol steps travel as `exchange` instructions between
//! the server and the node threads of a [`Loopback`] federation (TLS, signed requests);
//! nothing is simulated inside the server.
//!
//! - the unmasked sum equals the plain sum of the survivors' quantised inputs exactly with
//!   0 %, 10 % and 30 % of the cohort declining mid-protocol (at every one of the four
//!   steps), SecAgg and SecAgg+;
//! - what the server receives of a client is a zero update and protocol messages whose
//!   masked vector shares no coordinate with the client's input;
//! - fewer survivors than the threshold abort the round with the protocol's error;
//! - a node that dies mid-protocol: its clients are recovered as dropped;
//! - the same config and seed give a bit-identical model, round records and message bytes
//!   in simulation and over loopback.

mod common;

use common::*;
use fedpace_algos::pipeline::NoHooks;
use fedpace_algos::stages::secure::{
    SecureConfig, SecureDirectory, SecureForwarded, SecureKeys, SecureMasked, SecurePending,
    SecureSetup, SecureShares, SecureUnmask, SecureUnmaskRequest,
};
use fedpace_algos::stages::Randomness;
use fedpace_algos::{
    AggregationPath, Built, Normalize, Pipeline, PolicyConfig, Sampling, Settings, StagesConfig,
    StrategyConfig,
};
use fedpace_core::round::RunOptions;
use fedpace_core::{
    codec, Client, ClientFactory, ClientId, EvalIns, EvalRes, ExchangeIns, Extensions, Grid,
    LocalState, Payload, Progress, Reply, Session, Strategy, TrainIns, TrainRes,
};
use fedpace_deploy::{ClientHost, Loopback, LoopbackOptions, NetGrid, NetGridConfig};
use fedpace_net::{Kind, Node, Outcome};
use fedpace_params::ParamTree;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const N: usize = 10;

/// The protocol step a message belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Keys,
    Shares,
    Masked,
    Unmask,
}

fn step_of(msg: &Extensions) -> Option<Step> {
    if msg.contains::<SecureSetup>() {
        Some(Step::Keys)
    } else if msg.contains::<SecureDirectory>() {
        Some(Step::Shares)
    } else if msg.contains::<SecureForwarded>() {
        Some(Step::Masked)
    } else if msg.contains::<SecureUnmaskRequest>() {
        Some(Step::Unmask)
    } else {
        None
    }
}

/// What the clients know (recorded on the node side, in this process): each one's
/// quantised input and who sent a masked input.
#[derive(Clone, Default)]
struct Spy(Arc<Mutex<SpyLog>>);

#[derive(Default)]
struct SpyLog {
    inputs: BTreeMap<ClientId, Vec<u64>>,
    masked: BTreeSet<ClientId>,
}

/// A standard client that records its input, and optionally declines one step (answers
/// it with an error, as a client shutting down or refusing would).
struct Participant {
    inner: Box<dyn Client>,
    id: ClientId,
    spy: Spy,
    decline: Option<Step>,
}

impl Client for Participant {
    fn train(&mut self, ins: &TrainIns, s: &mut LocalState) -> fedpace_core::Result<TrainRes> {
        self.inner.train(ins, s)
    }
    fn evaluate(&mut self, ins: &EvalIns, s: &mut LocalState) -> fedpace_core::Result<EvalRes> {
        self.inner.evaluate(ins, s)
    }
    fn exchange(
        &mut self,
        ins: &ExchangeIns,
        s: &mut LocalState,
        session: &mut Session,
    ) -> fedpace_core::Result<Extensions> {
        let step = step_of(&ins.msg);
        if step.is_some() && step == self.decline {
            return Err(fedpace_core::Error::Backend(format!(
                "client {} declines the {:?} step",
                self.id, step
            )));
        }
        if step == Some(Step::Keys) {
            if let Some(p) = s.ext.get::<SecurePending>() {
                self.spy
                    .0
                    .lock()
                    .unwrap()
                    .inputs
                    .insert(self.id, p.input.clone());
            }
        }
        let out = self.inner.exchange(ins, s, session)?;
        if out.contains::<SecureMasked>() {
            self.spy.0.lock().unwrap().masked.insert(self.id);
        }
        Ok(out)
    }
}

fn participants(x: &Experiment, spy: &Spy, decline: BTreeMap<ClientId, Step>) -> ClientFactory {
    let inner = x.factory();
    let spy = spy.clone();
    Arc::new(move |id| {
        Ok(Box::new(Participant {
            inner: inner(id)?,
            id,
            spy: spy.clone(),
            decline: decline.get(&id).copied(),
        }) as Box<dyn Client>)
    })
}

fn secure(dropout: f64, num_shares: Option<usize>) -> StagesConfig {
    StagesConfig {
        secure_aggregation: Some(SecureConfig {
            dropout,
            num_shares,
            ..Default::default()
        }),
        randomness: Randomness::Simulation { seed: 21 },
        ..Default::default()
    }
}

fn pipeline(x: &Experiment, stages: StagesConfig) -> Pipeline {
    let settings = Settings {
        sampling: Sampling::Count(N),
        server_lr: 1.0,
        normalize: Normalize::On,
        aggregation: AggregationPath::Linear,
        base_plan: x.base_plan.clone(),
        stages,
    };
    let policy = PolicyConfig::Constant
        .build_for(x.init.spec().groups())
        .unwrap();
    Pipeline::new("fedavg", settings, policy, Box::new(NoHooks))
}

fn loopback(x: &Experiment, factory: ClientFactory, nodes: usize) -> Loopback {
    let opts = LoopbackOptions {
        nodes,
        workers_per_node: 2,
        grid: NetGridConfig {
            train_deadline: Duration::from_secs(60),
            ..Default::default()
        },
        ..Default::default()
    };
    Loopback::start(
        x.pool(),
        factory,
        fedpace_algos::builtin().codecs.clone(),
        &opts,
    )
    .unwrap()
}

struct NoProgress;
impl Progress for NoProgress {
    fn client_done(&self) {}
}

/// What the server received in one round: the training replies and each step's answers.
struct Seen {
    replies: Vec<Reply<TrainRes>>,
    answers: Vec<Vec<Reply<Extensions>>>,
}

/// One round as `fedpace_core::run` drives it, keeping everything the server received.
fn round(
    p: &mut Pipeline,
    grid: &mut NetGrid,
    x: &mut ParamTree,
    r: u32,
) -> fedpace_core::Result<Seen> {
    let pool = grid.pool();
    let ins = p.configure_train(r, &Arc::new(x.clone()), pool.as_ref(), SEED)?;
    let replies = grid.train(ins, &NoProgress);
    let mut answers = Vec::new();
    let mut last = None;
    loop {
        let msgs = p.exchange(r, &replies, last.take())?;
        if msgs.is_empty() {
            break;
        }
        let got = Grid::exchange(grid, msgs, &NoProgress);
        answers.push(got.clone());
        last = Some(got);
    }
    p.aggregate_train(r, x, &replies, pool.as_ref())?;
    Ok(Seen { replies, answers })
}

/// Over loopback, with 0 %, 10 % and 30 % of the cohort declining at the four steps
/// (SecAgg, t = 6; SecAgg+ with k = 9, t = 5): the server's unmasked sum equals the plain
/// sum of the survivors' quantised inputs exactly; the survivors are exactly the clients
/// that sent a masked input; and what the server received of any client is a zero update
/// and the four protocol messages, the masked vector sharing no coordinate with the input.
#[test]
fn the_unmasked_sum_over_loopback_equals_the_plain_sum_with_0_10_and_30_percent_dropouts() {
    use Step::*;
    // (who declines at which step, SecAgg+'s neighbourhood size or None for SecAgg)
    type Case = (&'static [(ClientId, Step)], Option<usize>);
    let cases: [Case; 5] = [
        (&[], None),
        (&[(3, Masked)], None),
        (&[(1, Keys), (4, Masked), (8, Unmask)], None),
        (&[(2, Shares), (5, Masked), (9, Unmask)], Some(9)),
        (&[(0, Masked), (6, Masked), (7, Masked)], Some(9)),
    ];
    let x = experiment_with("fedavg", N);
    let client_to_server = [
        SecureKeys::NAME,
        SecureShares::NAME,
        SecureMasked::NAME,
        SecureUnmask::NAME,
    ];
    for (declining, shares) in cases {
        let what = format!("declining {declining:?}, num_shares {shares:?}");
        let decline: BTreeMap<ClientId, Step> = declining.iter().copied().collect();
        let spy = Spy::default();
        let mut lb = loopback(&x, participants(&x, &spy, decline.clone()), 2);
        let mut p = pipeline(&x, secure(0.0, shares));
        let mut model = x.init.clone();
        for r in 1..=2 {
            *spy.0.lock().unwrap() = SpyLog::default();
            let seen = round(&mut p, lb.grid(), &mut model, r).unwrap();
            let raw = p.secure_stage().unwrap().last_sum().unwrap().clone();
            let log = spy.0.lock().unwrap();

            // Exactly the clients that got their masked input through are summed.
            let survivors: BTreeSet<ClientId> = raw.survivors.iter().copied().collect();
            assert_eq!(survivors, log.masked, "{what}, round {r}");
            let expected: BTreeSet<ClientId> = (0..N as u64)
                .filter(|id| !matches!(decline.get(id), Some(Keys | Shares | Masked)))
                .collect();
            assert_eq!(survivors, expected, "{what}, round {r}");
            assert_eq!(
                log.inputs.len(),
                N - decline.values().filter(|s| **s == Keys).count()
            );
            let mut plain = vec![0u64; raw.sum.len()];
            for id in &survivors {
                for (s, v) in plain.iter_mut().zip(&log.inputs[id]) {
                    *s = (*s + v) % (1u64 << 32);
                }
            }
            assert_eq!(plain, raw.sum, "{what}, round {r}: unmasked sum");

            // The server's view of each client.
            assert_eq!(seen.replies.len(), N);
            for rep in &seen.replies {
                let res = rep.result.as_ref().unwrap();
                assert!(res.delta.as_slice().iter().all(|v| *v == 0.0), "{what}");
                assert!(res.ext.is_empty() && res.report.ext.is_empty(), "{what}");
                assert!(res.report.update_norm == 0.0 && res.report.grad_norm == 0.0);
                assert!(res.report.loss_before.is_nan());
            }
            assert_eq!(seen.answers.len(), 4, "{what}: four protocol steps");
            for (k, answers) in seen.answers.iter().enumerate() {
                for a in answers {
                    match &a.result {
                        Ok(ext) => {
                            let names: Vec<&str> = ext.names().collect();
                            assert_eq!(names, [client_to_server[k]], "{what}");
                            if let Some(m) = ext.get::<SecureMasked>() {
                                let input = &log.inputs[&a.client];
                                assert_eq!(m.0.masked.len(), input.len());
                                let same =
                                    m.0.masked.iter().zip(input).filter(|(a, b)| a == b).count();
                                assert_eq!(same, 0, "{what}: client {}", a.client);
                            }
                        }
                        Err(f) => {
                            // A declining client's own error, carried over the wire.
                            assert!(decline.contains_key(&a.client), "{what}: {f}");
                            assert!(f.to_string().contains("declines"), "{what}: {f}");
                        }
                    }
                }
            }
            let summary = p.secure_stage().unwrap();
            assert!(summary.last_sum().is_some());
        }
        lb.finish().unwrap();
    }
}

/// Over loopback, five of ten clients declining at the masked input leave five survivors
/// for a threshold of six: the round aborts with the protocol's error.
#[test]
fn fewer_survivors_than_the_threshold_over_loopback_abort_the_round() {
    let x = experiment_with("fedavg", N);
    let decline = (0..5).map(|id| (id * 2, Step::Masked)).collect();
    let spy = Spy::default();
    let mut lb = loopback(&x, participants(&x, &spy, decline), 2);
    let mut p = pipeline(&x, secure(0.0, None));
    let mut model = x.init.clone();
    let e = round(&mut p, lb.grid(), &mut model, 1)
        .err()
        .expect("aborted")
        .to_string();
    assert!(
        e.contains("secure aggregation")
            && e.contains("5 survivors left, the threshold is 6; round aborted"),
        "{e}"
    );
    assert_eq!(model.as_slice(), x.init.as_slice(), "no update applied");
    lb.finish().unwrap();
}

/// A node hosting three of the ten clients (30 %) dies in the middle of the protocol: it
/// takes the step that asks for the masked inputs and leaves without answering (its
/// clients' instructions fail as `gone`). Their masks are recovered from the other
/// clients' shares and the sum of the seven survivors is exact.
#[test]
fn a_node_that_dies_mid_protocol_leaves_an_exact_sum_of_the_survivors() {
    let x = experiment_with("fedavg", N);
    let spy = Spy::default();
    let registry = fedpace_algos::builtin().codecs.clone();
    let fed = federation("secagg-death", &[0..7, 7..10]);
    let server = Arc::new(fed.server(|_| {}));
    let addr = format!("127.0.0.1:{}", server.local_addr().port());
    let stop = Arc::new(AtomicBool::new(false));
    // Node 0: clients 0..7, served normally.
    let healthy = {
        let host = ClientHost::new(participants(&x, &spy, BTreeMap::new()), registry.clone());
        let (config, stop) = (fed.node_config(&addr, 0), stop.clone());
        std::thread::spawn(move || {
            let node = Node::connect(config).unwrap();
            node.serve(2, &stop, |ins| host.handle(ins)).unwrap();
            let _ = node.leave();
        })
    };
    // Node 1: clients 7..10, by hand; it dies on the masked-input step.
    let doomed = {
        let host = ClientHost::new(participants(&x, &spy, BTreeMap::new()), registry.clone());
        let (config, stop, registry) = (fed.node_config(&addr, 1), stop.clone(), registry.clone());
        std::thread::spawn(move || {
            let node = Node::connect(config).unwrap();
            while !stop.load(Ordering::Relaxed) {
                let list = node.pull().unwrap();
                let dies = list.iter().any(|i| {
                    i.kind == Kind::Exchange
                        && codec::decode_exchange_ins(&i.payload, &registry)
                            .is_ok_and(|e| step_of(&e.msg) == Some(Step::Masked))
                });
                if dies {
                    node.leave().unwrap();
                    return list.len();
                }
                let out: Vec<Outcome> = list
                    .iter()
                    .map(|i| Outcome::for_instruction(i, host.handle(i)))
                    .collect();
                node.push(&out).unwrap();
            }
            0
        })
    };
    assert_eq!(server.wait_for_clients(N, Duration::from_secs(30)), N);
    let mut grid =
        NetGrid::new(server.clone(), x.pool(), registry, NetGridConfig::default()).unwrap();
    let mut p = pipeline(&x, secure(0.0, None));
    let mut model = x.init.clone();
    let seen = round(&mut p, &mut grid, &mut model, 1).unwrap();
    assert_eq!(
        doomed.join().unwrap(),
        3,
        "the node died holding its 3 instructions"
    );
    let raw = p.secure_stage().unwrap().last_sum().unwrap().clone();
    let log = spy.0.lock().unwrap();
    assert_eq!(raw.survivors, (0..7).collect::<Vec<_>>());
    let mut plain = vec![0u64; raw.sum.len()];
    for id in &raw.survivors {
        for (s, v) in plain.iter_mut().zip(&log.inputs[id]) {
            *s = (*s + v) % (1u64 << 32);
        }
    }
    assert_eq!(plain, raw.sum, "unmasked sum");
    // The dead node's clients settled as gone at the masked input; the unmask step went
    // to the seven survivors only.
    for a in &seen.answers[2] {
        if a.client >= 7 {
            let e = a.result.as_ref().unwrap_err().to_string();
            assert!(e.contains("gone"), "{e}");
        }
    }
    let last: BTreeSet<ClientId> = seen.answers[3].iter().map(|a| a.client).collect();
    assert_eq!(last, (0..7).collect());
    drop(log);
    stop.store(true, Ordering::Relaxed);
    healthy.join().unwrap();
}

/// The same config and seed, in simulation and over loopback, with 10 % of each cohort
/// dropping out (simulated: the server stops writing to them at a drawn step): the final
/// model, every round record and the bytes of every message (training, evaluation and the
/// protocol's exchanges) are identical.
#[test]
fn secure_aggregation_over_loopback_equals_simulation() {
    let x = experiment_with("fedavg", N);
    let run = |grid: &mut dyn Grid| {
        let policy = PolicyConfig::Constant
            .build_for(x.init.spec().groups())
            .unwrap();
        let built = StrategyConfig::named("fedavg")
            .unwrap()
            .with_clients_per_round(N)
            .with_aggregation(AggregationPath::Linear)
            .build_with(x.base_plan.clone(), policy, secure(0.1, Some(7)))
            .unwrap();
        let Built::Sync(mut s) = built else {
            panic!("fedavg is synchronous")
        };
        let opts = RunOptions {
            rounds: ROUNDS,
            seed: SEED,
            eval_every: 1,
            finetune_steps: 0,
            personalized: Default::default(),
            max_test_samples: None,
            keep_records: true,
            eval_clients: None,
        };
        fedpace_core::run(s.as_mut(), grid, x.init.clone(), &opts, &mut Quiet).unwrap()
    };
    let sim = fedpace_sim::SimGrid::new(x.pool(), x.factory(), 2).unwrap();
    let mut counted = fedpace_deploy::CountingGrid::new(sim);
    let a = run(&mut counted);
    let sim_traffic = counted.take_traffic();
    let mut lb = loopback(&x, x.factory(), 2);
    let b = run(lb.grid());
    let net_traffic = lb.grid().take_traffic();
    lb.finish().unwrap();

    assert_eq!(a.completed_rounds, ROUNDS);
    assert_eq!(bits(&a.global), bits(&b.global), "final model");
    assert_ne!(bits(&a.global), bits(&x.init), "the model moved");
    let (ra, rb) = (records(&a), records(&b));
    for (r, (ra, rb)) in ra.iter().zip(&rb).enumerate() {
        assert_eq!(ra, rb, "round {} record", r + 1);
        assert!(ra["aggregate"]["secure"].is_object(), "{ra}");
    }
    assert_eq!(sim_traffic.len(), net_traffic.len(), "rows");
    let mut exchanged = 0;
    for (s, n) in sim_traffic.iter().zip(&net_traffic) {
        let key = (s.round, s.client, s.kind);
        assert_eq!(key, (n.round, n.client, n.kind));
        assert_eq!((s.sent, s.received), (n.sent, n.received), "{key:?}");
        if s.kind == Kind::Exchange {
            exchanged += 1;
            assert!(n.wire_sent > n.sent, "{key:?}");
        }
    }
    assert!(exchanged >= N, "exchange rows: {exchanged}");
}
