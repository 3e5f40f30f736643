//! The SMB2/3 server core: wire codecs, connection pipeline, sessions, trees,
//! opens, and the file system beneath each share.

pub mod asyncop;
pub mod auth;
pub mod config;
pub mod conn;
pub mod connpass;
pub mod credits;
pub mod crypto;
pub mod handlers;
pub mod identity;
pub mod iopool;
pub mod ipc;
pub mod kernel_oplock;
pub mod negotiate;
pub mod netif;
pub mod objects;
pub mod store;
pub mod transport;
pub mod transport_tcp;
pub mod transport_smbd;
pub mod rdma;
pub mod security;
pub mod vfs;
pub mod wire;
pub mod listener;
pub mod status;
pub mod supervisor;
pub mod worker;
pub mod workerproto;
/// Entry points of the fuzz targets (`server/fuzz`) and their corpus replay test.
pub mod fuzz;
