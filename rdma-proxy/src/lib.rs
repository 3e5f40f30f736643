//! The RDMA proxy: filled in by a later issue (verbs backend and channel hand-off).
