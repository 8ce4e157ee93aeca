//! How long decoding a parameter layout of many tensors takes (docs/network.md,
//! "Fuzzing"): a tree of N one-value tensors, each in its own group, encoded and decoded
//! five times; prints the layout's size and the median decode time.
//!
//! `cargo run --release -p fedpace-core --example layout_decode [N]` (default 50,000).

use fedpace_params::{ParamSpec, ParamTree};
use std::sync::Arc;
use std::time::Instant;

fn main() {
    let n: usize = match std::env::args().nth(1) {
        None => 50_000,
        Some(a) => a.parse().unwrap_or_else(|_| {
            eprintln!("error: N = {a:?}: expected a number of tensors");
            std::process::exit(2)
        }),
    };
    let mut b = ParamSpec::builder();
    for i in 0..n {
        b = b.add(&format!("tensor{i:06}"), &[1], &format!("group{i:06}"));
    }
    let tree = ParamTree::zeros(Arc::new(b.build().expect("distinct names")));
    let bytes = fedpace_core::codec::encode_params(&tree);
    let mut times: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            let back = fedpace_core::codec::decode_params(&bytes).expect("decodes");
            assert_eq!(back.as_slice().len(), n);
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    println!(
        "{n} tensors, layout of {} bytes: decoded in {:.1} ms (median of 5)",
        bytes.len(),
        times[2] * 1e3
    );
}
