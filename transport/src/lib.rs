//! SMB Direct (MS-SMBD) protocol core and transport framing.
//!
//! - [`wire`]: MS-SMBD packet codecs (negotiate request/response, data transfer message,
//!   buffer descriptor V1). Pure functions; typed errors; no panics on any input.
//! - [`smbd`]: the connection as a sans-I/O state machine, [`Connection`], in the client
//!   or server [`Role`]: negotiation, credits, fragmentation and reassembly, keepalive and
//!   timeouts, RDMA read/write planning. No sockets, no verbs, no clock.
//! - [`fabric`]: an in-memory RDMA fabric joining two connections, with fault injection,
//!   for tests and benchmarks.
//! - [`tcp`]: Direct TCP framing used by the SMB2 server (MS-SMB2 2.1).
//!
//! # Driving a connection
//!
//! A driver (the fabric here, a verbs backend in production) owns the queue pair. It
//! feeds completions in and executes the actions that come out, in order:
//!
//! ```
//! use std::time::Instant;
//! use smbdirect_transport::smbd::{Action, Config, Connection, Event, Role};
//!
//! let now = Instant::now();
//! let mut conn = Connection::new(Role::Server, Config::ksmbd(), now);
//! while let Some(action) = conn.poll_action() {
//!     match action {
//!         Action::PostReceive { len } => { /* ibv_post_recv of a `len`-byte buffer */ }
//!         Action::PostSend { slot, invalidate, .. } => {
//!             let _bytes = conn.send_bytes(slot); // IBV_WR_SEND (or SEND_WITH_INV)
//!             let _ = invalidate;
//!         }
//!         Action::PostRdma(_wr) => { /* IBV_WR_RDMA_READ / RDMA_WRITE */ }
//!         Action::SetTimer(_at) => { /* wake up then and call handle_timeout */ }
//!         Action::Disconnect(_reason) => { /* rdma_disconnect */ }
//!     }
//! }
//! // Later: conn.handle_recv(now, bytes), conn.handle_send_complete(now, slot, result),
//! // conn.handle_rdma_complete(now, wr_id, result), conn.handle_timeout(now);
//! // upper layer: conn.send(now, smb2_message), conn.rdma_read/rdma_write(...),
//! // and conn.poll_event() for Event::Connected / Message / RdmaDone / Disconnected.
//! assert!(conn.poll_event().is_none());
//! ```

#![deny(unsafe_code)]

pub mod fabric;
#[doc(hidden)]
pub mod fuzz;
pub mod smbd;
pub mod tcp;
pub mod wire;
#[cfg(feature = "verbs")]
#[allow(unsafe_code)]
pub mod verbs;

pub use smbd::{Action, Config, Connection, Event, Role};
