//! NumPy arrays to a federation (`fedpace.data`): pooled samples split by one of the
//! built-in partitioners, or one array pair per client. Arrays are read through NumPy's
//! `__array_interface__` (the Python side makes them C-contiguous and aligned first) and
//! copied once into fedpace's own buffers.

use crate::py_err;
use fedpace_data::PoolConfig;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::sync::Arc;

/// A federation built from arrays, ready to be named in a config
/// (`[data] source = "<name>"`) by passing it to `fedpace.run(..., data=...)`.
#[pyclass(frozen, module = "fedpace._native")]
pub struct Federation {
    pub(crate) inner: fedpace_data::Federation,
    name: String,
}

#[pymethods]
impl Federation {
    /// The name a config uses for it (`[data] source`).
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }
    /// Number of clients.
    #[getter]
    fn num_clients(&self) -> usize {
        self.inner.data.num_clients()
    }
    /// Number of label classes.
    #[getter]
    fn num_classes(&self) -> usize {
        self.inner.num_classes
    }
    /// Shape of one sample.
    #[getter]
    fn sample_shape(&self) -> Vec<usize> {
        match &self.inner.sample_shape {
            fedpace_data::InputShape::Dense(s) => s.clone(),
            fedpace_data::InputShape::Tokens { seq_len, .. } => vec![*seq_len],
        }
    }
    /// Whether the server holds a test set of its own (evaluated centrally).
    #[getter]
    fn has_server_test(&self) -> bool {
        self.inner.global_test.is_some()
    }
    /// One line: name, clients, partition.
    #[getter]
    fn description(&self) -> &str {
        &self.inner.description
    }
    /// Each client's (training, test) sample counts.
    fn client_sizes(&self, py: Python<'_>) -> PyResult<Vec<(usize, usize)>> {
        let data = &self.inner.data;
        (0..data.num_clients())
            .map(|k| {
                data.client(k)
                    .map(|c| (c.train.len(), c.test.len()))
                    .map_err(|e| py_err(py, "SetupError", e.to_string()))
            })
            .collect()
    }
    /// The training labels of client `k` (to inspect a partition).
    fn client_labels(&self, py: Python<'_>, k: usize) -> PyResult<Vec<u32>> {
        let c = self
            .inner
            .data
            .client(k)
            .map_err(|e| py_err(py, "SetupError", e.to_string()))?;
        Ok((0..c.train.len()).map(|i| c.train.label(i)).collect())
    }
    fn __repr__(&self) -> String {
        format!(
            "<fedpace Federation {:?}: {}>",
            self.name, self.inner.description
        )
    }
}

/// What an array is, from its `__array_interface__`: shape and element count, checked
/// to be C-contiguous of type `typestr`.
fn interface(
    arr: &Bound<'_, PyAny>,
    what: &str,
    typestr: &str,
) -> Result<(usize, Vec<usize>, usize), String> {
    let bad = |m: String| format!("{what}: {m}");
    let ai = arr
        .getattr("__array_interface__")
        .map_err(|_| bad("expected a NumPy array".into()))?;
    let ai = ai
        .cast::<PyDict>()
        .map_err(|_| bad("__array_interface__ is not a dict".into()))?;
    let get = |k: &str| -> Result<Bound<'_, PyAny>, String> {
        ai.get_item(k)
            .map_err(|e| bad(e.to_string()))?
            .ok_or_else(|| bad(format!("__array_interface__ has no {k:?}")))
    };
    let ty = get("typestr")?
        .extract::<String>()
        .map_err(|e| bad(e.to_string()))?;
    if ty != typestr {
        return Err(bad(format!("element type {ty}: expected {typestr}")));
    }
    let shape = get("shape")?
        .extract::<Vec<usize>>()
        .map_err(|e| bad(e.to_string()))?;
    if let Some(strides) = ai.get_item("strides").map_err(|e| bad(e.to_string()))? {
        if !strides.is_none() {
            return Err(bad("not C-contiguous: expected a contiguous array".into()));
        }
    }
    let (ptr, _readonly) = get("data")?
        .extract::<(usize, bool)>()
        .map_err(|e| bad(e.to_string()))?;
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| bad(format!("shape {shape:?}: too many values")))?;
    Ok((ptr, shape, n))
}

