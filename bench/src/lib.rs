//! Benchmarks: see `bench/*.sh` for side-by-side runs against peers.
