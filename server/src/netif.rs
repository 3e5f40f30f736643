//! The host's network interfaces (for FSCTL_QUERY_NETWORK_INTERFACE_INFO).

use nix::ifaddrs::getifaddrs;
use nix::net::if_::InterfaceFlags;
use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;

pub struct Interface {
    pub name: String,
    pub index: u32,
    pub addr: IpAddr,
    pub scope_id: u32,
    pub speed_bps: u64,
    pub loopback: bool,
    /// The NIC spreads receives over several queues (RSS_CAPABLE).
    pub rss_capable: bool,
    /// An RDMA device is bound to this interface (see [`rdma_netdevs`]).
    pub rdma_capable: bool,
}

/// The link speed listed for an interface whose driver reports none (virtual
/// links: loopback, veth, bridges report -1 or nothing): 1 Gb/s, a middle
/// value that neither makes a client prefer it nor shun it.
pub const DEFAULT_SPEED_MBPS: u64 = 1000;

/// What sysfs (`sys`, normally `/sys`) says about the link `name`: its
/// ifindex (0 if unknown), its speed in Mb/s (`speed`, or the default when
/// the driver reports none) and whether it has several receive queues
/// (`queues/rx-*`, RSS).
pub fn link_info(sys: &Path, name: &str) -> (u32, u64, bool) {
    // An alias (eth0:1) is its device's.
    let dev = name.split(':').next().unwrap_or(name);
    let base = sys.join("class/net").join(dev);
    let read = |f: &str| std::fs::read_to_string(base.join(f)).ok();
    let index = read("ifindex").and_then(|s| s.trim().parse().ok()).unwrap_or(0);
    let mbps = read("speed").and_then(|s| s.trim().parse::<i64>().ok()).filter(|v| *v > 0).map_or(DEFAULT_SPEED_MBPS, |v| v as u64);
    let rx_queues = std::fs::read_dir(base.join("queues"))
        .map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("rx-")).count())
        .unwrap_or(0);
    (index, mbps, rx_queues > 1)
}

/// Whether smb.conf's `interfaces` (`patterns`; empty = all) selects the
/// interface `name` with address `addr`. Each entry is an interface name
/// (`*` matches any run of characters, `?` one), an address, or an address
/// with a /prefix length (or a dotted IPv4 netmask), as in Samba.
pub fn selected(patterns: &[String], name: &str, addr: IpAddr) -> bool {
    patterns.is_empty() || patterns.iter().any(|p| pattern_matches(p, name, addr))
}

fn pattern_matches(p: &str, name: &str, addr: IpAddr) -> bool {
    let (net, prefix) = match p.split_once('/') {
        Some((n, m)) => (n, Some(m)),
        None => (p, None),
    };
    if let Ok(net) = net.parse::<IpAddr>() {
        let bits = match (prefix, net) {
            (None, IpAddr::V4(_)) => 32,
            (None, IpAddr::V6(_)) => 128,
            (Some(m), _) => match (m.parse::<u32>(), m.parse::<std::net::Ipv4Addr>()) {
                (Ok(b), _) => b,
                (_, Ok(mask)) => u32::from(mask).leading_ones(),
                _ => return false,
            },
        };
        return in_prefix(net, bits, addr);
    }
    glob(p.as_bytes(), name.as_bytes())
}

