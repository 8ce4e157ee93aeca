//! Times fedpace's im2col + GEMM conv2d against candle's on the FedAvg CNN (batch 32),
//! next to a 512×512 sgemm measured in the same run, and one W-CNN local epoch.
//!
//! `cargo run --release -p fedpace-kernels --example conv_bench -- [reps] [threads] [epoch-only]`
//!
//! `epoch-only` runs just the fedpace W-CNN epochs (for a profiler).

use std::time::Instant;

use candle_core::{Device, Tensor, Var, D};

/// PyTorch 2.15, one CNN epoch of 600 samples on 1 thread (docs/benchmarks.md, not this run).
const PYTORCH_CNN_EPOCH_S: f64 = 0.61;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// CPU seconds used by this process so far (all threads, user + system).
fn cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer for the duration of the call.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Median wall and median CPU seconds of `reps` runs of `f`, after one warm-up run.
///
/// On a machine shared with other work, CPU time is the steadier figure: it does not
/// count the time this process waited for a core.
fn time(reps: usize, mut f: impl FnMut()) -> Secs {
    f();
    let (wall, cpu): (Vec<f64>, Vec<f64>) = (0..reps)
        .map(|_| {
            let (start, cpu_start) = (Instant::now(), cpu_seconds());
            f();
            (start.elapsed().as_secs_f64(), cpu_seconds() - cpu_start)
        })
        .unzip();
    Secs {
        wall: median(wall),
        cpu: median(cpu),
    }
}

/// Median wall-clock and CPU seconds of one measurement.
#[derive(Clone, Copy, Default)]
struct Secs {
    wall: f64,
    cpu: f64,
}

fn randn(dims: &[usize], std: f64) -> Tensor {
    Tensor::randn(0f32, std as f32, dims, &Device::Cpu).unwrap()
}

/// GFLOP/s of a 512×512×512 sgemm (wall, CPU).
fn sgemm_rate(reps: usize, threads: usize) -> (f64, f64) {
    let n = 512;
    let a = vec![1.0f32; n * n];
    let b = vec![0.5f32; n * n];
    let mut c = vec![0.0f32; n * n];
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    let secs = time(reps * 4, || unsafe {
        // SAFETY: three contiguous n×n row-major matrices.
        gemm::gemm(
            n,
            n,
            n,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            n as isize,
            b.as_ptr(),
            1,
            n as isize,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            parallelism,
        )
    });
    let flop = 2.0 * (n * n * n) as f64;
    (flop / secs.wall / 1e9, flop / secs.cpu / 1e9)
}

/// Which kernels a run uses.
#[derive(Clone, Copy)]
enum Conv {
    /// fedpace conv2d and fused relu + 2×2 max-pool.
    Fedpace,
    /// fedpace conv2d, candle's relu and max-pool.
    FedpaceConvOnly,
    /// candle's conv2d, relu and max-pool.
    Candle,
}

fn conv(kind: Conv, x: &Tensor, w: &Tensor, b: &Tensor, padding: usize) -> Tensor {
    match kind {
        Conv::Fedpace | Conv::FedpaceConvOnly => {
            fedpace_kernels::conv2d(x, w, Some(b), padding, 1).unwrap()
        }
        Conv::Candle => x
            .conv2d(w, padding, 1, 1, 1)
            .unwrap()
            .broadcast_add(&b.reshape((1, (), 1, 1)).unwrap())
            .unwrap(),
    }
}

struct Layer {
    name: &'static str,
    n: usize,
    c: usize,
    hw: usize,
    o: usize,
    k: usize,
    input_needs_grad: bool,
}

impl Layer {
    /// Multiply-adds × 2 of one forward pass.
    fn flops(&self) -> f64 {
        2.0 * (self.n * self.o * self.hw * self.hw * self.c * self.k * self.k) as f64
    }
}

