//! The search file read by `fedpace tune`, and the output directory rule shared with the
//! study (docs/tuning.md, "The search file").

use crate::methods::MethodConfig;
use crate::search::SearchSpec;
use crate::space::Space;
use crate::Error;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A search file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TuneFile {
    /// Name, used for the output directory (default `tune`).
    #[serde(default = "default_name")]
    pub name: String,
    /// The experiment file every trial starts from, relative to this file.
    pub base: PathBuf,
    /// `key=value` overrides applied to the base before the searched keys.
    #[serde(default)]
    pub set: Vec<String>,
    /// The metric selected on; must be a validation metric (`val_*`).
    #[serde(default = "default_objective")]
    pub objective: String,
    /// Seeds every configuration is trained on; the objective is their mean (default `[0]`).
    #[serde(default = "default_seeds")]
    pub seeds: Vec<u64>,
    /// Budget in client-epochs (one client training one pass over its data).
    pub budget: f64,
    /// Run a fixed plan (grid, given trials) that exceeds the budget up to the budget,
    /// instead of refusing it (default false).
    #[serde(default)]
    pub truncate: bool,
    /// Seed of the method's own draws (random points, BO candidates, PBT choices).
    #[serde(default)]
    pub seed: u64,
    /// Trials trained at once (default 1; 0 = one per core). Never changes results.
    #[serde(default = "one")]
    pub parallel: usize,
    /// The method.
    pub method: MethodConfig,
    /// The space.
    pub space: toml::Table,
}

fn default_name() -> String {
    "tune".into()
}
pub(crate) fn default_objective() -> String {
    "val_personalized_mean".into()
}
fn default_seeds() -> Vec<u64> {
    vec![0]
}
fn one() -> usize {
    1
}

/// Deserialises TOML text into `T`, errors as `origin: dotted.key: message` on one line.
pub fn parse_toml<T: DeserializeOwned>(text: &str, origin: &str) -> Result<T, Error> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        // toml's message spans lines (a source excerpt): keep the location and the cause.
        let full = e.to_string();
        let lines: Vec<&str> = full
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let msg = match lines.as_slice() {
            [] => String::new(),
            [one] => one.to_string(),
            [first, .., last] => format!(
                "{last} ({})",
                first
                    .trim_start_matches("TOML parse error ")
                    .trim_end_matches(':')
            ),
        };
        Error::Config(format!("{origin}: {msg}"))
    })?;
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.inner().to_string();
        let msg = inner
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("in `"))
            .collect::<Vec<_>>()
            .join(" ");
        if path == "." || path.is_empty() {
            Error::Config(format!("{origin}: {msg}"))
        } else {
            Error::Config(format!("{origin}: {path}: {msg}"))
        }
    })
}

/// Reads a file, naming it in the error.
pub fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("{}: cannot read: {e}", path.display())))
}

/// Checks a selection objective: a validation metric.
pub fn check_objective(objective: &str, at: &str) -> Result<(), Error> {
    if objective.starts_with("val_") {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "{at} = {objective:?}: selection must be on validation data; expected a name starting with val_ (e.g. val_personalized_mean)"
        )))
    }
}

/// Checks a seed list: non-empty, no repeats.
pub fn check_seeds(seeds: &[u64], at: &str) -> Result<(), Error> {
    if seeds.is_empty() {
        return Err(Error::Config(format!(
            "{at} = []: expected at least one seed"
        )));
    }
    for (i, s) in seeds.iter().enumerate() {
        if seeds[..i].contains(s) {
            return Err(Error::Config(format!("{at}: seed {s} is listed twice")));
        }
    }
    Ok(())
}

/// Checks a budget: finite and > 0.
pub fn check_budget(budget: f64, at: &str) -> Result<(), Error> {
    if budget.is_finite() && budget > 0.0 {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "{at} = {budget}: expected a number of client-epochs > 0"
        )))
    }
}

/// Checks a name used for a directory.
pub fn check_name(name: &str, at: &str) -> Result<(), Error> {
    if name.is_empty()
        || name.contains(['/', '\\'])
        || name.starts_with('.')
        || name.chars().any(char::is_control)
    {
        Err(Error::Config(format!("{at} = {name:?}: expected a non-empty name without slashes, control characters or a leading dot")))
    } else {
        Ok(())
    }
}

impl TuneFile {
    /// Reads and checks a search file; `base` is made relative to the file's directory.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let origin = path.display().to_string();
        let mut f: TuneFile = parse_toml(&read(path)?, &origin)?;
        let at = |k: &str| format!("{origin}: {k}");
        check_name(&f.name, &at("name"))?;
        check_objective(&f.objective, &at("objective"))?;
        check_seeds(&f.seeds, &at("seeds"))?;
        check_budget(f.budget, &at("budget"))?;
        Space::from_table(&f.space, &at("space"))?;
        if f.base.is_relative() {
            f.base = path.parent().unwrap_or(Path::new("")).join(&f.base);
        }
        Ok(f)
    }

    /// The search it declares (`max_rounds` checks the method's rungs).
    pub fn spec(&self, origin: &str, max_rounds: u32) -> Result<SearchSpec, Error> {
        self.method
            .validate(max_rounds)
            .map_err(|e| Error::Config(format!("{origin}: {e}")))?;
        Ok(SearchSpec {
            space: Space::from_table(&self.space, &format!("{origin}: space"))?,
            method: self.method.clone(),
            objective: self.objective.clone(),
            seeds: self.seeds.clone(),
            budget: self.budget,
            truncate: self.truncate,
            search_seed: self.seed,
            parallel: self.parallel,
        })
    }
}

