//! IOCTL FSCTLs that need no file: QUERY_NETWORK_INTERFACE_INFO lists the
//! host's real interfaces; VALIDATE_NEGOTIATE_INFO answers what was negotiated.

use crate::harness::*;

const IOCTL: u16 = 11;
const FSCTL_QUERY_NETWORK_INTERFACE_INFO: u32 = 0x0014_01FC;

fn ioctl_body(code: u32, input: &[u8], max_out: u32) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&57u16.to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes());
    b.extend_from_slice(&code.to_le_bytes());
    b.extend_from_slice(&[0xFF; 16]);
    let in_off: u32 = if input.is_empty() { 0 } else { 64 + 56 };
    b.extend_from_slice(&in_off.to_le_bytes());
    b.extend_from_slice(&(input.len() as u32).to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes()); // MaxInputResponse
    b.extend_from_slice(&0u32.to_le_bytes()); // OutputOffset
    b.extend_from_slice(&0u32.to_le_bytes()); // OutputCount
    b.extend_from_slice(&max_out.to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes()); // SMB2_0_IOCTL_IS_FSCTL
    b.extend_from_slice(&0u32.to_le_bytes());
    if input.is_empty() {
        b.push(0);
    } else {
        b.extend_from_slice(input);
    }
    b
}

/// The host's up, non-loopback IPv4 addresses, read from `ip -o -4 addr`
/// (independent of the server's getifaddrs walk).
fn host_ipv4() -> Vec<std::net::Ipv4Addr> {
    let out = std::process::Command::new("ip").args(["-o", "-4", "addr", "show", "up"]).output().expect("ip");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut v = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.get(1) == Some(&"lo") {
            continue;
        }
        if let Some(pos) = f.iter().position(|x| *x == "inet") {
            if let Some(a) = f.get(pos + 1).and_then(|s| s.split('/').next()).and_then(|s| s.parse().ok()) {
                v.push(a);
            }
        }
    }
    v
}

#[test]
fn network_interface_info_lists_the_hosts_interfaces() {
    let ts = server();
    let mut c = connected(&ts);
    let r = c.call(IOCTL, 1, &ioctl_body(FSCTL_QUERY_NETWORK_INTERFACE_INFO, &[], 65536));
    assert_eq!(r.status, SUCCESS);
    let body = r.body();
    assert_eq!(le16(body, 0), 49);
    assert_eq!(le32(body, 4), FSCTL_QUERY_NETWORK_INTERFACE_INFO);
    let off = le32(body, 32) as usize;
    let len = le32(body, 36) as usize;
    let out = &r.raw[off..off + len];
    // Walk the NETWORK_INTERFACE_INFO chain.
    let mut v4 = Vec::new();
    let mut at = 0usize;
    loop {
        let e = &out[at..];
        assert!(e.len() >= 152, "entry of {} bytes", e.len());
        let next = le32(e, 0) as usize;
        let family = le16(e, 24);
        assert!(le64(e, 16) > 0, "link speed");
        match family {
            0x0002 => v4.push(std::net::Ipv4Addr::new(e[28], e[29], e[30], e[31])),
            0x0017 => {}
            f => panic!("address family {f:#x}"),
        }
        if next == 0 {
            break;
        }
        assert_eq!(next, 152);
        at += next;
    }
    let mut want = host_ipv4();
    if want.is_empty() {
        // A host with only loopback lists loopback.
        want.push(std::net::Ipv4Addr::LOCALHOST);
    } else {
        assert!(!v4.contains(&std::net::Ipv4Addr::LOCALHOST), "loopback listed next to real interfaces");
    }
    v4.sort();
    want.sort();
    assert_eq!(v4, want, "IPv4 addresses listed vs the host's");
    // Too small an output buffer is an error, not a cut list.
    let r = c.call(IOCTL, 1, &ioctl_body(FSCTL_QUERY_NETWORK_INTERFACE_INFO, &[], 8));
    assert_ne!(r.status, SUCCESS);
}

#[test]
fn create_or_get_object_id_is_the_files_device_and_inode() {
    use std::os::unix::fs::MetadataExt;
    const FSCTL_CREATE_OR_GET_OBJECT_ID: u32 = 0x0009_00C0;
    let ts = server();
    let mut c = connected(&ts);
    let fid = c.open_file("oid.txt");
    let mut body = ioctl_body(FSCTL_CREATE_OR_GET_OBJECT_ID, &[], 64);
    body[8..24].copy_from_slice(&fid);
    let r = c.call(IOCTL, 1, &body);
    assert_eq!(r.status, SUCCESS);
    let off = le32(r.body(), 32) as usize;
    let out = r.raw[off..off + le32(r.body(), 36) as usize].to_vec();
    assert_eq!(out.len(), 64, "FILE_OBJECTID_BUFFER");
    let md = std::fs::metadata(ts.share_path().join("oid.txt")).unwrap();
    // (The device number is the server's encoding of it; the inode is plain.)
    assert_eq!(le64(&out, 8), md.ino(), "ObjectId: the inode");
    assert_ne!(le64(&out, 0), 0, "ObjectId: the device");
    assert_eq!(le64(&out, 16), le64(&out, 0), "BirthVolumeId: the device");
    assert_eq!(&out[32..48], &out[0..16], "BirthObjectId");
    // Stable: asked again, the same id.
    let r2 = c.call(IOCTL, 1, &body);
    assert_eq!(r2.raw[off..off + 64], out[..]);
    // Too small an output buffer is an error.
    let mut small = ioctl_body(FSCTL_CREATE_OR_GET_OBJECT_ID, &[], 16);
    small[8..24].copy_from_slice(&fid);
    assert_ne!(c.call(IOCTL, 1, &small).status, SUCCESS);
}
