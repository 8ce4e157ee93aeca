//! fedpace from Python (docs/python.md): the native half of the `fedpace` package, built
//! into one abi3 wheel for every CPython ≥ 3.9 by maturin (crates/py/pyproject.toml).
//!
//! The Python half (`crates/py/python/fedpace`) shapes arguments and results; this
//! module runs an experiment through [`fedpace_experiment`] with the GIL released,
//! registers NumPy data (`data`) and Python rate policies (`policy`) in a
//! `Registry`, and raises fedpace's one-line errors as the package's exceptions
//! (`fedpace.ConfigError`, …, defined in `fedpace/_errors.py`).
//!
//! Memory: arrays come in by one copy (read through NumPy's `__array_interface__`, no
//! NumPy crate); the final model goes out by none (`Weights`).
//!
//! Everything is behind the `python` feature (maturin turns it on): without it the crate
//! is empty, so `cargo build --workspace` needs no Python (docs/arch/0016).

#![cfg(feature = "python")]

mod convert;
mod data;
mod monitor;
mod policy;

use data::Federation;
use fedpace_experiment::{Registry, RunOptions};
use monitor::{Failure, Progress, Shared};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use std::path::PathBuf;
use std::sync::Arc;

/// The exception class `kind` of `fedpace._errors` with `msg`, or a `RuntimeError`
/// when the package is not importable (the native module loaded on its own).
pub(crate) fn py_err(py: Python<'_>, kind: &str, msg: impl Into<String>) -> PyErr {
    let msg = msg.into();
    let made = py
        .import("fedpace._errors")
        .and_then(|m| m.getattr(kind))
        .and_then(|cls| cls.call1((msg.clone(),)));
    match made {
        Ok(e) => PyErr::from_value(e),
        Err(_) => pyo3::exceptions::PyRuntimeError::new_err(msg),
    }
}

/// fedpace's error as the matching Python exception.
pub(crate) fn experiment_err(py: Python<'_>, e: fedpace_experiment::Error) -> PyErr {
    let kind = match &e {
        fedpace_experiment::Error::Config(_) => "ConfigError",
        fedpace_experiment::Error::Setup(_) => "SetupError",
        fedpace_experiment::Error::Run(_) => "RunError",
        _ => "FedpaceError",
    };
    py_err(py, kind, e.to_string())
}

/// The final model, flat, as NumPy sees it: `numpy.asarray(weights)` is a read-only
/// float32 view of this memory (through `__array_interface__`), no copy; the views of
/// each tensor keep this object alive.
#[pyclass(frozen, module = "fedpace._native")]
pub struct Weights {
    values: Box<[f32]>,
}

#[pymethods]
impl Weights {
    /// NumPy's array interface (version 3): shape, little-endian float32, the address
    /// of the values, read-only.
    #[getter]
    fn __array_interface__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("version", 3)?;
        d.set_item("shape", (self.values.len(),))?;
        d.set_item(
            "typestr",
            if cfg!(target_endian = "little") {
                "<f4"
            } else {
                ">f4"
            },
        )?;
        d.set_item("data", (self.values.as_ptr() as usize, true))?;
        Ok(d)
    }

    fn __len__(&self) -> usize {
        self.values.len()
    }
}

/// How the config reaches [`run`]: read from a file, TOML text, or a dict.
fn parse(
    registry: &Registry,
    kind: &str,
    text: String,
    overrides: &[String],
) -> fedpace_experiment::Result<fedpace_experiment::Experiment> {
    match kind {
        "path" => registry.load(&text, overrides),
        "dict" => registry.experiment(&text, "config (dict)", overrides),
        _ => registry.experiment(&text, "config (TOML text)", overrides),
    }
}

