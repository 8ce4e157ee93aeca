//! The conformance suite (STYLE.md): one table, and every transform / optimiser in it
//! must converge on a quadratic, honour per-group rates, survive a serde round trip of
//! its state bit-exactly, and behave the same inside `partition` / `masked`.

use fedpace_optim::server::{fedavgm, ServerRule};
use fedpace_optim::*;
use fedpace_params::ParamSpec;

type Build = fn() -> Box<dyn Transform>;

struct Case {
    name: &'static str,
    build: Build,
    /// Rate for the convergence run.
    rate: f32,
    steps: u64,
    /// Final loss must be below `tol × initial loss`.
    tol: f64,
}

fn b<T: Transform + 'static>(t: T) -> Box<dyn Transform> {
    Box::new(t)
}

fn spec_build(s: &str) -> Box<dyn Transform> {
    let spec: OptimizerSpec = serde_json::from_str(s).unwrap();
    spec.build().unwrap()
}

fn cases() -> Vec<Case> {
    let c = |name, build, rate, steps, tol| Case {
        name,
        build,
        rate,
        steps,
        tol,
    };
    vec![
        c("sgd", || b(sgd()), 0.2, 200, 1e-6),
        c("momentum", || b(momentum(0.9, false)), 0.05, 300, 1e-6),
        c("nesterov", || b(momentum(0.9, true)), 0.05, 300, 1e-6),
        c("adam", || b(adam(0.9, 0.999, 1e-8)), 0.02, 800, 1e-3),
        c(
            "adamw",
            || b(adamw(0.9, 0.999, 1e-8, 1e-3)),
            0.02,
            800,
            1e-3,
        ),
        c("adagrad", || b(adagrad(1e-10, 0.0)), 0.5, 400, 1e-4),
        c("yogi", || b(yogi(0.9, 0.999, 1e-3)), 0.02, 800, 1e-3),
        c("amsgrad", || b(amsgrad(0.9, 0.999, 1e-8)), 0.02, 800, 1e-3),
        c(
            "spec-sgd-l2",
            || spec_build(r#"{"name":"sgd","weight_decay":1e-4}"#),
            0.2,
            200,
            1e-4,
        ),
        c(
            "spec-momentum-l2",
            || spec_build(r#"{"name":"momentum","nesterov":true,"weight_decay":1e-4}"#),
            0.05,
            300,
            1e-4,
        ),
        c(
            "spec-adam-l2",
            || spec_build(r#"{"name":"adam","weight_decay":1e-4}"#),
            0.02,
            800,
            1e-3,
        ),
        c(
            "spec-adamw",
            || spec_build(r#"{"name":"adamw"}"#),
            0.02,
            800,
            1e-3,
        ),
        c(
            "spec-adagrad",
            || spec_build(r#"{"name":"adagrad","initial_accumulator":0.1}"#),
            0.5,
            400,
            1e-4,
        ),
        c(
            "spec-yogi",
            || spec_build(r#"{"name":"yogi"}"#),
            0.02,
            800,
            1e-3,
        ),
        c(
            "spec-amsgrad",
            || spec_build(r#"{"name":"amsgrad"}"#),
            0.02,
            800,
            1e-3,
        ),
        c(
            "clip-global+sgd",
            || b(chain(vec![b(clip_by_global_norm(0.5)), b(sgd())])),
            0.2,
            300,
            1e-6,
        ),
        c(
            "clip-block+momentum",
            || {
                b(chain(vec![
                    b(clip_by_block_norm(0.5)),
                    b(trace(0.9, false)),
                    b(scale_by_rate()),
                ]))
            },
            0.05,
            400,
            1e-6,
        ),
        c(
            "lars",
            || {
                b(chain(vec![
                    b(scale_by_trust_ratio().with_max_ratio(10.0).with_eps(1e-8)),
                    b(sgd()),
                ]))
            },
            0.01,
            800,
            1e-3,
        ),
        c(
            "lamb",
            || {
                b(chain(vec![
                    b(scale_by_adam(0.9, 0.999, 1e-6)),
                    b(scale_by_trust_ratio()),
                    b(scale_by_rate()),
                ]))
            },
            0.01,
            800,
            1e-3,
        ),
        c(
            "fedprox-sgd",
            || b(chain(vec![b(add_proximal(0.01)), b(sgd())])),
            0.2,
            300,
            2e-2,
        ),
        c(
            "freeze-nothing",
            || b(chain(vec![b(sgd()), b(freeze(&["absent"]))])),
            0.2,
            200,
            1e-6,
        ),
        c(
            "partition(adam,sgd)",
            || {
                b(partition()
                    .group("body", adam(0.9, 0.999, 1e-8))
                    .with_default(sgd()))
            },
            0.02,
            800,
            1e-3,
        ),
        c(
            "masked(clip)+sgd",
            || {
                b(chain(vec![
                    b(masked(
                        clip_by_global_norm(0.5),
                        Selector::groups(&["head"]),
                    )),
                    b(sgd()),
                ]))
            },
            0.2,
            300,
            1e-6,
        ),
        c(
            "server-fedavgm",
            || fedavgm(1.0, 0.9).into_transform(),
            0.05,
            300,
            1e-6,
        ),
        c(
            "server-fedadagrad",
            || {
                FedOptConfig::default()
                    .fedadagrad()
                    .unwrap()
                    .into_transform()
            },
            0.5,
            400,
            1e-4,
        ),
        c(
            "server-fedadam",
            || FedOptConfig::default().fedadam().unwrap().into_transform(),
            0.02,
            800,
            1e-3,
        ),
        c(
            "server-fedyogi",
            || FedOptConfig::default().fedyogi().unwrap().into_transform(),
            0.02,
            800,
            1e-3,
        ),
        c(
            "server-fedadam-flower",
            || {
                FedOptConfig::default()
                    .with_rule(ServerRule::Flower)
                    .fedadam()
                    .unwrap()
                    .into_transform()
            },
            0.02,
            800,
            1e-3,
        ),
        c(
            "server-fedyogi-flower",
            || {
                FedOptConfig::default()
                    .with_rule(ServerRule::Flower)
                    .fedyogi()
                    .unwrap()
                    .into_transform()
            },
            0.02,
            800,
            1e-3,
        ),
    ]
}

// --- the quadratic f(p) = ½ Σ a_i (p_i − c_i)² -------------------------------------------

fn spec() -> ParamSpec {
    ParamSpec::builder()
        .add("w1", &[3, 2], "body")
        .add("b", &[3], "head")
        .add("w2", &[4], "body")
        .build()
        .unwrap()
}

fn body_spec() -> ParamSpec {
    ParamSpec::builder()
        .add("w1", &[3, 2], "body")
        .add("w2", &[4], "body")
        .build()
        .unwrap()
}

const N: usize = 13;
const BODY: [usize; 10] = [0, 1, 2, 3, 4, 5, 9, 10, 11, 12];
const HEAD: [usize; 3] = [6, 7, 8];

fn curvature(i: usize) -> f32 {
    0.5 + 0.125 * (i % 13) as f32
}
fn target(i: usize) -> f32 {
    ((i as f32) * 0.7).sin() + 0.3
}
fn start() -> Vec<f32> {
    (0..N)
        .map(|i| target(i) + ((i as f32) * 1.3).cos() * 1.5)
        .collect()
}
fn grad(p: &[f32], idx: &[usize]) -> Vec<f32> {
    p.iter()
        .zip(idx)
        .map(|(&x, &i)| curvature(i) * (x - target(i)))
        .collect()
}
fn loss(p: &[f32]) -> f64 {
    p.iter()
        .enumerate()
        .map(|(i, &x)| 0.5 * curvature(i) as f64 * ((x - target(i)) as f64).powi(2))
        .sum()
}
fn all() -> Vec<usize> {
    (0..N).collect()
}

/// Runs `steps` steps from `state` on the quadratic restricted to `idx` (a sub-layout).
fn run(
    tx: &dyn Transform,
    spec: &ParamSpec,
    idx: &[usize],
    p: &mut [f32],
    state: &mut State,
    rates: &[f32],
    steps: std::ops::Range<u64>,
) {
    for s in steps {
        let mut g = grad(p, idx);
        let ctx = StepContext {
            spec,
            group_rates: rates,
            step: s + 1, // 1-based, as server rounds are
        };
        tx.update(&mut g, state, p, &ctx).unwrap();
        apply_updates(p, &g);
    }
}

fn fresh(tx: &dyn Transform, spec: &ParamSpec, p: &[f32]) -> State {
    let mut s = tx.init(spec);
    tx.set_anchor(&mut s, p, spec).unwrap();
    s
}

fn pick(p: &[f32], idx: &[usize]) -> Vec<f32> {
    idx.iter().map(|&i| p[i]).collect()
}

#[test]
fn converges_on_a_quadratic() {
    let spec = spec();
    for c in cases() {
        let tx = (c.build)();
        let mut p = start();
        let mut state = fresh(tx.as_ref(), &spec, &p);
        let l0 = loss(&p);
        run(
            tx.as_ref(),
            &spec,
            &all(),
            &mut p,
            &mut state,
            &[c.rate, c.rate],
            0..c.steps,
        );
        let l = loss(&p);
        assert!(
            l.is_finite() && l < c.tol * l0,
            "{}: loss {l} from {l0}",
            c.name
        );
    }
}

#[test]
fn honours_per_group_rates() {
    let spec = spec();
    for c in cases() {
        let tx = (c.build)();
        // rate 0 on the body: it never moves, the head does
        let mut p = start();
        let mut state = fresh(tx.as_ref(), &spec, &p);
        run(
            tx.as_ref(),
            &spec,
            &all(),
            &mut p,
            &mut state,
            &[0.0, c.rate],
            0..5,
        );
        assert_eq!(
            pick(&p, &BODY),
            pick(&start(), &BODY),
            "{}: body moved",
            c.name
        );
        assert_ne!(
            pick(&p, &HEAD),
            pick(&start(), &HEAD),
            "{}: head stuck",
            c.name
        );

        // doubling the body's rate doubles its first step, the head's is unchanged
        let p0 = start();
        let first = |rates: &[f32]| {
            let mut s = fresh(tx.as_ref(), &spec, &p0);
            let mut g = grad(&p0, &all());
            let ctx = StepContext {
                spec: &spec,
                group_rates: rates,
                step: 1,
            };
            tx.update(&mut g, &mut s, &p0, &ctx).unwrap();
            g
        };
        let (u1, u2) = (first(&[c.rate, c.rate]), first(&[2.0 * c.rate, c.rate]));
        for &i in &BODY {
            assert_eq!(u2[i], 2.0 * u1[i], "{}: body[{i}]", c.name);
        }
        assert_eq!(pick(&u2, &HEAD), pick(&u1, &HEAD), "{}: head", c.name);

        // wrong number of rates is an error, not a panic
        let mut s = fresh(tx.as_ref(), &spec, &p0);
        let mut g = grad(&p0, &all());
        let ctx = StepContext {
            spec: &spec,
            group_rates: &[c.rate],
            step: 1,
        };
        assert!(tx.update(&mut g, &mut s, &p0, &ctx).is_err(), "{}", c.name);
    }
}

#[test]
fn state_round_trips_through_serde_and_continues_bit_identically() {
    let spec = spec();
    let rates = [0.7, 1.3];
    for c in cases() {
        let tx = (c.build)();
        let mut p = start();
        let mut state = fresh(tx.as_ref(), &spec, &p);
        let r = [rates[0] * c.rate, rates[1] * c.rate];
        run(tx.as_ref(), &spec, &all(), &mut p, &mut state, &r, 0..4);
        let json = serde_json::to_string(&state).unwrap();
        let mut restored: State = serde_json::from_str(&json).unwrap();
        assert_eq!(restored, state, "{}: state changed in serde", c.name);
        let mut p2 = p.clone();
        run(tx.as_ref(), &spec, &all(), &mut p, &mut state, &r, 4..9);
        run(tx.as_ref(), &spec, &all(), &mut p2, &mut restored, &r, 4..9);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&p), bits(&p2), "{}: diverged after restore", c.name);
        assert_eq!(state, restored, "{}", c.name);
    }
}

#[test]
fn foreign_state_is_an_error_not_a_panic() {
    let spec = spec();
    let other = ParamSpec::builder()
        .add("x", &[2], "body")
        .add("y", &[1], "head")
        .build()
        .unwrap();
    for c in cases() {
        let tx = (c.build)();
        let p = start();
        let mut wrong = fresh(tx.as_ref(), &other, &[0.0; 3]);
        let mut g = grad(&p, &all());
        let ctx = StepContext {
            spec: &spec,
            group_rates: &[0.1, 0.1],
            step: 1,
        };
        if tx.init(&spec) != tx.init(&other) {
            assert!(
                tx.update(&mut g, &mut wrong, &p, &ctx).is_err(),
                "{}",
                c.name
            );
        }
        // updates of the wrong length
        let mut s = fresh(tx.as_ref(), &spec, &p);
        let mut short = vec![0.0; 5];
        assert!(
            tx.update(&mut short, &mut s, &p, &ctx).is_err(),
            "{}",
            c.name
        );
    }
}

#[test]
fn works_inside_masked_and_partition() {
    let spec = spec();
    let bspec = body_spec();
    let r = 0.05;
    for c in cases() {
        // reference: the transform alone on the body-only problem
        let tx = (c.build)();
        let p0 = start();
        let mut pb = pick(&p0, &BODY);
        let mut sb = fresh(tx.as_ref(), &bspec, &pb);
        run(tx.as_ref(), &bspec, &BODY, &mut pb, &mut sb, &[r], 0..6);

        // masked: body transformed, head identity (the raw gradient is added back)
        let m = masked((c.build)(), Selector::groups(&["body"]));
        let mut p = p0.clone();
        let mut s = fresh(&m, &spec, &p);
        let mut head_expected = pick(&p0, &HEAD);
        for step in 0..6 {
            let mut g = grad(&p, &all());
            let gh = pick(&g, &HEAD);
            let ctx = StepContext {
                spec: &spec,
                group_rates: &[r, 123.0],
                step: step + 1,
            };
            m.update(&mut g, &mut s, &p, &ctx).unwrap();
            assert_eq!(pick(&g, &HEAD), gh, "{}: masked touched the head", c.name);
            apply_updates(&mut p, &g);
            for (h, d) in head_expected.iter_mut().zip(&gh) {
                *h += d;
            }
        }
        assert_eq!(pick(&p, &BODY), pb, "{}: masked body differs", c.name);
        assert_eq!(pick(&p, &HEAD), head_expected, "{}", c.name);

        // partition: body → transform, head → sgd
        let part = partition().group("body", (c.build)()).group("head", sgd());
        part.check(&spec).unwrap();
        let mut p = p0.clone();
        let mut s = fresh(&part, &spec, &p);
        let mut ph = pick(&p0, &HEAD);
        for step in 0..6 {
            let g = grad(&p, &all());
            for (k, &i) in HEAD.iter().enumerate() {
                ph[k] += -0.5 * g[i];
            }
            let mut g = g;
            let ctx = StepContext {
                spec: &spec,
                group_rates: &[r, 0.5],
                step: step + 1,
            };
            part.update(&mut g, &mut s, &p, &ctx).unwrap();
            apply_updates(&mut p, &g);
        }
        assert_eq!(pick(&p, &BODY), pb, "{}: partition body differs", c.name);
        assert_eq!(pick(&p, &HEAD), ph, "{}: partition head differs", c.name);

        // and it still converges when every group gets its own copy
        let both = partition()
            .group("body", (c.build)())
            .group("head", (c.build)());
        let mut p = p0.clone();
        let mut s = fresh(&both, &spec, &p);
        let l0 = loss(&p);
        run(
            &both,
            &spec,
            &all(),
            &mut p,
            &mut s,
            &[c.rate, c.rate],
            0..c.steps,
        );
        assert!(
            loss(&p) < c.tol.max(1e-5) * l0 * 10.0,
            "{}: partitioned run",
            c.name
        );
    }
}

#[test]
fn partition_without_default_names_the_missing_group() {
    let spec = spec();
    let part = partition().group("body", sgd());
    let e = part.check(&spec).unwrap_err();
    assert_eq!(
        e.to_string(),
        "partition: group \"head\" has no transform and there is no default"
    );
    let dup = partition()
        .group("body", sgd())
        .groups(&["head", "body"], sgd());
    assert!(dup.check(&spec).is_err());
    let mut s = part.init(&spec);
    let mut g = vec![0.0; N];
    let ctx = StepContext {
        spec: &spec,
        group_rates: &[1.0, 1.0],
        step: 0,
    };
    assert!(part.update(&mut g, &mut s, &start(), &ctx).is_err());
}

#[test]
fn freeze_and_masked_by_tensor_name() {
    let spec = spec();
    let tx = chain(vec![
        b(sgd()),
        b(Freeze::selecting(Selector::tensors(&["w2"]))),
    ]);
    let p = start();
    let mut g = grad(&p, &all());
    let ctx = StepContext {
        spec: &spec,
        group_rates: &[1.0, 1.0],
        step: 0,
    };
    tx.update(&mut g, &mut tx.init(&spec), &p, &ctx).unwrap();
    assert!(g[9..13].iter().all(|&x| x == 0.0));
    assert!(g[0..9].iter().all(|&x| x != 0.0));
}

#[test]
fn proximal_without_anchor_is_an_error() {
    let spec = spec();
    let tx = chain(vec![b(add_proximal(0.1)), b(sgd())]);
    let mut s = tx.init(&spec);
    let p = start();
    let mut g = grad(&p, &all());
    let ctx = StepContext {
        spec: &spec,
        group_rates: &[1.0, 1.0],
        step: 0,
    };
    let e = tx.update(&mut g, &mut s, &p, &ctx).unwrap_err();
    assert!(e.to_string().contains("anchor not set"), "{e}");
    // anchors reach nested transforms through partition and masked
    let nested = partition()
        .group(
            "body",
            masked(add_proximal(0.1), Selector::tensors(&["w2"])),
        )
        .with_default(add_proximal(0.2));
    let mut s = nested.init(&spec);
    assert_eq!(nested.set_anchor(&mut s, &p, &spec).unwrap(), 2);
}

/// `update_and_apply` (one pass for SGD, `update` then `apply_updates` otherwise) leaves
/// the same parameters and state, bit for bit, as `update` followed by `apply_updates`,
/// for every case of the table over 9 steps with per-group rates.
#[test]
fn update_and_apply_is_update_then_apply() {
    let spec = spec();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for c in cases() {
        let tx = (c.build)();
        let (mut p1, mut p2) = (start(), start());
        let mut s1 = fresh(tx.as_ref(), &spec, &p1);
        let mut s2 = fresh(tx.as_ref(), &spec, &p2);
        let r = [0.7 * c.rate, 1.3 * c.rate];
        for s in 0..9u64 {
            let ctx = StepContext {
                spec: &spec,
                group_rates: &r,
                step: s + 1,
            };
            let mut g1 = grad(&p1, &all());
            tx.update(&mut g1, &mut s1, &p1, &ctx).unwrap();
            apply_updates(&mut p1, &g1);
            let mut g2 = grad(&p2, &all());
            tx.update_and_apply(&mut g2, &mut s2, &mut p2, &ctx)
                .unwrap();
            assert_eq!(bits(&p1), bits(&p2), "{} step {s}", c.name);
            assert_eq!(s1, s2, "{} step {s}", c.name);
        }
        // A wrong number of rates is still an error, not a panic.
        let mut g = grad(&p2, &all());
        let ctx = StepContext {
            spec: &spec,
            group_rates: &[c.rate],
            step: 1,
        };
        assert!(
            tx.update_and_apply(&mut g, &mut s2, &mut p2, &ctx).is_err(),
            "{}",
            c.name
        );
    }
}

/// [`Transform::plain_sgd`] holds for plain SGD alone (`sgd()`, the built `sgd` spec
/// without weight decay, a chain of `sgd()` alone) and for no other optimiser of the
/// table. For those, a step split between the caller (tensors marked done, stepped by
/// `p + g·(−η_g)` outside) and `update_and_apply_except` leaves the parameters and state
/// of `update_and_apply`, bit for bit, over 9 steps with per-group rates
/// (docs/arch/0038-fc1-backward-sgd-step.md). Every other optimiser refuses marked
/// tensors, leaving the parameters, and with none marked is `update_and_apply`.
#[test]
fn a_step_split_with_the_model_is_plain_sgds_step() {
    let spec = spec();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let plain = |name: &str| name == "sgd";
    let mut extra: Vec<(&str, Box<dyn Transform>)> = vec![
        ("spec-sgd", spec_build(r#"{"name":"sgd"}"#)),
        ("chain-sgd", b(chain(vec![b(sgd())]))),
        ("chain-sgd-sgd", b(chain(vec![b(sgd()), b(sgd())]))),
        ("empty-chain", b(chain(vec![]))),
    ];
    let mut all_cases: Vec<(String, Box<dyn Transform>)> = cases()
        .into_iter()
        .map(|c| (c.name.to_string(), (c.build)()))
        .collect();
    all_cases.extend(extra.drain(..).map(|(n, t)| (n.to_string(), t)));
    let done = [true, false, true];
    let none = [false; 3];
    for (name, tx) in &all_cases {
        let want = plain(name) || name == "spec-sgd" || name == "chain-sgd";
        assert_eq!(tx.plain_sgd(), want, "{name}");
        let (mut p1, mut p2) = (start(), start());
        let mut s1 = fresh(tx.as_ref(), &spec, &p1);
        let mut s2 = fresh(tx.as_ref(), &spec, &p2);
        let r = [0.07f32, 0.13];
        for s in 0..9u64 {
            let ctx = StepContext {
                spec: &spec,
                group_rates: &r,
                step: s + 1,
            };
            let mut g1 = grad(&p1, &all());
            tx.update_and_apply(&mut g1, &mut s1, &mut p1, &ctx)
                .unwrap();
            let mut g2 = grad(&p2, &all());
            if want {
                for (e, _) in spec.entries().iter().zip(&done).filter(|(_, &d)| d) {
                    let rate = -r[e.group];
                    for i in e.range() {
                        p2[i] += g2[i] * rate;
                        g2[i] = f32::NAN;
                    }
                }
                tx.update_and_apply_except(&mut g2, &mut s2, &mut p2, &ctx, &done)
                    .unwrap();
            } else {
                let before = p2.clone();
                let e = tx
                    .update_and_apply_except(&mut g2, &mut s2, &mut p2, &ctx, &done)
                    .unwrap_err();
                assert!(e.to_string().contains("not plain SGD"), "{name}: {e}");
                assert_eq!(bits(&p2), bits(&before), "{name}");
                tx.update_and_apply_except(&mut g2, &mut s2, &mut p2, &ctx, &none)
                    .unwrap();
            }
            assert_eq!(bits(&p1), bits(&p2), "{name} step {s}");
            assert_eq!(s1, s2, "{name} step {s}");
        }
        // One flag per tensor, or an error.
        let ctx = StepContext {
            spec: &spec,
            group_rates: &r,
            step: 1,
        };
        let mut g = grad(&p2, &all());
        assert!(
            tx.update_and_apply_except(&mut g, &mut s2, &mut p2, &ctx, &done[..2])
                .is_err(),
            "{name}"
        );
    }
}
