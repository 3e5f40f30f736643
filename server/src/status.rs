//! `smbdirect status [--json]`: what the server is doing, like Samba's
//! smbstatus. The command asks the supervisor on the status socket in the
//! state directory; the supervisor asks every worker on its control socket
//! (`StatusRequest`), adds its own view (workers, counted connections) and the
//! proxy's per-channel byte counters (`Stats`), and answers one JSON
//! document. The command prints it as tables, or as it is with `--json`.
//!
//! JSON (all numbers plain, times in seconds):
//! `supervisor {pid, uptime_s, state_dir, max_workers, connections}`,
//! `workers [{id, pid, uptime_s, restarts, running, connections}]`,
//! `clients [{client_guid, address, worker, users, channels}]`,
//! `channels [{worker, transport, id, client_guid, address, dialect,
//! sessions, credits_in_use, credits_held, credits_granted, requests,
//! since_s, rdma_read,
//! rdma_write, inline_sent, inline_recv}]` (the last four for RDMA channels
//! while the proxy answers), `sessions [{worker, id, user, dialect, state,
//! trees, opens}]`, `tree_connects [{worker, session, id, share}]`,
//! `open_files [{worker, session, tree, share, path, directory, access,
//! share_access, delete_on_close, locks [{offset, length, exclusive}]}]`.

use crate::objects::{lock, Server, SessionState};
use crate::supervisor::Supervisor;
use serde_json::{json, Value};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Rdma,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "TCP",
            Transport::Rdma => "RDMA",
        }
    }
}

/// One connection of this process, as `status` shows it.
#[derive(Clone)]
struct ConnInfo {
    transport: Transport,
    /// The supervisor's connection id (TCP) or the proxy's channel id (RDMA).
    id: u64,
    guid: [u8; 16],
    peer: Option<SocketAddr>,
    since: SystemTime,
    dialect: Option<u16>,
    sessions: Vec<u64>,
    credits_held: usize,
    credits_granted: u64,
    requests: u64,
    /// The connection's live counts of credits in use: requests being
    /// handled or finished later, and its pending async operations.
    in_use: Option<(Arc<crate::credits::InUse>, Arc<crate::asyncop::AsyncTable>)>,
}

impl ConnInfo {
    /// Credits in use now: the credit charge of requests received and not
    /// answered yet.
    fn credits_in_use(&self) -> u64 {
        self.in_use.as_ref().map_or(0, |(u, a)| u.get() + a.credit_charge())
    }

    fn json(&self) -> Value {
        json!({
            "transport": self.transport.name(),
            "id": self.id,
            "client_guid": guid_string(&self.guid),
            "address": self.peer.map(|a| a.to_string()),
            "dialect": self.dialect.map(dialect_string),
            "sessions": self.sessions,
            "credits_in_use": self.credits_in_use(),
            "credits_held": self.credits_held,
            "credits_granted": self.credits_granted,
            "requests": self.requests,
            "since_s": secs_since(self.since),
        })
    }
}

static REGISTRY: Mutex<BTreeMap<u64, Arc<Mutex<ConnInfo>>>> = Mutex::new(BTreeMap::new());
static NEXT: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The connection served on this thread (conn::serve runs on the thread
    /// that registered it).
    static CURRENT: RefCell<Option<Arc<Mutex<ConnInfo>>>> = const { RefCell::new(None) };
}

/// A connection's entry in the registry, removed when dropped.
pub struct Registered(u64);

impl Drop for Registered {
    fn drop(&mut self) {
        lock(&REGISTRY).remove(&self.0);
        CURRENT.with(|c| c.borrow_mut().take());
    }
}

