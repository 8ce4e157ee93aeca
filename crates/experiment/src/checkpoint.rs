//! Checkpoints of a run on disk and `fedpace resume` (docs/checkpoints.md).
//!
//! A run with `[checkpoint] every = N` writes `checkpoint.fdpc` into its run directory
//! every N rounds and after the last one; every run writes one when SIGINT or SIGTERM
//! stops it. The file (`fedpace_core::checkpoint::FileWriter`) holds the model, the
//! server's state, every client's state and the recorder's position in the metrics
//! files; it replaces the previous one atomically, so a kill at any point leaves the
//! last complete checkpoint. Resuming reads it back, refuses it when the run
//! directory's config differs from the one it was written by (naming the key), cuts the
//! metrics files back to the checkpoint's round and continues: the run ends as the
//! uninterrupted run would have, bit for bit.

use crate::config::ExperimentConfig;
use crate::files::replace_with;
use crate::{Error, Result};
use fedpace_core::checkpoint::{read_file, FileMeta, FileWriter, Loaded, FILE_NAME};
use fedpace_core::Checkpoint;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Config keys that may differ between a checkpoint and its resumption: how long the
/// run goes and how it is executed, never what it computes (results are bit-identical
/// whatever the threads, and whether client states are in memory or spilled).
pub const MAY_DIFFER: [&str; 7] = [
    "rounds",
    "threads",
    "client_threads",
    "data_dir",
    "output",
    "checkpoint",
    "state",
];

/// Writes a run's checkpoints (the recorder asks it when and hands it the round).
pub struct Checkpointer {
    path: PathBuf,
    config: String,
    every: Option<u32>,
    rounds: u32,
}

impl Checkpointer {
    /// Checkpoints of the run in `dir`, started with the resolved `config`, every
    /// `every` rounds (and after the last of `rounds`) when set; at a stop request
    /// always.
    pub fn new(dir: &Path, config: String, every: Option<u32>, rounds: u32) -> Self {
        Self {
            path: dir.join(FILE_NAME),
            config,
            every,
            rounds,
        }
    }

    /// Whether a checkpoint is due after `round` (`stopping`: the run stops there).
    pub fn due(&self, round: u32, stopping: bool) -> bool {
        stopping
            || self
                .every
                .is_some_and(|n| round.is_multiple_of(n) || round == self.rounds)
    }

    /// Writes the checkpoint (atomically: the previous one stays until this one is
    /// complete and on disk); `recorder` is the recorder's own state.
    pub fn write(&self, cp: Checkpoint<'_>, recorder: Vec<u8>) -> fedpace_core::Result<()> {
        let meta = FileMeta::new(&self.config, cp.round, recorder);
        // The writer's own errors without their "observer:" prefix: the message below
        // gets one, after the file's name.
        let io = |e: fedpace_core::Error| match e {
            fedpace_core::Error::Observer(m) => std::io::Error::other(m),
            e => std::io::Error::other(e),
        };
        replace_with(&self.path, |tmp| {
            let out = BufWriter::new(std::fs::File::create(tmp)?);
            let mut w = FileWriter::begin(out, &meta, cp.global, &cp.server).map_err(io)?;
            cp.grid
                .visit_states(&mut |id, s| w.state(id, s))
                .map_err(io)?;
            w.finish().map_err(io)?.flush()
        })
        .map_err(|e| fedpace_core::Error::Observer(e.to_string()))
    }
}

/// Reads `dir`'s checkpoint; an error names the file and says what is wrong with it.
pub fn load(dir: &Path) -> Result<Loaded> {
    let path = dir.join(FILE_NAME);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Setup(format!(
                "{}: no checkpoint: the run was not stopped by a signal and has no \
                 [checkpoint] every = N, so it cannot be resumed",
                path.display()
            )))
        }
        Err(e) => {
            return Err(Error::Setup(format!(
                "{}: cannot read: {e}",
                path.display()
            )))
        }
    };
    read_file(&bytes, &fedpace_algos::builtin().codecs)
        .map_err(|e| Error::Setup(format!("{}: {e}", path.display())))
}

