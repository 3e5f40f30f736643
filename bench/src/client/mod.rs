//! A user-space SMB 3.1.1 client (issue 12): transport channels, and (to come) the
//! session layer on top of them.

pub mod channel;
/// A write/read/verify self-check over any RDMA channel (hand-built anonymous SMB2 until
/// the session layer lands).
pub mod rdma_check;
/// The SMB Direct channel over verbs (feature `verbs`).
#[cfg(feature = "verbs")]
pub mod rdma;
