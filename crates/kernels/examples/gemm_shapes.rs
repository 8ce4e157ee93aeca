//! Diagnostic: sgemm rate of the shapes a FedAvg-CNN step needs (1 thread).
fn cpu() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// a: row stride / col stride given; b likewise; dst row-major (or col-major if dst_t).
#[allow(clippy::too_many_arguments)]
fn run(name: &str, m: usize, n: usize, k: usize, a_t: bool, b_t: bool, dst_t: bool, acc: bool) {
    let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
    let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.2).collect();
    let mut c = vec![0.0f32; m * n];
    // a is m×k: row-major (rs=k, cs=1) or stored transposed (k×m row-major: rs=1, cs=m)
    let (a_rs, a_cs) = if a_t { (1, m) } else { (k, 1) };
    let (b_rs, b_cs) = if b_t { (1, k) } else { (n, 1) };
    let (c_rs, c_cs) = if dst_t { (1, m) } else { (n, 1) };
    let reps = (2e8 / (2.0 * (m * n * k) as f64)).clamp(3.0, 2000.0) as usize;
    let mut times = vec![];
    for _ in 0..15 {
        let t = cpu();
        for _ in 0..reps {
            unsafe {
                gemm::gemm(
                    m, n, k, c.as_mut_ptr(), c_cs as isize, c_rs as isize, acc,
                    a.as_ptr(), a_cs as isize, a_rs as isize,
                    b.as_ptr(), b_cs as isize, b_rs as isize,
                    1.0f32, 1.0f32, false, false, false, gemm::Parallelism::None,
                );
            }
        }
        times.push((cpu() - t) / reps as f64);
    }
    times.sort_by(f64::total_cmp);
    let t = times[times.len() / 4];
    println!("{name:<34} m={m:<6} n={n:<6} k={k:<6} aT={a_t:<5} bT={b_t:<5} cT={dst_t:<5} acc={acc:<5} {:8.3} ms {:6.1} GFLOP/s", t*1e3, 2.0*(m*n*k) as f64/t/1e9);
}

fn main() {
    run("512^3", 512, 512, 512, false, false, false, false);
    for g in [2usize, 4] {
        let p2 = g * 196;
        println!("-- conv2 NHWC, {g} samples");
        run("dcols=dY·W (W [64,800])", p2, 800, 64, false, false, false, false);
        run("dcols=dY·W2tᵀ (W2t [800,64])", p2, 800, 64, false, true, false, false);
        println!("-- conv1 NHWC, {g} samples");
        let p1 = g * 784;
        run("fwd Y=cols·W1t", p1, 32, 25, false, false, false, false);
        run("dW1t=colsᵀ·dY", 25, 32, p1, true, false, false, true);
        run("dW1=dYᵀ·cols", 32, 25, p1, true, false, false, true);
    }
    for b in [32usize, 24] {
    println!("-- fc1 batch {b}");
    run("fc1 fwd H=A·Wᵀ", b, 512, 3136, false, true, false, false);
    run("fc1 fwd Hᵀ=W·Aᵀ", 512, b, 3136, false, true, false, false);
    run("fc1 fwd H=A·Wᵀ dst col-major", b, 512, 3136, false, true, true, false);
    run("fc1 dW = dHᵀ·A", 512, 3136, b, true, false, false, false);
    run("fc1 dW = dHᵀ·A (dHᵀ stored)", 512, 3136, b, false, false, false, false);
    run("fc1 dA = dH·W", b, 3136, 512, false, false, false, false);
    run("fc1 dAᵀ = Wᵀ·dHᵀ", 3136, b, 512, true, true, false, false);
    println!("-- fc2 batch {b}");
    run("fc2 fwd", b, 10, 512, false, true, false, false);
    run("fc2 dW = dZᵀ·H", 10, 512, b, true, false, false, false);
    run("fc2 dH = dZ·W", b, 512, 10, false, false, false, false);
    }
}
