//! Parity of `fedpace_kernels::conv2d` with candle's own `conv2d` (values and, where
//! candle's backward works, gradients of x, w and b through `loss.backward()`) and with a
//! direct f64 loop over the convolution sum (values and all gradients, every shape).
//!
//! candle 0.11.1's own conv2d backward fails for stride > 1 on some non-square inputs
//! (`shape mismatch in add`, e.g. 9×11 input, 3×2 kernel, stride 2) and overflows on
//! others (`backprop.rs:288`), so the random-shape tests use the direct loop.

use candle_core::{DType, Device, Tensor, Var};
use fedpace_kernels::{conv2d_with, Conv2dConfig};
use proptest::prelude::*;

/// Deterministic values in [-1, 1) (a 64-bit LCG), so failures reproduce.
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn tensor(dims: &[usize], seed: u64) -> Tensor {
    let len = dims.iter().product();
    Tensor::from_vec(values(len, seed), dims, &Device::Cpu).unwrap()
}

#[derive(Clone, Copy, Debug)]
struct Case {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    kh: usize,
    kw: usize,
    padding: usize,
    stride: usize,
    bias: bool,
}

struct Outcome {
    y: Tensor,
    dx: Tensor,
    dw: Tensor,
    db: Option<Tensor>,
}

/// Runs `conv` on fresh variables and back-propagates `Σ y ⊙ r` for a fixed random `r`.
fn run(case: Case, conv: impl Fn(&Tensor, &Tensor, Option<&Tensor>) -> Tensor) -> Outcome {
    let x = Var::from_tensor(&tensor(&[case.n, case.c, case.h, case.w], 1)).unwrap();
    let w = Var::from_tensor(&tensor(&[case.o, case.c, case.kh, case.kw], 2)).unwrap();
    let b = Var::from_tensor(&tensor(&[case.o], 3)).unwrap();
    let y = conv(&x, &w, case.bias.then_some(b.as_tensor()));
    let r = tensor(y.dims(), 4);
    let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    Outcome {
        dx: grads.get(&x).unwrap().clone(),
        dw: grads.get(&w).unwrap().clone(),
        db: case.bias.then(|| grads.get(&b).unwrap().clone()),
        y,
    }
}

/// The convolution sum and its gradients, as direct loops in f64, for `loss = Σ y ⊙ r`.
fn direct(case: Case) -> Outcome {
    let Case {
        n,
        c,
        h,
        w,
        o,
        kh,
        kw,
        padding,
        stride,
        bias,
    } = case;
    let (oh, ow) = (
        (h + 2 * padding - kh) / stride + 1,
        (w + 2 * padding - kw) / stride + 1,
    );
    let xs = values(n * c * h * w, 1);
    let ws = values(o * c * kh * kw, 2);
    let bs = values(o, 3);
    let rs = values(n * o * oh * ow, 4);
    let mut y = vec![0f64; n * o * oh * ow];
    let mut dx = vec![0f64; xs.len()];
    let mut dw = vec![0f64; ws.len()];
    let mut db = vec![0f64; o];
    for ni in 0..n {
        for oi in 0..o {
            for i in 0..oh {
                for j in 0..ow {
                    let yi = ((ni * o + oi) * oh + i) * ow + j;
                    let r = rs[yi] as f64;
                    let mut acc = if bias { bs[oi] as f64 } else { 0.0 };
                    db[oi] += r;
                    for ci in 0..c {
                        for ki in 0..kh {
                            for kj in 0..kw {
                                let (ih, iw) = (i * stride + ki, j * stride + kj);
                                if ih < padding
                                    || iw < padding
                                    || ih - padding >= h
                                    || iw - padding >= w
                                {
                                    continue;
                                }
                                let xi = ((ni * c + ci) * h + ih - padding) * w + iw - padding;
                                let wi = ((oi * c + ci) * kh + ki) * kw + kj;
                                acc += ws[wi] as f64 * xs[xi] as f64;
                                dx[xi] += ws[wi] as f64 * r;
                                dw[wi] += xs[xi] as f64 * r;
                            }
                        }
                    }
                    y[yi] = acc;
                }
            }
        }
    }
    let t = |v: Vec<f64>, dims: &[usize]| {
        let v: Vec<f32> = v.into_iter().map(|e| e as f32).collect();
        Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
    };
    Outcome {
        y: t(y, &[n, o, oh, ow]),
        dx: t(dx, &[n, c, h, w]),
        dw: t(dw, &[o, c, kh, kw]),
        db: bias.then(|| t(db, &[o])),
    }
}

fn candle(case: Case) -> Outcome {
    run(case, |x, w, b| {
        let y = x.conv2d(w, case.padding, case.stride, 1, 1).unwrap();
        match b {
            Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1)).unwrap()).unwrap(),
            None => y,
        }
    })
}

