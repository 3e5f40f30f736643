//! CHANGE_NOTIFY through the process's one inotify instance: many handles
//! across many sessions, handles sharing a watched directory, a watched
//! directory removed under its handle.

use crate::harness::*;
use std::collections::HashMap;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);
const NOTIFY_CLEANUP: u32 = 0x0000_010B;

fn changes(r: &Resp) -> Vec<(u32, String)> {
    assert_eq!(le16(&r.raw, 64), 9);
    let off = le16(&r.raw, 66) as usize;
    let len = le32(&r.raw, 68) as usize;
    let buf = &r.raw[off..off + len];
    let mut v = Vec::new();
    let mut at = 0;
    while at + 12 <= buf.len() {
        let next = le32(buf, at) as usize;
        let action = le32(buf, at + 4);
        let n = le32(buf, at + 8) as usize;
        let name: Vec<u16> = buf[at + 12..at + 12 + n].chunks(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
        v.push((action, String::from_utf16(&name).unwrap()));
        if next == 0 {
            break;
        }
        at += next;
    }
    v
}

fn pending(c: &mut Client, dir: &[u8; 16], flags: u16) -> Resp {
    let mut b = notify_body(dir, 0x3, 4096);
    b[2..4].copy_from_slice(&flags.to_le_bytes());
    let r = c.call(CHANGE_NOTIFY, 1, &b);
    assert_eq!(r.status, PENDING, "CHANGE_NOTIFY {:#x}", r.status);
    r
}

/// inotify instances this process holds.
fn inotify_instances() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| l.to_string_lossy().contains("inotify"))
        .count()
}

/// 300 watched handles across 30 sessions: more than the kernel's usual
/// inotify instances per user (fs.inotify.max_user_instances, 128), which an
/// instance per handle used up. Each handle gets its own change, and the
/// process holds one inotify instance for all of them.
#[test]
fn three_hundred_handles_across_thirty_sessions_each_get_their_change() {
    let ts = server();
    let mut clients: Vec<Client> = (0..30).map(|_| connected(&ts)).collect();
    // (client, async id) -> the file created in its directory.
    let mut expect: Vec<HashMap<u64, String>> = vec![HashMap::new(); clients.len()];
    for (s, c) in clients.iter_mut().enumerate() {
        for h in 0..10 {
            let name = format!("s{s}h{h}");
            let dir = c.create(&name, FILE_LIST_DIRECTORY, FILE_OPEN_IF, FILE_DIRECTORY_FILE);
            assert_eq!(dir.status, SUCCESS, "directory {name}");
            let r = pending(c, &dir.file_id(), 0);
            expect[s].insert(r.async_id, format!("in-{name}.txt"));
        }
    }
    assert_eq!(ts.server.asyncs.pending(), 300);
    assert!(inotify_instances() <= 1, "{} inotify instances for 300 watched handles", inotify_instances());
    for s in 0..30 {
        for h in 0..10 {
            let name = format!("s{s}h{h}");
            std::fs::write(ts.share_path().join(&name).join(format!("in-{name}.txt")), b"x").unwrap();
        }
    }
    for (s, c) in clients.iter_mut().enumerate() {
        for _ in 0..10 {
            let fin = c.next_async(WAIT).unwrap_or_else(|| panic!("session {s}: a handle got no change"));
            assert_eq!((fin.command, fin.status), (CHANGE_NOTIFY, SUCCESS));
            let want = expect[s].remove(&fin.async_id).expect("a final response for an unknown request");
            assert_eq!(changes(&fin), vec![(1, want)], "session {s}: another handle's change");
        }
        assert!(c.sink.wait(Duration::from_millis(10)).is_none(), "more than one response per handle");
    }
    assert_eq!(ts.server.asyncs.pending(), 0);
}

/// Two handles on one directory share its watch descriptor: both get the
/// change; closing one ends its request and leaves the other working.
#[test]
fn two_handles_on_one_directory_and_closing_one() {
    let ts = server();
    let mut c = connected(&ts);
    let mut d = connected(&ts);
    let a = c.create("both", FILE_LIST_DIRECTORY, FILE_OPEN_IF, FILE_DIRECTORY_FILE).file_id();
    let b = d.create("both", FILE_LIST_DIRECTORY, FILE_OPEN_IF, FILE_DIRECTORY_FILE).file_id();
    let ra = pending(&mut c, &a, 0);
    let rb = pending(&mut d, &b, 0);
    std::fs::write(ts.share_path().join("both/one.txt"), b"1").unwrap();
    for (cl, r) in [(&mut c, &ra), (&mut d, &rb)] {
        let fin = cl.next_async(WAIT).expect("a handle on the directory got no change");
        assert_eq!((fin.async_id, fin.status), (r.async_id, SUCCESS));
        assert_eq!(changes(&fin), vec![(1, "one.txt".to_string())]);
    }
    // Both wait again; the first handle is closed.
    let ra = pending(&mut c, &a, 0);
    let rb = pending(&mut d, &b, 0);
    let msg = c.build(CLOSE, 1, &close_body(&a));
    let v = c.send(msg).unwrap();
    assert_eq!((v[0].async_id, v[0].status), (ra.async_id, NOTIFY_CLEANUP));
    assert!(d.sink.wait(Duration::from_millis(100)).is_none(), "the other handle's request ended with the close");
    std::fs::write(ts.share_path().join("both/two.txt"), b"2").unwrap();
    let fin = d.next_async(WAIT).expect("the remaining handle got no change after the other's close");
    assert_eq!((fin.async_id, fin.status), (rb.async_id, SUCCESS));
    assert_eq!(changes(&fin), vec![(1, "two.txt".to_string())]);
    // A change made while nothing waits is reported by the next request.
    std::fs::write(ts.share_path().join("both/three.txt"), b"3").unwrap();
    let r = d.call(CHANGE_NOTIFY, 1, &notify_body(&b, 0x1, 4096));
    assert_eq!(r.status, SUCCESS);
    assert_eq!(changes(&r), vec![(1, "three.txt".to_string())]);
}

