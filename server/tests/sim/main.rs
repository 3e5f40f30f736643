//! Integration tests of the SMB2 pipeline over a simulated transport: one test
//! binary (one link) for all of them.
//!
//! `harness` drives `smbdirect_server::conn::Connection` directly: `Client::new(&server())`
//! makes a connection whose `MessageSink` collects what the server sends. The client
//! builds requests itself (`build`, `*_body` helpers, `chain` for compounds), sends them
//! with `raw` (as is) or `send` (signed/encrypted as the session requires) and gets the
//! responses decrypted and split (`Resp`); `call` expects exactly one response and checks
//! its signature or encryption. `logon`/`connected` run NEGOTIATE 3.1.1, SESSION_SETUP
//! (SPNEGO/NTLM via sspi, keys via `smbdirect_server::crypto`) and TREE_CONNECT.
//! Async final responses are awaited with `next_async(timeout)`.
//! Tests marked `#[ignore = "bug: ..."]` describe server bugs found here.

mod harness;

mod happy;
mod signing;
mod encryption;
mod credits;
mod compound;
mod smb1;
mod reauth;
mod async_ops;
mod notify;
mod garbage;
mod ioctl;
mod sessions;
mod negotiate;
mod hostile;
mod caps;
mod smbd;
mod leases;
mod durable;
mod eas;
mod multichannel;
mod workers;
mod inflight;
mod bindroute;
mod rdmapass;
