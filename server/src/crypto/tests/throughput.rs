//! One-shot throughput measurement, not a benchmark harness. Run with
//! `cargo test -p smbdirect-server --release --lib -- --ignored crypto_throughput --nocapture`.

use std::time::Instant;

use super::super::*;

const MIB: usize = 1 << 20;
const ROUNDS: usize = 64;

fn rate(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / secs / 1e6
}

#[test]
#[ignore = "measurement; run in release with --ignored --nocapture"]
fn crypto_throughput() {
    let mut buf = vec![0u8; super::super::TRANSFORM_HEADER_LEN + MIB];
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i * 31) as u8;
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
        let mut seal_s = 0.0;
        let mut open_s = 0.0;
        for _ in 0..ROUNDS {
            let t = Instant::now();
            sealer.seal(1, &mut buf).expect("seal");
            seal_s += t.elapsed().as_secs_f64();
            let t = Instant::now();
            opener.open(&mut buf).expect("open");
            open_s += t.elapsed().as_secs_f64();
        }
        eprintln!(
            "{c:?}: 1 MiB seal {:.0} MB/s, open {:.0} MB/s",
            rate(ROUNDS * MIB, seal_s),
            rate(ROUNDS * MIB, open_s)
        );
    }
    let mut msg = vec![0u8; MIB];
    for alg in [
        SigningAlgorithm::AesCmac,
        SigningAlgorithm::AesGmac,
        SigningAlgorithm::HmacSha256,
    ] {
        let signer = Signer::new(alg, &[9u8; 16]).expect("signer");
        let t = Instant::now();
        for _ in 0..ROUNDS {
            signer.sign(&mut msg).expect("sign");
        }
        let sign_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for _ in 0..ROUNDS {
            assert!(signer.verify(&mut msg));
        }
        let verify_s = t.elapsed().as_secs_f64();
        eprintln!(
            "{alg:?}: 1 MiB sign {:.0} MB/s, verify {:.0} MB/s",
            rate(ROUNDS * MIB, sign_s),
            rate(ROUNDS * MIB, verify_s)
        );
    }
}
