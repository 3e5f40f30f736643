//! End-to-end tests live in `tests/` (Rust) and `tests/peers/` (scripts driving real clients).
