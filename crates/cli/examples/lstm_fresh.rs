//! The cost of a fresh char-LSTM per local run: 20 local steps of the LEAF char-LSTM
//! (`examples/shakespeare.toml`'s model and plan, synthetic text) with one model kept
//! across runs and with a model built for each run and dropped after (as a simulation
//! builds a client's model per round), alternating run by run on one thread; prints the
//! thread-CPU medians and the median of the fresh/kept ratios of the pairs. Reports,
//! does not assert.
//!
//! ```text
//! cargo run --release -p fedpace --example lstm_fresh
//! ```

use fedpace_core::rng::{derive_seed, stream, Purpose};
use fedpace_experiment::ExperimentConfig;

#[path = "../src/synthetic_text.rs"]
mod synthetic_text;
use synthetic_text::SyntheticText;

const SHAKESPEARE: &str = include_str!("../../../examples/shakespeare.toml");

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

fn main() -> anyhow::Result<()> {
    let (seq_len, vocab, pairs) = (80, 80, 20);
    let cfg = ExperimentConfig::parse(SHAKESPEARE, "shakespeare", &[])?;
    let input = fedpace_nn::InputShape::Tokens { seq_len, vocab };
    let factory = fedpace_nn::factory(&cfg.model, &input, vocab)?;
    let mut kept = factory()?;
    let init = kept.init(derive_seed(cfg.seed, 0, 0, Purpose::Init))?;
    let plan = cfg
        .base_plan(init.spec().groups())
        .map_err(anyhow::Error::msg)?;
    let data = SyntheticText::new(4000, seq_len, vocab, 7);
    let (mut t_kept, mut t_fresh) = (Vec::new(), Vec::new());
    fedpace_nn::threads::single_threaded(|| -> anyhow::Result<()> {
        // Pair 0 warms up; the order within a pair alternates.
        for rep in 0..=pairs as u64 {
            for fresh in [rep % 2 == 0, rep % 2 == 1] {
                let mut params = init.clone();
                let mut state = None;
                let rng = stream(cfg.seed, rep, 0, Purpose::Shuffle);
                let c = thread_cpu();
                // A fresh model is built, trained and dropped inside the timed span.
                let mut built = if fresh { Some(factory()?) } else { None };
                let model = match built.as_mut() {
                    Some(m) => m.as_mut(),
                    None => kept.as_mut(),
                };
                fedpace_algos::client::local_train(
                    model,
                    &data,
                    &mut params,
                    &plan,
                    20,
                    0,
                    rng,
                    &mut state,
                )?;
                drop(built);
                let dt = thread_cpu() - c;
                if rep > 0 {
                    if fresh { &mut t_fresh } else { &mut t_kept }.push(dt);
                }
            }
        }
        Ok(())
    })?;
    let mut ratios: Vec<f64> = t_fresh.iter().zip(&t_kept).map(|(f, k)| f / k).collect();
    for v in [&mut ratios, &mut t_kept, &mut t_fresh] {
        v.sort_by(f64::total_cmp);
    }
    let mid = pairs / 2;
    println!(
        "20 local steps: kept model {:.2} ms, fresh model {:.2} ms thread CPU (medians of {pairs}); fresh/kept per pair median {:.4} (quartiles {:.4}–{:.4})",
        t_kept[mid] * 1e3,
        t_fresh[mid] * 1e3,
        ratios[mid],
        ratios[pairs / 4],
        ratios[3 * pairs / 4]
    );
    Ok(())
}
