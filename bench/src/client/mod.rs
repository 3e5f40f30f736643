//! A user-space SMB 3.1.1 client (issue 12): transport channels, and (to come) the
//! session layer on top of them.

pub mod channel;
// The SMB Direct channel (`rdma*.rs`, feature `verbs`) is added here by its own commit:
// #[cfg(feature = "verbs")] pub mod rdma;
