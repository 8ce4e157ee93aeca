//! What the two sides of a real federation build from the experiment file
//! (docs/network.md, "Clients bring their own data").
//!
//! - The **server** ([`Experiment::prepare_server`]) runs the config's strategy and
//!   policy on the pool its clients described when they registered. With an `[input]`
//!   table it holds no data at all: the model is built from `[input]` and there is no
//!   central evaluation unless it is given a test set of its own ([`server_test_set`],
//!   `fedpace server --test-data`). Without one it reads the data
//!   set of `[data]` for the model's input and, when the source holds a test set out,
//!   for the central evaluation; clients are still whoever registered.
//! - A **client with its own data** ([`own_client`]) reads its file, splits it as
//!   `[data]` says (test and validation fractions, seed: [`fedpace_data::own`]), builds
//!   the model of `[model]` for `[input]`, and describes itself ([`ClientInfo`]: sizes,
//!   the device class it was given, the label histogram when `client.share` lets it).

use crate::build::Prepared;
use crate::config::ExperimentConfig;
use crate::{Error, Experiment, Result};
use fedpace_algos::StandardClient;
use fedpace_core::data::{ClientData, FederatedDataset};
use fedpace_core::{ClientFactory, ClientId, ClientInfo, ClientPool, LabelHistogram, Payload};
use fedpace_data::{Federation, InputShape, OwnData};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// `[input]`: the model's input and number of classes, stated in the file so that a
/// server without data and clients with their own build the same model.
///
/// ```toml
/// [input]
/// sample_shape = [1, 28, 28]   # dense samples; or seq_len and vocab for token windows
/// num_classes = 10
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputConfig {
    /// Shape of one dense sample, e.g. `[60]` or `[1, 28, 28]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_shape: Option<Vec<usize>>,
    /// Token windows: characters per window (with `vocab`; for `char-lstm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq_len: Option<usize>,
    /// Token windows: vocabulary size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vocab: Option<usize>,
    /// Number of classes (the model's outputs); labels are `0..num_classes`.
    pub num_classes: usize,
}

/// The most classes `[input]` may declare (as the CSV and NumPy readers allow).
pub const MAX_CLASSES: usize = fedpace_data::csv::MAX_CLASSES;

impl InputConfig {
    /// Range checks; the message names the key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.num_classes < 2 || self.num_classes > MAX_CLASSES {
            return Err(format!(
                "input.num_classes = {}: expected 2 to {MAX_CLASSES}",
                self.num_classes
            ));
        }
        match (&self.sample_shape, self.seq_len, self.vocab) {
            (Some(s), None, None) => {
                let values = s
                    .iter()
                    .try_fold(1u128, |a, &d| a.checked_mul(d as u128))
                    .unwrap_or(u128::MAX);
                if s.is_empty() || s.contains(&0) || values > 1 << 28 {
                    return Err(format!(
                        "input.sample_shape = {s:?}: expected 1 to 3 positive dimensions of at \
                         most 2^28 values in all"
                    ));
                }
                if s.len() > 3 {
                    return Err(format!(
                        "input.sample_shape = {s:?}: expected 1 to 3 dimensions"
                    ));
                }
                Ok(())
            }
            (None, Some(l), Some(v)) if l > 0 && v > 0 && l <= 1 << 16 && v <= 1 << 16 => Ok(()),
            (None, Some(l), Some(v)) => Err(format!(
                "input.seq_len = {l}, input.vocab = {v}: expected 1 to 65536 each"
            )),
            _ => Err(
                "input: expected either sample_shape (dense samples) or seq_len and vocab \
                 (token windows)"
                    .into(),
            ),
        }
    }

    /// The input shape.
    pub fn shape(&self) -> InputShape {
        match (&self.sample_shape, self.seq_len, self.vocab) {
            (Some(s), _, _) => InputShape::Dense(s.clone()),
            (None, Some(seq_len), Some(vocab)) => InputShape::Tokens { seq_len, vocab },
            _ => InputShape::Dense(Vec::new()),
        }
    }
}

/// A federation without clients: what a server without data knows.
struct NoData {
    classes: usize,
}

