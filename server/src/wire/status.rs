//! NT status codes (MS-ERREF 2.3) used by the server.

use std::fmt;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct NtStatus(pub u32);

macro_rules! statuses {
    ($($name:ident = $v:expr,)*) => {
        impl NtStatus {
            $(pub const $name: NtStatus = NtStatus($v);)*
            /// Every named status, for checks against MS-ERREF.
            pub const ALL: &'static [(&'static str, NtStatus)] = &[$((stringify!($name), NtStatus($v)),)*];
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
    EA_LIST_INCONSISTENT = 0x8000_0014,
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
    EA_TOO_LARGE = 0xC000_0050,
    NO_EAS_ON_FILE = 0xC000_0052,
    INVALID_LOCK_RANGE = 0xC000_01A1,
    SMB_NO_PREAUTH_INTEGRITY_HASH_OVERLAP = 0xC05D_0000,
    INVALID_VIEW_SIZE = 0xC000_001F,
    NOT_A_REPARSE_POINT = 0xC000_0275,
    REQUEST_OUT_OF_SEQUENCE = 0xC000_042A,
    INVALID_USER_BUFFER = 0xC000_00E8,
    FILE_NOT_AVAILABLE = 0xC000_0467,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// MS-ERREF 2.3.1 "NTSTATUS Values", copied by hand from the published
    /// table (not from our constants): name and value of every status we name.
    const MS_ERREF: &[(&str, u32)] = &[
        ("STATUS_SUCCESS", 0x0000_0000),
        ("STATUS_PENDING", 0x0000_0103),
        ("STATUS_NOTIFY_CLEANUP", 0x0000_010B),
        ("STATUS_NOTIFY_ENUM_DIR", 0x0000_010C),
        ("STATUS_BUFFER_OVERFLOW", 0x8000_0005),
        ("STATUS_NO_MORE_FILES", 0x8000_0006),
        ("STATUS_INVALID_EA_NAME", 0x8000_0013),
        ("STATUS_EA_LIST_INCONSISTENT", 0x8000_0014),
        ("STATUS_STOPPED_ON_SYMLINK", 0x8000_002D),
        ("STATUS_UNSUCCESSFUL", 0xC000_0001),
        ("STATUS_NOT_IMPLEMENTED", 0xC000_0002),
        ("STATUS_INVALID_INFO_CLASS", 0xC000_0003),
        ("STATUS_INFO_LENGTH_MISMATCH", 0xC000_0004),
        ("STATUS_INVALID_HANDLE", 0xC000_0008),
        ("STATUS_INVALID_PARAMETER", 0xC000_000D),
        ("STATUS_NO_SUCH_DEVICE", 0xC000_000E),
        ("STATUS_NO_SUCH_FILE", 0xC000_000F),
        ("STATUS_INVALID_DEVICE_REQUEST", 0xC000_0010),
        ("STATUS_END_OF_FILE", 0xC000_0011),
        ("STATUS_MORE_PROCESSING_REQUIRED", 0xC000_0016),
        ("STATUS_NO_MEMORY", 0xC000_0017),
        ("STATUS_INVALID_VIEW_SIZE", 0xC000_001F),
        ("STATUS_ACCESS_DENIED", 0xC000_0022),
        ("STATUS_BUFFER_TOO_SMALL", 0xC000_0023),
        ("STATUS_OBJECT_NAME_INVALID", 0xC000_0033),
        ("STATUS_OBJECT_NAME_NOT_FOUND", 0xC000_0034),
        ("STATUS_OBJECT_NAME_COLLISION", 0xC000_0035),
        ("STATUS_OBJECT_PATH_INVALID", 0xC000_0039),
        ("STATUS_OBJECT_PATH_NOT_FOUND", 0xC000_003A),
        ("STATUS_OBJECT_PATH_SYNTAX_BAD", 0xC000_003B),
        ("STATUS_SHARING_VIOLATION", 0xC000_0043),
        ("STATUS_EAS_NOT_SUPPORTED", 0xC000_004F),
        ("STATUS_EA_TOO_LARGE", 0xC000_0050),
        ("STATUS_NO_EAS_ON_FILE", 0xC000_0052),
        ("STATUS_FILE_LOCK_CONFLICT", 0xC000_0054),
        ("STATUS_LOCK_NOT_GRANTED", 0xC000_0055),
        ("STATUS_DELETE_PENDING", 0xC000_0056),
        ("STATUS_PRIVILEGE_NOT_HELD", 0xC000_0061),
        ("STATUS_LOGON_FAILURE", 0xC000_006D),
        ("STATUS_RANGE_NOT_LOCKED", 0xC000_007E),
        ("STATUS_DISK_FULL", 0xC000_007F),
        ("STATUS_INSUFFICIENT_RESOURCES", 0xC000_009A),
        ("STATUS_MEDIA_WRITE_PROTECTED", 0xC000_00A2),
        ("STATUS_FILE_IS_A_DIRECTORY", 0xC000_00BA),
        ("STATUS_NOT_SUPPORTED", 0xC000_00BB),
        ("STATUS_INVALID_NETWORK_RESPONSE", 0xC000_00C3),
        ("STATUS_UNEXPECTED_NETWORK_ERROR", 0xC000_00C4),
        ("STATUS_NETWORK_NAME_DELETED", 0xC000_00C9),
        ("STATUS_NETWORK_ACCESS_DENIED", 0xC000_00CA),
        ("STATUS_BAD_NETWORK_NAME", 0xC000_00CC),
        ("STATUS_REQUEST_NOT_ACCEPTED", 0xC000_00D0),
        ("STATUS_NOT_SAME_DEVICE", 0xC000_00D4),
        ("STATUS_INTERNAL_ERROR", 0xC000_00E5),
        ("STATUS_INVALID_USER_BUFFER", 0xC000_00E8),
        ("STATUS_FILE_NOT_AVAILABLE", 0xC000_0467),
        ("STATUS_DIRECTORY_NOT_EMPTY", 0xC000_0101),
        ("STATUS_NOT_A_DIRECTORY", 0xC000_0103),
        ("STATUS_NAME_TOO_LONG", 0xC000_0106),
        ("STATUS_TOO_MANY_OPENED_FILES", 0xC000_011F),
        ("STATUS_CANCELLED", 0xC000_0120),
        ("STATUS_CANNOT_DELETE", 0xC000_0121),
        ("STATUS_FILE_CLOSED", 0xC000_0128),
        ("STATUS_IO_DEVICE_ERROR", 0xC000_0185),
        ("STATUS_FS_DRIVER_REQUIRED", 0xC000_019C),
        ("STATUS_INVALID_LOCK_RANGE", 0xC000_01A1),
        ("STATUS_USER_SESSION_DELETED", 0xC000_0203),
        ("STATUS_NOT_FOUND", 0xC000_0225),
        ("STATUS_REQUEST_ABORTED", 0xC000_0240),
        ("STATUS_NOT_A_REPARSE_POINT", 0xC000_0275),
        ("STATUS_NETWORK_SESSION_EXPIRED", 0xC000_035C),
        ("STATUS_REQUEST_OUT_OF_SEQUENCE", 0xC000_042A),
        ("STATUS_SMB_NO_PREAUTH_INTEGRITY_HASH_OVERLAP", 0xC05D_0000),
    ];

    #[test]
    fn every_named_status_has_its_ms_erref_value() {
        for (name, st) in NtStatus::ALL {
            let official = format!("STATUS_{name}");
            let Some((_, v)) = MS_ERREF.iter().find(|(n, _)| *n == official) else {
                panic!("{official} is not in the MS-ERREF table of this test: add it from MS-ERREF 2.3.1");
            };
            assert_eq!(st.0, *v, "{official}: we use {:#010x}, MS-ERREF says {v:#010x}", st.0);
            assert_eq!(st.name(), Some(*name));
        }
        // No two names share a value (a second name would hide the first in logs).
        for (i, (a, x)) in NtStatus::ALL.iter().enumerate() {
            for (b, y) in &NtStatus::ALL[i + 1..] {
                assert_ne!(x, y, "{a} and {b} share a value");
            }
        }
    }

    #[test]
    fn severity_classes() {
        // 0x8... are warnings, 0xC... errors (MS-ERREF 2.3).
        assert!(!NtStatus::EA_LIST_INCONSISTENT.is_error());
        assert!(!NtStatus::BUFFER_OVERFLOW.is_error());
        assert!(NtStatus::EA_TOO_LARGE.is_error());
    }
}
