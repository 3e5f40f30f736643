//! The host's network interfaces (for FSCTL_QUERY_NETWORK_INTERFACE_INFO).

use nix::ifaddrs::getifaddrs;
use nix::net::if_::InterfaceFlags;
use std::net::IpAddr;

pub struct Interface {
    pub name: String,
    pub index: u32,
    pub addr: IpAddr,
    pub scope_id: u32,
    pub speed_bps: u64,
    pub loopback: bool,
}

/// Interfaces that are up, with their addresses.
pub fn interfaces() -> Vec<Interface> {
    let Ok(list) = getifaddrs() else { return Vec::new() };
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
        let sys = |f: &str| std::fs::read_to_string(format!("/sys/class/net/{name}/{f}")).ok();
        let index = sys("ifindex").and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        let mbps = sys("speed").and_then(|s| s.trim().parse::<i64>().ok()).filter(|v| *v > 0).map(|v| v as u64).unwrap_or(1000);
        out.push(Interface { loopback: ifa.flags.contains(InterfaceFlags::IFF_LOOPBACK), name, index, addr, scope_id, speed_bps: mbps * 1_000_000 });
    }
    out
}