impl FederatedDataset for NoData {
    fn name(&self) -> String {
        "clients' own data".into()
    }
    fn num_clients(&self) -> usize {
        0
    }
    fn num_classes(&self) -> usize {
        self.classes
    }
    fn client(&self, id: usize) -> fedpace_core::Result<ClientData> {
        Err(fedpace_core::Error::invalid(
            "client",
            id,
            "a client of this process (the server holds no client's data)",
        ))
    }
}

/// The federation of a server that holds no data.
pub(crate) fn no_data(input: &InputConfig) -> Federation {
    Federation {
        data: Arc::new(NoData {
            classes: input.num_classes,
        }),
        sample_shape: input.shape(),
        num_classes: input.num_classes,
        global_test: None,
        global_validation: None,
        description: format!(
            "clients' own data ([input] {}, {} classes)",
            describe(&input.shape()),
            input.num_classes
        ),
    }
}

fn describe(s: &InputShape) -> String {
    match s {
        InputShape::Dense(d) => format!("{d:?}"),
        InputShape::Tokens { seq_len, vocab } => format!("{seq_len} tokens of {vocab}"),
    }
}

/// Checks data against `[input]`: the same sample shape, and no more classes.
pub(crate) fn check_data(input: &InputConfig, fed: &Federation, what: &str) -> Result<()> {
    if fed.sample_shape != input.shape() {
        return Err(Error::Setup(format!(
            "{what}: samples of shape {}; [input] says {}",
            describe(&fed.sample_shape),
            describe(&input.shape())
        )));
    }
    if fed.num_classes > input.num_classes {
        return Err(Error::Setup(format!(
            "{what}: {} classes; [input] num_classes = {}",
            fed.num_classes, input.num_classes
        )));
    }
    Ok(())
}

impl Experiment {
    /// The experiment as the server of a real federation runs it: the strategy and
    /// policy of the file on `pool`, the clients as they described themselves at
    /// registration (see the module doc for the data). The [`Prepared`]'s own grid is
    /// not used: run it with [`Prepared::run_on`] on the network grid.
    pub fn prepare_server(&self, pool: Arc<dyn ClientPool>) -> Result<Prepared> {
        crate::build::prepare_with(&self.config, self.registry.as_ref(), Some(pool))
    }
}

/// The model of `[model]` for `[input]`, and its encoded size in bytes.
fn input_model(
    cfg: &ExperimentConfig,
    input: &InputConfig,
) -> Result<(fedpace_core::ModelFactory, usize)> {
    let nn_input = match input.shape() {
        InputShape::Dense(s) => fedpace_nn::InputShape::Dense(s),
        InputShape::Tokens { seq_len, vocab } => fedpace_nn::InputShape::Tokens { seq_len, vocab },
    };
    let models = fedpace_nn::factory_with_grain(
        &cfg.model,
        &nn_input,
        input.num_classes,
        cfg.client_threads,
    )
    .map_err(|e| Error::Setup(format!("model: {e}")))?;
    let model = models().map_err(|e| Error::Setup(format!("model: {e}")))?;
    let spec = Arc::new(
        model
            .spec()
            .regroup(&cfg.groups)
            .map_err(|e| Error::Setup(format!("groups: {e}")))?,
    );
    let bytes = fedpace_core::codec::encode_params(&fedpace_params::ParamTree::zeros(spec)).len();
    Ok((models, bytes))
}

/// Encoded bytes of the model `[model]` and `[input]` describe (`None` without
/// `[input]`): what a server without data sizes its message limits by.
pub fn input_model_bytes(cfg: &ExperimentConfig) -> Result<Option<usize>> {
    cfg.input
        .as_ref()
        .map(|input| input_model(cfg, input).map(|m| m.1))
        .transpose()
}

