//! Diagnostic: the FedAvg CNN's fc1 backward pass and SGD step on one batch of 32
//! (`dW = dHᵀ·A` 512 × 3136, `dA = dH·W` in chunks of 16 rows of `W`), one thread,
//! thread-CPU time, the two ways timed in turn in one process (median of `reps`,
//! default 60):
//!
//! - `separate`: as the CNN ran them before docs/arch/0038-fc1-backward-sgd-step.md:
//!   `dW` by one `sgemm` into a gradient buffer, `dA` by 32 chunked `sgemm` calls into a
//!   column-major buffer and a transpose, then the SGD step `p + g·(−η)` over the weight;
//! - `pass`: [`fedpace_kernels::dense_backward_sgd`], the step taken inside the pass.
//!
//! Between timings a 4 MB buffer is swept, so the weight is not in the L2 cache (as in a
//! training step, where the convolutions run between fc1's passes).
//!
//! ```text
//! cargo run --release -p fedpace-kernels --example fc1_pass -- [reps]
//! ```

use fedpace_kernels::pointwise::transpose;
use fedpace_kernels::{dense_backward_sgd, sgemm, MatMut, MatRef};

fn thread_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer for the duration of the call.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn step(w: &mut [f32], g: &[f32], rate: f32) {
    let r = -rate;
    for (p, &u) in w.iter_mut().zip(g) {
        *p += u * r;
    }
}

fn main() {
    let reps: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(60);
    let (n, out, inp, chunk, rate) = (32, 512, 3136, 16, 1e-6f32);
    let val = |i: usize, m: usize| ((i * m) % 17) as f32 * 0.01 - 0.08;
    let dy: Vec<f32> = (0..n * out).map(|i| val(i, 7)).collect();
    let x: Vec<f32> = (0..n * inp).map(|i| val(i, 5).max(0.0)).collect();
    let mut w: Vec<f32> = (0..out * inp).map(|i| val(i, 3)).collect();
    let mut g_buf = vec![0f32; out * inp];
    let g = &mut g_buf[..];
    let (mut dx, mut dx_t) = (vec![0f32; n * inp], vec![0f32; n * inp]);
    let mut sweep = vec![0u8; 4 << 20];
    let mut times = [vec![], vec![]];
    for rep in 0..=reps {
        for (way, t) in times.iter_mut().enumerate() {
            sweep.iter_mut().for_each(|b| *b = b.wrapping_add(1));
            let c = thread_cpu();
            match way {
                0 => {
                    sgemm(
                        MatMut::row_major(g, out, inp, inp),
                        MatRef::transposed(&dy, out, n, out),
                        MatRef::row_major(&x, n, inp, inp),
                        false,
                        1,
                    );
                    for (c, j0) in (0..out).step_by(chunk).enumerate() {
                        sgemm(
                            MatMut::transposed(&mut dx_t, n, inp, n),
                            MatRef::row_major(&dy[j0..], n, chunk, out),
                            MatRef::row_major(&w[j0 * inp..], chunk, inp, inp),
                            c > 0,
                            1,
                        );
                    }
                    transpose(&dx_t, inp, n, &mut dx);
                    step(&mut w, g, rate);
                }
                _ => {
                    dense_backward_sgd(n, out, inp, &dy, &x, &mut dx, &mut w, rate, chunk, 1);
                }
            }
            if rep > 0 {
                t.push((thread_cpu() - c) * 1e3);
            }
        }
    }
    let flop = 2.0 * 2.0 * (n * out * inp) as f64;
    for (name, mut t) in ["separate", "pass"].into_iter().zip(times) {
        t.sort_by(f64::total_cmp);
        let med = t[t.len() / 2];
        println!(
            "{name:<12} {med:.3} ms (quartiles {:.3}–{:.3}; {:.0} GFLOP/s of products)",
            t[t.len() / 4],
            t[3 * t.len() / 4],
            flop / med / 1e6
        );
    }
    std::hint::black_box((&dx, &g_buf, &w, &sweep));
}