/// Copies a C-contiguous array of `T` (`typestr` its NumPy type) into a vector.
fn read<T: Copy>(
    arr: &Bound<'_, PyAny>,
    what: &str,
    typestr: &str,
) -> Result<(Vec<T>, Vec<usize>), String> {
    let (ptr, shape, n) = interface(arr, what, typestr)?;
    if n == 0 {
        return Ok((Vec::new(), shape));
    }
    if ptr == 0 || ptr % std::mem::align_of::<T>() != 0 {
        return Err(format!("{what}: unaligned data: expected an aligned array"));
    }
    // SAFETY: the array is alive (we hold a reference and the GIL), C-contiguous with
    // `n` elements of `T` (checked above from its interface) and aligned; we only read.
    let values = unsafe { std::slice::from_raw_parts(ptr as *const T, n) }.to_vec();
    Ok((values, shape))
}

fn f32s(arr: &Bound<'_, PyAny>, what: &str) -> Result<(Vec<f32>, Vec<usize>), String> {
    read::<f32>(
        arr,
        what,
        if cfg!(target_endian = "little") {
            "<f4"
        } else {
            ">f4"
        },
    )
}

fn u32s(arr: &Bound<'_, PyAny>, what: &str) -> Result<(Vec<u32>, Vec<usize>), String> {
    read::<u32>(
        arr,
        what,
        if cfg!(target_endian = "little") {
            "<u4"
        } else {
            ">u4"
        },
    )
}

/// Features (flat), the shape of one sample, and labels.
type Samples = (Vec<f32>, Vec<usize>, Vec<u32>);

/// Features `(n, *sample_shape)` and labels `(n,)`, checked against each other.
fn pair(x: &Bound<'_, PyAny>, y: &Bound<'_, PyAny>, what: &str) -> Result<Samples, String> {
    let (xv, xs) = f32s(x, &format!("{what} x"))?;
    let (yv, ys) = u32s(y, &format!("{what} y"))?;
    if xs.len() < 2 {
        return Err(format!(
            "{what} x: shape {xs:?}: expected (samples, features…)"
        ));
    }
    if ys.len() != 1 || ys[0] != xs[0] {
        return Err(format!(
            "{what} y: shape {ys:?}: expected ({},), one label per row of x",
            xs[0]
        ));
    }
    Ok((xv, xs[1..].to_vec(), yv))
}

/// Pooled samples split across clients by a built-in partitioner (`fedpace.data.from_arrays`).
/// `pool` is the JSON of a `PoolConfig` (`num_clients`, `partition`, `test_fraction`).
#[pyfunction]
#[pyo3(signature = (name, x, y, num_classes, pool, seed, test=None))]
#[allow(clippy::too_many_arguments)] // mirrors the Python keyword arguments
pub fn from_pooled(
    py: Python<'_>,
    name: &str,
    x: &Bound<'_, PyAny>,
    y: &Bound<'_, PyAny>,
    num_classes: usize,
    pool: &str,
    seed: u64,
    test: Option<(Bound<'_, PyAny>, Bound<'_, PyAny>)>,
) -> PyResult<Federation> {
    let setup = |m: String| py_err(py, "SetupError", format!("data {name:?}: {m}"));
    let pool: PoolConfig = serde_json::from_str(pool)
        .map_err(|e| py_err(py, "ConfigError", format!("data {name:?}: {e}")))?;
    let (xv, shape, yv) = pair(x, y, "").map_err(|m| setup(m.trim_start().to_string()))?;
    let server_test = match &test {
        Some((tx, ty)) => {
            let (tx, tshape, ty) = pair(tx, ty, "test").map_err(setup)?;
            if tshape != shape {
                return Err(setup(format!(
                    "test x: sample shape {tshape:?}: expected {shape:?}, as x"
                )));
            }
            Some((tx, ty))
        }
        None => None,
    };
    let inner = py
        .detach(|| {
            fedpace_experiment::federation_from_pooled(
                name,
                shape,
                num_classes,
                xv,
                yv,
                &pool,
                seed,
                server_test,
            )
        })
        .map_err(|e| crate::experiment_err(py, e))?;
    Ok(Federation {
        inner,
        name: name.to_string(),
    })
}

