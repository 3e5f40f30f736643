//! One-shot throughput measurement, not a benchmark harness. Run with
//! `cargo test -p smbdirect-server --release --lib -- --ignored crypto_throughput --nocapture`.
//! Prints, per operation on 1 MiB, the mean rate over all rounds and the rate of the fastest
//! round (the latter is the better estimate on a machine shared with other work).

use std::time::Instant;

use super::super::*;

const MIB: usize = 1 << 20;
const ROUNDS: usize = 64;

/// Times `f` ROUNDS times; returns (mean MB/s, best-round MB/s).
fn measure(mut f: impl FnMut()) -> (f64, f64) {
    let mut total = 0.0;
    let mut best = f64::MAX;
    for _ in 0..ROUNDS {
        let t = Instant::now();
        f();
        let s = t.elapsed().as_secs_f64();
        total += s;
        best = best.min(s);
    }
    let mb = MIB as f64 / 1e6;
    (mb * ROUNDS as f64 / total, mb / best)
}

#[test]
#[ignore = "measurement; run in release with --ignored --nocapture"]
fn crypto_throughput() {
    let mut buf = vec![0u8; super::super::TRANSFORM_HEADER_LEN + MIB];
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    for c in [
        Cipher::Aes128Gcm,
        Cipher::Aes128Ccm,
        Cipher::Aes256Gcm,
        Cipher::Aes256Ccm,
    ] {
        let key = vec![7u8; c.key_len()];
        let sealer = Sealer::new(c, &key).expect("sealer");
        let opener = Opener::new(c, &key).expect("opener");
        // Alternate seal and open so every open sees a freshly sealed buffer.
        let mut seal_t = Vec::with_capacity(ROUNDS);
        let mut open_t = Vec::with_capacity(ROUNDS);
        for _ in 0..ROUNDS {
            let t = Instant::now();
            sealer.seal(1, &mut buf).expect("seal");
            seal_t.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            opener.open(&mut buf).expect("open");
            open_t.push(t.elapsed().as_secs_f64());
        }
        let mb = MIB as f64 / 1e6;
        let stats = |v: &[f64]| {
            let total: f64 = v.iter().sum();
            let best = v.iter().copied().fold(f64::MAX, f64::min);
            (mb * v.len() as f64 / total, mb / best)
        };
        let (sm, sb) = stats(&seal_t);
        let (om, ob) = stats(&open_t);
        eprintln!(
            "{c:?}: 1 MiB seal {sm:.0} MB/s (best round {sb:.0}), open {om:.0} MB/s (best round {ob:.0})"
        );
    }
    let mut msg = vec![0u8; MIB];
    for alg in [
        SigningAlgorithm::AesCmac,
        SigningAlgorithm::AesGmac,
        SigningAlgorithm::HmacSha256,
    ] {
        let signer = Signer::new(alg, &[9u8; 16]).expect("signer");
        let (sm, sb) = measure(|| signer.sign(&mut msg).expect("sign"));
        let (vm, vb) = measure(|| assert!(signer.verify(&mut msg)));
        eprintln!(
            "{alg:?}: 1 MiB sign {sm:.0} MB/s (best round {sb:.0}), verify {vm:.0} MB/s (best round {vb:.0})"
        );
    }
}
