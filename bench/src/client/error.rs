//! Errors of the SMB client, each saying whose fault it was: the transport, the server
//! (a protocol violation or an error status), or the caller.

use std::time::Duration;

use super::channel::ChannelError;
use smbdirect_server::crypto::CryptoError;

/// Everything a client operation can fail with. Nothing the server sends makes the client
/// panic: malformed input ends up as [`ClientError::Protocol`].
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("transport: {0}")]
    Channel(#[from] ChannelError),
    #[error("{what}: no answer from the server within {after:?}")]
    Timeout { what: &'static str, after: Duration },
    /// The request cannot go out because the server grants too few credits (SMB2 credits,
    /// or SMB Direct send credits), said as such rather than as a missing answer.
    #[error("credit starvation: {0}")]
    Starved(String),
    #[error("the connection is down: {0}")]
    Disconnected(String),
    #[error("{command} failed: {status}")]
    Status { command: &'static str, status: NtStatusName },
    #[error("server violated the protocol: {0}")]
    Protocol(String),
    #[error("bad signature on a {0} response")]
    BadSignature(&'static str),
    #[error("crypto: {0}")]
    Crypto(#[from] CryptoError),
    #[error("authentication: {0}")]
    Auth(String),
    #[error("not supported: {0}")]
    Unsupported(String),
    #[error("invalid argument: {0}")]
    Invalid(String),
}

impl ClientError {
    pub fn proto(s: impl Into<String>) -> Self {
        ClientError::Protocol(s.into())
    }
    /// The NT status if the server answered with an error status.
    pub fn status(&self) -> Option<u32> {
        match self {
            ClientError::Status { status, .. } => Some(status.0),
            _ => None,
        }
    }
}

impl From<smbdirect_server::wire::WireError> for ClientError {
    fn from(e: smbdirect_server::wire::WireError) -> Self {
        ClientError::Protocol(e.to_string())
    }
}

/// An NT status printed with its name when we know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NtStatusName(pub u32);

impl std::fmt::Display for NtStatusName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.0 {
            0xC000_006D => "STATUS_LOGON_FAILURE",
            0xC000_0022 => "STATUS_ACCESS_DENIED",
            0xC000_000D => "STATUS_INVALID_PARAMETER",
            0xC000_0034 => "STATUS_OBJECT_NAME_NOT_FOUND",
            0xC000_0035 => "STATUS_OBJECT_NAME_COLLISION",
            0xC000_00CC => "STATUS_BAD_NETWORK_NAME",
            0xC000_0011 => "STATUS_END_OF_FILE",
            0xC000_0010 => "STATUS_INVALID_DEVICE_REQUEST",
            0xC000_00BB => "STATUS_NOT_SUPPORTED",
            0xC000_0203 => "STATUS_USER_SESSION_DELETED",
            0xC000_0043 => "STATUS_SHARING_VIOLATION",
            0xC000_0008 => "STATUS_INVALID_HANDLE",
            0xC000_0016 => "STATUS_MORE_PROCESSING_REQUIRED",
            0xC000_00C9 => "STATUS_NETWORK_NAME_DELETED",
            0xC000_0061 => "STATUS_PRIVILEGE_NOT_HELD",
            0xC000_A100 => "STATUS_NETWORK_SESSION_EXPIRED",
            _ => "",
        };
        if name.is_empty() {
            write!(f, "NT status {:#010x}", self.0)
        } else {
            write!(f, "{name} ({:#010x})", self.0)
        }
    }
}
