"""Start and stop an SMB server under test, and small helpers shared by the
peer tests (tests/peers) and the benchmarks (bench/).

Two targets:
  ours   target/release/smbdirect serve --listen 127.0.0.1:0 --share NAME=PATH
         --user NAME:PASSWORD; it prints "smbdirect: listening on 127.0.0.1:PORT"
         on stdout once bound.
  samba  Samba's smbd through ci/samba.sh on a free loopback port.
"""

from __future__ import annotations

import os
import re
import secrets
import selectors
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TARGETS = ("ours", "samba")
SHARE = "share"
LISTEN_RE = re.compile(rb"^smbdirect: listening on 127\.0\.0\.1:(\d+)\s*$")


class PeerError(RuntimeError):
    """The server under test could not be started or a tool is missing."""


def require_tool(name: str) -> str:
    path = shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)
    if not path:
        raise PeerError(f"required tool {name!r} is not installed (run .ci/run or apt-get install samba smbclient samba-testsuite)")
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def random_password() -> str:
    # letters and digits only: safe inside 'user%pass' and smb.conf
    return "Pw" + secrets.token_hex(10)


def _children(pid: int) -> list[int]:
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    out.extend(int(x) for x in f.read().split())
            except OSError:
                pass
    except OSError:
        pass
    return out


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants that are alive now."""
    seen, todo = [], [pid]
    while todo:
        p = todo.pop()
        if p in seen or not os.path.exists(f"/proc/{p}"):
            continue
        seen.append(p)
        todo.extend(_children(p))
    return seen


def processes_with_arg(arg: str) -> list[int]:
    """Pids whose command line contains the exact argument `arg`."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if arg.encode() in args:
            found.append(int(d))
    return found