fn ours(case: Case, config: Conv2dConfig) -> Outcome {
    let config = config.with_padding(case.padding).with_stride(case.stride);
    run(case, |x, w, b| conv2d_with(x, w, b, &config).unwrap())
}

/// Largest |a − b| over the largest |b| (plus 1, so small tensors compare absolutely).
fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
    let scale = b.abs().unwrap().max_all().unwrap();
    diff.to_scalar::<f32>().unwrap() / (1.0 + scale.to_scalar::<f32>().unwrap())
}

fn assert_close_to(want: &Outcome, case: Case, config: Conv2dConfig) {
    let got = ours(case, config);
    const TOL: f32 = 1e-5;
    let errs = [
        ("y", rel_err(&got.y, &want.y)),
        ("dx", rel_err(&got.dx, &want.dx)),
        ("dw", rel_err(&got.dw, &want.dw)),
        (
            "db",
            got.db
                .map_or(0.0, |db| rel_err(&db, want.db.as_ref().unwrap())),
        ),
    ];
    for (name, err) in errs {
        assert!(err < TOL, "{case:?} {config:?}: {name} off by {err}");
    }
}

/// Checks against candle's conv2d (values and gradients) and the direct loop.
fn assert_close(case: Case, config: Conv2dConfig) {
    assert_close_to(&candle(case), case, config);
    assert_close_to(&direct(case), case, config);
}

/// Checks against the direct loop only, and candle's forward values.
fn assert_close_direct(case: Case, config: Conv2dConfig) {
    let want = direct(case);
    let conv = |x: &Tensor, w: &Tensor| x.conv2d(w, case.padding, case.stride, 1, 1).unwrap();
    let (x, w) = (
        tensor(&[case.n, case.c, case.h, case.w], 1),
        tensor(&[case.o, case.c, case.kh, case.kw], 2),
    );
    let mut candle_y = conv(&x, &w);
    if case.bias {
        let b = tensor(&[case.o], 3).reshape((1, (), 1, 1)).unwrap();
        candle_y = candle_y.broadcast_add(&b).unwrap();
    }
    assert!(
        rel_err(&candle_y, &want.y) < 1e-5,
        "direct loop disagrees with candle"
    );
    assert_close_to(&want, case, config);
}

fn single() -> Conv2dConfig {
    Conv2dConfig::default().with_threads(1)
}

const FEDAVG_CONV1: Case = Case {
    n: 32,
    c: 1,
    h: 28,
    w: 28,
    o: 32,
    kh: 5,
    kw: 5,
    padding: 2,
    stride: 1,
    bias: true,
};

const FEDAVG_CONV2: Case = Case {
    n: 32,
    c: 32,
    h: 14,
    w: 14,
    o: 64,
    kh: 5,
    kw: 5,
    padding: 2,
    stride: 1,
    bias: true,
};

#[test]
fn fedavg_cnn_first_layer_matches_candle() {
    assert_close(FEDAVG_CONV1, single());
}

#[test]
fn fedavg_cnn_second_layer_matches_candle() {
    assert_close(FEDAVG_CONV2, single());
}

#[test]
fn fedavg_cnn_layers_match_candle_on_two_threads() {
    let two = Conv2dConfig::default().with_threads(2);
    assert_close(FEDAVG_CONV1, two);
    assert_close(FEDAVG_CONV2, two);
}

#[test]
fn one_sample_per_gemm_matches_batched_gemm() {
    // A zero budget forces one sample per GEMM, the other code path.
    let per_sample = single().with_im2col_budget(0);
    assert_close(FEDAVG_CONV2, per_sample);
    assert_close(
        Case {
            stride: 2,
            ..FEDAVG_CONV2
        },
        per_sample,
    );
}

#[test]
fn odd_sizes_stride_two_and_batch_one_match_candle() {
    let cases = [
        Case {
            n: 1,
            c: 3,
            h: 7,
            w: 5,
            o: 4,
            kh: 3,
            kw: 3,
            padding: 1,
            stride: 1,
            bias: true,
        },
        Case {
            n: 3,
            c: 2,
            h: 9,
            w: 11,
            o: 5,
            kh: 3,
            kw: 2,
            padding: 0,
            stride: 2,
            bias: false,
        },
        Case {
            n: 2,
            c: 3,
            h: 13,
            w: 13,
            o: 6,
            kh: 5,
            kw: 5,
            padding: 2,
            stride: 2,
            bias: true,
        },
        Case {
            n: 1,
            c: 1,
            h: 1,
            w: 1,
            o: 1,
            kh: 1,
            kw: 1,
            padding: 0,
            stride: 1,
            bias: true,
        },
        Case {
            n: 4,
            c: 5,
            h: 6,
            w: 6,
            o: 3,
            kh: 1,
            kw: 1,
            padding: 0,
            stride: 1,
            bias: false,
        },
        Case {
            n: 2,
            c: 2,
            h: 4,
            w: 3,
            o: 2,
            kh: 4,
            kw: 3,
            padding: 0,
            stride: 3,
            bias: true,
        },
        Case {
            n: 5,
            c: 2,
            h: 8,
            w: 8,
            o: 3,
            kh: 3,
            kw: 3,
            padding: 3,
            stride: 2,
            bias: true,
        },
    ];
    for case in cases {
        assert_close_direct(case, single());
        assert_close_direct(case, Conv2dConfig::default().with_threads(2));
    }
}

