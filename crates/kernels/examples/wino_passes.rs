//! Times the W-CNN's conv2 passes that docs/arch/0028-cnn-fused-passes.md fused, each
//! against the unfused sequence, in alternating rounds on one thread (thread CPU, median
//! of the rounds), on one batch of 32 samples in groups of 2 as the CNN runs them:
//!
//! - forward: Winograd output transform + bias/ReLU/2×2 max-pool (CHW) as two passes
//!   against `transform_output_pool`;
//! - backward: pool2's backward + the output transform's adjoint (the reference for the
//!   fused backward tried and not kept, docs/arch/0028-cnn-fused-passes.md);
//! - the backward position products: all 64 `dU_k += V_kᵀ·dM_k`, then all 64
//!   `dV_k = dM_k·U_kᵀ`, against the two products of each position in turn;
//! - for scale, the input transform, its adjoint and the forward products.
//!
//! ```text
//! cargo run --release -p fedpace-kernels --example wino_passes -- [rounds]
//! ```

use fedpace_kernels::winograd4::{Winograd4x5, POSITIONS};
use fedpace_kernels::{sgemm, wino_products, MatMut, MatRef, Pool2x2, PoolLayout};

const C1: usize = 32;
const C2: usize = 64;
const SAMPLES: usize = 32;
const GROUP: usize = 2;

