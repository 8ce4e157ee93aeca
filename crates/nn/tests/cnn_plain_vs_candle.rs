//! The plain-Rust [`Cnn`] against the candle reference [`CandleCnn`] (itself golden-tested
//! against PyTorch in `golden.rs`): same logits, loss and gradients on random parameters
//! and batches of several shapes, chunk counts and batch sizes, and the same parameters
//! after a W-CNN local epoch of SGD (600 samples, batch 32).
//!
//! The two differ in floating-point rounding only: summation order (GEMM blocking) and,
//! in the plain CNN's conv2, Winograd F(2×2, 5×5) (≈ 1.5e-6 relative per value against
//! ≈ 5e-7 for a direct sum; gradients agree to ≈ 1.3e-6 on the W-CNN shapes). Gradients
//! are compared per tensor by relative L2 error. A max-pool
//! window whose two largest values lie within that rounding of each other may route its
//! gradient to a different pixel in each implementation — a different subgradient, not
//! an error — which moves a tensor's gradient by a few 1e-5 relative at most on these
//! sizes; the tolerance is 1e-4.

mod common;

use common::{dense_batch, lcg};
use fedpace_core::{Batch, Model};
use fedpace_nn::{CandleCnn, Cnn};
use fedpace_params::ParamTree;

/// Random parameters: the model's own init, with biases drawn from a wider range so that
/// ReLUs cut a fair share of units.
fn random_params(m: &dyn Model, seed: u64) -> ParamTree {
    let mut p = m.init(seed).unwrap();
    let spec = m.spec();
    for (k, e) in spec.entries().iter().enumerate() {
        if e.name.ends_with(".bias") {
            let v = lcg(seed * 31 + k as u64, e.len());
            for (dst, r) in p.as_mut_slice()[e.range()].iter_mut().zip(v) {
                *dst = 0.2 * r;
            }
        }
    }
    p
}

fn random_batch(shape: [usize; 3], n: usize, classes: u32, seed: u64) -> Batch {
    let len: usize = shape.iter().product();
    let labels = (0..n as u32)
        .map(|i| (i.wrapping_mul(7) + seed as u32) % classes)
        .collect();
    dense_batch(lcg(seed, n * len), shape.to_vec(), labels)
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

fn compare(shape: [usize; 3], classes: usize, n: usize, threads: usize, seed: u64) {
    let mut plain = Cnn::new(shape, classes).unwrap().with_threads(threads);
    let mut reference = CandleCnn::new(shape, classes).unwrap();
    let p = random_params(&plain, seed);
    let batch = random_batch(shape, n, classes as u32, seed + 100);
    let case = format!("shape {shape:?}, {classes} classes, batch {n}, {threads} chunks");

    let (z1, z2) = (
        plain.logits(&p, &batch).unwrap(),
        reference.logits(&p, &batch).unwrap(),
    );
    assert_eq!(z1.len(), n * classes);
    let e = rel_err(&z1, &z2);
    assert!(e < 1e-5, "{case}: logits differ by {e:e}");

    let len = p.as_slice().len();
    let (mut g1, mut g2) = (vec![f32::NAN; len], vec![0.0; len]);
    let l1 = plain.loss_and_grad(&p, &batch, &mut g1).unwrap();
    let l2 = reference.loss_and_grad(&p, &batch, &mut g2).unwrap();
    assert!(((l1 - l2) / l2).abs() < 1e-5, "{case}: loss {l1} vs {l2}");
    for e in plain.spec().entries() {
        let err = rel_err(&g1[e.range()], &g2[e.range()]);
        assert!(
            err < 1e-4,
            "{case}: gradient of {} differs by {err:e}",
            e.name
        );
    }

    let (s1, s2) = (
        plain.evaluate(&p, &batch).unwrap(),
        reference.evaluate(&p, &batch).unwrap(),
    );
    assert_eq!((s1.count, s1.correct), (s2.count, s2.correct), "{case}");
    assert!(
        ((s1.loss_sum - s2.loss_sum) / s2.loss_sum).abs() < 1e-5,
        "{case}"
    );
}

#[test]
fn fedavg_cnn_matches_the_candle_reference() {
    compare([1, 28, 28], 10, 32, 1, 1);
    compare([1, 28, 28], 10, 24, 1, 2);
}

#[test]
fn other_shapes_and_batch_sizes_match_the_candle_reference() {
    compare([3, 8, 12], 5, 7, 1, 3);
    compare([2, 4, 8], 3, 1, 1, 4);
    compare([1, 16, 4], 2, 5, 1, 5);
}

#[test]
fn chunked_batches_match_the_candle_reference() {
    // More chunks than samples, uneven chunks, and chunks of several groups.
    compare([1, 8, 8], 4, 3, 5, 6);
    compare([1, 28, 28], 10, 13, 3, 7);
}

#[test]
fn batches_larger_than_an_evaluation_block_match_the_candle_reference() {
    // `evaluate` and `logits` run in blocks of 64 samples; training takes the batch whole.
    compare([1, 8, 8], 3, 150, 1, 13);
    compare([1, 8, 8], 3, 130, 2, 14);
}

/// Results are the same bits whatever the thread cap (`with_threads`: 0 = every free
/// thread, 1 = the calling thread only, 3) and whatever the pool size: the blocks of
/// `BLOCK` samples fix the numerics, the threads only run them.
#[test]
fn neither_the_thread_cap_nor_the_pool_size_changes_the_numerics() {
    let shape = [1, 12, 12];
    // 27 samples: three full blocks of 8 and a ragged one.
    let batch = random_batch(shape, 27, 10, 9);
    let grads = |threads: usize, pool: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(pool)
            .build()
            .unwrap();
        pool.install(|| {
            let mut m = Cnn::new(shape, 10).unwrap().with_threads(threads);
            let p = random_params(&m, 8);
            let mut g = vec![0.0; p.as_slice().len()];
            let l = m.loss_and_grad(&p, &batch, &mut g).unwrap();
            (
                l.to_bits(),
                g.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            )
        })
    };
    let reference = grads(1, 1);
    for (cap, pool) in [(1, 3), (0, 1), (0, 2), (0, 4), (3, 2), (3, 4), (2, 3)] {
        assert!(grads(cap, pool) == reference, "cap {cap}, pool {pool}");
    }
}

