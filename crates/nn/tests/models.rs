//! Behaviour of every model: gradients against finite differences, logistic regression
//! against an autograd (candle) version of itself, SGD lowering the loss, evaluation
//! counts, and bad batches rejected as errors.

mod common;

use candle_core::{Device, Tensor, Var};
use common::{check_gradient, dense_batch, lcg, sgd};
use fedpace_core::{Batch, Inputs, Model};
use fedpace_nn::{CharLstm, Cnn, LogisticRegression, Mlp};
use fedpace_params::ParamTree;

/// `n` samples of `d` features in `classes` linearly separable clusters.
fn separable(n: usize, d: usize, classes: usize, seed: u64) -> (Vec<f32>, Vec<u32>) {
    let noise = lcg(seed, n * d);
    let mut x = Vec::with_capacity(n * d);
    let mut y = Vec::with_capacity(n);
    for i in 0..n {
        let c = i % classes;
        for j in 0..d {
            let centre = if j % classes == c { 2.0 } else { 0.0 };
            x.push(centre + 0.3 * noise[i * d + j]);
        }
        y.push(c as u32);
    }
    (x, y)
}

fn tokens_batch(n: usize, seq_len: usize, vocab: usize, seed: u64) -> Batch {
    let r = lcg(seed, n * (seq_len + 1));
    let ids: Vec<u32> = r
        .iter()
        .map(|v| ((v + 1.0) * 0.5 * vocab as f32) as u32 % vocab as u32)
        .collect();
    let mut data = Vec::new();
    let mut labels = Vec::new();
    for i in 0..n {
        let s = &ids[i * (seq_len + 1)..(i + 1) * (seq_len + 1)];
        data.extend_from_slice(&s[..seq_len]);
        // Learnable rule: the label is the first token.
        labels.push(s[0]);
    }
    Batch {
        inputs: Inputs::Tokens { data, seq_len },
        labels,
    }
}

#[test]
fn logistic_regression_gradient_matches_finite_differences() {
    let mut m = LogisticRegression::new(7, 4).unwrap();
    let p = m.init(3).unwrap();
    let b = dense_batch(lcg(1, 5 * 7), vec![7], vec![0, 3, 1, 2, 3]);
    check_gradient(&mut m, &p, &b, 40);
}

