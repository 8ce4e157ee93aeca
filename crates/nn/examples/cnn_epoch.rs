//! Times W-CNN local epochs of the plain-Rust CNN (600 samples, batch 32, SGD lr 0.05)
//! next to a 512×512 one-thread sgemm measured in the same process, by wall clock and by
//! CPU time, and prints the epoch's rate as a share of the sgemm rate (the ratio
//! `fedpace bench` reports; this is the quick loop for working on the model).
//!
//! ```text
//! cargo run -p fedpace-nn --release --example cnn_epoch -- [epochs] [threads]
//! ```
//!
//! `threads` is the model's thread cap (`client_threads`; default 1 = the calling thread
//! only). With any other value (0 = every idle thread) the blocks run on rayon's global
//! pool (one thread per core), and the CPU time is the whole process's.

use fedpace_core::{Batch, Inputs, Model};
use fedpace_kernels::{sgemm, MatMut, MatRef};
use fedpace_nn::Cnn;
use std::time::Instant;

/// 43.4 GFLOP: forward + backward of 600 28×28 samples (conv1 has no input gradient).
fn epoch_gflop() -> f64 {
    let conv1 = 2.0 * (28 * 28 * 32 * 25) as f64;
    let conv2 = 2.0 * (14 * 14 * 64 * 32 * 25) as f64;
    let fc = 2.0 * (3136 * 512 + 512 * 10) as f64;
    600.0 * (2.0 * conv1 + 3.0 * conv2 + 3.0 * fc) / 1e9
}

/// CPU seconds of the calling thread (`process: false`) or of the whole process.
fn cpu_seconds(process: bool) -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let clock = if process {
        libc::CLOCK_PROCESS_CPUTIME_ID
    } else {
        libc::CLOCK_THREAD_CPUTIME_ID
    };
    // SAFETY: `ts` is a valid out-pointer for the duration of the call.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// (wall, CPU) medians of `f` over `reps` runs after one warm-up; CPU of the calling
/// thread, or of the whole process if `process`.
fn time(reps: usize, process: bool, mut f: impl FnMut()) -> (f64, f64) {
    f();
    let (mut wall, mut cpu) = (vec![], vec![]);
    for _ in 0..reps {
        let (t, c) = (Instant::now(), cpu_seconds(process));
        f();
        cpu.push(cpu_seconds(process) - c);
        wall.push(t.elapsed().as_secs_f64());
    }
    (median(wall), median(cpu))
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let epochs = args.first().copied().unwrap_or(7);
    let threads = args.get(1).copied().unwrap_or(1);
    let n = 512;
    let a: Vec<f32> = (0..n * n).map(|i| (i % 7) as f32 * 0.1).collect();
    let b: Vec<f32> = (0..n * n).map(|i| (i % 5) as f32 * 0.2).collect();
    let mut c = vec![0.0f32; n * n];
    let (gw, gc) = time(40, false, || {
        sgemm(
            MatMut::row_major(&mut c, n, n, n),
            MatRef::row_major(&a, n, n, n),
            MatRef::row_major(&b, n, n, n),
            false,
            1,
        )
    });
    let gemm_flop = 2.0 * (n * n * n) as f64 / 1e9;
    let (rate_w, rate_c) = (gemm_flop / gw, gemm_flop / gc);
    println!("sgemm 512: {rate_w:.1} GFLOP/s by wall, {rate_c:.1} by CPU");

    let x: Vec<f32> = {
        let mut s = 1u64;
        (0..600 * 784)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    };
    let batches: Vec<Batch> = (0..600)
        .step_by(32)
        .map(|s| {
            let e = (s + 32).min(600);
            Batch {
                inputs: Inputs::Dense {
                    data: x[s * 784..e * 784].to_vec(),
                    sample_shape: vec![1, 28, 28],
                },
                labels: (s..e).map(|i| (i * 7 % 10) as u32).collect(),
            }
        })
        .collect();
    let mut model = Cnn::new([1, 28, 28], 10).unwrap().with_threads(threads);
    let init = model.init(0).unwrap();
    let mut grad = vec![0.0; init.as_slice().len()];
    // With more than one thread the work runs on rayon's pool: count the whole process's CPU.
    let (w, c) = time(epochs, threads != 1, || {
        let mut p = init.clone();
        for b in &batches {
            model.loss_and_grad(&p, b, &mut grad).unwrap();
            fedpace_params::axpy(-0.05, &grad, p.as_mut_slice());
        }
    });
    let gf = epoch_gflop();
    println!(
        "cnn epoch (thread cap {threads}): {:.1} ms wall, {:.1} ms {} CPU; {:.1} GFLOP/s by wall = {:.0}% of the 1-thread sgemm rate ({:.0}% by CPU)",
        w * 1e3,
        c * 1e3,
        if threads != 1 { "process" } else { "thread" },
        gf / w,
        100.0 * (gf / w) / rate_w,
        100.0 * (gf / c) / rate_c
    );
}