def rss_kib(pid: int) -> int:
    """VmRSS of one process in KiB (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class SmbServer:
    target: str
    port: int
    user: str
    password: str
    share_path: Path
    workdir: Path
    log_path: Path
    host: str = "127.0.0.1"
    share: str = SHARE
    proc: subprocess.Popen | None = None
    main_pid: int = 0
    _stopped: bool = field(default=False, repr=False)

    @property
    def unc(self) -> str:
        return f"//{self.host}/{self.share}"

    @property
    def creds(self) -> str:
        return f"{self.user}%{self.password}"

    def pids(self) -> list[int]:
        """Every process that belongs to the server now."""
        pids = process_tree(self.main_pid) if self.main_pid else []
        if self.target == "samba":
            # samba-dcerpcd and its rpcd_* helpers live in another process group
            for p in processes_with_arg(f"--configfile={self.workdir}/smb.conf"):
                if p not in pids:
                    pids.append(p)
        return pids

    def rss_kib(self) -> int:
        return sum(rss_kib(p) for p in self.pids())

    def alive(self) -> bool:
        if self.target == "ours":
            return self.proc is not None and self.proc.poll() is None
        try:
            os.kill(self.main_pid, 0)
            return True
        except OSError:
            return False

    def log_tail(self, n: int = 40) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-n:])

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.target == "ours":
            assert self.proc is not None
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=10)
            if self.proc.stdout:
                self.proc.stdout.close()
        else:
            subprocess.run([str(REPO / "ci/samba.sh"), "stop", str(self.workdir)], check=False)


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the test process dies, so a
    killed pytest leaves no server behind (Linux prctl PR_SET_PDEATHSIG)."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM, 0, 0, 0)


def start_ours(workdir: Path, user: str, password: str, share_path: Path | None = None,
               extra_args: list[str] | None = None) -> SmbServer:
    binary = Path(os.environ.get("SMBDIRECT_BIN", REPO / "target/release/smbdirect"))
    if not binary.is_file():
        raise PeerError(f"{binary} does not exist: run `cargo build --release` first")
    workdir.mkdir(parents=True, exist_ok=True)
    share_path = share_path or workdir / "share"
    share_path.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "smbdirect.log"
    # A state directory of its own: two servers may not share one.
    cmd = [str(binary), "serve", "--listen", "127.0.0.1:0",
           "--share", f"{SHARE}={share_path}", "--user", f"{user}:{password}",
           "--state-dir", str(workdir / "state")]
    cmd += extra_args or []
    # SMB_VIA_PROXY=1: clients reach the server through the stand-in proxy
    # (smbd-tcp-front), i.e. over the channel path an SMB Direct connection takes.
    via_proxy = os.environ.get("SMB_VIA_PROXY") == "1" and "--config" not in cmd
    if via_proxy:
        front = Path(os.environ.get("SMBD_TCP_FRONT_BIN", REPO / "target/release/smbd-tcp-front"))
        front_port = free_port()
        conf = workdir / "via-proxy.conf"
        conf.write_text(f"[global]\n smbdirect:rdma = yes\n smbdirect:rdma proxy = {front}\n"
                        f" smbdirect:rdma listen = 127.0.0.1:{front_port}\n")
        cmd += ["--config", str(conf)]
    env = dict(os.environ)
    env.setdefault("RUST_LOG", "info")
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, env=env,
                            preexec_fn=_die_with_parent)
    log.close()
    port = None
    seen = b""
    sel = selectors.DefaultSelector()
    assert proc.stdout is not None
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + 30
    while port is None and time.monotonic() < deadline:
        if not sel.select(timeout=0.2):
            if proc.poll() is not None:
                break
            continue
        chunk = os.read(proc.stdout.fileno(), 4096)
        if not chunk:
            break
        seen += chunk
        for line in seen.splitlines():
            m = LISTEN_RE.match(line)
            if m:
                port = int(m.group(1))
    sel.close()
    if port is not None and via_proxy:
        wait_port(front_port, timeout=15)
        port = front_port
    server = SmbServer("ours", port or 0, user, password, share_path, workdir, log_path,
                       proc=proc, main_pid=proc.pid)
    if port is None:
        exited = proc.poll()
        server.stop()
        why = (f"exited with code {exited} before printing" if exited is not None
               else "did not print within 30 s")
        raise PeerError(f"{' '.join(cmd)}: {why} 'smbdirect: listening on 127.0.0.1:PORT'; "
                        f"stdout: {seen[-500:]!r}\nstderr tail:\n{server.log_tail()}")
    return server


def start_samba(workdir: Path, user: str, password: str, share_path: Path | None = None,
                share_options: list[str] | None = None) -> SmbServer:
    for tool in ("smbd", "smbpasswd"):
        require_tool(tool)
    env = dict(os.environ)
    if share_path is not None:
        env["SAMBA_SHARE_PATH"] = str(share_path)
    last = ""
    for _attempt in range(3):  # the free port may be taken between probe and bind
        port = free_port()
        r = subprocess.run([str(REPO / "ci/samba.sh"), "start", str(workdir), str(port), user, password,
                            *(share_options or [])], env=env, capture_output=True, text=True)
        if r.returncode == 0:
            break
        last = r.stdout + r.stderr
        if "already in use" not in last and "did not listen" not in last:
            raise PeerError(f"ci/samba.sh start failed:\n{last}")
    else:
        raise PeerError(f"ci/samba.sh start failed 3 times:\n{last}")
    main_pid = int((workdir / "smbd.pid.fg").read_text())
    return SmbServer("samba", port, user, password, share_path or workdir / "share", workdir,
                     workdir / "log/smbd.out", main_pid=main_pid)


def start_server(target: str, workdir: Path, user: str = "tester", password: str | None = None,
                 **kw) -> SmbServer:
    password = password or random_password()
    if target == "ours":
        return start_ours(workdir, user, password, **kw)
    if target == "samba":
        return start_samba(workdir, user, password, **kw)
    raise PeerError(f"unknown target {target!r}: choose one of {TARGETS}")


def wait_port(port: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
