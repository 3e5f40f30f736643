//! Tests of the acceptor: MS-NLMP 4.2 vectors; live exchanges with the independent `sspi`
//! client; exchanges recorded from pyspnego and from Samba's client code; failure cases and
//! no-panic property tests.

mod exchange;
mod garbage;
mod pyspnego;
mod samba;
mod vectors;
