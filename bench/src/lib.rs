//! Benchmarks: see `bench/*.sh` for side-by-side runs against peers, and the
//! `smbdirect-bench` binary built on the SMB client in [`client`] and the engine in [`bench`].

#![forbid(unsafe_code)]

pub mod bench;
pub mod chart;
pub mod client;
