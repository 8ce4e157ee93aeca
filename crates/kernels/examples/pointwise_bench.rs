//! Diagnostic: thread-CPU time per value of the LSTM cell's pointwise kernels, the
//! transpose and `small_gemm::pack`, at the LEAF char-LSTM's sizes (10 rows × hidden 256).
//!
//! ```text
//! cargo run --release -p fedpace-kernels --example pointwise_bench
//! ```

use fedpace_kernels::pointwise::{lstm_cell_backward, lstm_cell_forward, transpose};

fn thread_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer for the duration of the call.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn time(name: &str, values: usize, reps: usize, mut f: impl FnMut()) {
    let mut best = f64::INFINITY;
    for _ in 0..7 {
        let t = thread_cpu();
        for _ in 0..reps {
            f();
        }
        best = best.min((thread_cpu() - t) / reps as f64);
    }
    println!(
        "{name:<40} {:>9.2} µs per call, {:>6.3} ns per value",
        best * 1e6,
        best * 1e9 / values as f64
    );
}

fn main() {
    let (n, h) = (10, 256);
    let vals = |len: usize, k: f32| -> Vec<f32> {
        (0..len).map(|i| ((i as f32) * k).sin() * 2.0).collect()
    };
    let bias = vals(4 * h, 0.37);
    let pre = vals(4 * n * h, 0.11);
    let c_prev = vals(n * h, 0.23);
    let mut gates = pre.clone();
    let (mut c, mut tc, mut hh) = (vec![0.0; n * h], vec![0.0; n * h], vec![0.0; n * h]);
    time("lstm_cell_forward (per hidden value)", n * h, 2000, || {
        gates.copy_from_slice(&pre);
        lstm_cell_forward(
            h,
            &bias,
            &mut gates,
            Some(&c_prev),
            &mut c,
            &mut tc,
            &mut hh,
        );
    });
    let dh = vals(n * h, 0.41);
    let mut dc = vals(n * h, 0.19);
    let mut dg = vec![0.0; 4 * n * h];
    time("lstm_cell_backward (per hidden value)", n * h, 2000, || {
        lstm_cell_backward(
            h,
            &gates,
            Some(&c_prev),
            &tc,
            &dh,
            Some(&dh),
            &mut dc,
            &mut dg,
        );
    });
    let w = vals(4 * h * h, 0.013);
    let mut wt = vec![0.0; 4 * h * h];
    time("transpose 1024×256", 4 * h * h, 200, || {
        transpose(&w, 4 * h, h, &mut wt)
    });
    // The char-LSTM packs W_hh both ways a layer and call (small_gemm), now in one pass.
    use fedpace_kernels::small_gemm::{pack, packed_len};
    let mut packed = vec![0.0; packed_len(h, 4 * h)];
    time("small_gemm::pack W_hhᵀ (forward)", 4 * h * h, 200, || {
        pack(&w, h, 4 * h, 1, h, &mut packed)
    });
    time("small_gemm::pack W_hh (backward)", 4 * h * h, 200, || {
        pack(&w, 4 * h, h, h, 1, &mut packed)
    });
    let mut packed2 = vec![0.0; packed_len(4 * h, h)];
    time(
        "small_gemm::pack_both W_hhᵀ and W_hh",
        4 * h * h,
        200,
        || fedpace_kernels::small_gemm::pack_both(&w, 4 * h, h, &mut packed, &mut packed2),
    );
}
