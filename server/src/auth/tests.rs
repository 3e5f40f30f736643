//! Tests of the acceptor: MS-NLMP 4.2 vectors, exchanges driven by the independent `sspi`
//! client, failure cases and a no-panic property test.

mod exchange;
mod garbage;
mod pyspnego;
mod vectors;
