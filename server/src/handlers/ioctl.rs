//! IOCTL: the FSCTLs a server must answer.

use crate::conn::{Connection, Ctx};
use crate::objects::{lock, OpenKind};
use crate::wire::header::HEADER_LEN;
use crate::wire::messages::{IoctlReq, IOCTL_IS_FSCTL};
use crate::wire::status::NtStatus;
use crate::wire::{Put, Reader};

pub const FSCTL_DFS_GET_REFERRALS: u32 = 0x0006_0194;
pub const FSCTL_DFS_GET_REFERRALS_EX: u32 = 0x0006_01B0;
pub const FSCTL_PIPE_TRANSCEIVE: u32 = 0x0011_C017;
pub const FSCTL_QUERY_NETWORK_INTERFACE_INFO: u32 = 0x0014_01FC;
pub const FSCTL_VALIDATE_NEGOTIATE_INFO: u32 = 0x0014_0204;

pub fn ioctl(conn: &mut Connection, ctx: &mut Ctx<'_>, out: &mut Vec<u8>) -> Result<(), NtStatus> {
    let req = IoctlReq::parse(ctx.msg).map_err(|_| NtStatus::INVALID_PARAMETER)?;
    if req.flags != IOCTL_IS_FSCTL {
        return Err(NtStatus::NOT_SUPPORTED);
    }
    let max_out = (req.max_output as usize).min(conn.server.cfg.max_transact_size as usize);
    let output: Vec<u8> = match req.ctl_code {
        FSCTL_VALIDATE_NEGOTIATE_INFO => validate_negotiate(conn, req.input)?,
        FSCTL_QUERY_NETWORK_INTERFACE_INFO => network_interfaces(conn),
        FSCTL_PIPE_TRANSCEIVE => {
            let open = ctx.open(&req.file_id)?;
            let OpenKind::Pipe(p) = &open.kind else { return Err(NtStatus::INVALID_DEVICE_REQUEST) };
            let mut p = lock(p);
            p.write(req.input)?;
            p.read(max_out)?
        }
        FSCTL_DFS_GET_REFERRALS | FSCTL_DFS_GET_REFERRALS_EX => return Err(NtStatus::FS_DRIVER_REQUIRED),
        _ => {
            // Windows answers FSCTLs it does not implement on a file with INVALID_DEVICE_REQUEST.
            let _ = ctx.open(&req.file_id)?;
            return Err(NtStatus::INVALID_DEVICE_REQUEST);
        }
    };
    if output.len() > max_out {
        return Err(NtStatus::BUFFER_TOO_SMALL);
    }
    out.u16(49).u16(0).u32(req.ctl_code).put(&req.file_id);
    let data_off = (HEADER_LEN + 48) as u32;
    out.u32(data_off).u32(0).u32(data_off).u32(output.len() as u32).u32(0).u32(0);
    out.put(&output);
    Ok(())
}

/// FSCTL_VALIDATE_NEGOTIATE_INFO (MS-SMB2 3.3.5.15.12): a mismatch means a
/// downgrade attack; the connection is dropped.
fn validate_negotiate(conn: &mut Connection, input: &[u8]) -> Result<Vec<u8>, NtStatus> {
    let mut r = Reader::new(input);
    let parse = (|| {
        let caps = r.u32()?;
        let guid = r.guid()?;
        let mode = r.u16()?;
        let n = r.u16()?;
        let mut d = Vec::new();
        for _ in 0..n {
            d.push(r.u16()?);
        }
        Ok::<_, crate::wire::WireError>((caps, guid, mode, d))
    })();
    let (caps, guid, mode, dialects) = parse.map_err(|_| NtStatus::INVALID_PARAMETER)?;
    let cfg = &conn.server.cfg;
    let expect = [0x0311u16, 0x0302, 0x0300, 0x0210, 0x0202].into_iter().find(|d| dialects.contains(d) && cfg.dialect_allowed(*d));
    if caps != conn.client_caps || guid != conn.client_guid || mode != conn.client_security_mode || expect != conn.dialect {
        tracing::warn!(peer = %conn.peer, "VALIDATE_NEGOTIATE_INFO mismatch: dropping the connection");
        conn.sink.shutdown();
        return Err(NtStatus::ACCESS_DENIED);
    }
    let mut o = Vec::new();
    let mut sec = crate::negotiate::SEC_SIGNING_ENABLED;
    if conn.signing_required_by_server() {
        sec |= crate::negotiate::SEC_SIGNING_REQUIRED;
    }
    o.u32(conn.server_caps).put(&conn.server.server_guid).u16(sec).u16(conn.dialect.unwrap_or(0));
    Ok(o)
}

/// The host's real interfaces, as NETWORK_INTERFACE_INFO entries (MS-SMB2 2.2.32.5).
fn network_interfaces(conn: &Connection) -> Vec<u8> {
    let mut entries: Vec<(u32, u64, Vec<u8>, bool)> = Vec::new();
    for ifa in crate::netif::interfaces() {
        let mut sa = Vec::with_capacity(128);
        match ifa.addr {
            std::net::IpAddr::V4(a) => {
                sa.u16(0x0002).u16(0).put(&a.octets());
            }
            std::net::IpAddr::V6(a) => {
                sa.u16(0x0017).u16(0).u32(0).put(&a.octets()).u32(ifa.scope_id);
            }
        }
        sa.resize(128, 0);
        entries.push((ifa.index, ifa.speed_bps, sa, ifa.loopback));
    }
    if entries.iter().any(|e| !e.3) {
        entries.retain(|e| !e.3);
    }
    let rdma = conn.sink.is_rdma();
    let mut o = Vec::new();
    let n = entries.len();
    for (i, (index, speed, sa, _)) in entries.into_iter().enumerate() {
        let next = if i + 1 < n { 152 } else { 0 };
        let caps = if rdma { 0x2 } else { 0 };
        o.u32(next).u32(index).u32(caps).u32(0).u64(speed).put(&sa);
    }
    o
}
