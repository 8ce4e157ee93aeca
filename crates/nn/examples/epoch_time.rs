//! Times one local epoch (600 samples, batch 32, plain SGD lr 0.05) of each model on
//! one thread and prints the median; the char-LSTM is timed per training step of the
//! LEAF Shakespeare shape (batch 10 × 80 characters). Reports, does not assert.
//!
//! ```text
//! RAYON_NUM_THREADS=1 cargo run -p fedpace-nn --release --example epoch_time [lr] [mlp] [cnn] [lstm] [--candle]
//! ```
//! With no model named, all four; `--candle` adds the candle references.
//! (`RAYON_NUM_THREADS=1` also keeps `gemm` from splitting work; every epoch runs inside
//! `fedpace_nn::threads::single_threaded` regardless.)

use fedpace_core::{Batch, Inputs, Model};
use fedpace_nn::{
    threads, CandleCharLstm, CandleCnn, CandleMlp, CharLstm, Cnn, LogisticRegression, Mlp,
};
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

fn token_batches(seq_len: usize, vocab: u32, samples: usize, batch: usize) -> Vec<Batch> {
    let ids: Vec<u32> = (0..samples * seq_len)
        .map(|i| (i as u32 * 31 + 7) % vocab)
        .collect();
    (0..samples)
        .step_by(batch)
        .map(|s| {
            let e = (s + batch).min(samples);
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

/// CPU seconds used by the calling thread so far.
fn thread_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer for the duration of the call.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn time_epochs(name: &str, model: &mut dyn Model, batches: &[Batch], reps: usize) {
    let mut p = model.init(0).unwrap();
    let mut grad = vec![0.0; p.as_slice().len()];
    let mut times = Vec::with_capacity(reps);
    let mut cpu = Vec::with_capacity(reps);
    let mut loss = 0.0;
    for _ in 0..reps + 1 {
        let (t, c) = (Instant::now(), thread_cpu());
        for b in batches {
            loss = model.loss_and_grad(&p, b, &mut grad).unwrap();
            fedpace_params::axpy(-0.05, &grad, p.as_mut_slice());
        }
        times.push(t.elapsed().as_secs_f64());
        cpu.push(thread_cpu() - c);
    }
    times.remove(0); // warm-up
    cpu.remove(0);
    times.sort_by(f64::total_cmp);
    cpu.sort_by(f64::total_cmp);
    println!(
        "{name:<30} {:>7} params  median {:>9.3} ms wall, {:>9.3} ms thread CPU (min {:.3}; {reps} reps, last loss {loss:.3})",
        model.spec().total_len(),
        times[times.len() / 2] * 1e3,
        cpu[cpu.len() / 2] * 1e3,
        cpu[0] * 1e3
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let candle = args.iter().any(|a| a == "--candle");
    let named: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let want = |m: &str| named.is_empty() || named.contains(&m);
    threads::single_threaded(|| {
        println!(
            "one local epoch: {SAMPLES} samples, batch {BATCH}, SGD; rayon threads in call: {}",
            rayon::current_num_threads()
        );
        if want("lr") {
            time_epochs(
                "logistic-regression 60→10",
                &mut LogisticRegression::new(60, 10).unwrap(),
                &dense_batches(&[60]),
                200,
            );
        }
        let img = dense_batches(&[1, 28, 28]);
        if want("mlp") {
            time_epochs(
                "mlp 784-200-200-10",
                &mut Mlp::new(784, &[200, 200], 10).unwrap(),
                &img,
                50,
            );
            if candle {
                time_epochs(
                    "mlp, candle ref.",
                    &mut CandleMlp::new(784, &[200, 200], 10).unwrap(),
                    &img,
                    20,
                );
            }
        }
        if want("cnn") {
            time_epochs(
                "cnn (FedAvg), plain Rust",
                &mut Cnn::new([1, 28, 28], 10).unwrap(),
                &img,
                10,
            );
            if candle {
                time_epochs(
                    "cnn (FedAvg), candle ref.",
                    &mut CandleCnn::new([1, 28, 28], 10).unwrap(),
                    &img,
                    3,
                );
            }
        }
        if want("lstm") {
            // 20 steps of batch 10 (one client's round in examples/shakespeare.toml).
            let steps = token_batches(80, 80, 200, 10);
            time_epochs(
                "char-lstm 80/8/256×2, 20 steps",
                &mut CharLstm::new(80, 8, 256, 2, 80, 80).unwrap(),
                &steps,
                10,
            );
            if candle {
                time_epochs(
                    "char-lstm, candle ref.",
                    &mut CandleCharLstm::new(80, 8, 256, 2, 80, 80).unwrap(),
                    &steps,
                    2,
                );
            }
        }
    });
}
