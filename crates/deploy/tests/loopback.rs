//! Issue 13 parity: the same config and seed give a bit-identical model and bit-identical
//! round records (wall times aside) in simulation and over real sockets on loopback (TLS,
//! signed requests, two node threads), for fedavg, fedadam, scaffold, ditto and fedbuff;
//! and the communication figures measured on the wire equal the simulation's computed
//! ones, client by client and round by round.
//!
//! fedbuff runs on `fedpace_sim::run_async`, whose arrival order is the simulated clock's
//! (dispatch time + the device profile's completion time), not the real one: the network
//! only carries the work, so it too is bit-identical (docs/network.md, "Parity").

mod common;

use common::*;

fn parity(name: &str) {
    let x = experiment(name);
    let (sim, sim_traffic) = x.simulate();
    let (net, net_traffic, stats) = over_loopback(&x);
    assert_eq!(sim.completed_rounds, ROUNDS, "{name}");
    assert_eq!(bits(&sim.global), bits(&net.global), "{name}: final model");
    assert_ne!(bits(&sim.global), bits(&x.init), "{name}: the model moved");
    let (a, b) = (records(&sim), records(&net));
    assert_eq!(a.len(), ROUNDS as usize, "{name}");
    // Each round's bytes are in its record (and so compared below): computed by the
    // counting simulation grid, measured by the network grid.
    for r in &a {
        let t = &r["traffic"];
        assert!(t["model"].as_u64().unwrap() > 0, "{name}: {t}");
        assert!(t["update"].as_u64().unwrap() > 0, "{name}: {t}");
        assert!(
            t["sent"].as_u64() >= t["train_sent"].as_u64(),
            "{name}: {t}"
        );
    }
    for (r, (a, b)) in a.iter().zip(&b).enumerate() {
        assert_eq!(a, b, "{name}: round {} record", r + 1);
    }
    assert_eq!(
        serde_json::to_value(&sim.final_eval).unwrap(),
        serde_json::to_value(&net.final_eval).unwrap(),
        "{name}: final evaluation"
    );
    let failures = a
        .iter()
        .flat_map(|r| r["clients"].as_array().unwrap().iter());
    assert!(
        failures.into_iter().all(|c| c["failure"].is_null()),
        "{name}: no client failed"
    );
    assert!(
        stats.iter().all(|s| s.instructions > 0),
        "{name}: both nodes worked"
    );

    // Communication accounting: one row per client, round and kind, equal figures.
    assert!(!sim_traffic.is_empty());
    assert_eq!(sim_traffic.len(), net_traffic.len(), "{name}: rows");
    let mut named = 0;
    for (s, n) in sim_traffic.iter().zip(&net_traffic) {
        let key = (s.round, s.client, s.kind);
        assert_eq!(key, (n.round, n.client, n.kind), "{name}");
        assert_eq!(
            (s.sent, s.received),
            (n.sent, n.received),
            "{name}: {key:?}"
        );
        // The parts (training rows): the same computed and measured, within the totals.
        let parts = |t: &fedpace_deploy::ClientTraffic| {
            [
                t.model,
                t.plan,
                t.instruction_payloads,
                t.update,
                t.reply_payloads,
            ]
        };
        assert_eq!(parts(s), parts(n), "{name}: {key:?}");
        if n.kind == fedpace_net::Kind::Train {
            assert!(n.model > 0 && n.plan > 0, "{name}: {key:?}: {n:?}");
            assert!(
                n.model + n.plan + n.instruction_payloads <= n.sent,
                "{name}: {key:?}: {n:?}"
            );
            assert!(
                n.update + n.reply_payloads <= n.received,
                "{name}: {key:?}: {n:?}"
            );
        } else {
            assert_eq!(parts(n), [0; 5], "{name}: {key:?}");
        }
        assert!(
            s.sent > 4 * x.init.as_slice().len() as u64,
            "{name}: the model went"
        );
        // The transport's ledger: the same payloads in their protobuf messages, a few
        // dozen bytes of field headers more each; or, for an instruction whose payload a
        // node already held from one of its other clients, the field headers alone
        // (`Instruction.payload_of`).
        if n.wire_sent > n.sent {
            let over_sent = n.wire_sent - n.sent;
            assert!(
                (10..=64).contains(&over_sent),
                "{name}: {key:?}: {over_sent}"
            );
        } else {
            assert!((10..=64).contains(&n.wire_sent), "{name}: {key:?}: {n:?}");
            named += 1;
        }
        let over_recv = n.wire_received - n.received;
        assert!(
            (6..=64).contains(&over_recv),
            "{name}: {key:?}: {over_recv}"
        );
    }
    // Each node hosts several clients, which get the same model in a round: it crossed
    // the network once per node (18 of 30 instructions in a run of the sync strategies).
    assert!(named > 0, "{name}: no instruction named a payload");
}

