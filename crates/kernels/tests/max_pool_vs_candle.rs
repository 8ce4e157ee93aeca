//! The 2×2 max-pool ops: values against candle's `relu` + `max_pool2d`, input gradients
//! against a direct loop.
//!
//! Not against candle's gradient: candle 0.11.1's `max_pool2d` backward multiplies the
//! gradient by the window mean of the max mask (¼ for a unique maximum) where it should
//! divide by the number of maxima, so its gradients are 4× too small
//! (`candle_max_pool_gradient_is_a_quarter_of_the_true_one` pins this down).

use candle_core::{Device, Tensor, Var};
use proptest::prelude::*;

fn tensor(dims: &[usize], seed: u64) -> Tensor {
    let mut state = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let len = dims.iter().product();
    let v: Vec<f32> = (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
}

/// Max |a − b|.
fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap()
}

fn check(dims: [usize; 4], relu: bool) {
    let x = Var::from_tensor(&tensor(&dims, dims.iter().sum::<usize>() as u64)).unwrap();
    let ours = if relu {
        fedpace_kernels::relu_max_pool2x2(&x).unwrap()
    } else {
        fedpace_kernels::max_pool2x2(&x).unwrap()
    };
    let theirs = if relu {
        x.relu().unwrap().max_pool2d(2).unwrap()
    } else {
        x.max_pool2d(2).unwrap()
    };
    assert_eq!(
        max_diff(&ours, &theirs),
        0.0,
        "{dims:?} relu={relu}: values"
    );
    let r = tensor(ours.dims(), 7);
    let grads = (&ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let want = direct_gradient(x.as_tensor(), &r, relu);
    assert_eq!(
        max_diff(grads.get(&x).unwrap(), &want),
        0.0,
        "{dims:?} relu={relu}: gradient"
    );
}

/// ∂(Σ y ⊙ r)/∂x: r at each window's (first) maximum, if positive when `relu`.
fn direct_gradient(x: &Tensor, r: &Tensor, relu: bool) -> Tensor {
    let (n, c, h, w) = x.dims4().unwrap();
    let xv = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let rv = r.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let mut g = vec![0f32; xv.len()];
    let (oh, ow) = (h / 2, w / 2);
    for plane in 0..n * c {
        for i in 0..oh {
            for j in 0..ow {
                let at = |di: usize, dj: usize| plane * h * w + (2 * i + di) * w + 2 * j + dj;
                let mut best = at(0, 0);
                for t in [at(0, 1), at(1, 0), at(1, 1)] {
                    if xv[t] > xv[best] {
                        best = t;
                    }
                }
                if !relu || xv[best] > 0.0 {
                    g[best] = rv[(plane * oh + i) * ow + j];
                }
            }
        }
    }
    Tensor::from_vec(g, (n, c, h, w), &Device::Cpu).unwrap()
}

/// Documents the candle 0.11.1 bug that keeps candle's gradient out of these checks: if
/// this starts failing, candle fixed it and the comparison can come back.
#[test]
fn candle_max_pool_gradient_is_a_quarter_of_the_true_one() {
    let x = Var::from_tensor(&tensor(&[1, 2, 6, 6], 3)).unwrap();
    let r = tensor(&[1, 2, 3, 3], 4);
    let grads = (x.max_pool2d(2).unwrap() * &r)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let candle = (grads.get(&x).unwrap() * 4.0).unwrap();
    assert!(max_diff(&candle, &direct_gradient(&x, &r, false)) < 1e-6);
}

#[test]
fn fedavg_cnn_pool_shapes_match_candle() {
    for relu in [false, true] {
        check([32, 32, 28, 28], relu);
        check([32, 64, 14, 14], relu);
    }
}

#[test]
fn ties_send_the_gradient_to_the_first_maximum() {
    let x = Var::new(&[[[[1f32, 1.], [1., 0.]]]], &Device::Cpu).unwrap();
    let y = fedpace_kernels::max_pool2x2(&x).unwrap();
    let g = y.sum_all().unwrap().backward().unwrap();
    let g = g
        .get(&x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(g, [1.0, 0.0, 0.0, 0.0]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn random_shapes_match_candle(
        n in 1usize..3, c in 1usize..4, h in 2usize..12, w in 2usize..12, relu: bool,
    ) {
        check([n, c, h, w], relu);
    }
}
