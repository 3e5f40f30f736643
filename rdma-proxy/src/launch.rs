//! How `smbdirect serve` starts the proxy: the command line both sides agree
//! on, and the exit statuses by which the proxy says why it could not serve.
//!
//! `rdma-proxy --control-fd N [--max-io-size B] [--max-send-size B]
//! [--max-receive-size B] [--max-fragmented-recv-size B]
//! [--receive-credit-max N] [--send-credit-target N] [--pool-size B]
//! [--port P]... [--listen IP]...`
//!
//! Sizes are plain byte counts. No `--port` means 445 and 5445 (iWARP); no
//! `--listen` means every address of every RDMA-capable interface.

use std::net::IpAddr;

/// Exit statuses of the proxy (besides 0 = clean end on control EOF).
pub mod exit {
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
        Some(_) => "failed",
        None => "was killed by a signal",
    }
}

/// The proxy's command line, minus the program name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyArgs {
    pub control_fd: i32,
    /// SMB Direct MaxReadWriteSize (ksmbd's `smbd max io size`).
    pub max_io_size: u32,
    /// MaxSendSize / MaxReceiveSize of one SMB Direct message.
    pub max_send_size: u32,
    pub max_receive_size: u32,
    pub max_fragmented_recv_size: u32,
    pub receive_credit_max: u16,
    pub send_credit_target: u16,
    /// Bytes of the shared pool; slots are `max_io_size` each.
    pub pool_size: u64,
    pub ports: Vec<u16>,
    pub listen: Vec<IpAddr>,
}

impl Default for ProxyArgs {
    fn default() -> Self {
        ProxyArgs {
            control_fd: -1,
            max_io_size: 8 << 20,
            max_send_size: 1364,
            max_receive_size: 1364,
            max_fragmented_recv_size: 1 << 20,
            receive_credit_max: 255,
            send_credit_target: 255,
            pool_size: 64 << 20,
            ports: Vec::new(),
            listen: Vec::new(),
        }
    }
}

impl ProxyArgs {
    pub fn to_args(&self) -> Vec<String> {
        let mut a = vec!["--control-fd".to_string(), self.control_fd.to_string()];
        let mut kv = |k: &str, v: String| {
            a.push(k.to_string());
            a.push(v);
        };
        kv("--max-io-size", self.max_io_size.to_string());
        kv("--max-send-size", self.max_send_size.to_string());
        kv("--max-receive-size", self.max_receive_size.to_string());
        kv("--max-fragmented-recv-size", self.max_fragmented_recv_size.to_string());
        kv("--receive-credit-max", self.receive_credit_max.to_string());
        kv("--send-credit-target", self.send_credit_target.to_string());
        kv("--pool-size", self.pool_size.to_string());
        for p in &self.ports {
            kv("--port", p.to_string());
        }
        for l in &self.listen {
            kv("--listen", l.to_string());
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
        while let Some(k) = it.next() {
            let v = it.next().ok_or_else(|| format!("{k} needs a value"))?;
            match k.as_str() {
                "--control-fd" => {
                    p.control_fd = num(&k, &v)?;
                    have_fd = true;
                }
                "--max-io-size" => p.max_io_size = num(&k, &v)?,
                "--max-send-size" => p.max_send_size = num(&k, &v)?,
                "--max-receive-size" => p.max_receive_size = num(&k, &v)?,
                "--max-fragmented-recv-size" => p.max_fragmented_recv_size = num(&k, &v)?,
                "--receive-credit-max" => p.receive_credit_max = num(&k, &v)?,
                "--send-credit-target" => p.send_credit_target = num(&k, &v)?,
                "--pool-size" => p.pool_size = num(&k, &v)?,
                "--port" => p.ports.push(num(&k, &v)?),
                "--listen" => p.listen.push(num(&k, &v)?),
                other => return Err(format!("unknown option {other}")),
            }
        }
        if !have_fd || p.control_fd < 0 {
            return Err("--control-fd is required".into());
        }
        if p.max_io_size == 0 || u64::from(p.max_io_size) > p.pool_size {
            return Err(format!("--max-io-size {} does not fit --pool-size {}", p.max_io_size, p.pool_size));
        }
        Ok(p)
    }

    /// The ports to listen on (445 and 5445 unless told).
    pub fn ports_or_default(&self) -> Vec<u16> {
        if self.ports.is_empty() {
            vec![445, 5445]
        } else {
            self.ports.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_round_trip() {
        let a = ProxyArgs {
            control_fd: 7,
            max_io_size: 1 << 20,
            ports: vec![4445],
            listen: vec!["10.9.0.1".parse().unwrap(), "fe80::1".parse().unwrap()],
            ..ProxyArgs::default()
        };
        assert_eq!(ProxyArgs::from_args(a.to_args()).unwrap(), a);
        assert_eq!(a.ports_or_default(), vec![4445]);
        assert_eq!(ProxyArgs::default().ports_or_default(), vec![445, 5445]);
    }

    #[test]
    fn bad_args_are_refused() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(ProxyArgs::from_args(s(&[])).is_err());
        assert!(ProxyArgs::from_args(s(&["--control-fd"])).is_err());
        assert!(ProxyArgs::from_args(s(&["--control-fd", "x"])).is_err());
        assert!(ProxyArgs::from_args(s(&["--control-fd", "3", "--bogus", "1"])).is_err());
        assert!(ProxyArgs::from_args(s(&["--control-fd", "3", "--max-io-size", "100000000"])).is_err());
        assert!(ProxyArgs::from_args(s(&["--control-fd", "3"])).is_ok());
    }
}