#[test]
fn logistic_regression_matches_candle_autograd() {
    let (n, d, c) = (9, 13, 5);
    let mut m = LogisticRegression::new(d, c).unwrap();
    let mut p = m.init(11).unwrap();
    // Large weights so the log-sum-exp matters.
    p.as_mut_slice().iter_mut().for_each(|v| *v *= 20.0);
    let x = lcg(2, n * d);
    let labels: Vec<u32> = (0..n as u32).map(|i| (i * 3) % c as u32).collect();
    let b = dense_batch(x.clone(), vec![d], labels.clone());
    let mut grad = vec![0.0; p.as_slice().len()];
    let loss = m.loss_and_grad(&p, &b, &mut grad).unwrap();

    let dev = Device::Cpu;
    let w = Var::from_slice(p.tensor("linear.weight").unwrap(), (c, d), &dev).unwrap();
    let bias = Var::from_slice(p.tensor("linear.bias").unwrap(), c, &dev).unwrap();
    let xt = Tensor::from_slice(&x, (n, d), &dev).unwrap();
    let yt = Tensor::from_slice(&labels, n, &dev).unwrap();
    let logits = xt
        .matmul(&w.as_tensor().t().unwrap())
        .unwrap()
        .broadcast_add(bias.as_tensor())
        .unwrap();
    let l = candle_nn::loss::cross_entropy(&logits, &yt).unwrap();
    let g = l.backward().unwrap();
    let ref_loss = l.to_scalar::<f32>().unwrap();
    let gw = g
        .get(w.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let gb = g.get(bias.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
    assert!(
        (loss - ref_loss).abs() < 1e-4 * ref_loss.abs().max(1.0),
        "{loss} vs {ref_loss}"
    );
    for (a, e) in grad.iter().zip(gw.iter().chain(&gb)) {
        assert!((a - e).abs() < 1e-4, "{a} vs {e}");
    }
}

#[test]
fn mlp_gradient_matches_finite_differences() {
    let mut m = Mlp::new(6, &[5, 4], 3).unwrap();
    let p = m.init(5).unwrap();
    let b = dense_batch(lcg(4, 4 * 6), vec![2, 3], vec![0, 2, 1, 2]);
    check_gradient(&mut m, &p, &b, 30);
}

#[test]
fn cnn_gradient_matches_finite_differences() {
    let mut m = Cnn::new([2, 4, 8], 3).unwrap();
    let p = m.init(6).unwrap();
    let b = dense_batch(lcg(5, 3 * 2 * 4 * 8), vec![2, 4, 8], vec![0, 2, 1]);
    check_gradient(&mut m, &p, &b, 12);
}

#[test]
fn lstm_gradient_matches_finite_differences() {
    let mut m = CharLstm::new(6, 3, 4, 2, 5, 6).unwrap();
    let p = m.init(7).unwrap();
    let b = tokens_batch(3, 5, 6, 8);
    check_gradient(&mut m, &p, &b, 16);
}

#[test]
fn sgd_lowers_the_loss_of_every_model_on_separable_data() {
    let (x, y) = separable(24, 16, 4, 9);
    let b = dense_batch(x.clone(), vec![16], y.clone());
    let img = dense_batch(x, vec![1, 4, 4], y);
    let cases: Vec<(Box<dyn Model>, &Batch, f32)> = vec![
        (Box::new(LogisticRegression::new(16, 4).unwrap()), &b, 0.5),
        (Box::new(Mlp::new(16, &[32], 4).unwrap()), &b, 0.2),
        (Box::new(Cnn::new([1, 4, 4], 4).unwrap()), &img, 0.2),
    ];
    for (mut m, batch, lr) in cases {
        let mut p = m.init(1).unwrap();
        let (first, last) = sgd(m.as_mut(), &mut p, batch, lr, 30);
        assert!(
            last < 0.5 * first,
            "{:?}: loss {first} -> {last}",
            m.spec().entries()[0].name
        );
        let s = m.evaluate(&p, batch).unwrap();
        assert_eq!(s.count, 24);
        assert_eq!(s.correct, 24, "{s:?}");
    }
    let mut m = CharLstm::new(5, 4, 16, 1, 3, 5).unwrap();
    let tb = tokens_batch(20, 3, 5, 10);
    let mut p = m.init(2).unwrap();
    let (first, last) = sgd(&mut m, &mut p, &tb, 1.0, 150);
    assert!(last < 0.5 * first, "lstm loss {first} -> {last}");
}

#[test]
fn evaluate_counts_argmax_hits_and_sums_losses() {
    let mut m = LogisticRegression::new(2, 2).unwrap();
    // logits = x (identity weights, zero bias).
    let p = ParamTree::from_vec(m.spec(), vec![1.0, 0.0, 0.0, 1.0, 0.0, 0.0]).unwrap();
    let b = dense_batch(vec![3.0, 0.0, 0.0, 3.0, 1.0, 0.0], vec![2], vec![0, 0, 0]);
    let s = m.evaluate(&p, &b).unwrap();
    assert_eq!((s.correct, s.count), (2, 3));
    let lse = |a: f64, b: f64| (a.exp() + b.exp()).ln();
    let expected = (lse(3.0, 0.0) - 3.0) + (lse(0.0, 3.0) - 0.0) + (lse(1.0, 0.0) - 1.0);
    assert!(
        (s.loss_sum - expected).abs() < 1e-5,
        "{} vs {expected}",
        s.loss_sum
    );
    // The candle models agree on the same counting.
    let mut mlp = Mlp::new(2, &[], 2).unwrap();
    let s2 = mlp
        .evaluate(
            &ParamTree::from_vec(mlp.spec(), p.as_slice().to_vec()).unwrap(),
            &b,
        )
        .unwrap();
    assert_eq!((s2.correct, s2.count), (2, 3));
    assert!((s2.loss_sum - expected).abs() < 1e-5);
}

#[test]
fn init_is_deterministic_and_within_pytorch_bounds() {
    let m = Mlp::new(784, &[200, 200], 10).unwrap();
    let a = m.init(42).unwrap();
    assert_eq!(a, m.init(42).unwrap());
    assert_ne!(a, m.init(43).unwrap());
    for e in m.spec().entries() {
        let fan_in = if e.shape.len() == 2 { e.shape[1] } else { 0 };
        let fan_in = if fan_in == 0 {
            m.spec()
                .entries()
                .iter()
                .find(|w| w.name == e.name.replace("bias", "weight"))
                .unwrap()
                .shape[1]
        } else {
            fan_in
        };
        let bound = 1.0 / (fan_in as f32).sqrt();
        let v = a.tensor(&e.name).unwrap();
        assert!(v.iter().all(|x| x.abs() <= bound), "{}", e.name);
        let max = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        assert!(max > 0.9 * bound, "{} spans its range", e.name);
    }
    assert_eq!(m.spec().groups(), &["body".to_string(), "head".to_string()]);
    assert_eq!(m.spec().entry("fc3.weight").unwrap().group, 1);
}

#[test]
fn bad_batches_are_errors_naming_the_problem() {
    let mut m = Mlp::new(4, &[3], 2).unwrap();
    let p = m.init(0).unwrap();
    let mut g = vec![0.0; p.as_slice().len()];
    let err = |r: fedpace_core::Result<f32>| r.unwrap_err().to_string();
    let tokens = Batch {
        inputs: Inputs::Tokens {
            data: vec![0; 4],
            seq_len: 4,
        },
        labels: vec![0],
    };
    assert!(err(m.loss_and_grad(&p, &tokens, &mut g)).contains("dense"));
    let wrong = dense_batch(vec![0.0; 6], vec![3], vec![0, 1]);
    assert!(err(m.loss_and_grad(&p, &wrong, &mut g)).contains("values per sample"));
    let label = dense_batch(vec![0.0; 4], vec![4], vec![2]);
    assert!(err(m.loss_and_grad(&p, &label, &mut g)).contains("label"));
    let short = dense_batch(vec![0.0; 7], vec![4], vec![0, 1]);
    assert!(err(m.loss_and_grad(&p, &short, &mut g)).contains("length"));
    let mut small = vec![0.0; 3];
    let ok = dense_batch(vec![0.0; 4], vec![4], vec![1]);
    assert!(m.loss_and_grad(&p, &ok, &mut small).is_err());
    let other = Mlp::new(4, &[5], 2).unwrap().init(0).unwrap();
    assert!(m.loss_and_grad(&other, &ok, &mut g).is_err());

    let mut cnn = Cnn::new([1, 8, 8], 2).unwrap();
    let pc = cnn.init(0).unwrap();
    let flat = dense_batch(vec![0.0; 64], vec![64], vec![0]);
    assert!(cnn
        .evaluate(&pc, &flat)
        .unwrap_err()
        .to_string()
        .contains("sample shape"));
    let hw = dense_batch(vec![0.0; 64], vec![8, 8], vec![0]);
    assert_eq!(cnn.evaluate(&pc, &hw).unwrap().count, 1);

    let mut lstm = CharLstm::new(5, 2, 3, 1, 4, 5).unwrap();
    let pl = lstm.init(0).unwrap();
    let bad_id = Batch {
        inputs: Inputs::Tokens {
            data: vec![0, 1, 5, 2],
            seq_len: 4,
        },
        labels: vec![0],
    };
    assert!(lstm
        .evaluate(&pl, &bad_id)
        .unwrap_err()
        .to_string()
        .contains("token id"));
    let bad_len = Batch {
        inputs: Inputs::Tokens {
            data: vec![0; 3],
            seq_len: 3,
        },
        labels: vec![0],
    };
    assert!(lstm
        .evaluate(&pl, &bad_len)
        .unwrap_err()
        .to_string()
        .contains("seq_len"));
}

#[test]
fn empty_batches_give_zero_loss_and_gradient() {
    let mut m = Mlp::new(4, &[3], 2).unwrap();
    let p = m.init(0).unwrap();
    let mut g = vec![1.0; p.as_slice().len()];
    let empty = dense_batch(vec![], vec![4], vec![]);
    assert_eq!(m.loss_and_grad(&p, &empty, &mut g).unwrap(), 0.0);
    assert!(g.iter().all(|&v| v == 0.0));
    assert_eq!(m.evaluate(&p, &empty).unwrap().count, 0);
}

#[test]
fn single_threaded_gives_the_same_gradient() {
    let mut m = Cnn::new([1, 8, 8], 3).unwrap();
    let p = m.init(4).unwrap();
    let b = dense_batch(lcg(3, 4 * 64), vec![1, 8, 8], vec![0, 1, 2, 0]);
    let mut g1 = vec![0.0; p.as_slice().len()];
    let l1 = m.loss_and_grad(&p, &b, &mut g1).unwrap();
    let (l2, g2) = fedpace_nn::threads::single_threaded(|| {
        let mut g2 = vec![0.0; p.as_slice().len()];
        let l2 = m.loss_and_grad(&p, &b, &mut g2).unwrap();
        (l2, g2)
    });
    assert_eq!(l1, l2);
    assert_eq!(g1, g2);
}

/// [`Model::overwrites_grad`]: the char-LSTM writes every gradient value, so a gradient
/// buffer full of NaN before the call gives the same bits as a zeroed one (a local step
/// skips the zeroing for this model) — one and several layers, one step (no recurrent
/// product), a batch that is not a multiple of the 10-row tile, and an empty batch.
#[test]
fn char_lstm_overwrites_its_gradient() {
    // (vocab, embedding, hidden, layers, seq_len, n)
    for (vocab, e, h, layers, t, n) in [
        (7, 3, 5, 1, 4, 3),
        (9, 4, 16, 2, 6, 13),
        (6, 2, 4, 3, 1, 2),
        (5, 2, 3, 2, 3, 0),
    ] {
        let mut m = CharLstm::new(vocab, e, h, layers, t, vocab).unwrap();
        let p = m.init(5).unwrap();
        let b = tokens_batch(n, t, vocab, 11 + n as u64);
        let what = format!("{layers} layers, {t} steps, {n} samples");
        fedpace_core::testing::check_overwrites_grad(&mut m, &p, &b, &what);
    }
}
