//! `fedpace study STUDY.toml`: variants × seeds × benchmarks, each tuned variant tuned at
//! the same budget on its own seeds, then paired differences against the baseline with
//! standard errors and significance tests (docs/tuning.md, "Studies").

use crate::tune::{usage, CliRunner, Options};
use anyhow::Result;
use fedpace_tune::study::{Benchmark, Variant};
use fedpace_tune::{plan_study, run_study, StudyFile};
use std::path::Path;

/// `fedpace study STUDY.toml`.
pub fn command(path: &Path, opts: &Options) -> Result<()> {
    let mut study = StudyFile::load(path).map_err(usage)?;
    if let Some(p) = opts.parallel {
        study.parallel = p;
    }
    let threads = opts.trial_threads(study.parallel);
    let make_runner = |b: &Benchmark, v: &Variant| {
        let fixed: Vec<String> = b.set.iter().chain(&v.set).cloned().collect();
        CliRunner::new(&b.config, fixed, threads)
            .map(|r| r.resuming(opts.resume))
            .map_err(|e| {
                fedpace_tune::Error::Config(format!(
                    "{}: benchmark {} with variant {}: {e}",
                    path.display(),
                    b.name,
                    v.name
                ))
            })
    };
    // Everything is checked before the output directory exists.
    plan_study(&study, &make_runner, &mut |line| {
        if opts.dry_run {
            println!("{line}")
        }
    })
    .map_err(usage)?;
    if opts.dry_run {
        println!("nothing trained (--dry-run)");
        return Ok(());
    }
    let (dir, _lock) = opts.out_dir(&study.name)?;
    std::fs::copy(path, dir.join("study.toml"))?;
    let report =
        run_study(&study, make_runner, &dir, &mut |line| eprintln!("{line}")).map_err(usage)?;
    report.write(&dir).map_err(usage)?;
    println!();
    print!("{}", report.markdown());
    println!("results in {}", dir.display());
    Ok(())
}