fn in_prefix(net: IpAddr, bits: u32, addr: IpAddr) -> bool {
    match (net, addr) {
        (IpAddr::V4(n), IpAddr::V4(a)) if bits <= 32 => {
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) if bits <= 128 => {
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// `*`/`?` matching of an interface name, iterative (no recursion over input).
fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(c) if *c == b'?' || *c == s[si] => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    p[pi.min(p.len())..].iter().all(|c| *c == b'*')
}

/// Interfaces that are up, one entry per address (IPv4 and IPv6), with
/// what sysfs says of their link; only those `patterns` (smb.conf
/// `interfaces`) select, and never one without an ifindex (MS-SMB2 3.3.5.15.11).
pub fn interfaces(patterns: &[String]) -> Vec<Interface> {
    let Ok(list) = getifaddrs() else { return Vec::new() };
    let sys = Path::new("/sys");
    let rdma = rdma_netdevs(sys);
    let mut out = Vec::new();
    for ifa in list {
        if !ifa.flags.contains(InterfaceFlags::IFF_UP) {
            continue;
        }
        let Some(sa) = ifa.address else { continue };
        let (addr, scope_id) = if let Some(v4) = sa.as_sockaddr_in() {
            (IpAddr::V4(v4.ip()), 0)
        } else if let Some(v6) = sa.as_sockaddr_in6() {
            (IpAddr::V6(v6.ip()), v6.scope_id())
        } else {
            continue;
        };
        let name = ifa.interface_name;
        if !selected(patterns, &name, addr) {
            continue;
        }
        let (index, mbps, rss_capable) = link_info(sys, &name);
        if index == 0 {
            continue;
        }
        // An alias (eth0:1) shares its device's RDMA binding.
        let rdma_capable = rdma.contains(name.split(':').next().unwrap_or(&name));
        out.push(Interface {
            loopback: ifa.flags.contains(InterfaceFlags::IFF_LOOPBACK),
            name,
            index,
            addr,
            scope_id,
            speed_bps: mbps.saturating_mul(1_000_000),
            rss_capable,
            rdma_capable,
        });
    }
    out
}

/// Network interfaces that an RDMA device is bound to, from sysfs under
/// `sys` (`/sys`), for every `class/infiniband/<dev>`:
/// - `ports/<n>/gid_attrs/ndevs/<i>`: the netdev of each RoCE GID (RoCE
///   hardware and rxe; entries of unused GIDs cannot be read and are skipped);
/// - `parent`: the netdev a software device (rxe) was added on;
/// - `device/net/<netdev>`: the netdevs of a hardware device's PCI function
///   (InfiniBand's IPoIB, iWARP NICs).
pub fn rdma_netdevs(sys: &Path) -> HashSet<String> {
    let mut out = HashSet::new();
    let names = |p: &Path| -> Vec<std::path::PathBuf> { std::fs::read_dir(p).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default() };
    let mut add = |s: &str| {
        let n = s.trim();
        if !n.is_empty() {
            out.insert(n.to_string());
        }
    };
    for dev in names(&sys.join("class/infiniband")) {
        if let Ok(p) = std::fs::read_to_string(dev.join("parent")) {
            add(&p);
        }
        for n in names(&dev.join("device/net")) {
            if let Some(f) = n.file_name() {
                add(&f.to_string_lossy());
            }
        }
        for port in names(&dev.join("ports")) {
            for gid in names(&port.join("gid_attrs/ndevs")) {
                if let Ok(nd) = std::fs::read_to_string(&gid) {
                    add(&nd);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_info_from_a_fake_sysfs() {
        let t = tempfile::tempdir().unwrap();
        let net = t.path().join("class/net");
        // A NIC with 4 receive queues at 25 Gb/s.
        std::fs::create_dir_all(net.join("eth0/queues/rx-0")).unwrap();
        for q in ["rx-1", "rx-2", "rx-3", "tx-0", "tx-1"] {
            std::fs::create_dir_all(net.join("eth0/queues").join(q)).unwrap();
        }
        std::fs::write(net.join("eth0/ifindex"), "4\n").unwrap();
        std::fs::write(net.join("eth0/speed"), "25000\n").unwrap();
        // A virtual link: one queue, speed -1.
        std::fs::create_dir_all(net.join("veth1/queues/rx-0")).unwrap();
        std::fs::create_dir_all(net.join("veth1/queues/tx-0")).unwrap();
        std::fs::create_dir_all(net.join("veth1/queues/tx-1")).unwrap();
        std::fs::write(net.join("veth1/ifindex"), "9").unwrap();
        std::fs::write(net.join("veth1/speed"), "-1").unwrap();
        assert_eq!(link_info(t.path(), "eth0"), (4, 25000, true));
        assert_eq!(link_info(t.path(), "eth0:1"), (4, 25000, true), "an alias is its device");
        assert_eq!(link_info(t.path(), "veth1"), (9, DEFAULT_SPEED_MBPS, false));
        assert_eq!(link_info(t.path(), "gone0"), (0, DEFAULT_SPEED_MBPS, false));
    }

    #[test]
    fn interfaces_setting_selects_by_name_address_and_prefix() {
        let v4: IpAddr = "192.0.2.2".parse().unwrap();
        let v6: IpAddr = "fd00::2".parse().unwrap();
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(selected(&[], "eth0", v4));
        assert!(selected(&p(&["eth0"]), "eth0", v6));
        assert!(!selected(&p(&["eth1"]), "eth0", v4));
        assert!(selected(&p(&["eth*"]), "eth0", v4));
        assert!(selected(&p(&["e?h0"]), "eth0", v4));
        assert!(!selected(&p(&["*x"]), "eth0", v4));
        assert!(selected(&p(&["lo", "192.0.2.0/24"]), "eth0", v4));
        assert!(!selected(&p(&["192.0.2.0/24"]), "eth0", v6), "an IPv4 network does not select IPv6 addresses");
        assert!(selected(&p(&["192.0.2.0/255.255.255.0"]), "eth0", v4));
        assert!(!selected(&p(&["192.0.3.0/24"]), "eth0", v4));
        assert!(selected(&p(&["192.0.2.2"]), "eth0", v4));
        assert!(selected(&p(&["fd00::/8"]), "eth0", v6));
        assert!(!selected(&p(&["fd00::/200"]), "eth0", v6));
        assert!(!selected(&p(&["10.0.0.0/x"]), "eth0", v4));
    }

    #[test]
    fn rdma_netdevs_from_a_fake_sysfs() {
        let t = tempfile::tempdir().unwrap();
        let sys = t.path();
        assert!(rdma_netdevs(sys).is_empty());
        let ib = sys.join("class/infiniband");
        // rxe0 on eth1: parent, and its RoCE GIDs name eth1 (one GID slot unused).
        std::fs::create_dir_all(ib.join("rxe0/ports/1/gid_attrs/ndevs")).unwrap();
        std::fs::write(ib.join("rxe0/parent"), "eth1\n").unwrap();
        std::fs::write(ib.join("rxe0/ports/1/gid_attrs/ndevs/0"), "eth1\n").unwrap();
        std::fs::write(ib.join("rxe0/ports/1/gid_attrs/ndevs/1"), "").unwrap();
        // A RoCE NIC with GIDs on a VLAN device, and an IB HCA with IPoIB.
        std::fs::create_dir_all(ib.join("mlx5_0/ports/1/gid_attrs/ndevs")).unwrap();
        std::fs::write(ib.join("mlx5_0/ports/1/gid_attrs/ndevs/0"), "enp1s0f0\n").unwrap();
        std::fs::write(ib.join("mlx5_0/ports/1/gid_attrs/ndevs/2"), "enp1s0f0.100\n").unwrap();
        std::fs::create_dir_all(ib.join("mlx4_0/device/net/ib0")).unwrap();
        let got = rdma_netdevs(sys);
        let want: HashSet<String> = ["eth1", "enp1s0f0", "enp1s0f0.100", "ib0"].iter().map(|s| s.to_string()).collect();
        assert_eq!(got, want);
    }
}
