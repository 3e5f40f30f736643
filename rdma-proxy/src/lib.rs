//! The RDMA proxy's shared library: what the proxy process and the SMB server
//! (worker) process both speak. See RDMA-DESIGN.md.
//!
//! - [`frame`]: the datagram framing (header, MORE-flag splitting, bounded
//!   reassembly) under [`proto`] and the SMB server's worker protocol.
//! - [`proto`]: the frames on the control and channel sockets, encode/decode
//!   pairs. Pure code.
//! - [`fdpass`]: one frame at a time over SOCK_SEQPACKET with an SCM_RIGHTS
//!   fd (close-on-exec on receipt).
//! - [`pool`]: the sealed memfd pool mapped by both processes, and the
//!   server's slot allocator.
//! - [`launch`]: the proxy's command line and exit statuses, shared by the
//!   server that execs it and the proxy binary.
//! - `driver` (feature `verbs`): the proxy's event loop (rdma_cm, one SMB Direct
//!   core per queue pair, the channel sockets); the `rdma-proxy` binary runs it.
//! - [`smb2peek`]: the ClientGUID of a channel's first NEGOTIATE.
//!
//! # Unsafe code
//! `unsafe` is denied in this crate except in [`launch::inherited_fd`] (taking
//! over a descriptor inherited across exec) and in [`pool`] (mmap/munmap and the
//! slot views of the shared mapping), where every block carries a
//! `// SAFETY:` comment. fd passing goes through rustix's safe
//! sendmsg/recvmsg and needs none.

#![deny(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

#[cfg(feature = "verbs")]
pub mod driver;
pub mod fdpass;
pub mod frame;
pub mod launch;
#[allow(unsafe_code)]
pub mod pool;
pub mod proto;
pub mod smb2peek;
