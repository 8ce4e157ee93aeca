//! Hand-computed values for the transforms the golden tests do not cover, and the
//! validation messages of the typed specs.

use fedpace_optim::*;
use fedpace_params::ParamSpec;

fn two() -> ParamSpec {
    ParamSpec::builder()
        .add("a", &[2], "body")
        .add("b", &[2], "head")
        .build()
        .unwrap()
}

fn once(tx: &dyn Transform, spec: &ParamSpec, u: &mut [f32], p: &[f32]) {
    let rates = vec![1.0; spec.num_groups()];
    let ctx = StepContext {
        spec,
        group_rates: &rates,
        step: 1,
    };
    tx.update(u, &mut tx.init(spec), p, &ctx).unwrap();
}

#[test]
fn trust_ratio_per_tensor_with_guards_and_cap() {
    let spec = two();
    // tensor a: ‖p‖ = 5, ‖u‖ = 1 → ×5; tensor b: ‖p‖ = 0 → ratio 1
    let mut u = vec![0.6, 0.8, 1.0, 2.0];
    once(
        &scale_by_trust_ratio(),
        &spec,
        &mut u,
        &[3.0, 4.0, 0.0, 0.0],
    );
    assert_eq!(u, vec![3.0, 4.0, 1.0, 2.0]);
    // capped at 2; zero update stays zero
    let mut u = vec![0.6, 0.8, 0.0, 0.0];
    once(
        &scale_by_trust_ratio().with_max_ratio(2.0),
        &spec,
        &mut u,
        &[3.0, 4.0, 1.0, 1.0],
    );
    assert_eq!(u, vec![1.2, 1.6, 0.0, 0.0]);
}

#[test]
fn block_norm_clips_each_tensor_alone() {
    let spec = two();
    let mut u = vec![3.0, 4.0, 0.3, 0.4];
    once(&clip_by_block_norm(1.0), &spec, &mut u, &[0.0; 4]);
    assert!((u[0] - 0.6).abs() < 1e-7 && (u[1] - 0.8).abs() < 1e-7);
    assert_eq!(&u[2..], &[0.3, 0.4]);
    // the global version scales both by 1/‖(3,4,0.3,0.4)‖
    let mut g = vec![3.0, 4.0, 0.3, 0.4];
    once(&clip_by_global_norm(1.0), &spec, &mut g, &[0.0; 4]);
    let n = (25.0f64 + 0.25).sqrt();
    assert!((g[2] as f64 - 0.3 / n).abs() < 1e-7);
}

#[test]
fn yogi_first_step_by_hand() {
    let spec = ParamSpec::builder().add("w", &[2], "body").build().unwrap();
    let mut u = vec![2.0, 0.0];
    once(
        &scale_by_yogi(0.9, 0.999, 1e-3, 1e-6),
        &spec,
        &mut u,
        &[0.0; 2],
    );
    let v: f64 = 1e-6 + 0.001 * 4.0; // sign(v₀ − g²) = −1
    let want = 0.2 / (v.sqrt() + 1e-3);
    assert!((u[0] as f64 - want).abs() < 1e-5 * want, "{}", u[0]);
    assert_eq!(u[1], 0.0);
}

#[test]
fn adamw_decay_is_decoupled_and_scaled_by_the_rate() {
    // zero gradients: Adam contributes 0, so the step is exactly −η·λ·p
    let spec = ParamSpec::builder().add("w", &[2], "body").build().unwrap();
    let tx = adamw(0.9, 0.999, 1e-8, 0.1);
    let mut u = vec![0.0, 0.0];
    let p = [2.0, -4.0];
    let ctx = StepContext {
        spec: &spec,
        group_rates: &[0.5],
        step: 0,
    };
    tx.update(&mut u, &mut tx.init(&spec), &p, &ctx).unwrap();
    assert_eq!(u, vec![-0.1, 0.2]);
}

