//! The `candle_model` example: a candle model registered by name trains from a config
//! (docs/library.md, "Your own model and data").

#[path = "../examples/candle_model.rs"]
mod candle_model;

#[test]
fn a_candle_model_wrapped_as_a_fedpace_model_learns_from_a_config() {
    let one = candle_model::run(1).unwrap();
    let global = &one.summary["global"];
    assert_eq!(global["evaluated_on"], "held-out test set");
    // Three blobs (centres ≥ 3.2 apart, σ = 0.8): the MLP separates most of the 300.
    assert!(global["accuracy"].as_f64().unwrap() > 0.9, "{global}");
    assert_eq!(one.summary["rounds_completed"], 15);
    // Same config and seed, another thread count: the same bits.
    let two = candle_model::run(2).unwrap();
    assert_eq!(one.model().as_slice(), two.model().as_slice());
    // Its tensors are the candle model's, named as in the spec.
    let names: Vec<&str> = one
        .model()
        .spec()
        .entries()
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(names, ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]);
}
