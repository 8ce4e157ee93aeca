//! `fedpace bench` sections on local-training speed (docs/benchmarks.md, "Per-model
//! speed"; docs/arch/0014-fast-layers.md):
//!
//! - `--workload lstm`: the LEAF Shakespeare char-LSTM (examples/shakespeare.toml: batch
//!   10 × 80 characters, 20 steps a round) — one client's 20 local steps on one thread
//!   through `local_train`, per step, with its arithmetic rate against the sgemm rate
//!   measured at the start of the same run; and, if the Shakespeare data are present,
//!   the seconds per round of the example itself.
//! - `--workload throughput`: the headline figure, client-epochs per second per core
//!   for W-LR and W-MLP with 10,000 registered clients, on 1 thread and on 2, and the
//!   scaling between them.
//!
//! The peers' side of the per-model comparison is `scripts/peers/torch_epoch.py`, run
//! interleaved with these in one window; nothing here divides by a stored figure.

use crate::bench::{load_average, workload_config, Workload};
use crate::runner;
use anyhow::Result;
use fedpace_core::rng::{derive_seed, stream, Purpose};
use fedpace_core::round::RoundRecord;
use fedpace_experiment::{ExperimentConfig, Monitor, RunOptions};
use std::time::Instant;

use crate::synthetic_text::SyntheticText;

const SHAKESPEARE: &str = include_str!("../../../examples/shakespeare.toml");

/// Characters of the synthetic text the char-LSTM trains on.
const TEXT_LEN: usize = 4_000;

/// GFLOP of one training step (forward + backward) of a char-LSTM: products only.
pub fn char_lstm_step_gflop(
    batch: usize,
    seq_len: usize,
    embedding: usize,
    hidden: usize,
    layers: usize,
    classes: usize,
) -> f64 {
    let (n, t, h) = (batch as f64, seq_len as f64, hidden as f64);
    let mut flop = 3.0 * 2.0 * n * h * classes as f64;
    for l in 0..layers {
        let input = if l == 0 { embedding } else { hidden } as f64;
        // Input projections, their weight and input gradients: 3 products over all steps.
        flop += 3.0 * 2.0 * t * n * input * 4.0 * h;
        // Recurrent product forward, its weight and input gradients: steps 2..T.
        flop += 3.0 * 2.0 * (t - 1.0) * n * h * 4.0 * h;
    }
    flop / 1e9
}

