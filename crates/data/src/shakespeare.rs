//! stub
use crate::Result;
use fedpace_core::data::{ClientData, FederatedDataset};
/// Window length.
pub const SEQ_LEN: usize = 80;
/// Vocabulary.
pub const VOCAB: &str =
    "\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}";
/// stub
pub struct Shakespeare;
impl Shakespeare {
    /// stub
    pub fn load_dir(_d: &std::path::Path, _tf: f64, _m: Option<usize>) -> Result<Self> {
        Err(crate::Error::Partition(
            "shakespeare: not implemented yet".into(),
        ))
    }
}
impl FederatedDataset for Shakespeare {
    fn name(&self) -> String {
        String::new()
    }
    fn num_clients(&self) -> usize {
        0
    }
    fn num_classes(&self) -> usize {
        80
    }
    fn client(&self, _id: usize) -> fedpace_core::Result<ClientData> {
        Err(fedpace_core::Error::Backend("not implemented".into()))
    }
}