/// Runs one experiment (the engine of `fedpace.run`, docs/python.md).
///
/// `kind` is "path", "toml" or "dict" and says what `config` is; `overrides` are
/// `(key, value)` pairs applied as `fedpace run --set key=value`; `data` and `policies`
/// are registered under their names; `out` is a run directory to write (claimed first;
/// `force` replaces an earlier run there); `progress(event, round, rounds, payload)` is
/// called at the start ("start", description) and after every round ("round", its
/// metrics line as JSON). Returns a dict of the results (JSON texts, the final model).
#[pyfunction]
#[pyo3(signature = (kind, config, overrides, data, policies, out=None, force=false, progress=None))]
#[allow(clippy::too_many_arguments)]
fn run<'py>(
    py: Python<'py>,
    kind: &str,
    config: &Bound<'py, PyAny>,
    overrides: Vec<(String, Bound<'py, PyAny>)>,
    data: Vec<(String, Bound<'py, Federation>)>,
    policies: Vec<(String, Py<PyAny>)>,
    out: Option<PathBuf>,
    force: bool,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let text = match kind {
        "dict" => convert::dict_to_toml(config).map_err(|m| py_err(py, "ConfigError", m))?,
        "path" | "toml" => config.extract::<String>()?,
        other => {
            return Err(py_err(
                py,
                "ConfigError",
                format!("config kind {other:?}: expected \"path\", \"toml\" or \"dict\""),
            ))
        }
    };
    let overrides = overrides
        .iter()
        .map(|(k, v)| convert::override_line(k, v))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|m| py_err(py, "ConfigError", m))?;
    let shared = Arc::new(Shared::default());
    let mut registry = Registry::new();
    for (name, fed) in &data {
        registry = registry
            .with_data(name, fed.get().inner.clone())
            .map_err(|e| experiment_err(py, e))?;
    }
    for (name, obj) in policies {
        let build = policy::builder(name.clone(), obj, shared.clone());
        registry = registry
            .with_policy(&name, build)
            .map_err(|e| experiment_err(py, e))?;
    }
    let kind = kind.to_string();
    let mut monitor = Progress::new(progress, shared.clone());
    let outcome = py.detach(|| {
        let exp = parse(&registry, &kind, text, &overrides)?;
        // Held until the run ends: a second `fedpace.run` (or a `fedpace` command) on the
        // same directory is refused before it touches a file (docs/outputs.md).
        let _lock = match &out {
            Some(dir) => fedpace_experiment::lock::claim(dir, force, "out")?,
            None => None,
        };
        let prepared = exp.prepare()?;
        let resolved = prepared.config().to_toml();
        let mut options = RunOptions::default().with_monitor(&mut monitor);
        if let Some(dir) = &out {
            options = options.with_dir(dir);
        }
        prepared.run(options).map(|r| (r, resolved))
    });
    // A failure on the Python side (the policy, the progress callback, Ctrl-C) wins: it
    // is what ended the run.
    if let Some(failure) = shared.take() {
        return Err(match failure {
            Failure::Policy { message, error } => {
                let e = py_err(py, "PolicyError", message);
                e.set_cause(py, error);
                e
            }
            Failure::Python(error) => error,
        });
    }
    let (result, resolved) = outcome.map_err(|e| experiment_err(py, e))?;
    let d = PyDict::new(py);
    d.set_item("summary", to_json(py, &result.summary)?)?;
    d.set_item("metrics", to_json(py, &result.metrics)?)?;
    d.set_item("clients", to_json(py, &result.clients)?)?;
    d.set_item("warnings", PyList::new(py, &result.warnings)?)?;
    d.set_item("dir", result.dir.as_ref().map(|p| p.display().to_string()))?;
    d.set_item("config", resolved)?;
    d.set_item("state_store", &result.state_store)?;
    let spec = result.outcome.global.spec().clone();
    let tensors = PyList::empty(py);
    for e in spec.entries() {
        let group = spec.groups().get(e.group).cloned().unwrap_or_default();
        tensors.append((e.name.clone(), e.shape.clone(), e.offset, group))?;
    }
    d.set_item("tensors", tensors)?;
    let values = result.outcome.global.into_vec().into_boxed_slice();
    d.set_item("weights", Bound::new(py, Weights { values })?)?;
    Ok(d)
}

/// A result as JSON text for the Python side (`json.loads`).
fn to_json<T: serde::Serialize>(py: Python<'_>, v: &T) -> PyResult<String> {
    serde_json::to_string(v)
        .map_err(|e| py_err(py, "FedpaceError", format!("serialising the results: {e}")))
}

/// The version of fedpace this module was built from.
#[pyfunction]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// fedpace's native module: experiments run at Rust speed with the GIL released.
#[pymodule(name = "_native")]
mod native {
    #[pymodule_export]
    use super::data::{from_clients, from_pooled, Federation};
    #[pymodule_export]
    use super::policy::{policy_overhead, Client, Plan, Report};
    #[pymodule_export]
    use super::{run, version, Weights};
}
