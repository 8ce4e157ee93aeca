//! A rate policy written in Python (docs/python.md, "A rate policy in Python"): an
//! object with `plan(round, client, base)` and, optionally, `observe(round, client,
//! report)`, called by fedpace's round loop for every sampled client through
//! [`fedpace_core::RatePolicy`] while the rest of the run stays in Rust.
//!
//! `plan` returns the client's learning rate (a number), a [`Plan`] (`base` changed in
//! place), a dict of the changes (`lr`, `multipliers`, `prox_mu`, `max_steps`), or None
//! for the base plan. The first exception or unusable answer ends the run with
//! `fedpace.PolicyError`, the policy's exception as its cause.

use crate::monitor::{Failure, Shared};
use fedpace_core::{ClientInfo, Error, RatePlan, RatePolicy, TrainReport};
use fedpace_experiment::PolicyInput;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFloat, PyInt, PyType};
use std::sync::Arc;

/// A sampled client, as `plan` and `observe` see it (what the client shares).
#[pyclass(frozen, get_all, module = "fedpace._native")]
pub struct Client {
    /// Client id (0-based).
    id: u64,
    /// Training samples.
    num_train: u64,
    /// Test samples.
    num_test: u64,
    /// Device class (`device_classes` in the config), if any.
    device: Option<String>,
    /// Training label counts, when the client shares them (`client.share`).
    label_histogram: Option<Vec<u64>>,
}

#[pymethods]
impl Client {
    fn __repr__(&self) -> String {
        format!(
            "Client(id={}, num_train={}, num_test={}, device={:?})",
            self.id, self.num_train, self.num_test, self.device
        )
    }
}

impl From<&ClientInfo> for Client {
    fn from(c: &ClientInfo) -> Self {
        Self {
            id: c.id,
            num_train: c.num_train,
            num_test: c.num_test,
            device: c.device.clone(),
            label_histogram: c.label_histogram().map(<[u64]>::to_vec),
        }
    }
}

/// What a client reported after local training (`observe`'s `report`).
#[pyclass(frozen, get_all, module = "fedpace._native")]
pub struct Report {
    /// Local steps run.
    steps: u32,
    /// Loss of the first mini-batch at the global model.
    loss_before: f64,
    /// Mean mini-batch loss over the last epoch's worth of steps.
    loss_after: f64,
    /// Mean mini-batch loss over all local steps.
    train_loss: f64,
    /// ‖Δ_k‖, the norm of the client's update.
    update_norm: f64,
    /// ‖g‖ of the first mini-batch gradient at the global model.
    grad_norm: f64,
    /// Σ of the rates used, per parameter group.
    rate_sum: Vec<f64>,
}

#[pymethods]
impl Report {
    fn __repr__(&self) -> String {
        format!(
            "Report(steps={}, loss_before={:.4}, loss_after={:.4}, update_norm={:.4})",
            self.steps, self.loss_before, self.loss_after, self.update_norm
        )
    }
}

impl From<&TrainReport> for Report {
    fn from(r: &TrainReport) -> Self {
        Self {
            steps: r.steps,
            loss_before: f64::from(r.loss_before),
            loss_after: f64::from(r.loss_after),
            train_loss: f64::from(r.train_loss),
            update_norm: r.update_norm,
            grad_norm: r.grad_norm,
            rate_sum: r.rate_sum.clone(),
        }
    }
}

/// A client's plan for one round: `plan`'s `base` (a fresh copy each call: change it
/// and return it, or return a number or a dict).
#[pyclass(module = "fedpace._native")]
pub struct Plan {
    /// Learning rate η_k.
    #[pyo3(get, set)]
    lr: f64,
    /// FedProx's proximal coefficient μ_k (0: none).
    #[pyo3(get, set)]
    prox_mu: f64,
    /// Upper bound on local steps (None: no bound).
    #[pyo3(get, set)]
    max_steps: Option<u32>,
    /// Mini-batch size.
    #[pyo3(get)]
    batch_size: u32,
    /// Local epochs (None when the plan counts steps).
    #[pyo3(get)]
    epochs: Option<u32>,
    /// Local steps (None when the plan counts epochs).
    #[pyo3(get)]
    steps: Option<u32>,
    multipliers: Vec<f64>,
    groups: Arc<[String]>,
}

