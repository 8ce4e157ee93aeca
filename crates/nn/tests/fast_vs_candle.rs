//! The plain-Rust [`Mlp`] and [`CharLstm`] against their candle references
//! [`CandleMlp`] and [`CandleCharLstm`] (themselves golden-tested against PyTorch in
//! `golden.rs`): same loss, gradient of every tensor and evaluation on random
//! parameters and batches of several shapes and sizes, buffers reused across calls of
//! different sizes, the same parameters after several SGD steps, and — for the
//! char-LSTM, whose all-steps products may use several threads — the same bits whatever
//! the thread cap and the pool size (docs/arch/0014-fast-layers.md).
//!
//! The implementations differ in summation order (GEMM blocking) and, for the LSTM, in
//! the last bits of σ and tanh (fedpace's vectorised versions are within ≈ 2e-7
//! relative of the exact values): gradients are compared per tensor by relative L2
//! error with a tolerance of 1e-5 (MLP) and 1e-4 (LSTM: 80 recurrent steps compound the
//! rounding).

mod common;

use common::{dense_batch, lcg};
use fedpace_core::{Batch, Inputs, Model};
use fedpace_nn::{CandleCharLstm, CandleMlp, CharLstm, Mlp};
use fedpace_params::ParamTree;

/// The model's own initialisation with every bias redrawn from ±0.2, so that ReLUs cut
/// a fair share of units and LSTM gates sit away from ½.
fn random_params(m: &dyn Model, seed: u64) -> ParamTree {
    let mut p = m.init(seed).unwrap();
    let spec = m.spec();
    for (k, e) in spec.entries().iter().enumerate() {
        if e.name.contains("bias") {
            let v = lcg(seed * 31 + k as u64, e.len());
            for (dst, r) in p.as_mut_slice()[e.range()].iter_mut().zip(v) {
                *dst = 0.2 * r;
            }
        }
    }
    p
}

fn token_batch(n: usize, seq_len: usize, vocab: usize, classes: usize, seed: u64) -> Batch {
    let ids = lcg(seed, n * seq_len)
        .iter()
        .map(|v| ((v + 1.0) * 0.5 * vocab as f32) as u32 % vocab as u32)
        .collect();
    let labels = (0..n as u32)
        .map(|i| (i.wrapping_mul(7) + seed as u32) % classes as u32)
        .collect();
    Batch {
        inputs: Inputs::Tokens { data: ids, seq_len },
        labels,
    }
}

fn dense(n: usize, d: usize, classes: usize, seed: u64) -> Batch {
    let labels = (0..n as u32)
        .map(|i| (i.wrapping_mul(7) + seed as u32) % classes as u32)
        .collect();
    dense_batch(lcg(seed, n * d), vec![d], labels)
}

/// ‖a − b‖ / ‖b‖ (‖a‖ when b is 0).
fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    let (mut d, mut n) = (0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        d += ((x - y) as f64).powi(2);
        n += (*y as f64).powi(2);
    }
    if n == 0.0 {
        d.sqrt()
    } else {
        (d / n).sqrt()
    }
}

/// Loss, every tensor's gradient and the evaluation of `fast` and `reference` agree.
fn compare(
    case: &str,
    fast: &mut dyn Model,
    reference: &mut dyn Model,
    p: &ParamTree,
    batch: &Batch,
    tol: f64,
) {
    let len = p.as_slice().len();
    let (mut g1, mut g2) = (vec![f32::NAN; len], vec![0.0; len]);
    let l1 = fast.loss_and_grad(p, batch, &mut g1).unwrap();
    let l2 = reference.loss_and_grad(p, batch, &mut g2).unwrap();
    assert!(
        (((l1 - l2) / l2).abs() as f64) < tol,
        "{case}: loss {l1} vs reference {l2}"
    );
    for e in fast.spec().entries() {
        let err = rel_err(&g1[e.range()], &g2[e.range()]);
        assert!(
            err < tol,
            "{case}: gradient of {} differs by {err:e}",
            e.name
        );
    }
    let (s1, s2) = (
        fast.evaluate(p, batch).unwrap(),
        reference.evaluate(p, batch).unwrap(),
    );
    assert_eq!((s1.count, s1.correct), (s2.count, s2.correct), "{case}");
    assert!(
        ((s1.loss_sum - s2.loss_sum) / s2.loss_sum).abs() < tol,
        "{case}: evaluation loss {} vs {}",
        s1.loss_sum,
        s2.loss_sum
    );
}

