//! Integration tests of the SMB2 pipeline over a simulated transport: one test
//! binary (one link) for all of them.

mod harness;

mod happy;
mod signing;
mod encryption;
mod credits;
mod compound;
mod smb1;
mod reauth;
mod async_ops;
mod garbage;
mod sessions;
mod negotiate;
