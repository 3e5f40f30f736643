//! Errors of the SMB Direct state machine, layered like the wire: [`WireError`] (a packet
//! did not decode) inside [`ProtocolError`] (the peer broke a rule) inside
//! [`DisconnectReason`] (why the connection ended).

use thiserror::Error;

use crate::wire::WireError;

/// The peer broke an MS-SMBD rule.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("malformed packet: {0}")]
    Wire(#[from] WireError),
    #[error("negotiate response PreferredSendSize {preferred} exceeds our MaxReceiveSize {max}")]
    PreferredSendSizeTooLarge { preferred: u32, max: u32 },
    #[error("peer sent a message without holding a credit")]
    CreditsOverrun,
    #[error("peer granted credits beyond 65535")]
    CreditOverflow,
    #[error("message of {len} bytes exceeds our MaxReceiveSize {max}")]
    MessageTooLarge { len: usize, max: u32 },
    #[error("RemainingDataLength {remaining} with no data")]
    RemainingWithoutData { remaining: u32 },
    #[error("fragment announces {got} remaining bytes, {expected} expected")]
    InconsistentFragment { expected: u32, got: u32 },
    #[error("fragmented message of {size} bytes exceeds MaxFragmentedSize {max}")]
    FragmentedTooLarge { size: u64, max: u32 },
}

/// Why a work request completed with an error (what a NIC would report).
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum CompletionError {
    #[error("receiver not ready (no receive posted), retries exhausted")]
    RnrRetryExceeded,
    #[error("remote access error (bad token, offset or length)")]
    RemoteAccess,
    #[error("local length error (message larger than the posted receive)")]
    LocalLength,
    #[error("local protection error (bad local key or range)")]
    LocalProtection,
    #[error("work request flushed: the queue pair is in the error state")]
    Flushed,
    #[error("transport retry counter exceeded")]
    RetryExceeded,
}

/// Why the connection ended. Reported once, as [`super::Action::Disconnect`] and
/// [`super::Event::Disconnected`].
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    #[error("closed by the local upper layer")]
    Local,
    #[error("the peer disconnected")]
    PeerDisconnected,
    #[error("no negotiate message within the timeout")]
    NegotiateTimeout,
    #[error("the peer offered no supported version; answered STATUS_NOT_SUPPORTED")]
    VersionNotSupported,
    #[error("protocol violation: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("keepalive unanswered")]
    KeepaliveTimeout,
    #[error("a work request never completed")]
    CompletionTimeout,
    #[error("work request failed: {0}")]
    Completion(CompletionError),
    #[error("the driver reported a receive with none posted")]
    DriverError,
}

/// Why [`super::Connection::send`] refused a message.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    #[error("the connection is not established")]
    NotConnected,
    #[error("empty message")]
    Empty,
    #[error("message of {len} bytes exceeds the peer's MaxFragmentedSize {max}")]
    TooLarge { len: usize, max: u32 },
}

/// Why an RDMA operation could not be planned or did not complete.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum RdmaError {
    #[error("the connection is not established")]
    NotConnected,
    #[error("transfer of {len} bytes exceeds MaxReadWriteSize {max}")]
    TooLarge { len: u64, max: u32 },
    #[error("buffer descriptors cover {have} bytes, {need} needed")]
    RemoteTooShort { need: u64, have: u64 },
    #[error("local segments cover {have} bytes, {need} needed")]
    LocalTooShort { need: u64, have: u64 },
    #[error("zero-length transfer")]
    Empty,
    #[error("buffer descriptor range overflows")]
    DescriptorOverflow,
    #[error("work request failed: {0}")]
    Completion(CompletionError),
    #[error("connection ended before the operation completed")]
    Aborted,
}