#[test]
fn repeated_calls_reuse_buffers_without_leaking_state() {
    // A larger batch, then a smaller one, then the first again: bit-identical results
    // to a fresh model (buffers are reused, never read stale).
    let shape = [1, 8, 8];
    let big = random_batch(shape, 9, 3, 10);
    let small = random_batch(shape, 2, 3, 11);
    let mut m = Cnn::new(shape, 3).unwrap();
    let p = random_params(&m, 12);
    let len = p.as_slice().len();
    let run = |m: &mut Cnn, b: &Batch| {
        let mut g = vec![0.0; len];
        let l = m.loss_and_grad(&p, b, &mut g).unwrap();
        (l, g)
    };
    let first = run(&mut m, &big);
    let s = run(&mut m, &small);
    assert_eq!(s, run(&mut Cnn::new(shape, 3).unwrap(), &small));
    assert_eq!(run(&mut m, &big), first);
}

#[test]
fn a_model_built_after_another_is_dropped_gives_a_fresh_models_bits() {
    // A dropped CNN leaves its buffers to the next one built on the same thread (of the
    // same shape): the next model's results are those of a model on a thread that never
    // ran one, whatever the previous model computed (other parameters, a larger batch,
    // another shape in between).
    let shape = [1, 8, 8];
    let batch = random_batch(shape, 5, 3, 20);
    let run = |m: &mut Cnn, p: &ParamTree, b: &Batch| {
        let mut g = vec![f32::NAN; p.as_slice().len()];
        let l = m.loss_and_grad(p, b, &mut g).unwrap();
        let bits: Vec<u32> = g.iter().map(|v| v.to_bits()).collect();
        (l.to_bits(), bits)
    };
    let p = random_params(&Cnn::new(shape, 3).unwrap(), 21);
    let fresh = std::thread::spawn({
        let (p, batch) = (p.clone(), batch.clone());
        move || run(&mut Cnn::new(shape, 3).unwrap(), &p, &batch)
    })
    .join()
    .unwrap();
    {
        let mut before = Cnn::new(shape, 3).unwrap();
        let q = random_params(&before, 22);
        run(&mut before, &q, &random_batch(shape, 19, 3, 23));
    }
    assert_eq!(run(&mut Cnn::new(shape, 3).unwrap(), &p, &batch), fresh);
    {
        let other = [2, 12, 4];
        let mut before = Cnn::new(other, 4).unwrap();
        let q = random_params(&before, 24);
        run(&mut before, &q, &random_batch(other, 7, 4, 25));
    }
    assert_eq!(run(&mut Cnn::new(shape, 3).unwrap(), &p, &batch), fresh);
}