/// Registers the connection about to be served on this thread.
pub fn register(transport: Transport, id: u64, guid: [u8; 16], peer: Option<SocketAddr>) -> Registered {
    let info = Arc::new(Mutex::new(ConnInfo {
        transport,
        id,
        guid,
        peer,
        since: SystemTime::now(),
        dialect: None,
        sessions: Vec::new(),
        credits_held: 0,
        credits_granted: 0,
        requests: 0,
        in_use: None,
    }));
    let key = NEXT.fetch_add(1, Ordering::Relaxed);
    lock(&REGISTRY).insert(key, info.clone());
    CURRENT.with(|c| *c.borrow_mut() = Some(info));
    Registered(key)
}

/// Called by the connection's thread after each request: what `status` shows
/// of it (a connection not registered is not shown).
pub fn update_current(conn: &crate::conn::Connection) {
    CURRENT.with(|c| {
        if let Some(i) = c.borrow().as_ref() {
            let mut i = lock(i);
            i.dialect = conn.dialect;
            if conn.client_guid != [0; 16] {
                i.guid = conn.client_guid;
            }
            i.sessions.clone_from(&conn.sessions);
            i.credits_held = conn.credits.held();
            i.credits_granted = conn.credits.granted_total();
            if i.in_use.is_none() {
                i.in_use = Some((conn.credits_in_use.clone(), conn.asyncs.clone()));
            }
            i.requests += 1;
        }
    });
}

pub fn guid_string(g: &[u8; 16]) -> String {
    format!(
        "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        u32::from_le_bytes([g[0], g[1], g[2], g[3]]),
        u16::from_le_bytes([g[4], g[5]]),
        u16::from_le_bytes([g[6], g[7]]),
        g[8],
        g[9],
        g[10],
        g[11],
        g[12],
        g[13],
        g[14],
        g[15]
    )
}

fn dialect_string(d: u16) -> String {
    format!("{}.{}.{}", d >> 8, (d >> 4) & 0xF, d & 0xF)
}

fn secs_since(t: SystemTime) -> u64 {
    SystemTime::now().duration_since(t).unwrap_or_default().as_secs()
}

/// This process's part of the status (a worker's answer to `StatusRequest`).
pub fn worker_json(server: &Server) -> Value {
    let conns: Vec<ConnInfo> = lock(&REGISTRY).values().map(|i| lock(i).clone()).collect();
    let channels: Vec<Value> = conns.iter().map(ConnInfo::json).collect();
    let mut sessions = Vec::new();
    let mut trees = Vec::new();
    let mut opens = Vec::new();
    let mut all: Vec<_> = lock(&server.sessions).values().cloned().collect();
    all.sort_by_key(|s| s.id);
    for s in all {
        let state = match *lock(&s.state) {
            SessionState::InProgress => "in progress",
            SessionState::Valid => "valid",
            SessionState::Expired => "expired",
        };
        let mut ts: Vec<_> = lock(&s.trees).values().cloned().collect();
        ts.sort_by_key(|t| t.id);
        for t in &ts {
            trees.push(json!({"session": s.id, "id": t.id, "share": t.share.cfg.name}));
        }
        let mut os: Vec<_> = lock(&s.opens).values().cloned().collect();
        os.sort_by_key(|o| o.volatile_id);
        for o in &os {
            opens.push(json!({
                "session": s.id,
                "tree": o.tree_id(),
                "share": o.share.cfg.name,
                "path": lock(&o.path).clone(),
                "directory": o.is_dir(),
                "access": o.access,
                "share_access": o.share_access,
                "delete_on_close": *lock(&o.delete_on_close),
                "locks": open_locks(server, o),
            }));
        }
        sessions.push(json!({
            "id": s.id,
            "user": s.user_name(),
            "dialect": dialect_string(s.dialect),
            "state": state,
            "trees": ts.len(),
            "opens": os.len(),
        }));
    }
    // Durable opens whose connection is gone, waiting for their client.
    let now = Server::now_ms();
    let disconnected: Vec<Value> = server
        .durable
        .list()
        .into_iter()
        .map(|(id, share, path, until)| json!({"persistent_id": id, "share": share, "path": path, "expires_in_s": until.saturating_sub(now) / 1000}))
        .collect();
    json!({"channels": channels, "sessions": sessions, "tree_connects": trees, "open_files": opens, "disconnected_opens": disconnected})
}