/// `--workload lstm`: see the module doc. `gemm1` is the 1-thread sgemm rate measured at
/// the start of the run; `threads` the clients run in parallel for the example's rounds.
pub fn char_lstm(quick: bool, gemm1: f64, threads: usize) -> Result<()> {
    let mut cfg = ExperimentConfig::parse(SHAKESPEARE, "shakespeare", &[])?;
    let fedpace_nn::ModelConfig::CharLstm {
        embedding,
        hidden,
        layers,
    } = cfg.model
    else {
        anyhow::bail!("examples/shakespeare.toml no longer trains the char-LSTM");
    };
    let (seq_len, vocab) = (80, 80);
    let input = fedpace_nn::InputShape::Tokens { seq_len, vocab };
    let mut model = fedpace_nn::factory(&cfg.model, &input, vocab)?()?;
    let init = model.init(derive_seed(cfg.seed, 0, 0, Purpose::Init))?;
    let plan = cfg
        .base_plan(init.spec().groups())
        .map_err(anyhow::Error::msg)?;
    let steps = cfg.client.steps.unwrap_or(20);
    let data = SyntheticText::new(TEXT_LEN, seq_len, vocab, 1000);
    let reps = if quick { 3 } else { 7 };
    let (mut wall, mut cpu) = (Vec::new(), Vec::new());
    fedpace_nn::threads::single_threaded(|| -> Result<()> {
        for rep in 0..=reps {
            let mut params = init.clone();
            let mut state = None;
            let rng = stream(cfg.seed, rep as u64, 0, Purpose::Shuffle);
            let (t, c) = (Instant::now(), crate::bench::thread_cpu_seconds());
            fedpace_algos::client::local_train(
                model.as_mut(),
                &data,
                &mut params,
                &plan,
                steps,
                0,
                rng,
                &mut state,
            )?;
            if rep > 0 {
                wall.push(t.elapsed().as_secs_f64() / steps as f64);
                cpu.push((crate::bench::thread_cpu_seconds() - c) / steps as f64);
            }
        }
        Ok(())
    })?;
    let (wall, cpu) = (median(wall), median(cpu));
    let gflop = char_lstm_step_gflop(
        plan.batch_size as usize,
        seq_len,
        embedding,
        hidden,
        layers,
        vocab,
    );
    println!(
        "char-lstm (LEAF Shakespeare: embedding {embedding}, {layers} × LSTM {hidden}, {seq_len} characters, batch {}): {} parameters",
        plan.batch_size,
        init.spec().total_len()
    );
    println!(
        "  local step, 1 thr.   {:>9.2} ms  wall, {:.2} ms thread CPU (median of {reps} × {steps} steps through local_train; PyTorch: scripts/peers/torch_epoch.py --model lstm)",
        wall * 1e3,
        cpu * 1e3
    );
    println!(
        "  step rate            {:>9.1} GFLOP/s by wall, {:.1} by CPU = {:.0}% / {:.0}% of the 1-thread sgemm rate ({gflop:.2} GFLOP of products a step; in-run ratio)",
        gflop / wall,
        gflop / cpu,
        100.0 * gflop / wall / gemm1,
        100.0 * gflop / cpu / gemm1
    );
    // The example itself, if its data are here: seconds per round, evaluation off.
    cfg.eval.every = 0;
    cfg.rounds = if quick { 3 } else { 5 };
    let dir = runner::data_dir(cfg.data_dir.as_deref());
    match runner::prepare(&cfg, threads) {
        Ok(prepared) => {
            let in_parallel = prepared.threads();
            let mut clock = RoundClock {
                start: Some(Instant::now()),
                ..Default::default()
            };
            prepared.run(RunOptions::default().keep(false, false).with_monitor(&mut clock))?;
            let (w, c) = (&clock.wall, &clock.cpu);
            let last = w.len() - 2;
            println!(
                "  examples/shakespeare.toml round {:>6.3} s wall, {:.3} s process CPU  ({} clients × {steps} steps, {in_parallel} clients in parallel, rounds 2–{}; PyTorch: torch_epoch.py --model round)",
                (w[last] - w[0]) / last as f64,
                (c[last] - c[0]) / last as f64,
                cfg.strategy.round.clients_per_round,
                last + 1
            );
        }
        Err(e) => println!(
            "  examples/shakespeare.toml: skipped ({e}; data directory {}: `fedpace datasets fetch shakespeare`)",
            dir.display()
        ),
    }
    Ok(())
}

/// Wall-clock and process-CPU seconds at the end of every round.
#[derive(Default)]
struct RoundClock {
    wall: Vec<f64>,
    cpu: Vec<f64>,
    start: Option<Instant>,
}

impl Monitor for RoundClock {
    fn round_finished(&mut self, _: &RoundRecord, _: &serde_json::Value) {
        let start = *self.start.get_or_insert_with(Instant::now);
        self.wall.push(start.elapsed().as_secs_f64());
        self.cpu.push(process_cpu_seconds());
    }
}

