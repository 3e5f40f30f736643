//! `smbd-fault serve ADDR:PORT SCENARIO [--hold SECS]`: a hand-driven SMB Direct *server*
//! that starves its client of send credits, for the tests of an SMB Direct client (the
//! project's own, `smbdirect-bench --transport rdma`): the client must say so within its
//! timeout, never hang, and never send beyond the credits it was granted.
//!
//! Scenarios (one connection; the server then holds it open `--hold` seconds, sending
//! nothing more, and exits 0 when the client sent no message beyond its credits):
//! - `grant-zero`: the SMB Direct negotiate response grants 0 credits (MS-SMBD 3.1.5.3
//!   forbids it: the client must refuse the connection with a clear error);
//! - `grant-none-after`: the negotiate response grants 1 credit, and no credit ever
//!   follows: the client's first message uses it (its grant of receive credits to us, an
//!   empty message, or its SMB2 NEGOTIATE, which is then answered with a valid SMB2
//!   NEGOTIATE response in a message granting 0 credits); its next one cannot be sent.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use smbdirect_transport::verbs::{Access, CmEventKind, CmId, CompChannel, ConnParam, Cq, EventChannel, Pd, QpCaps, RegisteredBuffer, Wc};
use smbdirect_transport::wire::{DataTransferHeader, NegotiateRequest, NegotiateResponse, DATA_OFFSET, SMBD_VERSION_1};

pub const SCENARIOS: &[&str] = &["grant-zero", "grant-none-after"];

const RECV_SIZE: usize = 8192;
const RECVS: usize = 32;
const SEND_SIZE: usize = 1364;
const SENDS: usize = 4;

