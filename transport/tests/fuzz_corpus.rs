//! Replays the fuzz corpus (`fuzz/corpus/<target>/*`) through the same entry points the
//! cargo-fuzz targets use, so the seeds and any saved crashers run in every `cargo test`
//! even where the nightly-only fuzzer cannot.

use std::path::Path;

use smbdirect_transport::fuzz;

#[test]
fn replay_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut n = 0;
    for t in fuzz::TARGETS {
        let dir = root.join(t);
        let Ok(rd) = std::fs::read_dir(&dir) else { panic!("missing corpus {}", dir.display()) };
        let mut here = 0;
        for e in rd.flatten() {
            let data = std::fs::read(e.path()).unwrap();
            assert!(fuzz::run(t, &data));
            here += 1;
        }
        assert!(here > 0, "empty corpus for {t}");
        n += here;
    }
    assert!(n >= 10);
}

#[test]
fn random_inputs_through_every_target() {
    // A cheap stand-in for fuzzing on stable: many pseudo-random inputs, with a bias
    // towards valid headers so deeper code is reached.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let seeds: Vec<Vec<u8>> = fuzz::TARGETS
        .iter()
        .flat_map(|t| {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(t);
            std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| std::fs::read(e.path()).unwrap())
        })
        .collect();
    for i in 0..20_000 {
        let base = &seeds[i % seeds.len()];
        let mut d = base.clone();
        for _ in 0..(next() % 8) {
            if d.is_empty() {
                break;
            }
            let p = (next() as usize) % d.len();
            d[p] = next() as u8;
        }
        if next() % 4 == 0 {
            let n = (next() as usize) % (d.len() + 1);
            d.truncate(n);
        }
        for t in fuzz::TARGETS {
            fuzz::run(t, &d);
        }
    }
}
