//! How `smbdirect serve` starts the proxy: the command line both sides agree
//! on (the `rdma-proxy` binary's options), and the exit statuses by which the
//! proxy can say why it could not serve.
//!
//! `rdma-proxy --control-fd N [--listen ADDR:PORT]... [--pool-size B]
//! [--slot-size B] [--max-io-size B] [--max-rdma-in-flight B] [--rnr-retry N]
//! [--keepalive-interval SECS] [--keepalive-timeout SECS]`
//!
//! Sizes are plain byte counts. No `--listen` means every RDMA device on port
//! 445, and 5445 too when an iWARP device exists.

use std::net::SocketAddr;

/// Exit statuses of the proxy (besides 0 = clean end on control EOF).
pub mod exit {
    /// A general failure (the log says why).
    pub const FAILED: i32 = 1;
    /// Bad command line or control socket.
    pub const USAGE: i32 = 2;
    /// No RDMA device (or none with an address to listen on).
    pub const NO_DEVICE: i32 = 10;
    /// Memory registration refused: RLIMIT_MEMLOCK too low, no CAP_IPC_LOCK.
    pub const NO_MEMLOCK: i32 = 11;
    /// Every listening port was in use.
    pub const PORT_IN_USE: i32 = 12;
}

/// Why the proxy exited, in words for the server's log.
pub fn describe_exit(code: Option<i32>) -> &'static str {
    match code {
        Some(0) => "exited cleanly",
        Some(exit::USAGE) => "refused its command line or control socket",
        Some(exit::NO_DEVICE) => "found no RDMA device to listen on",
        Some(exit::NO_MEMLOCK) => "may not pin memory (raise RLIMIT_MEMLOCK or grant CAP_IPC_LOCK)",
        Some(exit::PORT_IN_USE) => "found its ports in use (another SMB Direct server, e.g. ksmbd?)",
        Some(_) => "failed (its log says why)",
        None => "was killed by a signal",
    }
}

/// The proxy's command line, minus the program name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyArgs {
    pub control_fd: i32,
    pub listen: Vec<SocketAddr>,
    /// Bytes of the shared pool (pinned memory).
    pub pool_size: u64,
    /// SMB Direct MaxReadWriteSize (ksmbd's `smbd max io size`); the pool's
    /// slots are this size too (`--slot-size`).
    pub max_io_size: u32,
    /// Bytes of RDMA READ/WRITE in flight per queue pair (proxy default if None).
    pub max_rdma_in_flight: Option<u64>,
    /// RNR retry count given to the CM (0..=7; proxy default if None).
    pub rnr_retry: Option<u8>,
    /// SMB Direct keepalive: seconds idle before one is sent, and seconds its
    /// answer may take (MS-SMBD KeepaliveInterval; proxy defaults if None).
    pub keepalive_interval: Option<u32>,
    pub keepalive_timeout: Option<u32>,
}

impl Default for ProxyArgs {
    fn default() -> Self {
        ProxyArgs { control_fd: -1, listen: Vec::new(), pool_size: 64 << 20, max_io_size: 8 << 20, max_rdma_in_flight: None, rnr_retry: None, keepalive_interval: None, keepalive_timeout: None }
    }
}

impl ProxyArgs {
    pub fn to_args(&self) -> Vec<String> {
        let mut a = Vec::new();
        let mut kv = |k: &str, v: String| {
            a.push(k.to_string());
            a.push(v);
        };
        kv("--control-fd", self.control_fd.to_string());
        for l in &self.listen {
            kv("--listen", l.to_string());
        }
        kv("--pool-size", self.pool_size.to_string());
        kv("--slot-size", self.max_io_size.to_string());
        kv("--max-io-size", self.max_io_size.to_string());
        if let Some(b) = self.max_rdma_in_flight {
            kv("--max-rdma-in-flight", b.to_string());
        }
        if let Some(r) = self.rnr_retry {
            kv("--rnr-retry", r.to_string());
        }
        if let Some(s) = self.keepalive_interval {
            kv("--keepalive-interval", s.to_string());
        }
        if let Some(s) = self.keepalive_timeout {
            kv("--keepalive-timeout", s.to_string());
        }
        a
    }