#[test]
fn fedavg_over_loopback_equals_simulation() {
    parity("fedavg");
}

#[test]
fn fedadam_over_loopback_equals_simulation() {
    parity("fedadam");
}

#[test]
fn scaffold_over_loopback_equals_simulation() {
    parity("scaffold");
}

#[test]
fn ditto_over_loopback_equals_simulation() {
    parity("ditto");
}

#[test]
fn fedbuff_over_loopback_equals_simulation() {
    parity("fedbuff");
}

/// Checks what passes through an arrival source: each client has at most one dispatch
/// in flight, and every arrival answers one.
struct Counting<'a> {
    inner: &'a mut fedpace_deploy::NetArrivals,
    in_flight: std::collections::BTreeSet<fedpace_core::ClientId>,
    sent: u64,
    arrived: u64,
    updates: u64,
}

impl fedpace_core::asynchronous::ArrivalSource for Counting<'_> {
    fn available(&self, client: fedpace_core::ClientId, key: u32) -> bool {
        self.inner.available(client, key)
    }

    fn send(
        &mut self,
        grid: &mut dyn fedpace_core::Grid,
        work: Vec<(fedpace_core::ClientId, fedpace_core::TrainIns)>,
        progress: &dyn fedpace_core::Progress,
    ) -> fedpace_core::Result<()> {
        for (c, _) in &work {
            assert!(self.in_flight.insert(*c), "client {c} sent work twice");
            self.sent += 1;
        }
        self.inner.send(grid, work, progress)
    }

    fn next(&mut self) -> Option<fedpace_core::asynchronous::Arrival> {
        let a = self.inner.next()?;
        assert!(
            self.in_flight.remove(&a.client),
            "an arrival from client {} with nothing in flight",
            a.client
        );
        self.arrived += 1;
        if matches!(a.outcome, fedpace_core::asynchronous::Outcome::Update(_)) {
            self.updates += 1;
        }
        Some(a)
    }
}

