//! Diagnostic: the `gemm` crate's f32 rate (1 thread, thread-CPU time, lower quartile
//! of 15 timings) on the products of one FedAvg-CNN training step, each in the
//! orientation `fedpace_nn::Cnn` uses and in the alternatives it rejected.
//!
//! ```text
//! cargo run --release -p fedpace-kernels --example gemm_shapes
//! ```
//!
//! `A·B` with `A: m×k`, `B: k×n`; `Aᵀ`/`Bᵀ` mark an operand stored transposed, `C col`
//! a column-major destination. Operands are reused, so they are cache-warm: the figures
//! are what a product reaches when its operands were just written (as with groups of
//! two samples), not with the whole batch's columns in main memory.

fn thread_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer for the duration of the call.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// One product shape and orientation.
struct Case {
    name: &'static str,
    m: usize,
    n: usize,
    k: usize,
    a_t: bool,
    b_t: bool,
    c_col: bool,
}

fn run(c: &Case) {
    use fedpace_kernels::{sgemm, MatMut, MatRef};
    let (m, n, k) = (c.m, c.n, c.k);
    let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
    let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.2).collect();
    let mut dst = vec![0.0f32; m * n];
    let reps = (2e8 / (2.0 * (m * n * k) as f64)).clamp(3.0, 2000.0) as usize;
    let mut times = vec![];
    for _ in 0..15 {
        let t = thread_cpu();
        for _ in 0..reps {
            let lhs = if c.a_t {
                MatRef::transposed(&a, m, k, m)
            } else {
                MatRef::row_major(&a, m, k, k)
            };
            let rhs = if c.b_t {
                MatRef::transposed(&b, k, n, k)
            } else {
                MatRef::row_major(&b, k, n, n)
            };
            let out = if c.c_col {
                MatMut::transposed(&mut dst, m, n, m)
            } else {
                MatMut::row_major(&mut dst, m, n, n)
            };
            sgemm(out, lhs, rhs, false, 1);
        }
        times.push((thread_cpu() - t) / reps as f64);
    }
    times.sort_by(f64::total_cmp);
    let t = times[times.len() / 4];
    let flag = |on: bool, s: &'static str| if on { s } else { "" };
    println!(
        "{:<40} m={m:<5} n={n:<5} k={k:<5} {:>2} {:>2} {:>5} {:>8.3} ms {:>6.1} GFLOP/s",
        c.name,
        flag(c.a_t, "Aᵀ"),
        flag(c.b_t, "Bᵀ"),
        flag(c.c_col, "C col"),
        t * 1e3,
        2.0 * (m * n * k) as f64 / t / 1e9
    );
}

fn small(name: &str, m: usize, n: usize, k: usize) {
    let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
    let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.2).collect();
    let mut dst = vec![0.0f32; m * n];
    use fedpace_kernels::small_gemm::{gemm, pack, packed_len};
    let mut packed = vec![0.0; packed_len(k, n)];
    pack(&b, k, n, n, 1, &mut packed);
    let reps = (2e8 / (2.0 * (m * n * k) as f64)).clamp(3.0, 2000.0) as usize;
    let mut times = vec![];
    for _ in 0..15 {
        let t = thread_cpu();
        for _ in 0..reps {
            gemm(m, n, k, &a, k, &packed, &mut dst, n, true);
        }
        times.push((thread_cpu() - t) / reps as f64);
    }
    times.sort_by(f64::total_cmp);
    let t = times[times.len() / 4];
    println!(
        "{name:<40} m={m:<5} n={n:<5} k={k:<5} {:>13} {:>8.3} ms {:>6.1} GFLOP/s",
        "",
        t * 1e3,
        2.0 * (m * n * k) as f64 / t / 1e9
    );
}

