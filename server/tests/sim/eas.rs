//! Extended attributes over SET_INFO/QUERY_INFO (FileFullEaInformation): a
//! malformed list is STATUS_EA_LIST_INCONSISTENT (0x80000014, MS-ERREF), the
//! status Windows' IoCheckEaBufferValidity gives, not STATUS_EA_TOO_LARGE.

use crate::harness::*;

const SET_INFO: u16 = 0x11;
const QUERY_INFO: u16 = 0x10;
const INFO_FILE: u8 = 1;
const FILE_FULL_EA_INFORMATION: u8 = 15;
const EA_LIST_INCONSISTENT: u32 = 0x8000_0014;

fn set_info_body(fid: &[u8; 16], class: u8, buf: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.u16_(33).u8_(INFO_FILE).u8_(class).u32_(buf.len() as u32).u16_(64 + 32).u16_(0).u32_(0).bytes(fid).bytes(buf);
    b
}

fn query_info_body(fid: &[u8; 16], class: u8, output_len: u32) -> Vec<u8> {
    let mut b = Vec::new();
    b.u16_(41).u8_(INFO_FILE).u8_(class).u32_(output_len).u16_(0).u16_(0).u32_(0).u32_(0).u32_(0).bytes(fid);
    b
}

/// One FILE_FULL_EA_INFORMATION entry (NextEntryOffset 0).
fn ea(name: &str, value: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.u32_(0).u8_(0).u8_(name.len() as u8).u16_(value.len() as u16).bytes(name.as_bytes()).u8_(0).bytes(value);
    b
}

#[test]
fn malformed_ea_list_is_ea_list_inconsistent() {
    let ts = server();
    let mut c = connected(&ts);
    let fid = c.open_file("eas.txt");
    let good = ea("USER.COLOR", b"blue");
    let r = c.call(SET_INFO, 1, &set_info_body(&fid, FILE_FULL_EA_INFORMATION, &good));
    // EAs live in user xattrs: the test share must be on a file system with them.
    assert_eq!(r.status, SUCCESS, "setting a well-formed EA: {:#x}", r.status);
    // NextEntryOffset past the end of the list.
    let mut past = good.clone();
    past[0] = 64;
    // Name not NUL-terminated, value length past the end.
    let mut unterminated = good.clone();
    let n = unterminated.len();
    unterminated[8 + 10] = b'x';
    unterminated.truncate(n - 1);
    let mut long_value = good.clone();
    long_value[6] = 200;
    for (what, bad) in [("next offset past the end", past), ("no NUL after the name", unterminated), ("value past the end", long_value)] {
        let r = c.call(SET_INFO, 1, &set_info_body(&fid, FILE_FULL_EA_INFORMATION, &bad));
        assert_eq!(r.status, EA_LIST_INCONSISTENT, "{what}: status {:#x}", r.status);
        assert_eq!(le16(&r.raw, 64), 9, "{what}: an error response body");
    }
    // The refused lists changed nothing: the EA is still there, unchanged.
    let r = c.call(QUERY_INFO, 1, &query_info_body(&fid, FILE_FULL_EA_INFORMATION, 4096));
    assert_eq!(r.status, SUCCESS);
    let out = &r.raw[64 + 8..];
    assert_eq!(out[5], 10, "one EA, USER.COLOR");
    assert_eq!(&out[8..18], b"USER.COLOR");
    assert_eq!(&out[19..23], b"blue");
    // A malformed FILE_GET_EA_INFORMATION list in QUERY_INFO gets the same status.
    let mut q = query_info_body(&fid, FILE_FULL_EA_INFORMATION, 4096);
    q[8..10].copy_from_slice(&(64u16 + 40).to_le_bytes()); // InputBufferOffset
    q[12..16].copy_from_slice(&6u32.to_le_bytes()); // InputBufferLength
    q.extend_from_slice(&[0, 0, 0, 0, 20, b'X']); // NameLength 20, 1 byte of name
    let r = c.call(QUERY_INFO, 1, &q);
    assert_eq!(r.status, EA_LIST_INCONSISTENT, "query with a bad list: {:#x}", r.status);
    assert_eq!(c.close(&fid).status, SUCCESS);
}