fn compare_mlp(d: usize, hidden: &[usize], classes: usize, n: usize, seed: u64) {
    let mut fast = Mlp::new(d, hidden, classes).unwrap();
    let mut reference = CandleMlp::new(d, hidden, classes).unwrap();
    let p = random_params(&fast, seed);
    let case = format!("mlp {d}-{hidden:?}-{classes}, batch {n}");
    compare(
        &case,
        &mut fast,
        &mut reference,
        &p,
        &dense(n, d, classes, seed + 100),
        1e-5,
    );
}

#[test]
fn mlps_of_every_depth_match_the_candle_reference() {
    compare_mlp(784, &[200, 200], 10, 32, 1);
    compare_mlp(784, &[200, 200], 10, 24, 2);
    compare_mlp(60, &[], 10, 32, 3);
    compare_mlp(5, &[7], 3, 1, 4);
    compare_mlp(33, &[17, 9, 12], 4, 13, 5);
}

#[test]
fn mlp_batches_larger_than_an_evaluation_block_match_the_candle_reference() {
    // `evaluate` runs in blocks of 256 samples; training takes the batch whole.
    compare_mlp(20, &[16], 5, 300, 6);
}

fn compare_lstm(shape: [usize; 6], n: usize, threads: usize, seed: u64) {
    let [vocab, emb, hidden, layers, seq, classes] = shape;
    let mut fast = CharLstm::new(vocab, emb, hidden, layers, seq, classes)
        .unwrap()
        .with_threads(threads);
    let mut reference = CandleCharLstm::new(vocab, emb, hidden, layers, seq, classes).unwrap();
    let p = random_params(&fast, seed);
    let batch = token_batch(n, seq, vocab, classes, seed + 100);
    let case = format!("char-lstm {shape:?}, batch {n}, {threads} threads");
    compare(&case, &mut fast, &mut reference, &p, &batch, 1e-4);
}

#[test]
fn char_lstms_of_several_shapes_match_the_candle_reference() {
    compare_lstm([80, 8, 256, 2, 80, 80], 10, 1, 1);
    compare_lstm([80, 8, 256, 2, 80, 80], 3, 0, 2);
    compare_lstm([7, 3, 5, 1, 4, 7], 6, 1, 3);
    compare_lstm([11, 4, 9, 3, 6, 5], 1, 1, 4);
    // One step: no recurrence, W_hh gets no gradient.
    compare_lstm([6, 2, 8, 2, 1, 6], 5, 1, 5);
}

#[test]
fn char_lstm_batches_larger_than_an_evaluation_block_match_the_candle_reference() {
    // `evaluate` runs in blocks of 16 samples.
    compare_lstm([9, 3, 6, 2, 5, 9], 37, 1, 6);
}

