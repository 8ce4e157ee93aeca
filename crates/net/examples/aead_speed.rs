//! The TLS 1.3 AEADs side by side in one process: ring sealing 16 KB records (TLS's
//! largest) with AES-128-GCM, AES-256-GCM and ChaCha20-Poly1305, best of 5 passes of
//! 64 MB each. The figures behind the server's cipher preference (docs/network.md, "TLS").
//!
//!     cargo run --release -p fedpace-net --example aead_speed

use ring::aead::{
    Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM, CHACHA20_POLY1305,
};
use std::time::Instant;

fn main() {
    const RECORD: usize = 16 * 1024;
    const RECORDS: u32 = 4096;
    println!(
        "sealing {RECORDS} records of {RECORD} bytes, best of 5, load average {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    for (name, alg) in [
        ("AES-128-GCM", &AES_128_GCM),
        ("AES-256-GCM", &AES_256_GCM),
        ("ChaCha20-Poly1305", &CHACHA20_POLY1305),
    ] {
        let key = LessSafeKey::new(UnboundKey::new(alg, &vec![7u8; alg.key_len()]).unwrap());
        let mut record = vec![1u8; RECORD];
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            for i in 0..RECORDS {
                let mut nonce = [0u8; 12];
                nonce[..4].copy_from_slice(&i.to_le_bytes());
                let tag = key
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::empty(),
                        &mut record,
                    )
                    .unwrap();
                let _ = std::hint::black_box(tag);
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        let gbs = f64::from(RECORDS) * RECORD as f64 / best / 1e9;
        println!("{name:<18} {gbs:6.2} GB/s");
    }
}