/// Names this crate writes into an output directory (removed by `force`).
pub const OUTPUTS: [&str; 12] = [
    "trials",
    "runs",
    "tuning",
    "trials.csv",
    "evaluations.csv",
    "results.csv",
    "differences.csv",
    "results.md",
    "summary.json",
    "search.toml",
    "study.toml",
    "plot.svg",
];

/// Makes `dir` ready for output: a new or empty directory. A non-empty one is refused
/// unless `force` and it holds a previous search or study (its `search.toml` or
/// `study.toml`): then what that wrote (the names in [`OUTPUTS`]) is removed and anything
/// else kept. The caller writes its own marker first, so an interrupted search can be
/// replaced too.
pub fn prepare_dir(dir: &Path, force: bool) -> Result<(), Error> {
    let io = |e: std::io::Error| Error::Io {
        path: dir.display().to_string(),
        source: e,
    };
    if dir.exists() {
        if !dir.is_dir() {
            return Err(Error::Config(format!(
                "{}: exists and is not a directory",
                dir.display()
            )));
        }
        let non_empty = std::fs::read_dir(dir).map_err(io)?.next().is_some();
        if non_empty && !force {
            return Err(Error::Config(format!(
                "{}: not empty; choose a new --out, or add --force to replace the previous results there",
                dir.display()
            )));
        }
        if non_empty && !dir.join("search.toml").exists() && !dir.join("study.toml").exists() {
            return Err(Error::Config(format!(
                "{}: not empty and not the output of a search or study (no search.toml or study.toml); --force replaces only those, choose a new --out",
                dir.display()
            )));
        }
        if force {
            for name in OUTPUTS {
                let p = dir.join(name);
                if p.is_dir() {
                    std::fs::remove_dir_all(&p).map_err(io)?;
                } else if p.exists() {
                    std::fs::remove_file(&p).map_err(io)?;
                }
            }
        }
    }
    std::fs::create_dir_all(dir).map_err(io)
}

/// Writes a file, naming it in the error.
pub fn write(path: &Path, text: &str) -> Result<(), Error> {
    std::fs::write(path, text).map_err(|e| Error::Io {
        path: path.display().to_string(),
        source: e,
    })
}

/// `a/b` relative to `root`, for tables (the path itself when not under `root`).
pub fn relative(path: &Path, root: &Path) -> PathBuf {
    path.strip_prefix(root)
        .map_or_else(|_| path.to_path_buf(), Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_file_errors_name_the_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.toml");
        let write = |t: &str| std::fs::write(&p, t).unwrap();
        write("base = \"x.toml\"\nbudget = 10\n[method]\nname = \"grid\"\n[space]\nclient.lr = { log = [0.01, 0.1], grid = 2 }\n");
        let f = TuneFile::load(&p).unwrap();
        assert_eq!(f.base, dir.path().join("x.toml"));
        assert_eq!(f.objective, "val_personalized_mean");
        write("base = \"x.toml\"\nbudget = 10\nobjective = \"test_personalized_mean\"\n[method]\nname = \"grid\"\n[space]\nclient.lr = { log = [0.01, 0.1], grid = 2 }\n");
        let e = TuneFile::load(&p).unwrap_err().to_string();
        assert!(e.ends_with("s.toml: objective = \"test_personalized_mean\": selection must be on validation data; expected a name starting with val_ (e.g. val_personalized_mean)"), "{e}");
        write("base = \"x.toml\"\nbudget = -1\n[method]\nname = \"grid\"\n[space]\nclient.lr = { log = [0.01, 0.1], grid = 2 }\n");
        assert!(TuneFile::load(&p)
            .unwrap_err()
            .to_string()
            .ends_with("s.toml: budget = -1: expected a number of client-epochs > 0"));
        write("base = \"x.toml\"\nbudget = 1\nbugdet = 2\n[method]\nname = \"grid\"\n[space]\nx = { int = [1, 2] }\n");
        let e = TuneFile::load(&p).unwrap_err().to_string();
        assert!(e.contains("s.toml: bugdet: unknown field `bugdet`"), "{e}");
        write("base = \"x.toml\"\nbudget = 1\nseeds = [1, 1]\n[method]\nname = \"grid\"\n[space]\nx = { int = [1, 2] }\n");
        assert!(TuneFile::load(&p)
            .unwrap_err()
            .to_string()
            .ends_with("s.toml: seeds: seed 1 is listed twice"));
        write("budget = 1\n[method]\nname = \"grid\"\n[space]\nx = { int = [1, 2] }\n");
        assert!(TuneFile::load(&p)
            .unwrap_err()
            .to_string()
            .contains("missing field `base`"));
    }

    #[test]
    fn output_directory_is_never_overwritten_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        prepare_dir(&out, false).unwrap();
        std::fs::write(out.join("notes.txt"), "mine").unwrap();
        let e = prepare_dir(&out, true).unwrap_err().to_string();
        assert!(e.contains("not the output of a search or study"), "{e}");
        std::fs::write(out.join("results.md"), "old").unwrap();
        std::fs::write(out.join("search.toml"), "old").unwrap();
        std::fs::create_dir(out.join("runs")).unwrap();
        let e = prepare_dir(&out, false).unwrap_err().to_string();
        assert!(
            e.contains("not empty; choose a new --out, or add --force"),
            "{e}"
        );
        prepare_dir(&out, true).unwrap();
        assert!(!out.join("results.md").exists() && !out.join("runs").exists());
        assert_eq!(
            std::fs::read_to_string(out.join("notes.txt")).unwrap(),
            "mine"
        );
    }
}
