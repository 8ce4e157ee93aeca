//! stub
use crate::{CsvConfig, Result};
use fedpace_core::data::DenseDataset;
/// stub
pub fn load(_c: &CsvConfig) -> Result<(DenseDataset, Option<DenseDataset>)> {
    Err(crate::Error::Partition("csv: not implemented yet".into()))
}