/// The byte-range locks an open holds (from the shared store).
fn open_locks(server: &Server, o: &crate::objects::Open) -> Vec<Value> {
    let Some(key) = o.file_key else { return Vec::new() };
    let me = server.open_id(o.volatile_id);
    let records = server.store.snapshot().unwrap_or_default();
    records
        .iter()
        .filter(|(k, _, _)| *k == crate::store::FileKey::from(key))
        .flat_map(|(_, _, l)| l.locks.iter())
        .filter(|b| b.owner == me)
        .map(|b| json!({"offset": b.offset, "length": b.length, "exclusive": b.exclusive}))
        .collect()
}

/// The whole status, as the supervisor answers it.
pub fn collect(sup: &Supervisor) -> Value {
    let view = sup.snapshot();
    let replies = sup.worker_statuses(Duration::from_secs(3));
    let stats: BTreeMap<u64, smbdirect_rdma_proxy::proto::ChannelStats> =
        sup.proxy_stats(Duration::from_secs(2)).unwrap_or_default().into_iter().map(|c| (c.channel_id, c)).collect();
    let workers: Vec<Value> = view
        .workers
        .iter()
        .map(|w| {
            json!({
                "id": w.id,
                "pid": w.pid,
                "uptime_s": w.uptime.map(|u| u.as_secs()),
                "restarts": w.restarts,
                "running": w.pid.is_some(),
                "started": w.launched,
                "connections": w.connections,
            })
        })
        .collect();
    let (mut channels, mut sessions, mut trees, mut opens) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut disconnected = Vec::new();
    let mut users: BTreeMap<(u32, u64), String> = BTreeMap::new();
    for (w, body) in replies {
        let Ok(v) = serde_json::from_slice::<Value>(&body) else { continue };
        let tag = |list: &Value, out: &mut Vec<Value>| {
            for item in list.as_array().into_iter().flatten() {
                let mut item = item.clone();
                if let Some(m) = item.as_object_mut() {
                    m.insert("worker".into(), json!(w));
                }
                out.push(item);
            }
        };
        for s in v["sessions"].as_array().into_iter().flatten() {
            if let (Some(id), Some(u)) = (s["id"].as_u64(), s["user"].as_str()) {
                users.insert((w, id), u.to_string());
            }
        }
        tag(&v["channels"], &mut channels);
        tag(&v["sessions"], &mut sessions);
        tag(&v["tree_connects"], &mut trees);
        tag(&v["open_files"], &mut opens);
        tag(&v["disconnected_opens"], &mut disconnected);
    }
    for c in &mut channels {
        if c["transport"] == "RDMA" {
            if let Some(s) = c["id"].as_u64().and_then(|id| stats.get(&id)) {
                let m = c.as_object_mut().expect("object");
                m.insert("rdma_read".into(), json!(s.rdma_read));
                m.insert("rdma_write".into(), json!(s.rdma_write));
                m.insert("inline_sent".into(), json!(s.inline_sent));
                m.insert("inline_recv".into(), json!(s.inline_recv));
            }
        }
    }
    channels.sort_by_key(|c| (c["worker"].as_u64(), c["transport"].as_str().map(str::to_owned), c["id"].as_u64()));
    // Clients: the connections the supervisor counts, by ClientGUID (or by
    // address when a client sent none), with the users of their sessions.
    let mut clients: BTreeMap<String, (String, u32, Vec<String>, usize)> = BTreeMap::new();
    for c in &view.conns {
        let addr = c.peer.map(|a| a.ip().to_string()).unwrap_or_default();
        let key = if c.guid == [0; 16] { format!("-{addr}") } else { guid_string(&c.guid) };
        let e = clients.entry(key).or_insert_with(|| (addr.clone(), c.worker, Vec::new(), 0));
        e.3 += 1;
        let conn_id = match c.conn {
            crate::workerproto::ConnRef::Tcp(i) | crate::workerproto::ConnRef::Rdma(i) => i,
        };
        for ch in &channels {
            if ch["worker"].as_u64() == Some(c.worker.into()) && ch["id"].as_u64() == Some(conn_id) {
                for s in ch["sessions"].as_array().into_iter().flatten() {
                    if let Some(u) = s.as_u64().and_then(|s| users.get(&(c.worker, s))) {
                        if !u.is_empty() && !e.2.contains(u) {
                            e.2.push(u.clone());
                        }
                    }
                }
            }
        }
    }
    let clients: Vec<Value> = clients
        .into_iter()
        .map(|(k, (addr, w, users, n))| {
            json!({
                "client_guid": if k.starts_with('-') { Value::Null } else { json!(k) },
                "address": addr,
                "worker": w,
                "users": users,
                "channels": n,
            })
        })
        .collect();
    json!({
        "supervisor": {
            "pid": view.pid,
            "uptime_s": view.uptime.as_secs(),
            "state_dir": view.state_dir.display().to_string(),
            "max_workers": sup.max_workers(),
            "connections": sup.connection_count(),
            "rdma": crate::rdma::SERVICE_UP.load(Ordering::SeqCst),
        },
        "workers": workers,
        "clients": clients,
        "channels": channels,
        "sessions": sessions,
        "tree_connects": trees,
        "open_files": opens,
        "disconnected_opens": disconnected,
    })
}