/// Waits up to `d` for the next connection manager event.
fn cm_event(ch: &EventChannel, d: Duration) -> Result<Option<CmEventKind>, String> {
    let end = Instant::now() + d;
    loop {
        if let Some(ev) = ch.get_event().map_err(|e| format!("rdma_get_cm_event: {e}"))? {
            return Ok(Some(ev.kind));
        }
        if Instant::now() >= end {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

struct Served {
    id: CmId,
    cq: Cq,
    _comp: CompChannel,
    recv: RegisteredBuffer,
    send: RegisteredBuffer,
    sends: usize,
}

impl Served {
    fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        let off = (self.sends % SENDS) * SEND_SIZE;
        self.sends += 1;
        if bytes.len() > SEND_SIZE || !self.send.write(off, bytes) {
            return Err("message larger than a send buffer".into());
        }
        let sge = self.send.sge(off, bytes.len() as u32).ok_or("sge")?;
        self.id.post_send(1000 + self.sends as u64, sge, None).map_err(|e| format!("post_send: {e}"))
    }

    /// The next message received within `d` (receives are not reposted: each one the
    /// client uses is a credit it was granted, so more than granted would show as an
    /// error completion or a disconnect, never silently).
    fn recv(&mut self, d: Duration, ch: &EventChannel, gone: &mut bool) -> Result<Option<Vec<u8>>, String> {
        let end = Instant::now() + d;
        let mut wcs: Vec<Wc> = Vec::new();
        while Instant::now() < end && !*gone {
            wcs.clear();
            self.cq.poll(&mut wcs, 8).map_err(|e| format!("ibv_poll_cq: {e}"))?;
            for wc in &wcs {
                if wc.wr_id < RECVS as u64 {
                    wc.status.map_err(|e| format!("receive completion: {e:?}"))?;
                    let mut b = vec![0u8; (wc.byte_len as usize).min(RECV_SIZE)];
                    self.recv.read(wc.wr_id as usize * RECV_SIZE, &mut b);
                    return Ok(Some(b));
                } else if let Err(e) = wc.status {
                    return Err(format!("send completion: {e:?}"));
                }
            }
            while let Ok(Some(ev)) = ch.get_event() {
                if matches!(ev.kind, CmEventKind::Disconnected | CmEventKind::Error) {
                    *gone = true;
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(None)
    }
}

/// A valid SMB2 NEGOTIATE response (dialect 3.0.2, no security blob: the client goes
/// on to SESSION_SETUP) granting `credits` SMB2 credits, for the request `req`.
fn smb2_negotiate_response(req: &[u8], credits: u16) -> Vec<u8> {
    let mut m = Vec::with_capacity(64 + 65);
    m.extend_from_slice(b"\xfeSMB");
    m.extend_from_slice(&64u16.to_le_bytes());
    m.extend_from_slice(&0u16.to_le_bytes()); // credit charge
    m.extend_from_slice(&0u32.to_le_bytes()); // status
    m.extend_from_slice(&0u16.to_le_bytes()); // NEGOTIATE
    m.extend_from_slice(&credits.to_le_bytes());
    m.extend_from_slice(&1u32.to_le_bytes()); // SERVER_TO_REDIR
    m.extend_from_slice(&0u32.to_le_bytes()); // next command
    m.extend_from_slice(req.get(24..32).unwrap_or(&[0; 8])); // message id
    m.extend_from_slice(&[0; 8 + 8 + 16]); // reserved/tree id, session id, signature
    m.extend_from_slice(&65u16.to_le_bytes());
    m.extend_from_slice(&1u16.to_le_bytes()); // signing enabled
    m.extend_from_slice(&0x0302u16.to_le_bytes());
    m.extend_from_slice(&0u16.to_le_bytes());
    m.extend_from_slice(&[0x11; 16]); // server guid
    m.extend_from_slice(&0x0Cu32.to_le_bytes()); // LARGE_MTU | MULTI_CHANNEL
    for _ in 0..3 {
        m.extend_from_slice(&(1u32 << 20).to_le_bytes());
    }
    m.extend_from_slice(&[0; 16]); // system time, start time
    m.extend_from_slice(&[0; 8]); // security buffer offset/length, reserved
    m.push(0);
    m
}

pub fn run(addr: SocketAddr, scenario: &str, hold: Duration) -> Result<String, String> {
    let ch = EventChannel::new().map_err(|e| format!("rdma_create_event_channel: {e}"))?;
    let _listener = ch.listen(addr, 4).map_err(|e| format!("listen on {addr}: {e}"))?;
    println!("{scenario}: listening on {addr}");
    let (mut id, _param) = loop {
        match cm_event(&ch, Duration::from_secs(120))? {
            Some(CmEventKind::ConnectRequest { id, param }) => break (id, param),
            Some(_) => continue,
            None => return Err("no client connected within 120 s".into()),
        }
    };
    let ctx = id.context().ok_or("no device")?;
    let pd = Pd::new(ctx).map_err(|e| e.to_string())?;
    let comp = CompChannel::new(ctx).map_err(|e| e.to_string())?;
    let cq = Cq::new(ctx, &comp, 64).map_err(|e| e.to_string())?;
    let caps = QpCaps { max_send_wr: SENDS as u32 + 1, max_recv_wr: RECVS as u32 + 1, max_send_sge: 1, max_recv_sge: 1 };
    id.create_qp(&pd, &cq, caps).map_err(|e| format!("create_qp: {e}"))?;
    let recv = RegisteredBuffer::new(&pd, RECV_SIZE * RECVS, Access::LOCAL_WRITE).map_err(|e| e.to_string())?;
    let send = RegisteredBuffer::new(&pd, SEND_SIZE * SENDS, Access::default()).map_err(|e| e.to_string())?;
    for i in 0..RECVS {
        let sge = recv.sge(i * RECV_SIZE, RECV_SIZE as u32).ok_or("sge")?;
        id.post_recv(i as u64, sge).map_err(|e| format!("post_recv: {e}"))?;
    }
    id.accept(ConnParam { responder_resources: 0, initiator_depth: 0 }, 7).map_err(|e| format!("rdma_accept: {e}"))?;
    let mut s = Served { id, cq, _comp: comp, recv, send, sends: 0 };
    let mut gone = false;
    let req = s.recv(Duration::from_secs(10), &ch, &mut gone)?.ok_or("no SMB Direct negotiate request")?;
    let req = NegotiateRequest::decode(&req).map_err(|e| format!("negotiate request: {e}"))?;
    let granted = if scenario == "grant-zero" { 0 } else { 1 };
    let resp = NegotiateResponse {
        min_version: SMBD_VERSION_1,
        max_version: SMBD_VERSION_1,
        negotiated_version: SMBD_VERSION_1,
        credits_requested: 255,
        credits_granted: granted,
        status: 0,
        max_read_write_size: 1 << 20,
        preferred_send_size: SEND_SIZE as u32,
        max_receive_size: RECV_SIZE as u32,
        max_fragmented_size: 1 << 20,
    };
    s.send(&resp.to_bytes())?;
    println!("{scenario}: negotiate response sent, {granted} credit(s) granted (the client asked for {})", req.credits_requested);
    // Every message the client sends uses one of the credits granted (`granted` in
    // all: no data message of ours grants any): count them. An empty one only grants
    // us credits; an SMB2 NEGOTIATE is answered in a message granting none.
    let mut received = 0u32;
    let end = Instant::now() + hold;
    while Instant::now() < end && !gone {
        let Some(m) = s.recv(end.saturating_duration_since(Instant::now()), &ch, &mut gone)? else { continue };
        received += 1;
        if received > u32::from(granted) {
            return Err(format!("the client sent a message ({} bytes) beyond the {granted} credit(s) granted", m.len()));
        }
        let (h, payload) = DataTransferHeader::decode(&m).map_err(|e| format!("the client's message {received}: {e}"))?;
        let what = if payload.is_empty() {
            "an empty message (a credit grant)".to_string()
        } else if h.remaining_data_length == 0 && payload.len() >= 64 && payload.starts_with(b"\xfeSMB") && payload.get(12..14) == Some(&[0u8, 0][..]) {
            let body = smb2_negotiate_response(payload, 64);
            let hdr = DataTransferHeader { credits_requested: 255, credits_granted: 0, flags: 0, remaining_data_length: 0, data_offset: DATA_OFFSET, data_length: body.len() as u32 };
            let mut out = vec![0u8; DATA_OFFSET as usize + body.len()];
            let n = hdr.encode_with_data(&body, &mut out).map_err(|e| format!("encode: {e}"))?;
            out.truncate(n);
            s.send(&out)?;
            "an SMB2 NEGOTIATE, answered in a message granting 0 credits".to_string()
        } else {
            format!("{} bytes", payload.len())
        };
        println!("{scenario}: message {received} of at most {granted}: {what} (it grants us {})", h.credits_granted);
    }
    let _ = s.id.disconnect();
    Ok(format!(
        "{} message(s) received, none beyond the credits granted; the client {} within {} s",
        received,
        if gone { "disconnected" } else { "was still connected" },
        hold.as_secs()
    ))
}
