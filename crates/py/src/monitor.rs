//! What the Python side learns while a run goes (progress after every round) and how it
//! stops one (Ctrl-C, an exception in the policy or the progress callback).

use fedpace_core::round::RoundRecord;
use fedpace_experiment::{Monitor, RunInfo};
use pyo3::prelude::*;
use std::sync::{Arc, Mutex, MutexGuard};

/// Why a run ended on the Python side.
pub enum Failure {
    /// The rate policy raised, or returned what fedpace cannot use: raised as
    /// `fedpace.PolicyError(message)`, its cause the policy's own exception.
    Policy {
        /// fedpace's one line (`policy "python": plan(round 3, client 7): ValueError: …`).
        message: String,
        /// The policy's exception, if it raised one.
        error: Option<PyErr>,
    },
    /// Python raised elsewhere (the progress callback, `KeyboardInterrupt`): re-raised.
    Python(PyErr),
}

/// State shared by the run, its policies and its monitor: the first failure.
#[derive(Default)]
pub struct Shared {
    failure: Mutex<Option<Failure>>,
    stop: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// Records `f` unless a failure is already recorded (the first one ended the run).
    pub fn fail(&self, f: Failure) {
        let mut slot = lock(&self.failure);
        if slot.is_none() {
            *slot = Some(f);
        }
    }

    /// Whether a failure was recorded.
    pub fn failed(&self) -> bool {
        lock(&self.failure).is_some()
    }

    /// The recorded failure's message, for a policy that is asked to plan after it.
    pub fn message(&self) -> String {
        match &*lock(&self.failure) {
            Some(Failure::Policy { message, .. }) => message.clone(),
            Some(Failure::Python(e)) => e.to_string(),
            None => String::new(),
        }
    }

    /// Takes the recorded failure.
    pub fn take(&self) -> Option<Failure> {
        lock(&self.failure).take()
    }
}

/// The run's [`Monitor`]: calls `progress(event, round, rounds, payload)` and turns
/// Python failures and signals into a stop at the next round boundary.
pub struct Progress {
    callback: Option<Py<PyAny>>,
    shared: Arc<Shared>,
    rounds: u32,
}

impl Progress {
    /// A monitor calling `callback` (none: silent).
    pub fn new(callback: Option<Py<PyAny>>, shared: Arc<Shared>) -> Self {
        Self {
            callback,
            shared,
            rounds: 0,
        }
    }

    fn call(&self, event: &str, round: u32, payload: &str) {
        let Some(cb) = &self.callback else { return };
        if self.shared.failed() {
            return;
        }
        Python::attach(|py| {
            if let Err(e) = cb.bind(py).call1((event, round, self.rounds, payload)) {
                self.shared.fail(Failure::Python(e));
            }
        });
    }
}

impl Monitor for Progress {
    fn started(&mut self, run: &RunInfo<'_>) {
        self.rounds = run.rounds;
        self.call("start", 0, run.description);
    }

    fn round_finished(&mut self, record: &RoundRecord, metrics: &serde_json::Value) {
        if self.callback.is_some() {
            self.call("round", record.round, &metrics.to_string());
        }
    }

    fn stop_requested(&self) -> Option<String> {
        let mut stop = lock(&self.shared.stop);
        if stop.is_none() {
            if self.shared.failed() {
                *stop = Some("an exception in Python".into());
            } else if let Err(e) = Python::attach(|py| py.check_signals()) {
                let name = Python::attach(|py| {
                    e.get_type(py)
                        .name()
                        .map(|n| n.to_string())
                        .unwrap_or_else(|_| "a signal".into())
                });
                self.shared.fail(Failure::Python(e));
                *stop = Some(name);
            }
        }
        stop.clone()
    }
}
