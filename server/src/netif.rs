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
    /// An RDMA device is bound to this interface (see [`rdma_netdevs`]).
    pub rdma_capable: bool,
}

/// Interfaces that are up, with their addresses.
pub fn interfaces() -> Vec<Interface> {
    let Ok(list) = getifaddrs() else { return Vec::new() };
    let rdma = rdma_netdevs(Path::new("/sys"));
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
        // An alias (eth0:1) shares its device's RDMA binding.
        let rdma_capable = rdma.contains(name.split(':').next().unwrap_or(&name));
        let sys = |f: &str| std::fs::read_to_string(format!("/sys/class/net/{name}/{f}")).ok();
        let index = sys("ifindex").and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        let mbps = sys("speed").and_then(|s| s.trim().parse::<i64>().ok()).filter(|v| *v > 0).map(|v| v as u64).unwrap_or(1000);
        out.push(Interface {
            loopback: ifa.flags.contains(InterfaceFlags::IFF_LOOPBACK),
            name,
            index,
            addr,
            scope_id,
            speed_bps: mbps * 1_000_000,
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
