//! NT status codes (MS-ERREF 2.3) used by the server.

use std::fmt;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct NtStatus(pub u32);

macro_rules! statuses {
    ($($name:ident = $v:expr,)*) => {
        impl NtStatus {
            $(pub const $name: NtStatus = NtStatus($v);)*
            pub fn name(self) -> Option<&'static str> {
                match self.0 { $($v => Some(stringify!($name)),)* _ => None }
            }
        }
    };
}

statuses! {
    SUCCESS = 0x0000_0000,
    PENDING = 0x0000_0103,
    NOTIFY_ENUM_DIR = 0x0000_010C,
    NOTIFY_CLEANUP = 0x0000_010B,
    BUFFER_OVERFLOW = 0x8000_0005,
    NO_MORE_FILES = 0x8000_0006,
    INVALID_EA_NAME = 0x8000_0013,
    UNSUCCESSFUL = 0xC000_0001,
    NOT_IMPLEMENTED = 0xC000_0002,
    INVALID_INFO_CLASS = 0xC000_0003,
    INFO_LENGTH_MISMATCH = 0xC000_0004,
    INVALID_HANDLE = 0xC000_0008,
    INVALID_PARAMETER = 0xC000_000D,
    NO_SUCH_DEVICE = 0xC000_000E,
    NO_SUCH_FILE = 0xC000_000F,
    INVALID_DEVICE_REQUEST = 0xC000_0010,
    END_OF_FILE = 0xC000_0011,
    MORE_PROCESSING_REQUIRED = 0xC000_0016,
    NO_MEMORY = 0xC000_0017,
    ACCESS_DENIED = 0xC000_0022,
    BUFFER_TOO_SMALL = 0xC000_0023,
    OBJECT_NAME_INVALID = 0xC000_0033,
    OBJECT_NAME_NOT_FOUND = 0xC000_0034,
    OBJECT_NAME_COLLISION = 0xC000_0035,
    OBJECT_PATH_INVALID = 0xC000_0039,
    OBJECT_PATH_NOT_FOUND = 0xC000_003A,
    OBJECT_PATH_SYNTAX_BAD = 0xC000_003B,
    SHARING_VIOLATION = 0xC000_0043,
    DELETE_PENDING = 0xC000_0056,
    PRIVILEGE_NOT_HELD = 0xC000_0061,
    LOGON_FAILURE = 0xC000_006D,
    RANGE_NOT_LOCKED = 0xC000_007E,
    DISK_FULL = 0xC000_007F,
    INSUFFICIENT_RESOURCES = 0xC000_009A,
    FILE_IS_A_DIRECTORY = 0xC000_00BA,
    NOT_SUPPORTED = 0xC000_00BB,
    NETWORK_NAME_DELETED = 0xC000_00C9,
    BAD_NETWORK_NAME = 0xC000_00CC,
    REQUEST_NOT_ACCEPTED = 0xC000_00D0,
    DIRECTORY_NOT_EMPTY = 0xC000_0101,
    NOT_A_DIRECTORY = 0xC000_0103,
    CANCELLED = 0xC000_0120,
    CANNOT_DELETE = 0xC000_0121,
    FILE_CLOSED = 0xC000_0128,
    LOCK_NOT_GRANTED = 0xC000_0055,
    FILE_LOCK_CONFLICT = 0xC000_0054,
    NOT_SAME_DEVICE = 0xC000_00D4,
    USER_SESSION_DELETED = 0xC000_0203,
    NETWORK_SESSION_EXPIRED = 0xC000_035C,
    INVALID_NETWORK_RESPONSE = 0xC000_00C3,
    TOO_MANY_OPENED_FILES = 0xC000_011F,
    NOT_FOUND = 0xC000_0225,
    FS_DRIVER_REQUIRED = 0xC000_019C,
    STOPPED_ON_SYMLINK = 0x8000_002D,
    REQUEST_ABORTED = 0xC000_0240,
    NETWORK_ACCESS_DENIED = 0xC000_00CA,
    UNEXPECTED_NETWORK_ERROR = 0xC000_00C4,
    MEDIA_WRITE_PROTECTED = 0xC000_00A2,
    NAME_TOO_LONG = 0xC000_0106,
    IO_DEVICE_ERROR = 0xC000_0185,
    INTERNAL_ERROR = 0xC000_00E5,
    EAS_NOT_SUPPORTED = 0xC000_004F,
    EA_LIST_INCONSISTENT = 0xC000_0050,
    NO_EAS_ON_FILE = 0xC000_0052,
    INVALID_LOCK_RANGE = 0xC000_01A1,
    SMB_NO_PREAUTH_INTEGRITY_HASH_OVERLAP = 0xC05D_0000,
    INVALID_VIEW_SIZE = 0xC000_001F,
    NOT_A_REPARSE_POINT = 0xC000_0275,
    REQUEST_OUT_OF_SEQUENCE = 0xC000_042A,
    INVALID_USER_BUFFER = 0xC000_00E8,
}

impl NtStatus {
    pub fn is_error(self) -> bool {
        self.0 >= 0xC000_0000
    }

    /// Maps a Unix error from the file system to the status a Windows server gives.
    pub fn from_errno(e: rustix::io::Errno) -> NtStatus {
        use rustix::io::Errno;
        match e {
            Errno::NOENT => NtStatus::OBJECT_NAME_NOT_FOUND,
            Errno::EXIST => NtStatus::OBJECT_NAME_COLLISION,
            Errno::ACCESS | Errno::PERM | Errno::ROFS => NtStatus::ACCESS_DENIED,
            Errno::NOTDIR => NtStatus::OBJECT_PATH_NOT_FOUND,
            Errno::ISDIR => NtStatus::FILE_IS_A_DIRECTORY,
            Errno::NOTEMPTY => NtStatus::DIRECTORY_NOT_EMPTY,
            Errno::NOSPC | Errno::DQUOT => NtStatus::DISK_FULL,
            Errno::NAMETOOLONG => NtStatus::OBJECT_NAME_INVALID,
            // RESOLVE_BENEATH refused an escape, or a symlink loop: never follow.
            Errno::XDEV | Errno::LOOP => NtStatus::ACCESS_DENIED,
            Errno::BADF => NtStatus::INVALID_HANDLE,
            Errno::INVAL => NtStatus::INVALID_PARAMETER,
            Errno::MFILE | Errno::NFILE => NtStatus::TOO_MANY_OPENED_FILES,
            Errno::NOMEM => NtStatus::NO_MEMORY,
            Errno::FBIG => NtStatus::DISK_FULL,
            Errno::BUSY | Errno::TXTBSY => NtStatus::SHARING_VIOLATION,
            _ => NtStatus::UNSUCCESSFUL,
        }
    }

    pub fn from_io(e: &std::io::Error) -> NtStatus {
        match e.raw_os_error() {
            Some(n) => NtStatus::from_errno(rustix::io::Errno::from_raw_os_error(n)),
            None => NtStatus::UNSUCCESSFUL,
        }
    }
}

impl From<rustix::io::Errno> for NtStatus {
    fn from(e: rustix::io::Errno) -> Self {
        NtStatus::from_errno(e)
    }
}

impl fmt::Debug for NtStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "NT_STATUS_{n}"),
            None => write!(f, "NtStatus({:#010x})", self.0),
        }
    }
}

impl fmt::Display for NtStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