#[pymethods]
impl Plan {
    /// Rate multiplier per parameter group (`{"body": 1.0, "head": 1.0}`); assign a dict
    /// to change some.
    #[getter]
    fn multipliers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (g, m) in self.groups.iter().zip(&self.multipliers) {
            d.set_item(g, m)?;
        }
        Ok(d)
    }

    #[setter]
    fn set_multipliers(&mut self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        set_multipliers(&self.groups, &mut self.multipliers, value)
            .map_err(|m| crate::py_err(value.py(), "PolicyError", m))
    }

    fn __repr__(&self) -> String {
        let m: Vec<String> = self
            .groups
            .iter()
            .zip(&self.multipliers)
            .map(|(g, m)| format!("{g:?}: {m}"))
            .collect();
        format!(
            "Plan(lr={}, multipliers={{{}}}, prox_mu={}, max_steps={:?}, batch_size={}, epochs={:?}, steps={:?})",
            self.lr,
            m.join(", "),
            self.prox_mu,
            self.max_steps,
            self.batch_size,
            self.epochs,
            self.steps
        )
    }
}

fn set_multipliers(
    groups: &[String],
    multipliers: &mut [f64],
    value: &Bound<'_, PyAny>,
) -> Result<(), String> {
    let d = value.cast::<PyDict>().map_err(|_| {
        format!("multipliers: expected a dict of parameter group → multiplier ({groups:?})")
    })?;
    for (k, v) in d.iter() {
        let key: String = k
            .extract()
            .map_err(|_| format!("multipliers: key {k}: expected a group name"))?;
        let Some(i) = groups.iter().position(|g| *g == key) else {
            return Err(format!(
                "multipliers[{key:?}]: the model has no such parameter group; expected one of {groups:?}"
            ));
        };
        let m: f64 = v
            .extract()
            .map_err(|_| format!("multipliers[{key:?}] = {v}: expected a number"))?;
        multipliers[i] = m;
    }
    Ok(())
}

impl Plan {
    fn from_rate_plan(p: &RatePlan, groups: &Arc<[String]>) -> Self {
        let (epochs, steps) = match p.work {
            fedpace_core::LocalWork::Epochs(e) => (Some(e), None),
            fedpace_core::LocalWork::Steps(s) => (None, Some(s)),
        };
        Self {
            lr: f64::from(p.base_lr),
            prox_mu: p.prox_mu,
            max_steps: p.max_steps,
            batch_size: p.batch_size,
            epochs,
            steps,
            multipliers: (0..groups.len())
                .map(|g| f64::from(p.group_multipliers.get(g).copied().unwrap_or(1.0)))
                .collect(),
            groups: groups.clone(),
        }
    }
}

/// A rate policy whose `plan` and `observe` are Python callables.
struct PyPolicy {
    name: String,
    describe: String,
    plan: Py<PyAny>,
    observe: Option<Py<PyAny>>,
    groups: Arc<[String]>,
    shared: Arc<Shared>,
}

/// `v` as an f32 that is finite and > 0 (a rate or multiplier), else the message.
fn positive_f32(v: f64, what: &str) -> Result<f32, String> {
    let f = v as f32;
    if v.is_finite() && f.is_finite() && f > 0.0 {
        Ok(f)
    } else {
        Err(format!(
            "{what} = {v}: expected a finite number > 0 that fits an f32"
        ))
    }
}

impl PyPolicy {
    /// The failure message's start: `policy "python": plan(round 3, client 7)`.
    fn at(&self, call: &str, round: u32, client: u64) -> String {
        format!(
            "policy {:?}: {call}(round {round}, client {client})",
            self.name
        )
    }