/// Answers one `smbdirect status` on the status socket.
pub fn answer(sup: &Supervisor, mut s: std::os::unix::net::UnixStream) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut req = [0u8; 64];
    let _ = s.read(&mut req);
    let v = collect(sup);
    let _ = s.write_all(v.to_string().as_bytes());
}

/// `smbdirect status`: asks the supervisor whose state directory is `dir`.
pub fn query(dir: &std::path::Path) -> Result<Value, String> {
    let path = dir.join("status.sock");
    let mut s = std::os::unix::net::UnixStream::connect(&path).map_err(|e| format!("{}: {e} (is `smbdirect serve` running with this state directory?)", path.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(15))).map_err(|e| e.to_string())?;
    s.write_all(b"status\n").map_err(|e| e.to_string())?;
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut body = Vec::new();
    s.read_to_end(&mut body).map_err(|e| format!("reading the answer: {e}"))?;
    serde_json::from_slice(&body).map_err(|e| format!("bad answer from the server: {e}"))
}

fn share_mode(v: u64) -> String {
    let mut s = String::new();
    for (bit, c) in [(1, 'R'), (2, 'W'), (4, 'D')] {
        s.push(if v & bit != 0 { c } else { '-' });
    }
    s
}

fn dur(s: Option<u64>) -> String {
    match s {
        None => "-".into(),
        Some(s) if s < 60 => format!("{s}s"),
        Some(s) if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        Some(s) => format!("{}h{:02}m", s / 3600, (s / 60) % 60),
    }
}

fn table(out: &mut String, title: &str, head: &[&str], rows: Vec<Vec<String>>) {
    out.push_str(&format!("\n{title}\n"));
    if rows.is_empty() {
        out.push_str("  (none)\n");
        return;
    }
    let mut w: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut l = String::from(" ");
        for (i, c) in cells.iter().enumerate() {
            l.push(' ');
            l.push_str(c);
            if i + 1 < cells.len() {
                l.push_str(&" ".repeat(w[i] - c.chars().count()));
            }
        }
        l.push('\n');
        l
    };
    out.push_str(&line(head.iter().map(|h| h.to_string()).collect()));
    for r in rows {
        out.push_str(&line(r));
    }
}

