//! Named pipes on IPC$: enough DCE/RPC (connection-oriented, MS-RPCE /
//! C706 ch. 12) and srvsvc (MS-SRVS NetrShareEnum, NetrShareGetInfo) for
//! share listing (`smbclient -L`).

use crate::objects::Server;
use crate::wire::status::NtStatus;
use crate::wire::{utf16_to_string, Put, Reader};

const PTYPE_REQUEST: u8 = 0;
const PTYPE_RESPONSE: u8 = 2;
const PTYPE_FAULT: u8 = 3;
const PTYPE_BIND: u8 = 11;
const PTYPE_BIND_ACK: u8 = 12;
const PFC_FIRST_LAST: u8 = 0x03;
const NDR32: [u8; 16] = [0x04, 0x5d, 0x88, 0x8a, 0xeb, 0x1c, 0xc9, 0x11, 0x9f, 0xe8, 0x08, 0x00, 0x2b, 0x10, 0x48, 0x60];
/// srvsvc interface 4b324fc8-1670-01d3-1278-5a47bf6ee188 v3.0.
const SRVSVC: [u8; 16] = [0xc8, 0x4f, 0x32, 0x4b, 0x70, 0x16, 0xd3, 0x01, 0x12, 0x78, 0x5a, 0x47, 0xbf, 0x6e, 0xe1, 0x88];
const NCA_OP_RNG_ERROR: u32 = 0x1c01_0002;
const NCA_PROTO_ERROR: u32 = 0x1c01_000b;
const WERR_INVALID_LEVEL: u32 = 124;
const WERR_NET_NAME_NOT_FOUND: u32 = 2310;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_pdus_are_errors() {
        let cfg = crate::config::ServerConfig::default();
        let server = crate::objects::Server::new(cfg).expect("server");
        let mut p = Pipe::open("srvsvc", &server).expect("pipe");
        // frag_length shorter than the header itself.
        let mut pdu = vec![5, 0, PTYPE_BIND, 3, 0x10, 0, 0, 0];
        pdu.extend_from_slice(&4u16.to_le_bytes());
        pdu.extend_from_slice(&[0, 0, 1, 0, 0, 0]);
        assert_eq!(p.write(&pdu), Err(NtStatus::INVALID_PARAMETER));
        assert!(p.write(&[5, 0]).is_err());
        // A request before any bind gets a fault PDU, not a panic.
        let mut req = vec![5, 0, PTYPE_REQUEST, 3, 0x10, 0, 0, 0];
        req.extend_from_slice(&24u16.to_le_bytes());
        req.extend_from_slice(&[0, 0, 7, 0, 0, 0]);
        req.extend_from_slice(&[0, 0, 0, 0, 0, 0, 15, 0]);
        p.write(&req).expect("fault answer");
        let out = p.read(4096).expect("read");
        assert_eq!(out.get(2), Some(&PTYPE_FAULT));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let cfg = crate::config::ServerConfig::default();
            let server = crate::objects::Server::new(cfg).expect("server");
            let mut p = Pipe::open("srvsvc", &server).expect("pipe");
            let _ = p.write(&data);
            let _ = p.read(1 << 16);
        }
    }
}

#[derive(Clone)]
struct ShareInfo {
    name: String,
    kind: u32,
    remark: String,
}

pub struct Pipe {
    shares: Vec<ShareInfo>,
    out: Vec<u8>,
    bound_ctx: Option<u16>,
    max_frag: u16,
}

impl Pipe {
    pub fn open(name: &str, server: &Server) -> Result<Pipe, NtStatus> {
        let n = name.trim_start_matches('\\').to_ascii_lowercase();
        let n = n.strip_prefix("pipe\\").unwrap_or(&n);
        if n != "srvsvc" {
            return Err(NtStatus::OBJECT_NAME_NOT_FOUND);
        }
        let mut shares: Vec<ShareInfo> =
            server.shares.iter().map(|s| ShareInfo { name: s.cfg.name.clone(), kind: 0, remark: s.cfg.comment.clone() }).collect();
        shares.push(ShareInfo { name: "IPC$".into(), kind: 0x8000_0003, remark: "IPC Service".into() });
        Ok(Pipe { shares, out: Vec::new(), bound_ctx: None, max_frag: 4280 })
    }