    /// Applies what `plan` returned to `base`.
    fn apply(&self, v: &Bound<'_, PyAny>, base: &RatePlan) -> Result<RatePlan, String> {
        let mut plan = base.clone();
        let set_mult = |plan: &mut RatePlan, m: &[f64]| -> Result<(), String> {
            if m.iter().all(|&x| x == 1.0) && base.group_multipliers.is_empty() {
                return Ok(());
            }
            plan.group_multipliers = m
                .iter()
                .zip(self.groups.iter())
                .map(|(&x, g)| {
                    let f = x as f32;
                    if x.is_finite() && f.is_finite() && x >= 0.0 {
                        Ok(f)
                    } else {
                        Err(format!(
                            "multipliers[{g:?}] = {x}: expected a finite number >= 0 that fits an f32"
                        ))
                    }
                })
                .collect::<Result<_, _>>()?;
            Ok(())
        };
        if v.is_none() {
            return Ok(plan);
        }
        if (v.is_instance_of::<PyFloat>() || v.is_instance_of::<PyInt>())
            && !v.is_instance_of::<pyo3::types::PyBool>()
        {
            let lr = v.extract::<f64>().map_err(|e| e.to_string())?;
            plan.base_lr = positive_f32(lr, "returned lr")?;
            return Ok(plan);
        }
        if let Ok(p) = v.cast::<Plan>() {
            let p = p.borrow();
            plan.base_lr = positive_f32(p.lr, "returned plan.lr")?;
            plan.prox_mu = p.prox_mu;
            plan.max_steps = p.max_steps;
            set_mult(&mut plan, &p.multipliers)?;
        } else if let Ok(d) = v.cast::<PyDict>() {
            let mut mult: Vec<f64> = (0..self.groups.len())
                .map(|g| f64::from(base.group_multipliers.get(g).copied().unwrap_or(1.0)))
                .collect();
            for (k, val) in d.iter() {
                let key: String = k.extract().unwrap_or_else(|_| k.to_string());
                let num = || -> Result<f64, String> {
                    val.extract::<f64>()
                        .map_err(|_| format!("returned {key} = {val}: expected a number"))
                };
                match key.as_str() {
                    "lr" => plan.base_lr = positive_f32(num()?, "returned lr")?,
                    "prox_mu" => plan.prox_mu = num()?,
                    "max_steps" => {
                        plan.max_steps = if val.is_none() {
                            None
                        } else {
                            Some(val.extract::<u32>().map_err(|_| {
                                format!("returned max_steps = {val}: expected a count >= 1 or None")
                            })?)
                        }
                    }
                    "multipliers" => set_multipliers(&self.groups, &mut mult, &val)
                        .map_err(|m| format!("returned {m}"))?,
                    other => {
                        return Err(format!(
                            "returned a dict with key {other:?}: expected lr, multipliers, prox_mu or max_steps"
                        ))
                    }
                }
            }
            set_mult(&mut plan, &mult)?;
        } else {
            let ty = v
                .get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default();
            return Err(format!(
                "returned {} ({ty}): expected a rate (a number), the Plan, a dict or None",
                v.repr().map(|r| r.to_string()).unwrap_or_default()
            ));
        }
        if !(plan.prox_mu.is_finite() && plan.prox_mu >= 0.0) {
            return Err(format!(
                "returned prox_mu = {}: expected a finite number >= 0",
                plan.prox_mu
            ));
        }
        if plan.max_steps == Some(0) {
            return Err("returned max_steps = 0: expected at least 1 (or None)".into());
        }
        Ok(plan)
    }
}

impl RatePolicy for PyPolicy {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn plan(
        &mut self,
        round: u32,
        client: &ClientInfo,
        base: &RatePlan,
    ) -> fedpace_core::Result<RatePlan> {
        if self.shared.failed() {
            return Err(Error::Backend(self.shared.message()));
        }
        let at = self.at("plan", round, client.id);
        Python::attach(|py| {
            let answer = Bound::new(py, Client::from(client)).and_then(|c| {
                let p = Bound::new(py, Plan::from_rate_plan(base, &self.groups))?;
                self.plan.bind(py).call1((round, c, p))
            });
            let (message, error) = match answer {
                Ok(v) => match self.apply(&v, base) {
                    Ok(plan) => return Ok(plan),
                    Err(m) => (format!("{at} {m}"), None),
                },
                Err(e) => (format!("{at}: {e}"), Some(e)),
            };
            self.shared.fail(Failure::Policy {
                message: message.clone(),
                error,
            });
            Err(Error::Backend(message))
        })
    }

