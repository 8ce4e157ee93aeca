//! Times one local epoch (600 samples, batch 32, plain SGD lr 0.05) of each model on
//! one thread and prints the median. Reports, does not assert.
//!
//! ```text
//! RAYON_NUM_THREADS=1 cargo run -p fedpace-nn --release --example epoch_time
//! ```
//! (`RAYON_NUM_THREADS=1` also keeps `gemm` from splitting work; every epoch runs inside
//! `fedpace_nn::threads::single_threaded` regardless.)

use fedpace_core::{Batch, Inputs, Model};
use fedpace_nn::{threads, CandleCnn, CharLstm, Cnn, LogisticRegression, Mlp};
use std::time::Instant;

const SAMPLES: usize = 600;
const BATCH: usize = 32;

fn lcg(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005) | 1;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn dense_batches(shape: &[usize]) -> Vec<Batch> {
    let d: usize = shape.iter().product();
    let x = lcg(1, SAMPLES * d);
    let y: Vec<u32> = (0..SAMPLES as u32).map(|i| (i * 7) % 10).collect();
    (0..SAMPLES)
        .step_by(BATCH)
        .map(|s| {
            let e = (s + BATCH).min(SAMPLES);
            Batch {
                inputs: Inputs::Dense {
                    data: x[s * d..e * d].to_vec(),
                    sample_shape: shape.to_vec(),
                },
                labels: y[s..e].to_vec(),
            }
        })
        .collect()
}

fn token_batches(seq_len: usize, vocab: u32) -> Vec<Batch> {
    let ids: Vec<u32> = (0..SAMPLES * seq_len)
        .map(|i| (i as u32 * 31 + 7) % vocab)
        .collect();
    (0..SAMPLES)
        .step_by(BATCH)
        .map(|s| {
            let e = (s + BATCH).min(SAMPLES);
            Batch {
                inputs: Inputs::Tokens {
                    data: ids[s * seq_len..e * seq_len].to_vec(),
                    seq_len,
                },
                labels: (s..e).map(|i| i as u32 % vocab).collect(),
            }
        })
        .collect()
}

fn time_epochs(name: &str, model: &mut dyn Model, batches: &[Batch], reps: usize) {
    let mut p = model.init(0).unwrap();
    let mut grad = vec![0.0; p.as_slice().len()];
    let mut times = Vec::with_capacity(reps);
    let mut loss = 0.0;
    for _ in 0..reps + 1 {
        let t = Instant::now();
        for b in batches {
            loss = model.loss_and_grad(&p, b, &mut grad).unwrap();
            fedpace_params::axpy(-0.05, &grad, p.as_mut_slice());
        }
        times.push(t.elapsed().as_secs_f64());
    }
    times.remove(0); // warm-up
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "{name:<28} {:>9} params  epoch median {:>9.3} ms  (min {:.3} ms, {reps} reps, last loss {loss:.3})",
        model.spec().total_len(),
        median * 1e3,
        times[0] * 1e3
    );
}

fn main() {
    threads::single_threaded(|| {
        println!(
            "one local epoch: {SAMPLES} samples, batch {BATCH}, SGD; rayon threads in call: {}",
            rayon::current_num_threads()
        );
        let lr_batches = dense_batches(&[60]);
        time_epochs(
            "logistic-regression 60→10",
            &mut LogisticRegression::new(60, 10).unwrap(),
            &lr_batches,
            200,
        );
        let img = dense_batches(&[1, 28, 28]);
        time_epochs(
            "mlp 784-200-200-10",
            &mut Mlp::new(784, &[200, 200], 10).unwrap(),
            &img,
            20,
        );
        time_epochs(
            "cnn (FedAvg), plain Rust",
            &mut Cnn::new([1, 28, 28], 10).unwrap(),
            &img,
            10,
        );
        if !std::env::args().any(|a| a == "--no-candle") {
            time_epochs(
                "cnn (FedAvg), candle ref.",
                &mut CandleCnn::new([1, 28, 28], 10).unwrap(),
                &img,
                3,
            );
        }
        if std::env::args().any(|a| a == "--lstm") {
            time_epochs(
                "char-lstm 80/8/256×2, seq 80",
                &mut CharLstm::new(80, 8, 256, 2, 80, 80).unwrap(),
                &token_batches(80, 80),
                1,
            );
        }
    });
}