/// Calls of different batch sizes through one model reuse its buffers: each result is
/// the one a fresh model gives.
#[test]
fn repeated_calls_reuse_buffers_without_leaking_state() {
    let mut m = CharLstm::new(13, 4, 16, 2, 7, 13).unwrap();
    let mut mlp = Mlp::new(12, &[10, 6], 4).unwrap();
    for (k, n) in [5usize, 2, 9, 1, 5].into_iter().enumerate() {
        let seed = 10 + k as u64;
        let p = random_params(&m, seed);
        let b = token_batch(n, 7, 13, 13, seed);
        let (mut g1, mut g2) = (vec![0.0; p.as_slice().len()], vec![0.0; p.as_slice().len()]);
        let l1 = m.loss_and_grad(&p, &b, &mut g1).unwrap();
        let mut fresh = CharLstm::new(13, 4, 16, 2, 7, 13).unwrap();
        let l2 = fresh.loss_and_grad(&p, &b, &mut g2).unwrap();
        assert_eq!(l1.to_bits(), l2.to_bits(), "batch {n}");
        assert!(g1 == g2, "batch {n}");

        let p = random_params(&mlp, seed);
        let b = dense(n, 12, 4, seed);
        let (mut g1, mut g2) = (vec![0.0; p.as_slice().len()], vec![0.0; p.as_slice().len()]);
        let l1 = mlp.loss_and_grad(&p, &b, &mut g1).unwrap();
        let l2 = Mlp::new(12, &[10, 6], 4)
            .unwrap()
            .loss_and_grad(&p, &b, &mut g2)
            .unwrap();
        assert_eq!(l1.to_bits(), l2.to_bits(), "batch {n}");
        assert!(g1 == g2, "batch {n}");
    }
}

/// The char-LSTM's all-steps products may run on several threads; the results are the
/// same bits whatever the thread cap and whatever the pool's size.
#[test]
fn char_lstm_results_do_not_depend_on_threads() {
    // Big enough that the `gemm` crate does split the all-steps products.
    let shape = (80, 8, 256, 2, 20, 80);
    let model = |threads| {
        CharLstm::new(shape.0, shape.1, shape.2, shape.3, shape.4, shape.5)
            .unwrap()
            .with_threads(threads)
    };
    let p = random_params(&model(1), 7);
    let batch = token_batch(10, shape.4, shape.0, shape.5, 8);
    let run = |pool_size: usize, threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(pool_size)
            .build()
            .unwrap();
        pool.install(|| {
            let mut m = model(threads);
            let mut g = vec![0.0; p.as_slice().len()];
            let l = m.loss_and_grad(&p, &batch, &mut g).unwrap();
            (l.to_bits(), g)
        })
    };
    let one = run(1, 1);
    for (pool, threads) in [(2, 0), (4, 0), (4, 2), (3, 3)] {
        let other = run(pool, threads);
        assert_eq!(one.0, other.0, "loss, pool {pool}, cap {threads}");
        assert!(one.1 == other.1, "gradient, pool {pool}, cap {threads}");
    }
}

/// Several SGD steps end at the same parameters as the reference's (within the
/// rounding that accumulates over the steps).
#[test]
fn sgd_steps_end_where_the_candle_references_end() {
    let lr = 0.1;
    let run = |m: &mut dyn Model, p: &mut ParamTree, batches: &[Batch]| {
        let mut g = vec![0.0; p.as_slice().len()];
        for b in batches {
            m.loss_and_grad(p, b, &mut g).unwrap();
            fedpace_params::axpy(-lr, &g, p.as_mut_slice());
        }
    };
    let batches: Vec<Batch> = (0..5).map(|k| dense(16, 50, 10, 20 + k)).collect();
    let mut fast = Mlp::new(50, &[40, 30], 10).unwrap();
    let mut p1 = random_params(&fast, 9);
    let mut p2 = p1.clone();
    run(&mut fast, &mut p1, &batches);
    run(
        &mut CandleMlp::new(50, &[40, 30], 10).unwrap(),
        &mut p2,
        &batches,
    );
    let e = rel_err(p1.as_slice(), p2.as_slice());
    assert!(e < 1e-5, "mlp parameters differ by {e:e}");

    let batches: Vec<Batch> = (0..5).map(|k| token_batch(8, 12, 20, 20, 30 + k)).collect();
    let mut fast = CharLstm::new(20, 6, 24, 2, 12, 20).unwrap();
    let mut p1 = random_params(&fast, 11);
    let mut p2 = p1.clone();
    run(&mut fast, &mut p1, &batches);
    run(
        &mut CandleCharLstm::new(20, 6, 24, 2, 12, 20).unwrap(),
        &mut p2,
        &batches,
    );
    let e = rel_err(p1.as_slice(), p2.as_slice());
    assert!(e < 1e-5, "char-lstm parameters differ by {e:e}");
}