    fn observe(&mut self, round: u32, client: &ClientInfo, report: &TrainReport) {
        let Some(observe) = &self.observe else { return };
        if self.shared.failed() {
            return;
        }
        Python::attach(|py| {
            let done = Bound::new(py, Client::from(client)).and_then(|c| {
                let r = Bound::new(py, Report::from(report))?;
                observe.bind(py).call1((round, c, r))
            });
            if let Err(e) = done {
                self.shared.fail(Failure::Policy {
                    message: format!("{}: {e}", self.at("observe", round, client.id)),
                    error: Some(e),
                });
            }
        });
    }
}

/// A TOML value as a Python value (the `[policy]` options a policy class is built with).
fn toml_to_py<'py>(py: Python<'py>, v: &toml::Value) -> PyResult<Bound<'py, PyAny>> {
    use pyo3::IntoPyObjectExt;
    Ok(match v {
        toml::Value::String(s) => s.into_bound_py_any(py)?,
        toml::Value::Integer(i) => i.into_bound_py_any(py)?,
        toml::Value::Float(f) => f.into_bound_py_any(py)?,
        toml::Value::Boolean(b) => b.into_bound_py_any(py)?,
        toml::Value::Datetime(d) => d.to_string().into_bound_py_any(py)?,
        toml::Value::Array(a) => {
            let items = a
                .iter()
                .map(|x| toml_to_py(py, x))
                .collect::<PyResult<Vec<_>>>()?;
            pyo3::types::PyList::new(py, items)?.into_any()
        }
        toml::Value::Table(t) => {
            let d = PyDict::new(py);
            for (k, x) in t {
                d.set_item(k, toml_to_py(py, x)?)?;
            }
            d.into_any()
        }
    })
}

/// The registry's builder for the Python policy `obj` registered as `name`: an instance
/// is used as it is (the `[policy]` table may hold only `name`); a class is instantiated
/// with the table's other keys as keyword arguments.
pub fn builder(
    name: String,
    obj: Py<PyAny>,
    shared: Arc<Shared>,
) -> impl Fn(&PolicyInput) -> fedpace_core::Result<Box<dyn RatePolicy>> + Send + Sync + 'static {
    move |input: &PolicyInput| {
        Python::attach(|py| {
            let fail = |message: String, error: Option<PyErr>| {
                shared.fail(Failure::Policy {
                    message: message.clone(),
                    error,
                });
                Err(Error::Backend(message))
            };
            let obj = obj.bind(py);
            let instance = if obj.is_instance_of::<PyType>() {
                let kwargs = PyDict::new(py);
                for (k, v) in &input.options {
                    let v = match toml_to_py(py, v) {
                        Ok(v) => v,
                        Err(e) => return fail(format!("policy.{k}: {e}"), Some(e)),
                    };
                    if let Err(e) = kwargs.set_item(k, v) {
                        return fail(format!("policy.{k}: {e}"), Some(e));
                    }
                }
                match obj.call((), Some(&kwargs)) {
                    Ok(i) => i,
                    Err(e) => {
                        return fail(
                            format!("policy {name:?}: creating {}: {e}", repr(obj)),
                            Some(e),
                        )
                    }
                }
            } else {
                if let Some(k) = input.options.keys().next() {
                    return Err(Error::invalid(
                        format!("policy.{k}"),
                        &input.options[k],
                        format!(
                            "no other keys: policy {name:?} is a Python object, configured in \
                             Python (register its class to take options from the config)"
                        ),
                    ));
                }
                obj.clone()
            };
            let method = |m: &str| -> Option<Py<PyAny>> {
                instance
                    .getattr(m)
                    .ok()
                    .filter(|f| f.is_callable())
                    .map(Bound::unbind)
            };
            let Some(plan) = method("plan") else {
                return Err(Error::invalid(
                    "policy",
                    repr(&instance),
                    format!("an object with a method plan(round, client, base) (policy {name:?})"),
                ));
            };
            let class = instance
                .get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default();
            Ok(Box::new(PyPolicy {
                describe: format!("{name} (Python {class})"),
                name: name.clone(),
                plan,
                observe: method("observe"),
                groups: input.groups.clone().into(),
                shared: shared.clone(),
            }) as Box<dyn RatePolicy>)
        })
    }
}