#[test]
fn live_models_sharing_a_threads_scratch_give_their_own_bits() {
    // The passes of one group of samples (Winograd's V and M, conv1's columns and
    // output, the gradients in between) use one scratch set per thread, shared by every
    // model on it: two live models of different shapes whose steps interleave on one
    // thread give the bits each gives alone on a thread of its own.
    let run = |m: &mut Cnn, p: &ParamTree, b: &Batch| {
        let mut g = vec![f32::NAN; p.as_slice().len()];
        let l = m.loss_and_grad(p, b, &mut g).unwrap();
        let bits: Vec<u32> = g.iter().map(|v| v.to_bits()).collect();
        (l.to_bits(), bits)
    };
    let (a, b) = (([1, 8, 8], 3), ([2, 12, 4], 4));
    let setup = |(shape, classes): ([usize; 3], usize), seed: u64| {
        let m = Cnn::new(shape, classes).unwrap().with_threads(1);
        let p = random_params(&m, seed);
        let batches = [
            random_batch(shape, 11, classes as u32, seed + 1),
            random_batch(shape, 5, classes as u32, seed + 2),
        ];
        (m, p, batches)
    };
    let alone = |spec, seed| {
        std::thread::spawn(move || {
            let (mut m, p, batches) = setup(spec, seed);
            batches
                .iter()
                .map(|x| run(&mut m, &p, x))
                .collect::<Vec<_>>()
        })
        .join()
        .unwrap()
    };
    let (want_a, want_b) = (alone(a, 30), alone(b, 40));
    let (mut ma, pa, ba) = setup(a, 30);
    let (mut mb, pb, bb) = setup(b, 40);
    let (mut got_a, mut got_b) = (vec![], vec![]);
    for i in 0..2 {
        got_b.push(run(&mut mb, &pb, &bb[i]));
        got_a.push(run(&mut ma, &pa, &ba[i]));
    }
    assert_eq!(got_a, want_a);
    assert_eq!(got_b, want_b);
}

/// A W-CNN local epoch ends at the reference's parameters. At equal parameters the two
/// gradients agree to ≈ 1.3e-6, except on a batch where a max-pool window's two largest
/// values lie within the implementations' rounding of each other (conv2 runs by
/// Winograd, whose rounding is ≈ 3× a direct sum's): the window then routes its
/// gradient to another pixel — an equally valid subgradient — which moves the
/// convolutions' gradients by up to ≈ 5e-3 relative on this random data. Depending on
/// whether such a flip occurs along the trajectory, the parameters end within 1e-5 or
/// within a few 1e-3 of the reference's (relative L2; they move by 2e-3 to 8e-2): the
/// test asks 1e-2, and 1e-4 for every step's loss. Per-step gradients are checked
/// tightly by the tests above.
#[test]
fn an_sgd_epoch_ends_where_the_candle_reference_ends() {
    // A W-CNN local epoch: 600 samples in batches of 32 (the last of 24), SGD lr 0.05.
    let shape = [1, 28, 28];
    let mut plain = Cnn::new(shape, 10).unwrap();
    let mut reference = CandleCnn::new(shape, 10).unwrap();
    let init = plain.init(3).unwrap();
    let batches: Vec<Batch> = (0..19)
        .map(|b| random_batch(shape, if b < 18 { 32 } else { 24 }, 10, 20 + b))
        .collect();
    let epoch = |m: &mut dyn Model| {
        let mut p = init.clone();
        let mut g = vec![0.0; p.as_slice().len()];
        let mut losses = vec![];
        for b in &batches {
            losses.push(m.loss_and_grad(&p, b, &mut g).unwrap());
            fedpace_params::axpy(-0.05, &g, p.as_mut_slice());
        }
        (p, losses)
    };
    let (p1, l1) = epoch(&mut plain);
    let (p2, l2) = epoch(&mut reference);
    for (a, b) in l1.iter().zip(&l2) {
        assert!(((a - b) / b).abs() < 1e-4, "losses {l1:?} vs {l2:?}");
    }
    for e in plain.spec().entries() {
        let err = rel_err(&p1.as_slice()[e.range()], &p2.as_slice()[e.range()]);
        let moved = rel_err(&p1.as_slice()[e.range()], &init.as_slice()[e.range()]);
        assert!(moved > 1e-3, "{} did not train ({moved:e})", e.name);
        assert!(err < 1e-2, "parameters {} differ by {err:e}", e.name);
    }
}