/// The status as tables for people.
pub fn render(v: &Value) -> String {
    let s = |x: &Value| match x {
        Value::Null => "-".to_string(),
        Value::String(t) => t.clone(),
        other => other.to_string(),
    };
    let list = |k: &str| v[k].as_array().cloned().unwrap_or_default();
    let sup = &v["supervisor"];
    let mut out = format!(
        "smbdirect: supervisor pid {}, up {}, {} connection(s), SMB Direct {}, state directory {}\n",
        s(&sup["pid"]),
        dur(sup["uptime_s"].as_u64()),
        s(&sup["connections"]),
        if sup["rdma"].as_bool() == Some(true) { "up" } else { "down" },
        s(&sup["state_dir"])
    );
    table(
        &mut out,
        "Workers",
        &["ID", "PID", "UPTIME", "RESTARTS", "CONNECTIONS"],
        list("workers")
            .iter()
            .filter(|w| w["started"].as_bool() == Some(true))
            .map(|w| vec![s(&w["id"]), s(&w["pid"]), dur(w["uptime_s"].as_u64()), s(&w["restarts"]), s(&w["connections"])])
            .collect(),
    );
    table(
        &mut out,
        "Clients",
        &["CLIENT GUID", "ADDRESS", "WORKER", "CHANNELS", "USERS"],
        list("clients")
            .iter()
            .map(|c| {
                let users: Vec<String> = c["users"].as_array().into_iter().flatten().map(&s).collect();
                vec![s(&c["client_guid"]), s(&c["address"]), s(&c["worker"]), s(&c["channels"]), if users.is_empty() { "-".into() } else { users.join(",") }]
            })
            .collect(),
    );
    table(
        &mut out,
        "Channels",
        &["WORKER", "TRANSPORT", "ID", "ADDRESS", "DIALECT", "CREDITS IN USE/HELD/GRANTED", "REQUESTS", "RDMA READ", "RDMA WRITE", "INLINE SENT"],
        list("channels")
            .iter()
            .map(|c| {
                vec![
                    s(&c["worker"]),
                    s(&c["transport"]),
                    s(&c["id"]),
                    s(&c["address"]),
                    s(&c["dialect"]),
                    format!("{}/{}/{}", s(&c["credits_in_use"]), s(&c["credits_held"]), s(&c["credits_granted"])),
                    s(&c["requests"]),
                    s(&c["rdma_read"]),
                    s(&c["rdma_write"]),
                    s(&c["inline_sent"]),
                ]
            })
            .collect(),
    );
    table(
        &mut out,
        "Sessions",
        &["WORKER", "SESSION", "USER", "DIALECT", "STATE", "TREES", "OPENS"],
        list("sessions")
            .iter()
            .map(|x| vec![s(&x["worker"]), format!("{:#x}", x["id"].as_u64().unwrap_or(0)), s(&x["user"]), s(&x["dialect"]), s(&x["state"]), s(&x["trees"]), s(&x["opens"])])
            .collect(),
    );
    table(
        &mut out,
        "Tree connects",
        &["WORKER", "SESSION", "TREE", "SHARE"],
        list("tree_connects").iter().map(|t| vec![s(&t["worker"]), format!("{:#x}", t["session"].as_u64().unwrap_or(0)), s(&t["id"]), s(&t["share"])]).collect(),
    );
    table(
        &mut out,
        "Open files",
        &["WORKER", "SESSION", "SHARE", "PATH", "ACCESS", "SHARE MODE", "DELETE ON CLOSE", "LOCKS"],
        list("open_files")
            .iter()
            .map(|o| {
                let locks: Vec<String> = o["locks"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|l| format!("{}+{}{}", s(&l["offset"]), s(&l["length"]), if l["exclusive"].as_bool() == Some(true) { "x" } else { "s" }))
                    .collect();
                vec![
                    s(&o["worker"]),
                    format!("{:#x}", o["session"].as_u64().unwrap_or(0)),
                    s(&o["share"]),
                    s(&o["path"]),
                    format!("{:#x}", o["access"].as_u64().unwrap_or(0)),
                    share_mode(o["share_access"].as_u64().unwrap_or(0)),
                    s(&o["delete_on_close"]),
                    if locks.is_empty() { "-".into() } else { locks.join(" ") },
                ]
            })
            .collect(),
    );
    table(
        &mut out,
        "Disconnected durable opens",
        &["WORKER", "FILE ID", "SHARE", "PATH", "EXPIRES IN"],
        list("disconnected_opens")
            .iter()
            .map(|o| vec![s(&o["worker"]), format!("{:#x}", o["persistent_id"].as_u64().unwrap_or(0)), s(&o["share"]), s(&o["path"]), format!("{} s", s(&o["expires_in_s"]))])
            .collect(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_and_modes_read_like_windows() {
        let g = [0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff];
        assert_eq!(guid_string(&g), "00112233-4455-6677-8899-aabbccddeeff");
        assert_eq!(share_mode(7), "RWD");
        assert_eq!(share_mode(1), "R--");
        assert_eq!(dialect_string(0x0311), "3.1.1");
        assert_eq!(dur(Some(3725)), "1h02m");
    }

    #[test]
    fn registry_follows_the_connection() {
        let before = lock(&REGISTRY).len();
        let r = register(Transport::Tcp, 77, [1; 16], None);
        assert!(lock(&REGISTRY).values().any(|i| lock(i).id == 77));
        drop(r);
        assert_eq!(lock(&REGISTRY).len(), before);
        CURRENT.with(|c| assert!(c.borrow().is_none()));
    }

    #[test]
    fn channel_shows_credits_in_use() {
        let r = register(Transport::Tcp, 78, [2; 16], None);
        let in_use = Arc::new(crate::credits::InUse::default());
        let asyncs = crate::asyncop::AsyncTable::new();
        CURRENT.with(|c| lock(c.borrow().as_ref().unwrap()).in_use = Some((in_use.clone(), asyncs)));
        let now = || {
            let i = lock(&REGISTRY).values().find(|i| lock(i).id == 78).cloned().unwrap();
            let v = lock(&i).json();
            v["credits_in_use"].as_u64().unwrap()
        };
        assert_eq!(now(), 0);
        let a = in_use.hold(8);
        let b = in_use.hold(1);
        assert_eq!(now(), 9, "two requests being answered, charges 8 and 1");
        drop(a);
        assert_eq!(now(), 1);
        drop(b);
        assert_eq!(now(), 0);
        drop(r);
    }

    #[test]
    fn render_shows_every_section() {
        let v = json!({
            "supervisor": {"pid": 1, "uptime_s": 5, "state_dir": "/x", "connections": 1, "rdma": false},
            "workers": [{"id": 0, "pid": 2, "uptime_s": 4, "restarts": 0, "started": true, "connections": 1}],
            "clients": [{"client_guid": "g", "address": "127.0.0.1", "worker": 0, "users": ["tester"], "channels": 1}],
            "channels": [{"worker": 0, "transport": "TCP", "id": 1, "address": "127.0.0.1:5", "dialect": "3.1.1", "credits_in_use": 2, "credits_held": 3, "credits_granted": 10, "requests": 9}],
            "sessions": [{"worker": 0, "id": 16, "user": "tester", "dialect": "3.1.1", "state": "valid", "trees": 1, "opens": 1}],
            "tree_connects": [{"worker": 0, "session": 16, "id": 1, "share": "share"}],
            "open_files": [{"worker": 0, "session": 16, "share": "share", "path": "a.txt", "access": 1, "share_access": 3, "delete_on_close": false, "locks": [{"offset": 0, "length": 10, "exclusive": true}]}],
            "disconnected_opens": [{"worker": 1, "persistent_id": 255, "share": "share", "path": "kept.txt", "expires_in_s": 42}],
        });
        let t = render(&v);
        for want in ["Workers", "tester", "a.txt", "RW-", "0+10x", "2/3/10", "IN USE", "Tree connects", "3.1.1", "Disconnected durable opens", "0xff", "kept.txt", "42 s"] {
            assert!(t.contains(want), "{want} missing:\n{t}");
        }
    }
}