#[test]
fn square_stride_two_matches_candle_gradients() {
    let case = Case {
        n: 2,
        c: 3,
        h: 13,
        w: 13,
        o: 6,
        kh: 5,
        kw: 5,
        padding: 2,
        stride: 2,
        bias: true,
    };
    assert_close(case, single());
}

/// Regression: candle 0.11.1's own backward fails here (`shape mismatch in add`).
#[test]
fn non_square_stride_two_where_candle_backward_fails() {
    let case = Case {
        n: 3,
        c: 2,
        h: 9,
        w: 11,
        o: 5,
        kh: 3,
        kw: 2,
        padding: 0,
        stride: 2,
        bias: false,
    };
    assert_close_direct(case, single());
}

#[test]
fn same_thread_count_gives_identical_bits() {
    let config = Conv2dConfig::default().with_threads(2);
    let (a, b) = (ours(FEDAVG_CONV2, config), ours(FEDAVG_CONV2, config));
    for (u, v) in [(&a.y, &b.y), (&a.dx, &b.dx), (&a.dw, &b.dw)] {
        let u = u.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let v = v.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(u, v);
    }
}

#[test]
fn input_without_gradient_gets_none_and_weight_still_does() {
    let x = tensor(&[2, 3, 8, 8], 1);
    let w = Var::from_tensor(&tensor(&[4, 3, 3, 3], 2)).unwrap();
    let y = fedpace_kernels::conv2d(&x, &w, None, 1, 1).unwrap();
    let grads = y.sum_all().unwrap().backward().unwrap();
    assert!(grads.get(&x).is_none());
    let want = x
        .conv2d(&w, 1, 1, 1, 1)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!(rel_err(grads.get(&w).unwrap(), want.get(&w).unwrap()) < 1e-5);
}

#[test]
fn non_contiguous_input_matches_candle() {
    let x = tensor(&[2, 3, 6, 7], 5).transpose(2, 3).unwrap();
    let w = tensor(&[4, 3, 3, 3], 6);
    let got = fedpace_kernels::conv2d(&x, &w, None, 1, 1).unwrap();
    let want = x.conv2d(&w, 1, 1, 1, 1).unwrap();
    assert!(rel_err(&got, &want) < 1e-5);
}

#[test]
fn f64_falls_back_to_candle() {
    let x = tensor(&[2, 3, 6, 6], 5).to_dtype(DType::F64).unwrap();
    let w = tensor(&[4, 3, 3, 3], 6).to_dtype(DType::F64).unwrap();
    let got = fedpace_kernels::conv2d(&x, &w, None, 1, 2).unwrap();
    let want = x.conv2d(&w, 1, 2, 1, 1).unwrap();
    assert_eq!(got.dtype(), DType::F64);
    let diff = (&got - &want).unwrap().abs().unwrap().max_all().unwrap();
    assert_eq!(diff.to_scalar::<f64>().unwrap(), 0.0);
}

#[test]
fn bad_shapes_are_errors_not_panics() {
    let x = tensor(&[2, 3, 6, 6], 1);
    let err = |w: &Tensor, b: Option<&Tensor>, padding, stride| {
        fedpace_kernels::conv2d(&x, w, b, padding, stride)
            .unwrap_err()
            .to_string()
    };
    assert!(err(&tensor(&[4, 2, 3, 3], 2), None, 0, 1).contains("channels"));
    assert!(err(&tensor(&[4, 3, 9, 3], 2), None, 1, 1).contains("larger"));
    assert!(err(&tensor(&[4, 3, 3, 3], 2), Some(&tensor(&[5], 3)), 0, 1).contains("bias"));
    assert!(err(&tensor(&[4, 3, 3, 3], 2), None, 0, 0).contains("stride"));
    assert!(err(&tensor(&[4, 3, 3], 2), None, 0, 1).contains("4-D"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_small_shapes_match_candle(
        n in 1usize..4, c in 1usize..4, h in 1usize..10, w in 1usize..10, o in 1usize..5,
        kh in 1usize..5, kw in 1usize..5, padding in 0usize..3, stride in 1usize..4,
        bias: bool, threads in 1usize..3, budget in prop_oneof![Just(0usize), Just(1 << 20)],
    ) {
        prop_assume!(h + 2 * padding >= kh && w + 2 * padding >= kw);
        let case = Case { n, c, h, w, o, kh, kw, padding, stride, bias };
        assert_close_direct(case, Conv2dConfig::default().with_threads(threads).with_im2col_budget(budget));
    }
}