    /// Data the client writes: one DCE/RPC PDU.
    pub fn write(&mut self, pdu: &[u8]) -> Result<(), NtStatus> {
        let mut r = Reader::new(pdu);
        let hdr = (|| {
            let vers = r.u8()?;
            let _minor = r.u8()?;
            let ptype = r.u8()?;
            let _flags = r.u8()?;
            let drep = r.array::<4>()?;
            let frag_len = r.u16()?;
            let _auth_len = r.u16()?;
            let call_id = r.u32()?;
            Ok::<_, crate::wire::WireError>((vers, ptype, drep, frag_len, call_id))
        })();
        let (vers, ptype, drep, frag_len, call_id) = hdr.map_err(|_| NtStatus::INVALID_PARAMETER)?;
        if vers != 5 || drep[0] & 0xF0 != 0x10 || (frag_len as usize) < 16 || frag_len as usize > pdu.len() {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        let body = &pdu[16..frag_len as usize];
        match ptype {
            PTYPE_BIND => self.bind(body, call_id),
            PTYPE_REQUEST => self.request(body, call_id),
            _ => {
                self.fault(call_id, NCA_PROTO_ERROR);
                Ok(())
            }
        }
    }

    /// Data the client reads: what the last PDU produced.
    pub fn read(&mut self, max: usize) -> Result<Vec<u8>, NtStatus> {
        let n = self.out.len().min(max);
        Ok(self.out.drain(..n).collect())
    }

    fn pdu(&mut self, ptype: u8, call_id: u32, body: &[u8]) {
        let mut o = Vec::new();
        o.u8(5).u8(0).u8(ptype).u8(PFC_FIRST_LAST).put(&[0x10, 0, 0, 0]).u16((16 + body.len()) as u16).u16(0).u32(call_id).put(body);
        self.out.extend_from_slice(&o);
    }

    fn fault(&mut self, call_id: u32, status: u32) {
        let mut b = Vec::new();
        b.u32(0).u16(0).u8(0).u8(0).u32(status).u32(0);
        self.pdu(PTYPE_FAULT, call_id, &b);
    }

    fn bind(&mut self, body: &[u8], call_id: u32) -> Result<(), NtStatus> {
        let mut r = Reader::new(body);
        let parsed = (|| {
            let max_xmit = r.u16()?;
            let max_recv = r.u16()?;
            let _assoc = r.u32()?;
            let n = r.u8()?;
            r.skip(3)?;
            let mut results = Vec::new();
            for _ in 0..n {
                let ctx_id = r.u16()?;
                let nts = r.u8()?;
                r.skip(1)?;
                let abs = r.array::<16>()?;
                let _abs_ver = r.u32()?;
                let mut ndr = false;
                for _ in 0..nts {
                    let ts = r.array::<16>()?;
                    let ver = r.u32()?;
                    ndr |= ts == NDR32 && ver == 2;
                }
                results.push((ctx_id, abs == SRVSVC && ndr));
            }
            Ok::<_, crate::wire::WireError>((max_xmit, max_recv, results))
        })();
        let (max_xmit, max_recv, results) = parsed.map_err(|_| NtStatus::INVALID_PARAMETER)?;
        self.max_frag = max_xmit.min(max_recv).max(1024);
        let mut b = Vec::new();
        b.u16(self.max_frag).u16(self.max_frag).u32(0x53f0);
        let sec = b"\\PIPE\\srvsvc\0";
        b.u16(sec.len() as u16).put(sec);
        while (16 + b.len()) % 4 != 0 {
            b.u8(0);
        }
        b.u8(results.len() as u8).zeros(3);
        for (ctx_id, ok) in results {
            if ok && self.bound_ctx.is_none() {
                self.bound_ctx = Some(ctx_id);
                b.u16(0).u16(0).put(&NDR32).u32(2);
            } else {
                b.u16(2).u16(2).zeros(20);
            }
        }
        self.pdu(PTYPE_BIND_ACK, call_id, &b);
        Ok(())
    }

    fn request(&mut self, body: &[u8], call_id: u32) -> Result<(), NtStatus> {
        let mut r = Reader::new(body);
        let (ctx_id, opnum) = (|| {
            let _hint = r.u32()?;
            let ctx = r.u16()?;
            let op = r.u16()?;
            Ok::<_, crate::wire::WireError>((ctx, op))
        })()
        .map_err(|_| NtStatus::INVALID_PARAMETER)?;
        if self.bound_ctx != Some(ctx_id) {
            self.fault(call_id, NCA_PROTO_ERROR);
            return Ok(());
        }
        let stub = &body[8..];
        let resp = match opnum {
            15 => self.share_enum(stub),
            16 => self.share_get_info(stub),
            _ => None,
        };
        match resp {
            Some(stub) => {
                let mut b = Vec::new();
                b.u32(stub.len() as u32).u16(ctx_id).u8(0).u8(0).put(&stub);
                self.pdu(PTYPE_RESPONSE, call_id, &b);
            }
            None => self.fault(call_id, NCA_OP_RNG_ERROR),
        }
        Ok(())
    }

    /// NetrShareEnum: levels 0 and 1.
    fn share_enum(&self, stub: &[u8]) -> Option<Vec<u8>> {
        let mut r = Reader::new(stub);
        skip_unique_string(&mut r)?;
        let level = r.u32().ok()?;
        let mut o = Vec::new();
        if level > 1 {
            o.u32(level).u32(level).u32(0).u32(0).u32(0).u32(0).u32(WERR_INVALID_LEVEL);
            return Some(o);
        }
        let n = self.shares.len() as u32;
        let mut refid = 0x0002_0000u32;
        let mut next = || {
            refid += 4;
            refid
        };
        o.u32(level).u32(level).u32(next());
        o.u32(n).u32(next()).u32(n);
        for _ in &self.shares {
            o.u32(next());
            if level == 1 {
                let s_type_placeholder = o.len();
                o.u32(0).u32(next());
                let _ = s_type_placeholder;
            }
        }
        // Fix the types (written as 0 above) now that we know the layout.
        if level == 1 {
            let base = o.len() - self.shares.len() * 12;
            for (i, s) in self.shares.iter().enumerate() {
                o.set_u32(base + i * 12 + 4, s.kind);
            }
        }
        for s in &self.shares {
            put_string(&mut o, &s.name);
            if level == 1 {
                put_string(&mut o, &s.remark);
            }
        }
        o.u32(n).u32(next()).u32(0).u32(0);
        Some(o)
    }

    /// NetrShareGetInfo: levels 0 and 1.
    fn share_get_info(&self, stub: &[u8]) -> Option<Vec<u8>> {
        let mut r = Reader::new(stub);
        skip_unique_string(&mut r)?;
        let name = read_string(&mut r)?;
        r.skip((4 - r.pos() % 4) % 4).ok()?;
        let level = r.u32().ok()?;
        let mut o = Vec::new();
        let Some(s) = self.shares.iter().find(|s| s.name.eq_ignore_ascii_case(&name)) else {
            o.u32(level).u32(0).u32(WERR_NET_NAME_NOT_FOUND);
            return Some(o);
        };
        match level {
            0 => {
                o.u32(0).u32(0x0002_0004).u32(0x0002_0008);
                put_string(&mut o, &s.name);
            }
            1 => {
                o.u32(1).u32(0x0002_0004).u32(0x0002_0008).u32(s.kind).u32(0x0002_000c);
                put_string(&mut o, &s.name);
                put_string(&mut o, &s.remark);
            }
            _ => {
                o.u32(level).u32(0).u32(WERR_INVALID_LEVEL);
                return Some(o);
            }
        }
        o.u32(0);
        Some(o)
    }
}

/// A conformant varying NUL-terminated UTF-16 string, padded to 4.
fn put_string(o: &mut Vec<u8>, s: &str) {
    let n = s.encode_utf16().count() as u32 + 1;
    o.u32(n).u32(0).u32(n).utf16(s).u16(0);
    while o.len() % 4 != 0 {
        o.u8(0);
    }
}

fn read_string(r: &mut Reader<'_>) -> Option<String> {
    let max = r.u32().ok()? as usize;
    let _off = r.u32().ok()?;
    let actual = r.u32().ok()? as usize;
    if actual > max || actual > 4096 {
        return None;
    }
    let b = r.bytes(actual * 2).ok()?;
    let s = utf16_to_string(b).ok()?;
    Some(s.trim_end_matches('\0').to_string())
}

fn skip_unique_string(r: &mut Reader<'_>) -> Option<()> {
    let ptr = r.u32().ok()?;
    if ptr != 0 {
        read_string(r)?;
        r.skip((4 - r.pos() % 4) % 4).ok()?;
    }
    Some(())
}