/// A test set of the server's own (`fedpace server --test-data`): every sample of
/// `own`, read as a client's own data is (the format keys of `[data]`), checked against
/// `[input]` (sample shape, labels below `num_classes`). Needs `[input]`. Errors name the
/// file or the flag, before the server listens.
pub fn server_test_set(
    cfg: &ExperimentConfig,
    own: &OwnData,
) -> Result<Arc<dyn fedpace_core::data::Dataset>> {
    let input = cfg.input.as_ref().ok_or_else(|| {
        Error::Config(format!(
            "--test-data {}: the experiment file has no [input] table; expected [input] with \
             sample_shape (or seq_len and vocab) and num_classes (a server given a test set \
             holds no other data; docs/network.md)",
            own.path.display()
        ))
    })?;
    let (set, shape) = fedpace_data::own_test_set(own, &cfg.data, input.num_classes, cfg.seed)
        .map_err(|e| {
            // The reader names the client's flags; the server's are --test-….
            let e = e.to_string();
            let e = ["--labels", "--role", "--format"]
                .iter()
                .fold(e, |e, f| e.replace(f, &format!("--test-{}", &f[2..])));
            Error::Setup(format!("--test-data: {e}"))
        })?;
    if shape != input.shape() {
        return Err(Error::Setup(format!(
            "--test-data {}: samples of shape {}; [input] says {}",
            own.path.display(),
            describe(&shape),
            describe(&input.shape())
        )));
    }
    Ok(set)
}

impl Prepared {
    /// The server's central evaluation on `test` (from [`server_test_set`]): the model of
    /// `[model]` for `[input]`, evaluated as a simulation evaluates its held-out set.
    pub fn with_test_set(self, test: Arc<dyn fedpace_core::data::Dataset>) -> Result<Self> {
        let input = self.config.input.as_ref().ok_or_else(|| {
            Error::Config("--test-data: the experiment file has no [input] table".into())
        })?;
        let (models, _) = input_model(&self.config, input)?;
        let held = fedpace_sim::HeldOut::new(test, models, self.threads())?;
        Ok(self.with_central(Some(Box::new(held))))
    }
}

/// One client with its own data, ready to serve (see [`own_client`]).
pub struct OwnClient {
    /// Makes the client (for its id only).
    pub factory: ClientFactory,
    /// What it reports about itself at registration.
    pub info: ClientInfo,
    /// Encoded bytes of the model (for the message limits).
    pub model_bytes: usize,
    /// One line: the data and its splits.
    pub description: String,
}

/// Client `id` of the federation `cfg` describes, with the data of `own`, of device
/// class `device` (see the module doc). Errors name the file or the key.
pub fn own_client(
    cfg: &ExperimentConfig,
    id: ClientId,
    own: &OwnData,
    device: Option<String>,
) -> Result<OwnClient> {
    cfg.validate().map_err(Error::Config)?;
    let input = cfg.input.as_ref().ok_or_else(|| {
        Error::Config(
            "--data: the experiment file has no [input] table; expected [input] with \
             sample_shape (or seq_len and vocab) and num_classes: the model's input, which \
             the server and every client must agree on (docs/network.md)"
                .into(),
        )
    })?;
    let k = usize::try_from(id)
        .ok()
        .filter(|&k| k < 10_000_000)
        .ok_or_else(|| Error::Config(format!("--id = {id}: expected an id below 10000000")))?;
    let fed = fedpace_data::own_federation(own, &cfg.data, k, input.num_classes, cfg.seed)
        .map_err(|e| Error::Setup(e.to_string()))?;
    check_data(input, &fed, &own.path.display().to_string())?;
    let (models, model_bytes) = input_model(cfg, input)?;
    let data = fed.data.clone();
    let mine = data
        .client(k)
        .map_err(|e| Error::Setup(format!("{}: {e}", own.path.display())))?;
    let mut info = ClientInfo::new(id, mine.train.len() as u64, mine.test.len() as u64);
    info.device = device;
    if cfg.client.share.iter().any(|s| s == LabelHistogram::NAME) {
        let mut h = mine.train.label_histogram();
        h.resize(input.num_classes, 0);
        info.metadata.insert(LabelHistogram(h));
    }
    let description = format!(
        "client {id}: {} — {} training, {} validation, {} test samples",
        own.path.display(),
        mine.train.len(),
        mine.validation.as_ref().map_or(0, |v| v.len()),
        mine.test.len()
    );
    let factory: ClientFactory = Arc::new(move |cid| {
        if cid != id {
            return Err(fedpace_core::Error::invalid(
                "client",
                cid,
                format!("{id}, the one client of this process"),
            ));
        }
        let d = data.client(k)?;
        Ok(Box::new(StandardClient::new(cid, models()?, d)) as Box<dyn fedpace_core::Client>)
    });
    Ok(OwnClient {
        factory,
        info,
        model_bytes,
        description,
    })
}