/// CPU seconds of the calling thread.
fn thread_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer for the duration of the call.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005) | 1;
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(30);
    let g = Winograd4x5::new(14, 14, C1, C2);
    let pool = Pool2x2 {
        h: 14,
        w: 14,
        channels: C2,
        layout: PoolLayout::Chw,
    };
    let tiles = g.tiles();
    let rows = GROUP * tiles;
    let flat = pool.out_len();
    let m = values(POSITIONS * rows * C2, 1);
    let bias = values(C2, 2);
    let da = values(SAMPLES * flat, 3);
    let mut a = vec![0.0f32; SAMPLES * flat];
    let mut arg = vec![0u8; SAMPLES * flat];
    let mut y = vec![0.0f32; GROUP * 14 * 14 * C2];
    let mut dm = vec![0.0f32; POSITIONS * rows * C2];
    let mut db = vec![0.0f32; C2];
    let u = values(POSITIONS * C1 * C2, 4);
    let mut v = values(POSITIONS * rows * C1, 5);
    let mut du = vec![0.0f32; POSITIONS * C1 * C2];
    let xp = values(SAMPLES * 18 * 18 * C1, 8);
    let mut dxp = vec![0.0f32; 18 * 18 * C1];
    let mut mf = vec![0.0f32; POSITIONS * rows * C2];
    let mut ws = vec![0.0f32; wino_products::scratch_len(rows, C1, C2)];

    let fwd_fused = |a: &mut [f32], arg: &mut [u8]| {
        for s0 in (0..SAMPLES).step_by(GROUP) {
            for i in 0..GROUP {
                let s = s0 + i;
                g.transform_output_pool(
                    &m,
                    i * tiles,
                    &bias,
                    &mut a[s * flat..][..flat],
                    &mut arg[s * flat..][..flat],
                );
            }
        }
    };
    let bwd_two = |arg: &[u8], y: &mut [f32], dm: &mut [f32], db: &mut [f32]| {
        for s0 in (0..SAMPLES).step_by(GROUP) {
            for i in 0..GROUP {
                let s = s0 + i;
                let yi = &mut y[i * 14 * 14 * C2..][..14 * 14 * C2];
                pool.backward(&da[s * flat..][..flat], &arg[s * flat..][..flat], yi, db);
                g.output_grad(yi, i * tiles, dm);
            }
        }
    };
    let du_k = |k: usize, du: &mut [f32], v: &[f32], dm: &[f32]| {
        sgemm(
            MatMut::row_major(&mut du[k * C1 * C2..][..C1 * C2], C1, C2, C2),
            MatRef::transposed(&v[k * C1..], C1, rows, POSITIONS * C1),
            MatRef::row_major(&dm[k * C2..], rows, C2, POSITIONS * C2),
            true,
            1,
        )
    };
    let dv_k = |k: usize, v: &mut [f32], dm: &[f32]| {
        sgemm(
            MatMut::row_major(&mut v[k * C1..], rows, C1, POSITIONS * C1),
            MatRef::row_major(&dm[k * C2..], rows, C2, POSITIONS * C2),
            MatRef::row_major(&u[k * C1 * C2..][..C1 * C2], C2, C1, C1),
            false,
            1,
        )
    };
    let mut t = [(); 10].map(|_| Vec::new());
    for _ in 0..rounds {
        let c = thread_cpu();
        for _ in 0..SAMPLES / GROUP {
            wino_products::forward(rows, C1, C2, &v, &u, &mut mf);
        }
        let c1 = thread_cpu();
        fwd_fused(&mut a, &mut arg);
        let c2 = thread_cpu();
        bwd_two(&arg, &mut y, &mut dm, &mut db);
        let c4 = thread_cpu();
        for _ in 0..SAMPLES / GROUP {
            wino_products::backward(rows, C1, C2, &mut v, &m, &u, &mut du, &mut ws);
        }
        let c5 = thread_cpu();
        for _ in 0..SAMPLES / GROUP {
            for k in 0..POSITIONS {
                du_k(k, &mut du, &v, &m);
                dv_k(k, &mut v, &m);
            }
        }
        let c6 = thread_cpu();
        for s in 0..SAMPLES {
            g.transform_input(
                &xp[s * 18 * 18 * C1..][..18 * 18 * C1],
                &mut v,
                s % GROUP * tiles,
            );
        }
        let c7 = thread_cpu();
        for s in 0..SAMPLES {
            dxp.fill(0.0);
            g.input_grad_add(&v, s % GROUP * tiles, &mut dxp);
        }
        let c8 = thread_cpu();
        for _ in 0..SAMPLES / GROUP {
            for k in 0..POSITIONS {
                sgemm(
                    MatMut::row_major(&mut mf[k * C2..], rows, C2, POSITIONS * C2),
                    MatRef::row_major(&v[k * C1..], rows, C1, POSITIONS * C1),
                    MatRef::row_major(&u[k * C1 * C2..][..C1 * C2], C1, C2, C2),
                    false,
                    1,
                );
            }
        }
        let c9 = thread_cpu();
        for s0 in (0..SAMPLES).step_by(GROUP) {
            for i in 0..GROUP {
                let s = s0 + i;
                let yi = &mut y[i * 14 * 14 * C2..][..14 * 14 * C2];
                pool.backward(
                    &da[s * flat..][..flat],
                    &arg[s * flat..][..flat],
                    yi,
                    &mut db,
                );
            }
        }
        let c10 = thread_cpu();
        for _ in (0..SAMPLES).step_by(GROUP) {
            for i in 0..GROUP {
                let yi = &y[i * 14 * 14 * C2..][..14 * 14 * C2];
                g.output_grad(yi, i * tiles, &mut dm);
            }
        }
        let c11 = thread_cpu();
        for (i, d) in [
            c1 - c,
            c2 - c1,
            c4 - c2,
            c5 - c4,
            c6 - c5,
            c7 - c6,
            c8 - c7,
            c9 - c8,
            c10 - c9,
            c11 - c10,
        ]
        .into_iter()
        .enumerate()
        {
            t[i].push(d * 1e3);
        }
    }
    let names = [
        "forward products: wino_products::forward (dedicated kernel)",
        "forward: transform_output_pool (fused)",
        "backward: unpool, then output adjoint (two passes, kept)",
        "backward products: wino_products::backward (dedicated kernel)",
        "backward products: dU and dV position by position",
        "input transform (once forward, again backward)",
        "input transform's adjoint (zeroing the padded gradient first)",
        "forward products: 64 M = V·U",
        "  of which pool2 backward alone",
        "  of which the output transform's adjoint alone",
    ];
    // The 1-thread sgemm rate in the same process, for the products' share of it.
    let n = 512;
    let (x, w) = (values(n * n, 6), values(n * n, 7));
    let mut z = vec![0.0f32; n * n];
    let mut gemm512 = Vec::new();
    for _ in 0..rounds {
        let c = thread_cpu();
        sgemm(
            MatMut::row_major(&mut z, n, n, n),
            MatRef::row_major(&x, n, n, n),
            MatRef::row_major(&w, n, n, n),
            false,
            1,
        );
        gemm512.push(thread_cpu() - c);
    }
    let rate = 2.0 * (n * n * n) as f64 / median(gemm512) / 1e9;
    // dU and dV: 2 products of 2·rows·C1·C2 flop per position and group.
    let products = 2.0 * (SAMPLES / GROUP * POSITIONS * 2 * rows * C1 * C2) as f64 / 1e9;
    println!("one batch of {SAMPLES} samples, thread CPU, median of {rounds} rounds:");
    for (i, (name, v)) in names.iter().zip(t).enumerate() {
        let ms = median(v);
        if i == 0 || i == 3 || i == 4 || i == 7 {
            let r = products / if i == 7 || i == 0 { 2.0 } else { 1.0 } / (ms * 1e-3);
            println!(
                "  {name}: {ms:.3} ms ({r:.1} GFLOP/s, {:.0}% of sgemm 512³ at {rate:.1})",
                100.0 * r / rate
            );
        } else {
            println!("  {name}: {ms:.3} ms");
        }
    }
}