/// One `(x, y)` pair per client, each split into train and test by `test_fraction`
/// (`fedpace.data.from_clients`), as fedpace's per-client `.npy` source does.
#[pyfunction]
#[pyo3(signature = (name, clients, num_classes, test_fraction, seed, test=None))]
pub fn from_clients(
    py: Python<'_>,
    name: &str,
    clients: Vec<(Bound<'_, PyAny>, Bound<'_, PyAny>)>,
    num_classes: usize,
    test_fraction: f64,
    seed: u64,
    test: Option<(Bound<'_, PyAny>, Bound<'_, PyAny>)>,
) -> PyResult<Federation> {
    let setup = |m: String| py_err(py, "SetupError", format!("data {name:?}: {m}"));
    if clients.is_empty() {
        return Err(setup(
            "no clients: expected at least one (x, y) pair".into(),
        ));
    }
    if !(test_fraction.is_finite() && (0.0..1.0).contains(&test_fraction)) {
        return Err(py_err(
            py,
            "ConfigError",
            format!(
                "data {name:?}: test_fraction = {test_fraction}: expected a fraction in [0, 1)"
            ),
        ));
    }
    if num_classes < 2 {
        return Err(setup(format!(
            "num_classes = {num_classes}: expected at least 2"
        )));
    }
    let mut x = Vec::new();
    let mut y = Vec::new();
    let mut parts = Vec::with_capacity(clients.len());
    let mut shape: Option<Vec<usize>> = None;
    for (k, (cx, cy)) in clients.iter().enumerate() {
        let (xv, s, yv) = pair(cx, cy, &format!("client {k}")).map_err(setup)?;
        match &shape {
            Some(first) if *first != s => {
                return Err(setup(format!(
                    "client {k} x: sample shape {s:?}: expected {first:?}, as client 0"
                )))
            }
            _ => shape = Some(s),
        }
        if yv.is_empty() {
            return Err(setup(format!(
                "client {k}: no samples; expected at least one"
            )));
        }
        let start = y.len() as u32;
        parts.push((start..start + yv.len() as u32).collect::<Vec<u32>>());
        x.extend_from_slice(&xv);
        y.extend_from_slice(&yv);
        if y.len() > u32::MAX as usize {
            return Err(setup("more than 2^32 samples in all".into()));
        }
    }
    let shape = shape.expect("at least one client");
    let server_test = match &test {
        Some((tx, ty)) => {
            let (tx, tshape, ty) = pair(tx, ty, "test").map_err(setup)?;
            if tshape != shape {
                return Err(setup(format!(
                    "test x: sample shape {tshape:?}: expected {shape:?}, as the clients'"
                )));
            }
            Some((tx, ty))
        }
        None => None,
    };
    let inner = py
        .detach(|| -> Result<fedpace_data::Federation, String> {
            let dense = |what: &str, x: Vec<f32>, y: Vec<u32>| {
                fedpace_core::data::DenseDataset::new(x, shape.clone(), y, num_classes)
                    .map(|d| Arc::new(d) as Arc<dyn fedpace_core::data::Dataset>)
                    .map_err(|e| format!("{what}: {e}"))
            };
            let train = dense("clients", x, y)?;
            let mut fed = fedpace_data::pooled::federate_parts(
                name,
                train,
                parts,
                fedpace_data::InputShape::Dense(shape.clone()),
                test_fraction,
                seed,
            )
            .map_err(|e| e.to_string())?;
            if let Some((tx, ty)) = server_test {
                fed.global_test = Some(dense("test", tx, ty)?);
            }
            Ok(fed)
        })
        .map_err(setup)?;
    Ok(Federation {
        inner,
        name: name.to_string(),
    })
}