#[test]
fn optimizer_spec_defaults_round_trip_and_validation() {
    for name in [
        "sgd", "momentum", "adam", "adamw", "adagrad", "yogi", "amsgrad",
    ] {
        let s: OptimizerSpec = serde_json::from_str(&format!(r#"{{"name":"{name}"}}"#)).unwrap();
        assert_eq!(s.name(), name);
        s.validate().unwrap();
        let back: OptimizerSpec =
            serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        s.build().unwrap();
    }
    let adamw: OptimizerSpec = serde_json::from_str(r#"{"name":"adamw"}"#).unwrap();
    assert_eq!(
        adamw,
        OptimizerSpec::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-2
        }
    );
    let err = |j: &str| {
        serde_json::from_str::<OptimizerSpec>(j)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        err(r#"{"name":"momentum","momentum":0,"nesterov":true}"#),
        "momentum = 0: > 0 when nesterov = true"
    );
    assert_eq!(
        err(r#"{"name":"adam","beta2":1.0}"#),
        "beta2 = 1: in [0, 1)"
    );
    assert_eq!(
        err(r#"{"name":"sgd","weight_decay":-0.1}"#),
        "weight_decay = -0.1: finite and >= 0"
    );
    assert_eq!(err(r#"{"name":"yogi","eps":0}"#), "eps = 0: finite and > 0");
    assert!(serde_json::from_str::<OptimizerSpec>(r#"{"name":"rmsprop"}"#).is_err());
    assert!(serde_json::from_str::<OptimizerSpec>(r#"{"name":"adam","betas":[0.9,0.9]}"#).is_err());
    // build() refuses what validate() refuses
    assert!(OptimizerSpec::Adam {
        beta1: 0.9,
        beta2: 0.999,
        eps: f64::NAN,
        weight_decay: 0.0
    }
    .build()
    .is_err());
}

#[test]
fn state_mode_is_kebab_case() {
    for (m, s) in [
        (StateMode::Reset, "\"reset\""),
        (StateMode::Keep, "\"keep\""),
        (StateMode::ServerInit, "\"server-init\""),
    ] {
        assert_eq!(serde_json::to_string(&m).unwrap(), s);
        assert_eq!(serde_json::from_str::<StateMode>(s).unwrap(), m);
    }
}

#[test]
fn fedopt_config_validates_and_reads_toml_like_json() {
    let cfg: FedOptConfig =
        serde_json::from_str(r#"{"server_lr": 0.01, "rule": "flower"}"#).unwrap();
    assert_eq!(cfg.rule, ServerRule::Flower);
    assert_eq!(cfg.tau, 1e-3);
    assert_eq!(
        FedOptConfig::default()
            .with_server_lr(-1.0)
            .validate()
            .unwrap_err()
            .to_string(),
        "server_lr = -1: finite and > 0"
    );
    assert!(serde_json::from_str::<FedOptConfig>(r#"{"eta": 0.1}"#).is_err());
}

#[test]
fn fedexp_step_extrapolates_and_never_shrinks() {
    let mut x = vec![0.0f32, 0.0];
    let lr = server::fedexp_step(&mut x, &[&[1.0, 0.0], &[0.0, 1.0]], 1e-12).unwrap();
    // Σ‖Δ_k‖² = 2, ‖Δ̄‖² = 0.5, M = 2 → 2 / (2·2·0.5) = 1
    assert_eq!(lr, 1.0);
    assert_eq!(x, vec![0.5, 0.5]);
    // mean exactly 0: the largest extrapolation, still finite thanks to ε > 0
    let lr = server::fedexp_server_lr(&[&[1.0, 0.0], &[0.0, 1.0], &[-1.0, -1.0]], 1e-3)
        .unwrap()
        .0;
    assert!((lr - 4.0 / (6.0 * 1e-3)).abs() < 1e-6, "{lr}");
    assert!(server::fedexp_server_lr(&[&[1.0]], 0.0).is_err());
    assert!(server::fedexp_server_lr(&[], 1e-3).is_err());
    assert!(server::fedexp_server_lr(&[&[1.0], &[1.0, 2.0]], 1e-3).is_err());
}
