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
    for (s, n) in sim_traffic.iter().zip(&net_traffic) {
        let key = (s.round, s.client, s.kind);
        assert_eq!(key, (n.round, n.client, n.kind), "{name}");
        assert_eq!(
            (s.sent, s.received),
            (n.sent, n.received),
            "{name}: {key:?}"
        );
        assert!(
            s.sent > 4 * x.init.as_slice().len() as u64,
            "{name}: the model went"
        );
        // The transport's ledger: the same payloads in their protobuf messages, a few
        // dozen bytes of field headers more each.
        let (over_sent, over_recv) = (n.wire_sent - n.sent, n.wire_received - n.received);
        assert!(
            (10..=64).contains(&over_sent),
            "{name}: {key:?}: {over_sent}"
        );
        assert!(
            (6..=64).contains(&over_recv),
            "{name}: {key:?}: {over_recv}"
        );
    }
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
