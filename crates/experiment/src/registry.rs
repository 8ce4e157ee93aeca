//! Models and data of the user's own, by name (docs/library.md, "Your own model and
//! data"): a [`Registry`] maps names to model builders, federations and rate policies,
//! and an experiment parsed through it may say `[model] name = "my-model"`,
//! `[data] source = "my-data"` and `[policy] name = "my-policy"`. Everything else —
//! strategy, devices, evaluation, outputs — is the built-in code, unchanged.

use crate::config::ExperimentConfig;
use crate::{Error, Experiment, Result};
use fedpace_core::data::{ClientData, Dataset, DenseDataset, FederatedDataset};
use fedpace_core::{Model, RatePolicy};
use fedpace_data::{Federation, InputShape, PoolConfig};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// What a registered model is built for: the data's sample shape and classes, and the
/// other keys of the experiment's `[model]` table (besides `name`).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInput {
    /// Shape of one input sample.
    pub sample_shape: InputShape,
    /// Number of label classes (the model's outputs).
    pub num_classes: usize,
    /// The `[model]` table's other keys, for the builder to read (e.g. `hidden = 32`).
    pub options: toml::Table,
}

/// Builds one instance of a registered model (called once per training thread and for
/// the server's evaluation; every instance must compute the same function).
pub type ModelBuilder =
    Arc<dyn Fn(&ModelInput) -> fedpace_core::Result<Box<dyn Model>> + Send + Sync>;

/// What a registered rate policy is built for: the model's parameter-group labels (in
/// the order of [`fedpace_core::RatePlan::group_multipliers`]) and the other keys of the
/// experiment's `[policy]` table (besides `name`).
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyInput {
    /// Parameter-group labels of the model (after the experiment's `groups` rules).
    pub groups: Vec<String>,
    /// The `[policy]` table's other keys, for the builder to read.
    pub options: toml::Table,
}

/// Builds the rate policy of one run (called once when the experiment is prepared).
pub type PolicyBuilder =
    Arc<dyn Fn(&PolicyInput) -> fedpace_core::Result<Box<dyn RatePolicy>> + Send + Sync>;

