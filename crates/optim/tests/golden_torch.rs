//! Golden numbers from torch.optim (SGD with momentum/Nesterov/weight decay, Adam, AdamW,
//! AMSGrad, Adagrad). The generating script is `golden/torch_optim.py`; its output
//! `golden/torch_optim.json` is committed. Each case is built from its `OptimizerSpec`
//! JSON, so the serde defaults are checked against PyTorch's defaults too, and the two
//! parameter groups run at different rates (torch param groups).

use fedpace_optim::{apply_updates, OptimizerSpec, StepContext};
use fedpace_params::ParamSpec;
use serde_json::Value;

/// Relative tolerance. Parameters and steps are O(0.1–1); a few values pass near zero
/// through cancellation (`p − η·g`), where relative error is meaningless, so the
/// denominator is floored at 0.1: near zero the check is 1e-7 absolute, a few f32 ulps
/// of the operands (PyTorch fuses `p + α·g` with FMA and orders some ops differently).
const REL: f64 = 1e-6;
const FLOOR: f64 = 0.1;

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn matches_torch_optim() {
    let doc: Value = serde_json::from_str(include_str!("golden/torch_optim.json")).unwrap();
    let spec = ParamSpec::builder()
        .add("w", &[3, 2], "body")
        .add("b", &[3], "head")
        .build()
        .unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let opt: OptimizerSpec = serde_json::from_value(case["optimizer"].clone()).unwrap();
        let tx = opt.build().unwrap();
        let rates = floats(&case["lrs"]);
        let mut p = floats(&case["params0"]);
        let mut state = tx.init(&spec);
        let expected = case["params"].as_array().unwrap();
        let mut worst = 0.0f64;
        for (t, (g, want)) in case["grads"]
            .as_array()
            .unwrap()
            .iter()
            .zip(expected)
            .enumerate()
        {
            let mut u = floats(g);
            let ctx = StepContext {
                spec: &spec,
                group_rates: &rates,
                step: t as u64,
            };
            tx.update(&mut u, &mut state, &p, &ctx).unwrap();
            apply_updates(&mut p, &u);
            for (i, (&got, &want)) in p.iter().zip(&floats(want)).enumerate() {
                let err = (got as f64 - want as f64).abs() / (want.abs() as f64).max(FLOOR);
                worst = worst.max(err);
                assert!(
                    err <= REL,
                    "{name}: step {t}, value {i}: got {got}, torch {want} (rel err {err:.2e})"
                );
            }
        }
        eprintln!("{name}: worst relative error {worst:.2e}");
    }
}
