//! Times the parts of aggregation on 10 × 10 M values (diagnostic, not a benchmark of record).
use std::time::Instant;
fn main() {
    let (k, n) = (10usize, 10_000_000usize);
    let spec = fedpace_params::ParamSpec::builder()
        .add("w", &[n], "body")
        .build()
        .unwrap();
    let d: Vec<Vec<f32>> = (0..k)
        .map(|c| (0..n).map(|i| ((i + c) % 97) as f32 * 0.01).collect())
        .collect();
    let refs: Vec<&[f32]> = d.iter().map(|v| v.as_slice()).collect();
    let coef = vec![vec![0.1f32]; k];
    let t = |name: &str, f: &mut dyn FnMut()| {
        f();
        let mut v: Vec<f64> = (0..5)
            .map(|_| {
                let s = Instant::now();
                f();
                s.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        v.sort_by(f64::total_cmp);
        println!("{name:<40} {:8.2} ms", v[2]);
    };
    let mut dst = vec![0f32; n];
    t("copy 10 × 40 MB", &mut || {
        for r in &refs {
            dst.copy_from_slice(r);
            std::hint::black_box(&dst);
        }
    });
    t("sum only, preallocated, 1 pass/client", &mut || {
        dst.fill(0.0);
        for r in &refs {
            for (y, x) in dst.iter_mut().zip(r.iter()) {
                *y += 0.1 * x;
            }
        }
        std::hint::black_box(&dst);
    });
    t("alloc 40 MB zeroed + touch", &mut || {
        let v = vec![0f32; n];
        std::hint::black_box(&v);
    });
    t("weighted_sum_with_stats (global pool)", &mut || {
        std::hint::black_box(fedpace_algos::flat::weighted_sum_with_stats(
            &spec, &refs, &coef,
        ));
    });
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    t("weighted_sum_with_stats (1 thread)", &mut || {
        one.install(|| {
            std::hint::black_box(fedpace_algos::flat::weighted_sum_with_stats(
                &spec, &refs, &coef,
            ))
        });
    });
}