/// A watched directory removed: a subdirectory of a WATCH_TREE handle's
/// tree (its watch descriptor ends, IN_IGNORED) is reported as removed, and
/// one made again under the same name is watched anew. The handle's own
/// directory, held open by the handle, stays watched until the handle is
/// closed (the kernel reports its removal only then), and the close ends its
/// request; other handles are not affected.
#[test]
fn a_deleted_watched_directory_ends_its_requests() {
    let ts = server();
    let mut c = connected(&ts);
    std::fs::create_dir_all(ts.share_path().join("tree/sub")).unwrap();
    let tree = c.create("tree", FILE_LIST_DIRECTORY, FILE_OPEN, FILE_DIRECTORY_FILE).file_id();
    let gone = c.create("gone", FILE_LIST_DIRECTORY, FILE_OPEN_IF, FILE_DIRECTORY_FILE).file_id();
    let r = pending(&mut c, &tree, 1);
    std::fs::remove_dir(ts.share_path().join("tree/sub")).unwrap();
    let fin = c.next_async(WAIT).expect("the removal of a subdirectory was not reported");
    assert_eq!((fin.async_id, fin.status), (r.async_id, SUCCESS));
    assert_eq!(changes(&fin), vec![(2, "sub".to_string())]);
    std::fs::create_dir(ts.share_path().join("tree/sub")).unwrap();
    std::fs::write(ts.share_path().join("tree/sub/new.txt"), b"n").unwrap();
    let r = c.call(CHANGE_NOTIFY, 1, &{
        let mut b = notify_body(&tree, 0x3, 4096);
        b[2] = 1;
        b
    });
    assert_eq!(r.status, SUCCESS);
    assert_eq!(changes(&r), vec![(1, "sub".to_string()), (1, "sub\\new.txt".to_string())]);

    let rg = pending(&mut c, &gone, 0);
    let rt = pending(&mut c, &tree, 1);
    std::fs::remove_dir(ts.share_path().join("gone")).unwrap();
    let msg = c.build(CLOSE, 1, &close_body(&gone));
    let v = c.send(msg).unwrap();
    assert_eq!((v[0].async_id, v[0].status), (rg.async_id, NOTIFY_CLEANUP));
    assert_eq!((v[1].command, v[1].status), (CLOSE, SUCCESS));
    std::fs::write(ts.share_path().join("tree/after.txt"), b"a").unwrap();
    let fin = c.next_async(WAIT).expect("the other handle got no change");
    assert_eq!((fin.async_id, fin.status), (rt.async_id, SUCCESS));
    assert_eq!(changes(&fin), vec![(1, "after.txt".to_string())]);
}

/// WATCH_TREE: a directory made below the watched one is watched too, by
/// each tree handle, and a handle on the subdirectory itself shares its
/// watch descriptor.
#[test]
fn watch_tree_follows_new_subdirectories() {
    let ts = server();
    let mut c = connected(&ts);
    let top = c.create("top", FILE_LIST_DIRECTORY, FILE_OPEN_IF, FILE_DIRECTORY_FILE).file_id();
    let r = pending(&mut c, &top, 1);
    std::fs::create_dir(ts.share_path().join("top/sub")).unwrap();
    let fin = c.next_async(WAIT).expect("no change for the new directory");
    assert_eq!((fin.async_id, fin.status), (r.async_id, SUCCESS));
    assert_eq!(changes(&fin), vec![(1, "sub".to_string())]);
    let sub = c.create("top\\sub", FILE_LIST_DIRECTORY, FILE_OPEN, FILE_DIRECTORY_FILE).file_id();
    let rt = pending(&mut c, &top, 1);
    let rs = pending(&mut c, &sub, 0);
    std::fs::write(ts.share_path().join("top/sub/f.txt"), b"f").unwrap();
    let mut got: HashMap<u64, Vec<(u32, String)>> = HashMap::new();
    for _ in 0..2 {
        let fin = c.next_async(WAIT).expect("a handle got no change");
        assert_eq!(fin.status, SUCCESS);
        got.insert(fin.async_id, changes(&fin));
    }
    assert_eq!(got[&rt.async_id], vec![(1, "sub\\f.txt".to_string())]);
    assert_eq!(got[&rs.async_id], vec![(1, "f.txt".to_string())]);
}