fn repr(v: &Bound<'_, PyAny>) -> String {
    v.repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// The cost of one policy call, Python against Rust (`scripts/python-policy-overhead.py`):
/// `calls` plans of fedpace's `by-data-size` (γ = −0.5, clamp [0.25, 4]) through the
/// Python object `policy` (as a run calls it: the GIL released between calls and taken
/// for each) and through the built-in Rust policy, alternating in blocks of 1,000, over a
/// pool of 100 clients with 1..=100 × 7 training samples. Returns (Python seconds, Rust
/// seconds, n̄ used, calls whose rates differ) — the Python policy must be built with that
/// n̄ (`policy` is a class taking it: `policy(mean_n)`).
#[pyfunction]
pub fn policy_overhead(
    py: Python<'_>,
    policy: Py<PyAny>,
    calls: u32,
) -> PyResult<(f64, f64, f64, u64)> {
    use fedpace_core::RatePlan;
    let pool: Vec<ClientInfo> = (0..100u64)
        .map(|i| ClientInfo::new(i, 7 * (i + 1), 3))
        .collect();
    let mean_n = pool.iter().map(|c| c.num_train as f64).sum::<f64>() / pool.len() as f64;
    let groups = vec!["body".to_string(), "head".to_string()];
    let err = |e: fedpace_core::Error| crate::py_err(py, "FedpaceError", e.to_string());
    let mut rust = fedpace_algos::PolicyConfig::ByDataSize {
        gamma: -0.5,
        min: 0.25,
        max: 4.0,
    }
    .build_for(&groups)
    .map_err(err)?;
    rust.start(&pool).map_err(err)?;
    let instance = policy.bind(py).call1((mean_n,))?.unbind();
    let shared = Arc::new(Shared::default());
    let build = builder("bench".into(), instance, shared.clone());
    let mut python = build(&PolicyInput {
        groups: groups.clone(),
        options: toml::Table::new(),
    })
    .map_err(err)?;
    let base = RatePlan {
        base_lr: 0.1,
        group_multipliers: vec![],
        schedule: Default::default(),
        work: fedpace_core::LocalWork::Epochs(1),
        max_steps: None,
        batch_size: 10,
        optimizer: Default::default(),
        state_mode: Default::default(),
        prox_mu: 0.0,
    };
    let (tp, tr, differ) = py.detach(|| {
        let (mut tp, mut tr, mut differ) = (0.0, 0.0, 0u64);
        let mut done = 0u32;
        while done < calls {
            let block = (calls - done).min(1000);
            let mut py_rates = Vec::with_capacity(block as usize);
            let t = std::time::Instant::now();
            for i in done..done + block {
                let c = &pool[i as usize % pool.len()];
                py_rates.push(python.plan(1, c, &base).map(|p| p.base_lr));
            }
            tp += t.elapsed().as_secs_f64();
            let t = std::time::Instant::now();
            for (k, i) in (done..done + block).enumerate() {
                let c = &pool[i as usize % pool.len()];
                let r = rust.plan(1, c, &base).map(|p| p.base_lr);
                differ += u64::from(r.ok() != py_rates[k].as_ref().ok().copied());
            }
            tr += t.elapsed().as_secs_f64();
            done += block;
        }
        (tp, tr, differ)
    });
    if let Some(crate::monitor::Failure::Policy { message, error }) = shared.take() {
        let e = crate::py_err(py, "PolicyError", message);
        e.set_cause(py, error);
        return Err(e);
    }
    Ok((tp, tr, mean_n, differ))
}