/// [`Model::overwrites_grad`]: the CNN writes every gradient value, so a gradient buffer
/// full of NaN before the call gives the same bits as a zeroed one (a local step skips
/// the zeroing for this model). Shapes with one and several blocks, and an empty batch.
#[test]
fn cnn_overwrites_its_gradient() {
    for (shape, n) in [([1, 8, 8], 3), ([2, 12, 8], 19), ([1, 28, 28], 0)] {
        let b = random_batch(shape, n, 4, 20 + n as u64);
        let mut m = Cnn::new(shape, 4).unwrap();
        let p = random_params(&m, 21);
        let what = format!("shape {shape:?}, {n} samples");
        fedpace_core::testing::check_overwrites_grad(&mut m, &p, &b, &what);
    }
}

/// [`Model::loss_and_grad_sgd`]: the CNN steps fc1's weight inside its backward pass
/// (docs/arch/0038-fc1-backward-sgd-step.md). The loss, every other tensor's gradient and
/// the stepped fc1 weight are the bits of `loss_and_grad` followed by `p + g·(−η)`, over
/// several steps with per-group rates, for a full batch of 28×28 images and batches
/// with samples left over after the kernel's 4-row blocks; an empty batch leaves the
/// parameters, and a wrong number of rates is an error that leaves them too.
#[test]
fn cnn_fused_fc1_step_gives_the_unfused_bits() {
    let bits = |g: &[f32]| g.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for (shape, n) in [([1, 28, 28], 32), ([1, 28, 28], 19), ([2, 12, 8], 5)] {
        let mut fused = Cnn::new(shape, 4).unwrap();
        let mut plain = Cnn::new(shape, 4).unwrap();
        assert_eq!(fused.fused_sgd_tensors(), vec![4]);
        let spec = fused.spec();
        let rates = [0.05f32, 0.11];
        let fc1 = spec.entries()[4].range();
        let (mut p1, mut p2) = (random_params(&fused, 31), random_params(&fused, 31));
        let len = p1.as_slice().len();
        for step in 0..3u64 {
            let b = random_batch(shape, n, 4, 40 + step);
            let (mut g1, mut g2) = (vec![f32::NAN; len], vec![0.0f32; len]);
            let l1 = fused
                .loss_and_grad_sgd(&mut p1, &b, &mut g1, &rates)
                .unwrap();
            let l2 = plain.loss_and_grad(&p2, &b, &mut g2).unwrap();
            assert_eq!(l1.to_bits(), l2.to_bits(), "loss, {shape:?} {n}");
            for e in spec.entries() {
                let r = -rates[e.group];
                for (p, &g) in p2.as_mut_slice()[e.range()].iter_mut().zip(&g2[e.range()]) {
                    *p += g * r;
                }
                if e.range() != fc1 {
                    let (a, b) = (&g1[e.range()], &g2[e.range()]);
                    assert_eq!(bits(a), bits(b), "{} gradient, {shape:?} {n}", e.name);
                    for (p, &g) in p1.as_mut_slice()[e.range()].iter_mut().zip(a) {
                        *p += g * r;
                    }
                }
            }
            assert_eq!(
                bits(p1.as_slice()),
                bits(p2.as_slice()),
                "parameters after step {step}, {shape:?} {n}"
            );
        }
        let before = p1.clone();
        let empty = random_batch(shape, 0, 4, 1);
        let mut g = vec![f32::NAN; len];
        assert_eq!(
            fused
                .loss_and_grad_sgd(&mut p1, &empty, &mut g, &rates)
                .unwrap(),
            0.0
        );
        assert_eq!(bits(p1.as_slice()), bits(before.as_slice()));
        let b = random_batch(shape, n, 4, 9);
        let e = fused
            .loss_and_grad_sgd(&mut p1, &b, &mut g, &rates[..1])
            .unwrap_err();
        assert!(e.to_string().contains("group rates"), "{e}");
        assert_eq!(bits(p1.as_slice()), bits(before.as_slice()));
    }
}
