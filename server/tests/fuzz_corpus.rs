//! Replays the fuzz corpus (`fuzz/corpus/<target>/*`) through the same entry points the
//! cargo-fuzz targets use (`smbdirect_server::fuzz`), so the seeds and any saved crashers
//! run in every `cargo test` even where the fuzzer cannot; then pushes mutated seeds
//! through every target as a cheap stand-in for fuzzing. The `pipeline` runs go through
//! the same allocation cap as the fuzz target.

use std::path::Path;

use smbdirect_server::fuzz;

#[path = "../fuzz/fuzz_targets/capped_alloc.rs"]
mod capped_alloc;

#[global_allocator]
static ALLOC: capped_alloc::CappedAlloc = capped_alloc::CappedAlloc;

fn corpus(t: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(t);
    let Ok(rd) = std::fs::read_dir(&dir) else { panic!("missing corpus {}", dir.display()) };
    let mut v: Vec<_> = rd.flatten().map(|e| e.path()).collect();
    v.sort();
    v.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

fn run(t: &str, data: &[u8]) {
    if t == "pipeline" {
        // Only one pipeline runs at a time (fuzz::pipeline serializes them), so the cap
        // is armed around this run alone; other tests' allocations are small.
        capped_alloc::arm(fuzz::ALLOC_LIMIT);
        fuzz::pipeline(data);
        if let Some(size) = capped_alloc::disarm() {
            panic!("pipeline allocated {size} bytes at once, over the limit of {}", fuzz::ALLOC_LIMIT);
        }
    } else {
        assert!(fuzz::run(t, data));
    }
}

#[test]
fn replay_corpus() {
    let mut n = 0;
    for t in fuzz::TARGETS {
        let seeds = corpus(t);
        assert!(!seeds.is_empty(), "empty corpus for {t}");
        for s in &seeds {
            run(t, s);
        }
        n += seeds.len();
    }
    assert!(n >= 100, "only {n} seeds in all");
}

/// Mutated seeds through every target (the pipeline gets fewer: each input logs on).
#[test]
fn mutated_seeds_through_every_target() {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for t in fuzz::TARGETS {
        let seeds = corpus(t);
        let rounds = if t == "pipeline" { 150 } else { 2_000 };
        for i in 0..rounds {
            let mut d = seeds[i % seeds.len()].clone();
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
            run(t, &d);
        }
    }
}
