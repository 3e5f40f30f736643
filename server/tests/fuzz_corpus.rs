//! Replays the fuzz corpus (`fuzz/corpus/<target>/*`) through the same entry points the
//! cargo-fuzz targets use (`smbdirect_server::fuzz`), so the seeds and any saved crashers
//! run in every `cargo test` even where the fuzzer cannot; then pushes mutated seeds
//! through every target as a cheap stand-in for fuzzing. The `pipeline` runs go through
//! the same allocation cap as the fuzz target.

use std::path::Path;
use std::sync::Mutex;

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

/// Held by each test for its whole run: the pipeline's checks count the process's open
/// file descriptors and its allocations, which another test running meanwhile (reading
/// the corpus, say) would disturb.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn run(t: &str, data: &[u8]) {
    if t == "pipeline" {
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
    let _serial = serial();
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
    let _serial = serial();
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

/// The cap itself: an allocation over the limit is reported, one under it is not.
#[test]
fn allocation_cap_reports_oversized_allocations() {
    let _serial = serial();
    capped_alloc::arm(1 << 20);
    let small: Vec<u8> = std::hint::black_box(Vec::with_capacity(1000));
    assert_eq!(capped_alloc::disarm(), None);
    capped_alloc::arm(1 << 20);
    let big: Vec<u8> = std::hint::black_box(Vec::with_capacity((1 << 20) + 1));
    assert_eq!(capped_alloc::disarm(), Some((1 << 20) + 1));
    drop((small, big));
}
