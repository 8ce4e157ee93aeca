//! A seeded synthetic character stream in the shape of the Shakespeare data, for the
//! char-LSTM's speed figures: `fedpace bench --workload lstm` (bench_training.rs) and the
//! `lstm_fresh` example, which includes this file by path (the cli crate has no library).

use fedpace_core::{Batch, Dataset, Inputs};

/// A seeded stream of character ids below `vocab`, as 80-character windows whose
/// label is the next character (the shape of the Shakespeare data).
pub struct SyntheticText {
    text: Vec<u32>,
    seq_len: usize,
    vocab: usize,
}

impl SyntheticText {
    /// `len` seeded characters below `vocab`, windows of `seq_len`.
    pub fn new(len: usize, seq_len: usize, vocab: usize, seed: u64) -> Self {
        let mut s = seed.wrapping_mul(6364136223846793005) | 1;
        let text = (0..len)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 33) % vocab as u64) as u32
            })
            .collect();
        Self {
            text,
            seq_len,
            vocab,
        }
    }
}

impl Dataset for SyntheticText {
    fn len(&self) -> usize {
        self.text.len() - self.seq_len
    }
    fn num_classes(&self) -> usize {
        self.vocab
    }
    fn label(&self, i: usize) -> u32 {
        self.text[i + self.seq_len]
    }
    fn batch(&self, indices: &[usize]) -> Batch {
        let mut data = Vec::with_capacity(indices.len() * self.seq_len);
        for &i in indices {
            data.extend_from_slice(&self.text[i..i + self.seq_len]);
        }
        Batch {
            inputs: Inputs::Tokens {
                data,
                seq_len: self.seq_len,
            },
            labels: indices.iter().map(|&i| self.label(i)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_text_windows_have_next_character_labels() {
        let d = SyntheticText::new(100, 80, 80, 1);
        assert_eq!(d.len(), 20);
        let b = d.batch(&[0, 19]);
        assert_eq!(b.labels, vec![d.text[80], d.text[99]]);
        assert!(d.text.iter().all(|&c| c < 80));
    }
}
