//! A user-space SMB 3.1.1 client (issue 12).
//!
//! - [`channel`]: one transport connection (Direct TCP here; SMB Direct in `rdma*.rs`).
//! - [`conn`]: many requests in flight on one channel: credits, message ids, signing and
//!   sealing, a receiver thread routing responses by MessageId.
//! - [`session`]: NEGOTIATE, NTLMv2 SESSION_SETUP, channel binding, trees, opens, I/O.
//! - [`msg`]: request builders and response parsers; [`ntlm`]: NTLMv2 in SPNEGO.
//!
//! Wire helpers, crypto (signing, KDF, preauth, transform) and NTLM primitives come from the
//! server crate's public `wire`, `crypto` and `auth` modules; nothing else of the server.

pub mod channel;
pub mod conn;
pub mod error;
pub mod msg;
pub mod ntlm;
pub mod session;

pub use channel::{Channel, ChannelError, TcpChannel};
pub use conn::{CompletionQueue, Conn, Pending, Request, Response};
pub use error::ClientError;
pub use session::{ClientOptions, DataChannel, File, Protection, Session, Tree};

/// The SMB Direct channel over verbs (feature `verbs`).
#[cfg(feature = "verbs")]
pub mod rdma;