    /// Parses what [`ProxyArgs::to_args`] produces (program name excluded).
    pub fn from_args<I: IntoIterator<Item = String>>(args: I) -> Result<ProxyArgs, String> {
        fn num<T: std::str::FromStr>(k: &str, v: &str) -> Result<T, String> {
            v.parse().map_err(|_| format!("bad value {v:?} for {k}"))
        }
        let mut p = ProxyArgs::default();
        let mut it = args.into_iter();
        let mut have_fd = false;
        let mut slot = None;
        while let Some(k) = it.next() {
            let v = it.next().ok_or_else(|| format!("{k} needs a value"))?;
            match k.as_str() {
                "--control-fd" => {
                    p.control_fd = num(&k, &v)?;
                    have_fd = true;
                }
                "--listen" => p.listen.push(num(&k, &v)?),
                "--pool-size" => p.pool_size = num(&k, &v)?,
                "--slot-size" => slot = Some(num::<u32>(&k, &v)?),
                "--max-io-size" => p.max_io_size = num(&k, &v)?,
                "--max-rdma-in-flight" => p.max_rdma_in_flight = Some(num(&k, &v)?),
                "--rnr-retry" => p.rnr_retry = Some(num(&k, &v)?),
                "--keepalive-interval" => p.keepalive_interval = Some(num(&k, &v)?),
                "--keepalive-timeout" => p.keepalive_timeout = Some(num(&k, &v)?),
                other => return Err(format!("unknown option {other}")),
            }
        }
        if p.keepalive_interval == Some(0) || p.keepalive_timeout == Some(0) {
            return Err("--keepalive-interval and --keepalive-timeout take a positive number of seconds".into());
        }
        if !have_fd || p.control_fd < 0 {
            return Err("--control-fd is required".into());
        }
        if p.max_io_size == 0 || u64::from(p.max_io_size) > p.pool_size || slot.is_some_and(|s| s < p.max_io_size) {
            return Err(format!("--max-io-size {} does not fit the pool ({} bytes) or its slots", p.max_io_size, p.pool_size));
        }
        Ok(p)
    }
}

/// Takes ownership of descriptor `n`, inherited across exec from the process
/// that started this one (the proxy's and the workers' control sockets).
/// Refuses stdin/stdout/stderr and a descriptor that is not open.
#[allow(unsafe_code)]
pub fn inherited_fd(n: i32) -> Result<std::os::fd::OwnedFd, String> {
    use std::os::fd::FromRawFd;
    if n < 3 {
        return Err(format!("fd {n}: not an inherited descriptor"));
    }
    if std::fs::symlink_metadata(format!("/proc/self/fd/{n}")).is_err() {
        return Err(format!("fd {n}: not open"));
    }
    // SAFETY: the parent passed descriptor `n` to this process at exec for
    // this use alone; nothing else in the process owns or closes it (it was
    // checked open above, and the caller takes it once, at startup), so an
    // OwnedFd may take it over.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(n) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_round_trip() {
        let a = ProxyArgs {
            control_fd: 7,
            max_io_size: 1 << 20,
            listen: vec!["10.9.0.1:445".parse().unwrap(), "[fe80::1]:5445".parse().unwrap()],
            max_rdma_in_flight: Some(256 << 10),
            rnr_retry: Some(7),
            keepalive_interval: Some(3),
            keepalive_timeout: Some(2),
            ..ProxyArgs::default()
        };
        let args = a.to_args();
        assert_eq!(ProxyArgs::from_args(args.clone()).unwrap(), a);
        // The slot size follows the largest I/O.
        let at = args.iter().position(|x| x == "--slot-size").unwrap();
        assert_eq!(args[at + 1], "1048576");
        let d = ProxyArgs { control_fd: 3, ..ProxyArgs::default() };
        assert_eq!(ProxyArgs::from_args(d.to_args()).unwrap(), d);
    }

    #[test]
    fn bad_args_are_refused() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(ProxyArgs::from_args(s(&[])).is_err());
        assert!(ProxyArgs::from_args(s(&["--control-fd"])).is_err());
        assert!(ProxyArgs::from_args(s(&["--control-fd", "x"])).is_err());
        assert!(ProxyArgs::from_args(s(&["--control-fd", "3", "--bogus", "1"])).is_err());
        assert!(ProxyArgs::from_args(s(&["--control-fd", "3", "--max-io-size", "100000000"])).is_err());
        assert!(ProxyArgs::from_args(s(&["--control-fd", "3", "--slot-size", "4096", "--max-io-size", "8192"])).is_err());
        assert!(ProxyArgs::from_args(s(&["--control-fd", "3", "--listen", "10.0.0.1"])).is_err(), "ADDR:PORT");
        assert!(ProxyArgs::from_args(s(&["--control-fd", "3", "--keepalive-interval", "0"])).is_err());
        assert!(ProxyArgs::from_args(s(&["--control-fd", "3", "--keepalive-timeout", "-1"])).is_err());
        assert!(ProxyArgs::from_args(s(&["--control-fd", "3"])).is_ok());
    }
}