/// One line: fedpace vs candle for `gflop` of work, wall and CPU time.
fn report(label: &str, what: &str, gflop: f64, ours: Secs, candle: Secs, sgemm: (f64, f64)) {
    let (wall_rate, cpu_rate) = (gflop / ours.wall, gflop / ours.cpu);
    println!(
        "{label:<28} {what:<8} fedpace {:8.2} ms wall {:8.2} ms cpu {:6.1} GFLOP/s ({:3.0} % of sgemm, cpu {:3.0} %) | candle {:8.2} ms wall {:8.2} ms cpu | speed-up {:4.1}× (cpu {:4.1}×)",
        ours.wall * 1e3,
        ours.cpu * 1e3,
        wall_rate,
        100.0 * wall_rate / sgemm.0,
        100.0 * cpu_rate / sgemm.1,
        candle.wall * 1e3,
        candle.cpu * 1e3,
        candle.wall / ours.wall,
        candle.cpu / ours.cpu,
    );
}

fn bench_layer(layer: &Layer, reps: usize, sgemm: (f64, f64)) {
    let x = Var::from_tensor(&randn(&[layer.n, layer.c, layer.hw, layer.hw], 1.0)).unwrap();
    let w = Var::from_tensor(&randn(&[layer.o, layer.c, layer.k, layer.k], 0.1)).unwrap();
    let b = Var::from_tensor(&randn(&[layer.o], 0.1)).unwrap();
    let r = randn(&[layer.n, layer.o, layer.hw, layer.hw], 1.0);
    let x_in: Tensor = if layer.input_needs_grad {
        x.as_tensor().clone()
    } else {
        x.as_tensor().detach()
    };
    let fwd_gflop = layer.flops() / 1e9;
    let bwd_gflop = fwd_gflop * if layer.input_needs_grad { 2.0 } else { 1.0 };
    let mut fwd = [Secs::default(); 2];
    let mut both = [Secs::default(); 2];
    for (i, kind) in [Conv::Fedpace, Conv::Candle].into_iter().enumerate() {
        fwd[i] = time(reps, || {
            conv(kind, &x_in, &w, &b, layer.k / 2);
        });
        both[i] = time(reps, || {
            let y = conv(kind, &x_in, &w, &b, layer.k / 2);
            (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        });
    }
    report(layer.name, "forward", fwd_gflop, fwd[0], fwd[1], sgemm);
    report(
        "",
        "fwd+bwd",
        fwd_gflop + bwd_gflop,
        both[0],
        both[1],
        sgemm,
    );
}

/// The FedAvg CNN; `conv` picks the convolution.
struct Cnn {
    params: Vec<Var>,
}

impl Cnn {
    fn new() -> Self {
        let shapes: [&[usize]; 8] = [
            &[32, 1, 5, 5],
            &[32],
            &[64, 32, 5, 5],
            &[64],
            &[512, 3136],
            &[512],
            &[10, 512],
            &[10],
        ];
        let params = shapes
            .iter()
            .map(|s| {
                let fan_in: usize = s.iter().skip(1).product::<usize>().max(1);
                Var::from_tensor(&randn(s, (1.0 / fan_in as f64).sqrt())).unwrap()
            })
            .collect();
        Self { params }
    }

    fn loss(&self, kind: Conv, x: &Tensor, labels: &Tensor) -> Tensor {
        let p = &self.params;
        // candle: relu then max_pool2d; fedpace: the fused relu_max_pool2x2 op.
        let relu_pool = |h: Tensor| match kind {
            Conv::Candle | Conv::FedpaceConvOnly => h.relu().unwrap().max_pool2d(2).unwrap(),
            Conv::Fedpace => fedpace_kernels::relu_max_pool2x2(&h).unwrap(),
        };
        let h = relu_pool(conv(kind, x, &p[0], &p[1], 2));
        let h = relu_pool(conv(kind, &h, &p[2], &p[3], 2))
            .flatten_from(1)
            .unwrap();
        let h = h
            .matmul(&p[4].t().unwrap())
            .unwrap()
            .broadcast_add(&p[5])
            .unwrap()
            .relu()
            .unwrap();
        let logits = h
            .matmul(&p[6].t().unwrap())
            .unwrap()
            .broadcast_add(&p[7])
            .unwrap();
        let max = logits.max_keepdim(D::Minus1).unwrap();
        let shifted = logits.broadcast_sub(&max).unwrap();
        let log_z = shifted
            .exp()
            .unwrap()
            .sum_keepdim(D::Minus1)
            .unwrap()
            .log()
            .unwrap();
        let log_p = shifted.broadcast_sub(&log_z).unwrap();
        let picked = log_p.gather(&labels.unsqueeze(1).unwrap(), 1).unwrap();
        picked.mean_all().unwrap().neg().unwrap()
    }

    fn epoch(&self, kind: Conv, data: &[(Tensor, Tensor)], lr: f64) {
        for (x, labels) in data {
            let grads = self.loss(kind, x, labels).backward().unwrap();
            for p in &self.params {
                let g = grads.get(p).unwrap();
                p.set(&(p.as_tensor() - (g * lr).unwrap()).unwrap())
                    .unwrap();
            }
        }
    }
}

/// GFLOP of one epoch over `samples` images: conv and fc layers, forward + backward
/// (no input gradient for the first conv).
fn epoch_gflop(samples: usize) -> f64 {
    let conv1 = 2.0 * (32 * 784 * 25) as f64;
    let conv2 = 2.0 * (64 * 196 * 800) as f64;
    let fc = 2.0 * (3136 * 512 + 512 * 10) as f64;
    samples as f64 * (2.0 * conv1 + 3.0 * conv2 + 3.0 * fc) / 1e9
}

/// One W-CNN local epoch of data: 600 samples in batches of 32.
fn epoch_data() -> Vec<(Tensor, Tensor)> {
    (0..600)
        .step_by(32)
        .map(|start| {
            let n = 32.min(600 - start);
            let labels: Vec<u32> = (0..n as u32).map(|i| (i * 7 + start as u32) % 10).collect();
            (
                randn(&[n, 1, 28, 28], 1.0),
                Tensor::new(labels.as_slice(), &Device::Cpu).unwrap(),
            )
        })
        .collect()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let reps: usize = args.next().map_or(11, |a| a.parse().expect("reps"));
    let threads: usize = args.next().map_or(1, |a| a.parse().expect("threads"));
    // candle's matmul and conv read this for their own thread count.
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    fedpace_kernels::set_num_threads(threads);
    let epoch_only = args.next().is_some_and(|a| a == "epoch-only");
    println!("threads {threads}, median of {reps} runs");

    let data = epoch_data();
    if epoch_only {
        let cnn = Cnn::new();
        let secs = time(reps, || cnn.epoch(Conv::Fedpace, &data, 0.05));
        println!(
            "W-CNN epoch, fedpace conv: {:.3} s wall, {:.3} s cpu",
            secs.wall, secs.cpu
        );
        return;
    }
    let sgemm = sgemm_rate(reps, threads);
    println!(
        "sgemm 512×512×512 (gemm crate): {:.1} GFLOP/s wall, {:.1} GFLOP/s cpu",
        sgemm.0, sgemm.1
    );

    let layers = [
        Layer {
            name: "conv1 32×1×28×28 → 32, 5×5",
            n: 32,
            c: 1,
            hw: 28,
            o: 32,
            k: 5,
            input_needs_grad: false,
        },
        Layer {
            name: "conv2 32×32×14×14 → 64, 5×5",
            n: 32,
            c: 32,
            hw: 14,
            o: 64,
            k: 5,
            input_needs_grad: true,
        },
    ];
    for layer in &layers {
        bench_layer(layer, reps, sgemm);
    }

    // One W-CNN local epoch: 600 samples, batch 32, SGD lr 0.05.
    let gflop = epoch_gflop(600);
    let epoch_reps = reps.div_ceil(2).max(3);
    let cnn = Cnn::new();
    let ours = time(epoch_reps, || cnn.epoch(Conv::Fedpace, &data, 0.05));
    let conv_only = time(epoch_reps, || cnn.epoch(Conv::FedpaceConvOnly, &data, 0.05));
    let theirs = time(epoch_reps.min(3), || cnn.epoch(Conv::Candle, &data, 0.05));
    report(
        "W-CNN epoch, conv + pool",
        "epoch",
        gflop,
        ours,
        theirs,
        sgemm,
    );
    report(
        "W-CNN epoch, conv only",
        "epoch",
        gflop,
        conv_only,
        theirs,
        sgemm,
    );
    println!(
        "W-CNN epoch: {gflop:.1} GFLOP; PyTorch 1 thread {PYTORCH_CNN_EPOCH_S} s (docs/benchmarks.md, not this run) / fedpace = {:.2}× wall, {:.2}× cpu",
        PYTORCH_CNN_EPOCH_S / ours.wall,
        PYTORCH_CNN_EPOCH_S / ours.cpu
    );
}
