//! A deployment refuses seeded randomness (docs/privacy.md, "Randomness"). Its own test
//! binary: `enter_deployment` is process-wide and cannot be undone.

use fedpace_privacy::rng::{enter_deployment, in_deployment};
use fedpace_privacy::Randomness;
use rand::RngCore;

#[test]
fn a_deployment_refuses_simulation_seeds_and_draws_from_the_os() {
    let sim = Randomness::Simulation { seed: 3 };
    let before = sim.rng(9).unwrap();
    assert!(before.is_simulated());
    assert!(!in_deployment());

    enter_deployment();
    assert!(in_deployment());
    let e = sim.rng(9).unwrap_err().to_string();
    assert_eq!(
        e,
        "randomness = simulation seed 3: operating-system randomness in a deployment (a \
         seeded generator makes noise, masks and keys predictable)"
    );
    let mut a = Randomness::Os {}.rng(9).unwrap();
    let mut b = Randomness::Os {}.rng(9).unwrap();
    assert!(!a.is_simulated());
    assert_ne!(a.next_u64(), b.next_u64(), "fresh entropy per generator");
}