/// CPU seconds used by every thread of this process so far.
fn process_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer for the duration of the call.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// `--workload throughput`: client-epochs per second per core for W-LR and W-MLP with
/// 10,000 registered clients, on 1 thread and on `cores` (at most 2) threads.
///
/// With 2 cores the 1- and 2-thread runs alternate in pairs (5, or 1 with `quick`; the
/// order swapped every pair), and the scaling is the median of the pairs' own ratios: one
/// 1-thread run followed by one 2-thread run moved by ±0.1 between invocations, because
/// whatever else the machine did in one run's seconds fell on one side of the ratio only.
pub fn throughput(quick: bool, cores: usize) -> Result<()> {
    let registered = 10_000;
    let counts: Vec<usize> = if cores >= 2 { vec![1, 2] } else { vec![1] };
    let pairs = if quick || counts.len() == 1 { 1 } else { 5 };
    println!(
        "throughput: client-epochs per second per core, {registered} registered clients (whole rounds: sampling, data, local epoch, aggregation; rounds 2 to the second-last timed, by wall clock and by process CPU; {pairs} run{} per thread count, alternating, medians)",
        if pairs == 1 { "" } else { "s" }
    );
    for (w, per_round) in [(Workload::Lr, 1000), (Workload::Mlp, 100)] {
        let mut cfg = workload_config(w)?;
        cfg.data = cfg.data.clone().with_num_clients(registered);
        cfg.strategy.round.clients_per_round = per_round;
        // W-LR's rounds are short (≈ 0.2 s at 2 threads): ten timed rounds, not three, so
        // that one slow round on a shared machine does not set the scaling figure.
        cfg.rounds = match (quick, w) {
            (true, _) => 3,
            (false, Workload::Lr) => 12,
            (false, _) => 5,
        };
        cfg.validate().map_err(anyhow::Error::msg)?;
        // Per thread count: client-epochs per second by wall, per CPU-second, seconds a
        // round; one entry per pair.
        let mut runs: Vec<[Vec<f64>; 3]> = counts.iter().map(|_| Default::default()).collect();
        for pair in 0..pairs {
            let mut order: Vec<usize> = (0..counts.len()).collect();
            if pair % 2 == 1 {
                order.reverse();
            }
            for i in order {
                let (rate, per_cpu, round) = throughput_run(&cfg, counts[i], per_round)?;
                runs[i][0].push(rate);
                runs[i][1].push(per_cpu);
                runs[i][2].push(round);
            }
        }
        for (i, &threads) in counts.iter().enumerate() {
            let rate = median(runs[i][0].clone());
            println!(
                "  {:<9} {threads} thread{}  {:>8.0} client-epochs/s = {:>7.0} per core by wall, {:>7.0} per CPU-second  ({per_round} clients a round, {:.3} s a round)",
                cfg.name,
                if threads == 1 { " " } else { "s" },
                rate,
                rate / threads as f64,
                median(runs[i][1].clone()),
                median(runs[i][2].clone())
            );
        }
        if let [one, two] = &runs[..] {
            let ratios =
                |k: usize| -> Vec<f64> { one[k].iter().zip(&two[k]).map(|(a, b)| b / a).collect() };
            let (wall, cpu) = (ratios(0), ratios(1));
            let each = wall
                .iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
                .join(", ");
            // By wall this needs two idle cores; per CPU-second it is the cost of running
            // clients in parallel (1.0 = none), which the machine's load does not change.
            println!(
                "  {:<8} scaling 1 → 2 threads: {:.2}× by wall (pair by pair: {each}; target ≥ 1.9×; needs 2 idle cores, load average now {}), {:.2}× per CPU-second (1.0 = parallelism costs nothing)",
                cfg.name,
                median(wall),
                load_average(),
                median(cpu)
            );
        }
    }
    println!("  load average at the end: {}", load_average());
    Ok(())
}

/// One run of `cfg` on `threads` threads: client-epochs per second by wall and per
/// CPU-second of the process, and seconds a round, over rounds 2 to the second-last.
fn throughput_run(
    cfg: &ExperimentConfig,
    threads: usize,
    per_round: usize,
) -> Result<(f64, f64, f64)> {
    let prepared = runner::prepare(cfg, threads)?;
    let mut clock = RoundClock {
        start: Some(Instant::now()),
        ..Default::default()
    };
    prepared.run(
        RunOptions::default()
            .keep(false, false)
            .with_monitor(&mut clock),
    )?;
    let (w, c) = (&clock.wall, &clock.cpu);
    let last = w.len() - 2;
    let epochs = (last * per_round) as f64;
    let (secs, cpu) = (w[last] - w[0], c[last] - c[0]);
    Ok((epochs / secs, epochs / cpu, secs / last as f64))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn char_lstm_step_arithmetic_by_hand() {
        // One layer, T = 2, n = 1, E = 1, H = 1, C = 1: fc 3·2; input products 3·2·2·4;
        // recurrent 3·2·1·4.
        let want = (6.0 + 48.0 + 24.0) / 1e9;
        assert!((char_lstm_step_gflop(1, 2, 1, 1, 1, 1) - want).abs() < 1e-18);
        // The LEAF model: ≈ 3.8 GFLOP a step of batch 10.
        let leaf = char_lstm_step_gflop(10, 80, 8, 256, 2, 80);
        assert!((3.7..3.9).contains(&leaf), "{leaf}");
    }
}
