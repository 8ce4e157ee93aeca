//! stub
use crate::Result;
use std::path::Path;
/// stub
pub struct DatasetInfo;
/// stub
pub fn catalog(_d: &Path) -> Vec<DatasetInfo> {
    vec![]
}
/// stub
pub fn fetch(_n: &str, _d: &Path) -> Result<()> {
    Ok(())
}