/// Named models, data sets and rate policies of the user's own, for experiments parsed through it
/// ([`Registry::experiment`], [`Registry::load`], [`Registry::from_config`]).
///
/// A name may not be a built-in one (`mlp`, `mnist`, …): a registered name never
/// changes what an existing experiment file means.
#[derive(Clone, Default)]
pub struct Registry {
    models: BTreeMap<String, ModelBuilder>,
    data: BTreeMap<String, Federation>,
    policies: BTreeMap<String, PolicyBuilder>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("models", &self.models.keys().collect::<Vec<_>>())
            .field("data", &self.data.keys().collect::<Vec<_>>())
            .field("policies", &self.policies.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Checks a name to register: 1 to 64 characters of `a-z`, `0-9`, `-`, `_`, and not
/// `builtin` (the built-in with that name, if any).
fn check_name(kind: &str, name: &str, builtin: bool) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !ok {
        return Err(Error::Config(format!(
            "registering {kind} {name:?}: expected a name of 1 to 64 characters a-z, 0-9, '-', '_'"
        )));
    }
    if builtin {
        return Err(Error::Config(format!(
            "registering {kind} {name:?}: a built-in {kind} has this name; expected another name"
        )));
    }
    Ok(())
}

/// Whether deserialising `{ tag = name }` as `T` fails for another reason than an
/// unknown name (so `name` is a built-in variant).
fn is_builtin<T: serde::de::DeserializeOwned>(tag: &str, name: &str) -> bool {
    match serde_json::from_value::<T>(serde_json::json!({ tag: name })) {
        Ok(_) => true,
        Err(e) => !e.to_string().contains("unknown variant"),
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a model under `name`, usable as `[model] name = "<name>"`. `build`
    /// makes one instance for the data's shape ([`ModelInput`]); its errors are reported
    /// as `model: …`.
    pub fn with_model(
        mut self,
        name: &str,
        build: impl Fn(&ModelInput) -> fedpace_core::Result<Box<dyn Model>> + Send + Sync + 'static,
    ) -> Result<Self> {
        check_name(
            "model",
            name,
            is_builtin::<fedpace_nn::ModelConfig>("name", name),
        )?;
        self.models.insert(name.to_string(), Arc::new(build));
        Ok(self)
    }

    /// Registers a federation under `name`, usable as `[data] source = "<name>"` (with
    /// no other `[data]` keys: the clients are as given). [`federation_from_arrays`]
    /// builds one from arrays; any [`FederatedDataset`] works.
    pub fn with_data(mut self, name: &str, data: Federation) -> Result<Self> {
        check_name(
            "data set",
            name,
            is_builtin::<fedpace_data::DataConfig>("source", name),
        )?;
        self.data.insert(name.to_string(), data);
        Ok(self)
    }

    /// Registers a rate policy under `name`, usable as `[policy] name = "<name>"` (the
    /// table's other keys reach `build` as [`PolicyInput::options`]). `build` is called
    /// once per prepared experiment; its errors are reported as `policy "<name>": …`.
    /// Such a policy is refused with `[privacy]`: it sees every client's report in the
    /// clear.
    pub fn with_policy(
        mut self,
        name: &str,
        build: impl Fn(&PolicyInput) -> fedpace_core::Result<Box<dyn RatePolicy>>
            + Send
            + Sync
            + 'static,
    ) -> Result<Self> {
        check_name(
            "policy",
            name,
            is_builtin::<fedpace_algos::PolicyConfig>("name", name),
        )?;
        self.policies.insert(name.to_string(), Arc::new(build));
        Ok(self)
    }

    /// The registered model names.
    pub fn model_names(&self) -> impl Iterator<Item = &str> {
        self.models.keys().map(String::as_str)
    }

    /// The registered data set names.
    pub fn data_names(&self) -> impl Iterator<Item = &str> {
        self.data.keys().map(String::as_str)
    }

    /// The registered rate policy names.
    pub fn policy_names(&self) -> impl Iterator<Item = &str> {
        self.policies.keys().map(String::as_str)
    }

    pub(crate) fn policy(&self, name: &str) -> Option<&PolicyBuilder> {
        self.policies.get(name)
    }

    pub(crate) fn model(&self, name: &str) -> Option<&ModelBuilder> {
        self.models.get(name)
    }

    pub(crate) fn data(&self, name: &str) -> Option<&Federation> {
        self.data.get(name)
    }

    /// [`Experiment::from_toml_str`], where `[model] name` and `[data] source` may also
    /// name what is registered here.
    pub fn experiment(&self, text: &str, origin: &str, overrides: &[String]) -> Result<Experiment> {
        let config = ExperimentConfig::parse_in(text, origin, overrides, Some(self))?;
        Ok(Experiment::with_registry(config, self.clone()))
    }

    /// [`Experiment::from_path`] through this registry.
    pub fn load(&self, path: impl AsRef<Path>, overrides: &[String]) -> Result<Experiment> {
        let text = crate::config::read_config(path.as_ref())?;
        self.experiment(&text, &path.as_ref().display().to_string(), overrides)
    }

    /// [`Experiment::from_config`] through this registry: `config.registered` must name
    /// what is registered here.
    pub fn from_config(&self, config: ExperimentConfig) -> Result<Experiment> {
        config.validate().map_err(Error::Config)?;
        self.check(&config)?;
        Ok(Experiment::with_registry(config, self.clone()))
    }

    /// Errors when `config` names a registered model or data set this registry lacks.
    pub(crate) fn check(&self, config: &ExperimentConfig) -> Result<()> {
        if let Some((name, _)) = &config.registered.model {
            if self.model(name).is_none() {
                return Err(Error::Config(format!(
                    "model.name = {name:?}: not registered; expected one of {:?}",
                    self.models.keys().collect::<Vec<_>>()
                )));
            }
        }
        if let Some((name, _)) = &config.registered.policy {
            if self.policy(name).is_none() {
                return Err(Error::Config(format!(
                    "policy.name = {name:?}: not registered; expected one of {:?}",
                    self.policies.keys().collect::<Vec<_>>()
                )));
            }
        }
        if let Some(name) = &config.registered.data {
            if self.data(name).is_none() {
                return Err(Error::Config(format!(
                    "data.source = {name:?}: not registered; expected one of {:?}",
                    self.data.keys().collect::<Vec<_>>()
                )));
            }
        }
        Ok(())
    }
}

/// One client's data as arrays: features row-major (`samples × sample values`) and one
/// class label per sample, for training and for the client's own test split.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientArrays {
    /// Training features.
    pub train_x: Vec<f32>,
    /// Training labels.
    pub train_y: Vec<u32>,
    /// Test features (may be empty).
    pub test_x: Vec<f32>,
    /// Test labels (may be empty).
    pub test_y: Vec<u32>,
}

/// The clients of [`federation_from_arrays`].
struct ArrayClients {
    name: String,
    num_classes: usize,
    clients: Vec<ClientData>,
}

impl FederatedDataset for ArrayClients {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn num_clients(&self) -> usize {
        self.clients.len()
    }
    fn num_classes(&self) -> usize {
        self.num_classes
    }
    fn client(&self, id: usize) -> fedpace_core::Result<ClientData> {
        self.clients.get(id).cloned().ok_or_else(|| {
            fedpace_core::Error::invalid(
                "client",
                id,
                format!("an id below {}", self.clients.len()),
            )
        })
    }
}

/// A federation of dense samples of `sample_shape` from one [`ClientArrays`] per client,
/// with an optional test set the server holds (features, labels) — evaluated centrally
/// (`summary.json`'s `central`). Every array is checked: lengths against the sample
/// shape, labels below `num_classes`; an error names the client and the array.
pub fn federation_from_arrays(
    name: &str,
    sample_shape: Vec<usize>,
    num_classes: usize,
    clients: Vec<ClientArrays>,
    server_test: Option<(Vec<f32>, Vec<u32>)>,
) -> Result<Federation> {
    let bad = |m: String| Error::Setup(format!("data {name:?}: {m}"));
    if sample_shape.is_empty() || sample_shape.contains(&0) {
        return Err(bad(format!(
            "sample_shape = {sample_shape:?}: expected non-zero sizes"
        )));
    }
    if num_classes < 2 {
        return Err(bad(format!(
            "num_classes = {num_classes}: expected at least 2"
        )));
    }
    if clients.is_empty() {
        return Err(bad("no clients: expected at least one".into()));
    }
    let dense = |what: &str, x: Vec<f32>, y: Vec<u32>| -> Result<Arc<dyn Dataset>> {
        DenseDataset::new(x, sample_shape.clone(), y, num_classes)
            .map(|d| Arc::new(d) as Arc<dyn Dataset>)
            .map_err(|e| bad(format!("{what}: {e}")))
    };
    let clients = clients
        .into_iter()
        .enumerate()
        .map(|(k, c)| {
            Ok(ClientData {
                train: dense(&format!("client {k} train"), c.train_x, c.train_y)?,
                test: dense(&format!("client {k} test"), c.test_x, c.test_y)?,
                validation: None,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let global_test = server_test
        .map(|(x, y)| dense("server test", x, y))
        .transpose()?;
    let description = format!("{name}, {} clients (arrays)", clients.len());
    Ok(Federation {
        data: Arc::new(ArrayClients {
            name: name.to_string(),
            num_classes,
            clients,
        }),
        sample_shape: InputShape::Dense(sample_shape),
        num_classes,
        global_test,
        global_validation: None,
        description,
    })
}

/// A federation cut from one pooled data set of dense samples by one of the built-in
/// partitioners (`pool.partition`: iid, dirichlet, shards, labels, …; docs/datasets.md),
/// each client's share split into train and test by `pool.test_fraction`, exactly as a
/// pooled `[data]` source is (`fedpace_data::pooled::federate`). `x` holds the samples
/// row-major (`samples × sample values`), `y` one label below `num_classes` each;
/// `server_test` is an optional test set the server holds (evaluated centrally). The
/// partition is drawn from `seed` (`pool.seed` wins when set). An error names the data
/// set and the array or key.
#[allow(clippy::too_many_arguments)]
pub fn federation_from_pooled(
    name: &str,
    sample_shape: Vec<usize>,
    num_classes: usize,
    x: Vec<f32>,
    y: Vec<u32>,
    pool: &PoolConfig,
    seed: u64,
    server_test: Option<(Vec<f32>, Vec<u32>)>,
) -> Result<Federation> {
    let bad = |m: String| Error::Setup(format!("data {name:?}: {m}"));
    if sample_shape.is_empty() || sample_shape.contains(&0) {
        return Err(bad(format!(
            "sample_shape = {sample_shape:?}: expected non-zero sizes"
        )));
    }
    if num_classes < 2 {
        return Err(bad(format!(
            "num_classes = {num_classes}: expected at least 2"
        )));
    }
    if pool.validation_fraction.is_some_and(|f| f > 0.0) {
        return Err(bad(
            "validation_fraction: not supported for arrays; expected it left out".into(),
        ));
    }
    pool.validate(name, server_test.is_some())
        .map_err(|e| bad(e.to_string()))?;
    if y.len() < pool.num_clients {
        return Err(bad(format!(
            "{} samples for num_clients = {}: expected at least one sample per client",
            y.len(),
            pool.num_clients
        )));
    }
    let dense = |what: &str, x: Vec<f32>, y: Vec<u32>| -> Result<Arc<dyn Dataset>> {
        DenseDataset::new(x, sample_shape.clone(), y, num_classes)
            .map(|d| Arc::new(d) as Arc<dyn Dataset>)
            .map_err(|e| bad(format!("{what}: {e}")))
    };
    let train = dense("x, y", x, y)?;
    let test = server_test
        .map(|(x, y)| dense("server test", x, y))
        .transpose()?;
    fedpace_data::pooled::federate(name, train, test, sample_shape, pool, seed)
        .map_err(|e| bad(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_names_cannot_be_registered() {
        let e = Registry::new()
            .with_model("mlp", |_| unreachable!())
            .unwrap_err();
        assert!(
            e.to_string().contains("a built-in model has this name"),
            "{e}"
        );
        let fed = federation_from_arrays(
            "x",
            vec![1],
            2,
            vec![ClientArrays {
                train_x: vec![0.0],
                train_y: vec![1],
                ..Default::default()
            }],
            None,
        )
        .unwrap();
        let e = Registry::new().with_data("mnist", fed.clone()).unwrap_err();
        assert!(e.to_string().contains("built-in data set"), "{e}");
        let e = Registry::new().with_data("My Data", fed).unwrap_err();
        assert!(e.to_string().contains("expected a name"), "{e}");
    }

    #[test]
    fn arrays_of_the_wrong_length_or_label_name_the_client() {
        let c = |n: usize, label: u32| ClientArrays {
            train_x: vec![0.0; n],
            train_y: vec![label; 2],
            ..Default::default()
        };
        let e = federation_from_arrays("toy", vec![3], 2, vec![c(6, 0), c(5, 0)], None)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("data \"toy\": client 1 train:"), "{e}");
        let e = federation_from_arrays("toy", vec![3], 2, vec![c(6, 2)], None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("client 0 train") && e.contains("2"), "{e}");
        let e =
            federation_from_arrays("toy", vec![3], 2, vec![c(6, 0)], Some((vec![1.0], vec![0])))
                .unwrap_err()
                .to_string();
        assert!(e.contains("server test"), "{e}");
    }
}