/// Issue 13: fedbuff on the real clock (arrivals in the order replies reach the server)
/// over loopback completes its versions with a sane accuracy, and every dispatch
/// arrives, and is folded into a version's record, exactly once.
#[test]
fn fedbuff_on_the_real_clock_folds_every_arrival_once() {
    use fedpace_algos::{Built, PolicyConfig};
    use fedpace_core::asynchronous::{run_arrivals, ArrivalSource};
    const VERSIONS: u32 = 15;
    let x = experiment("fedbuff");
    let registry = fedpace_algos::builtin().codecs.clone();
    let opts = fedpace_deploy::LoopbackOptions {
        workers_per_node: 2,
        ..Default::default()
    };
    let mut lb = fedpace_deploy::Loopback::start(x.pool(), x.factory(), registry, &opts).unwrap();
    let mut source = lb.grid().real_clock();
    let policy = PolicyConfig::Constant
        .build_for(x.init.spec().groups())
        .unwrap();
    let Built::Async(mut a) = x.strategy.build(x.base_plan.clone(), policy).unwrap() else {
        panic!("fedbuff is asynchronous")
    };
    let mut counting = Counting {
        inner: &mut source,
        in_flight: Default::default(),
        sent: 0,
        arrived: 0,
        updates: 0,
    };
    let out = run_arrivals(
        a.strategy.as_mut(),
        a.policy.as_mut(),
        &a.base_plan,
        &mut counting,
        lb.grid(),
        fedpace_core::Start::Fresh(x.init.clone()),
        &fedpace_sim::AsyncOptions {
            updates: VERSIONS,
            concurrency: a.concurrency,
            rate_decay: a.rate_decay,
            seed: SEED,
            eval_every: 0,
            finetune_steps: 0,
            max_test_samples: None,
            keep_records: true,
            eval_clients: None,
        },
        &mut Quiet,
    )
    .unwrap();
    let (sent, arrived, updates) = (counting.sent, counting.arrived, counting.updates);
    let in_flight = counting.in_flight.len() as u64;
    let in_flight_clients: Vec<u64> = counting.in_flight.iter().copied().collect();
    assert_eq!(out.completed_rounds, VERSIONS);
    assert_eq!(
        sent,
        arrived + in_flight,
        "every dispatch arrives once or is in flight"
    );
    assert_eq!((source.sent(), source.arrived()), (sent, arrived));
    // Every arrival is in exactly one version's record; the updates among them were
    // folded (buffer of 2: two per version).
    let recorded: usize = out.rounds.iter().map(|r| r.clients.len()).sum();
    assert_eq!(recorded as u64, arrived);
    let folded = out
        .rounds
        .iter()
        .flat_map(|r| &r.clients)
        .filter(|c| c.failure.is_none())
        .count() as u64;
    assert_eq!(folded, updates);
    assert_eq!(updates, 2 * u64::from(VERSIONS), "no client failed");
    assert_ne!(bits(&out.global), bits(&x.init), "the model moved");
    let acc = out.final_eval.global_accuracy;
    eprintln!("fedbuff, real clock, {VERSIONS} versions: global accuracy {acc:.3}");
    assert!(acc.is_finite() && acc > 0.3, "accuracy {acc}");
    // A checkpoint of the source: a restored one hands back the dispatches in flight at
    // the save as lost (their replies cannot be saved), then nothing.
    let saved = source.save_state().unwrap();
    let mut restored = lb.grid().real_clock();
    restored.restore_state(&saved).unwrap();
    let mut lost = Vec::new();
    while let Some(a) = restored.next() {
        match a.outcome {
            fedpace_core::asynchronous::Outcome::Lost(why) => {
                assert!(why.contains("in flight when the server stopped"), "{why}");
                lost.push(a.client);
            }
            _ => panic!("client {}: only lost dispatches come back", a.client),
        }
    }
    assert_eq!(
        lost, in_flight_clients,
        "the dispatches in flight at the save"
    );
    assert_eq!(restored.sent(), source.sent());
    assert_eq!(restored.arrived(), source.arrived() + in_flight);
    let e = restored
        .restore_state(b"not a checkpoint")
        .unwrap_err()
        .to_string();
    assert!(e.contains("real-clock"), "{e}");
    lb.finish().unwrap();
}

/// A node that cannot join (here: more clients than a node may host) ends the wait for
/// the clients at once with its error, not after the connect timeout.
#[test]
fn a_node_that_cannot_join_ends_the_wait_with_its_error() {
    let x = experiment_with("fedavg", 100_001);
    let opts = fedpace_deploy::LoopbackOptions {
        nodes: 1,
        workers_per_node: 1,
        ..Default::default()
    };
    let start = std::time::Instant::now();
    let e = fedpace_deploy::Loopback::start(
        x.pool(),
        x.factory(),
        fedpace_algos::builtin().codecs.clone(),
        &opts,
    )
    .err()
    .expect("refused");
    assert!(
        e.contains("0 of 100001 clients connected; a node could not join")
            && e.contains("more than 100000 clients on one node"),
        "{e}"
    );
    assert!(
        start.elapsed() < opts.connect_timeout / 2,
        "{:?}",
        start.elapsed()
    );
}