/// Reads the run in `dir` for `fedpace resume`: its config (`config.toml`, `rounds`
/// replaced by `rounds` when given) and its checkpoint, checked against each other.
/// Refused, with the reason: no checkpoint, a damaged one, one written by another
/// version of fedpace or another config (naming the first key that differs), or no
/// round left to run.
pub fn prepare_resume(dir: &Path, rounds: Option<u32>) -> Result<(ExperimentConfig, Loaded)> {
    if !dir.is_dir() {
        return Err(Error::Setup(format!("{}: not a directory", dir.display())));
    }
    let path = dir.join("config.toml");
    let overrides: Vec<String> = rounds.iter().map(|r| format!("rounds={r}")).collect();
    let cfg = ExperimentConfig::load(&path, &overrides)?;
    let loaded = load(dir)?;
    let file = dir.join(FILE_NAME);
    let meta = &loaded.meta;
    let ours = env!("CARGO_PKG_VERSION");
    if meta.fedpace_version != ours {
        return Err(Error::Setup(format!(
            "{}: written by fedpace {}, this is fedpace {ours}; resume it with the version \
             that wrote it",
            file.display(),
            meta.fedpace_version
        )));
    }
    if let Some(d) = config_difference(&meta.config, &cfg.to_toml())? {
        return Err(Error::Setup(format!(
            "{}: {d}; a run resumes only with the config it started with (only {} may \
             change)",
            path.display(),
            MAY_DIFFER.join(", ")
        )));
    }
    if cfg.rounds <= meta.round {
        return Err(Error::Setup(format!(
            "{}: the checkpoint is at round {} and the run has {} rounds: nothing to run; \
             pass --rounds M (more than {}) to continue it",
            file.display(),
            meta.round,
            cfg.rounds,
            meta.round
        )));
    }
    Ok((cfg, loaded))
}

/// The first key (dotted path, in order) whose value differs between the config a
/// checkpoint was written by (`saved`) and the one to resume with (`now`), ignoring
/// [`MAY_DIFFER`], as `key = now-value (the checkpoint's run had saved-value)`.
pub fn config_difference(saved: &str, now: &str) -> Result<Option<String>> {
    config_difference_except(saved, now, &[])
}

/// [`config_difference`], ignoring also the dotted keys in `also` (and what lies under
/// them): a tuning trial continued with other values of its searched keys
/// (docs/tuning.md, "Continuing a trial").
pub fn config_difference_except(saved: &str, now: &str, also: &[String]) -> Result<Option<String>> {
    let parse = |s: &str, what: &str| -> Result<toml::Table> {
        s.parse::<toml::Table>()
            .map_err(|e| Error::Setup(format!("{what}: {e}")))
    };
    let (a, b) = (
        parse(saved, "the checkpoint's config")?,
        parse(now, "config.toml")?,
    );
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        if MAY_DIFFER.contains(&k.as_str()) {
            continue;
        }
        if let Some(d) = differ(k, a.get(k), b.get(k), also) {
            return Ok(Some(d));
        }
    }
    Ok(None)
}

fn differ(
    key: &str,
    a: Option<&toml::Value>,
    b: Option<&toml::Value>,
    also: &[String],
) -> Option<String> {
    if also.iter().any(|k| k == key) {
        return None;
    }
    if let (Some(toml::Value::Table(x)), Some(toml::Value::Table(y))) = (a, b) {
        let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
        keys.sort();
        keys.dedup();
        return keys
            .into_iter()
            .find_map(|k| differ(&format!("{key}.{k}"), x.get(k), y.get(k), also));
    }
    let show = |v: Option<&toml::Value>| v.map_or("unset".to_string(), |v| v.to_string());
    (a != b).then(|| format!("{key} = {} (the checkpoint's run had {})", show(b), show(a)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_difference_names_the_first_key_and_both_values() {
        let saved = "rounds = 10\nseed = 1\n[strategy]\nname = \"fedavg\"\nserver_lr = 1.0\n";
        let same_but_longer = "rounds = 20\nseed = 1\n[strategy]\nname = \"fedavg\"\nserver_lr = 1.0\n[output]\ntrace = true\n";
        assert_eq!(config_difference(saved, same_but_longer).unwrap(), None);
        let other = "rounds = 10\nseed = 1\n[strategy]\nname = \"fedavg\"\nserver_lr = 0.5\n";
        assert_eq!(
            config_difference(saved, other).unwrap().unwrap(),
            "strategy.server_lr = 0.5 (the checkpoint's run had 1.0)"
        );
        let also = ["strategy.server_lr".to_string()];
        assert_eq!(config_difference_except(saved, other, &also).unwrap(), None);
        let unset = "rounds = 10\n[strategy]\nname = \"fedavg\"\nserver_lr = 1.0\n";
        assert_eq!(
            config_difference(saved, unset).unwrap().unwrap(),
            "seed = unset (the checkpoint's run had 1)"
        );
    }

    #[test]
    fn checkpoints_are_due_every_n_rounds_at_the_last_and_at_a_stop() {
        let c = Checkpointer::new(Path::new("."), String::new(), Some(3), 10);
        let due: Vec<u32> = (1..=10).filter(|&r| c.due(r, false)).collect();
        assert_eq!(due, [3, 6, 9, 10]);
        assert!(c.due(4, true));
        let never = Checkpointer::new(Path::new("."), String::new(), None, 10);
        assert!(!(1..=10).any(|r| never.due(r, false)) && never.due(2, true));
    }
}