fn main() {
    let case = |name, m, n, k, a_t, b_t, c_col| Case {
        name,
        m,
        n,
        k,
        a_t,
        b_t,
        c_col,
    };
    let (g2, g32, b) = (2 * 196, 32 * 196, 32);
    let cases = [
        case(
            "512³ (the reference rate)",
            512,
            512,
            512,
            false,
            false,
            false,
        ),
        case(
            "conv2 fwd, 2 samples: cols·Wᵗ  [used]",
            g2,
            64,
            800,
            false,
            false,
            false,
        ),
        case(
            "conv2 fwd, 2 samples: cols·(W)ᵀ",
            g2,
            64,
            800,
            false,
            true,
            false,
        ),
        case(
            "conv2 fwd, 32 samples: cols·Wᵗ",
            g32,
            64,
            800,
            false,
            false,
            false,
        ),
        case(
            "conv2 dWᵗ, 2 samples: colsᵀ·dY  [used]",
            800,
            64,
            g2,
            true,
            false,
            false,
        ),
        case(
            "conv2 dW, 2 samples: dYᵀ·cols",
            64,
            800,
            g2,
            true,
            false,
            false,
        ),
        case(
            "conv2 dW, 32 samples: dYᵀ·cols",
            64,
            800,
            g32,
            true,
            false,
            false,
        ),
        case(
            "conv2 dcols, 2 samples: dY·Wᵗᵀ  [used]",
            g2,
            800,
            64,
            false,
            true,
            false,
        ),
        case(
            "conv2 dcols, 32 samples: dY·Wᵗᵀ",
            g32,
            800,
            64,
            false,
            true,
            false,
        ),
        case(
            "conv1 fwd, 2 samples: cols·Wᵗ  [used]",
            2 * 784,
            32,
            25,
            false,
            false,
            false,
        ),
        case(
            "conv1 dWᵗ, 2 samples: colsᵀ·dY  [used]",
            25,
            32,
            2 * 784,
            true,
            false,
            false,
        ),
        case(
            "conv1 dW, 2 samples: dYᵀ·cols",
            32,
            25,
            2 * 784,
            true,
            false,
            false,
        ),
        case("fc1 fwd: W·Aᵀ  [used]", 512, b, 3136, false, true, false),
        case("fc1 fwd: A·Wᵀ", b, 512, 3136, false, true, false),
        case("fc1 dW: dHᵀ·A  [used]", 512, 3136, b, true, false, false),
        case("fc1 dA: dH·W", b, 3136, 512, false, false, false),
        case(
            "fc1 dA: (W1ᵀ·dHᵀ)ᵀ, C col  [used]",
            3136,
            b,
            512,
            true,
            true,
            true,
        ),
        case("fc1 dAᵀ: W1ᵀ·dHᵀ", 3136, b, 512, true, true, false),
        case(
            "fc1 dA: dH·W, C col (dAᵀ feature-major)",
            b,
            3136,
            512,
            false,
            false,
            true,
        ),
    ];
    let (t, n) = (80, 10);
    let tiles = 8 * 49;
    let more = [
        // Winograd F(2×2, 5×5) for conv2 on a block of 8 samples: 36 products each.
        case("wino fwd: V·U", tiles, 64, 32, false, false, false),
        case(
            "wino fwd: V·U, 2 products",
            2 * tiles,
            64,
            32,
            false,
            false,
            false,
        ),
        case("wino dU: Vᵀ·dM", 32, 64, tiles, true, false, false),
        case("wino dV: dM·Uᵀ", tiles, 32, 64, false, true, false),
        case(
            "wino fwd: V·U, 1 sample [used]",
            49,
            64,
            32,
            false,
            false,
            false,
        ),
        case(
            "wino dU: Vᵀ·dM, 1 sample [used]",
            32,
            64,
            49,
            true,
            false,
            false,
        ),
        case("wino dV: dM·Uᵀ, 1 sample", 49, 32, 64, false, true, false),
        case(
            "wino dV: dM·Uᵗ, 1 sample [used]",
            49,
            32,
            64,
            false,
            false,
            false,
        ),
        case(
            "wino dV: dM·Uᵗ, C col, 1 sample",
            49,
            32,
            64,
            false,
            false,
            true,
        ),
        // MLP 784-200-200-10, batch 32: activations feature-major (Hᵀ = W·Xᵀ) or not.
        case("mlp fc1 fwd: W·Xᵀ", 200, b, 784, false, true, false),
        case("mlp fc1 fwd: X·Wᵀ", b, 200, 784, false, true, false),
        case(
            "mlp fc1 dW: dHᵀ·X (dH [n,200])",
            200,
            784,
            b,
            true,
            false,
            false,
        ),
        case(
            "mlp fc1 dW: dHᵗ·X (dHᵗ [200,n])",
            200,
            784,
            b,
            false,
            false,
            false,
        ),
        case("mlp fc2 fwd: W·Hᵀ", 200, b, 200, false, false, false),
        case("mlp fc2 fwd: H·Wᵀ", b, 200, 200, false, true, false),
        case("mlp fc2 dW: dHᵗ·H", 200, 200, b, false, false, false),
        case(
            "mlp fc2 dW: dHᵗ·(Hᵗ)ᵀ  [used]",
            200,
            200,
            b,
            false,
            true,
            false,
        ),
        case("mlp fc2 dX: Wᵀ·dHᵗ", 200, b, 200, true, false, false),
        case("mlp fc2 dX: dH·W", b, 200, 200, false, false, false),
        // char-LSTM, batch 10, T 80, H 256: the recurrent products (sequential).
        case("lstm rec fwd: h·W_hhᵀ", n, 1024, 256, false, true, false),
        case(
            "lstm rec fwd: h·W_hhᵗ (W_hhᵗ [256,1024])",
            n,
            1024,
            256,
            false,
            false,
            false,
        ),
        case("lstm rec fwd: W_hh·hᵀ", 1024, n, 256, false, true, false),
        case("lstm rec bwd: dG·W_hh", n, 256, 1024, false, false, false),
        case("lstm rec bwd: W_hhᵀ·dGᵀ", 256, n, 1024, true, true, false),
        // batched over time.
        case(
            "lstm in fwd: X·W_ihᵀ (all steps)",
            t * n,
            1024,
            256,
            false,
            true,
            false,
        ),
        case(
            "lstm in fwd: X·W_ihᵗ (all steps)",
            t * n,
            1024,
            256,
            false,
            false,
            false,
        ),
        case(
            "lstm dW: dGᵀ·X (all steps)",
            1024,
            256,
            t * n,
            true,
            false,
            false,
        ),
        case(
            "lstm dWᵗ: Xᵀ·dG (all steps)",
            256,
            1024,
            t * n,
            true,
            false,
            false,
        ),
        case(
            "lstm dW: (Xᵀ·dG)ᵀ, C col (all steps)",
            256,
            1024,
            t * n,
            true,
            false,
            true,
        ),
        case(
            "lstm dX: dG·W_ih (all steps)",
            t * n,
            256,
            1024,
            false,
            false,
            false,
        ),
        // Layer 1's two weight gradients as one product against [X | H_{t−1}].
        case(
            "lstm dW both: dGᵀ·[X|H] (all steps)",
            1024,
            512,
            t * n,
            true,
            false,
            false,
        ),
        case(
            "lstm dWᵗ both: [X|H]ᵀ·dG (all steps)",
            512,
            1024,
            t * n,
            true,
            false,
            false,
        ),
        case(
            "lstm rec fwd: h·W_hhᵀ, C col",
            n,
            1024,
            256,
            false,
            true,
            true,
        ),
        case(
            "lstm rec bwd: dG·W_hh, C col",
            n,
            256,
            1024,
            false,
            false,
            true,
        ),
    ];
    let filter = std::env::args().nth(1).unwrap_or_default();
    for c in cases.iter().chain(&more) {
        if c.name.contains(filter.as_str()) {
            run(c);
        }
    }
    // The char-LSTM's recurrent products through `small_gemm` (few rows, B in place).
    for (name, m, n, k) in [
        ("lstm rec fwd: h·W_hhᵗ, small_gemm  [used]", n, 1024, 256),
        ("lstm rec bwd: dG·W_hh, small_gemm  [used]", n, 256, 1024),
        // The all-steps products through the same 10-row tiles (6 Dec 2026: no faster
        // than the `gemm` crate's, so not used; docs/benchmarks.md).
        ("lstm in fwd: X·W_ihᵗ, small_gemm", t * n, 1024, 256),
        ("lstm dX: dG·W_ih, small_gemm", t * n, 256, 1024),
    ] {
        if name.contains(filter.as_str()) {
            small(name, m, n, k);
        }
    }
}
