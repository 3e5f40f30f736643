"""A loopback TCP relay that records the SMB2 frames passing through it, so a
test can check what the server really did (negotiated cipher and signing
algorithm, encrypted or signed messages) rather than what the client says.

    with Tap(server.host, server.port) as tap:
        run a client against 127.0.0.1:tap.port
    summary = tap.summary()
"""

from __future__ import annotations

import socket
import struct
import threading
from dataclasses import dataclass

PROTO_SMB2 = b"\xfeSMB"
PROTO_TRANSFORM = b"\xfdSMB"
FLAG_SERVER_TO_REDIR = 0x1
FLAG_SIGNED = 0x8
CMD_NEGOTIATE, CMD_SESSION_SETUP = 0x0000, 0x0001
CTX_ENCRYPTION, CTX_SIGNING = 0x0002, 0x0008
CIPHERS = {1: "AES-128-CCM", 2: "AES-128-GCM", 3: "AES-256-CCM", 4: "AES-256-GCM"}
SIGNING = {0: "HMAC-SHA256", 1: "AES-128-CMAC", 2: "AES-128-GMAC"}
KEEP = 4096  # bytes of each frame kept (enough for a NEGOTIATE response)


@dataclass
class Frame:
    conn: int
    to_server: bool
    length: int
    head: bytes  # the first KEEP bytes

    @property
    def proto(self) -> bytes:
        return self.head[:4]

    @property
    def command(self) -> int | None:
        return struct.unpack_from("<H", self.head, 12)[0] if self.proto == PROTO_SMB2 and len(self.head) >= 64 else None

    @property
    def status(self) -> int | None:
        return struct.unpack_from("<I", self.head, 8)[0] if self.proto == PROTO_SMB2 and len(self.head) >= 64 else None

    @property
    def interim(self) -> bool:
        """An async interim response (STATUS_PENDING): not signed (MS-SMB2 3.3.4.1.1, 3.3.4.2)."""
        return self.status == 0x00000103 and bool((self.flags or 0) & 0x2)

    @property
    def flags(self) -> int | None:
        return struct.unpack_from("<I", self.head, 16)[0] if self.proto == PROTO_SMB2 and len(self.head) >= 64 else None


class Tap:
    def __init__(self, host: str, port: int):
        self.upstream = (host, port)
        self.frames: list[Frame] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._socks: list[socket.socket] = []
        self._closing = False
        self._conn_count = 0
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self._threads.append(t)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self._closing = True
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() below
        except OSError:
            pass
        try:
            self._listener.close()
        except OSError:
            pass
        for s in self._socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        for t in self._threads:
            t.join(timeout=5)

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=30)
                server.settimeout(None)
            except OSError as e:
                self.errors.append(f"upstream connect: {e}")
                client.close()
                continue
            with self._lock:
                conn = self._conn_count
                self._conn_count += 1
                self._socks += [client, server]
            for src, dst, to_server in ((client, server, True), (server, client, False)):
                t = threading.Thread(target=self._pump, args=(conn, src, dst, to_server), daemon=True)
                t.start()
                self._threads.append(t)

    def _pump(self, conn: int, src: socket.socket, dst: socket.socket, to_server: bool) -> None:
        header = bytearray()  # Direct TCP header being read
        body = bytearray()    # first KEEP bytes of the frame being read
        need = 4              # bytes missing from the header, or from the frame
        in_header = True
        length = 0
        try:
            while True:
                data = src.recv(1 << 20)
                if not data:
                    break
                # Record complete frames before forwarding their last bytes:
                # the peer cannot answer a frame that has not been recorded,
                # so the log keeps causal order across the two directions.
                view = memoryview(data)
                while view:
                    take = min(need, len(view))
                    if in_header:
                        header += view[:take]
                    elif len(body) < KEEP:
                        body += view[:min(take, KEEP - len(body))]
                    view = view[take:]
                    need -= take
                    if need:
                        continue
                    if in_header:
                        length = int.from_bytes(header[1:4], "big")
                        header.clear()
                        in_header, need = False, length
                        if length:
                            continue
                    with self._lock:
                        self.frames.append(Frame(conn, to_server, length, bytes(body)))
                    body.clear()
                    in_header, need = True, 4
                dst.sendall(data)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    # --- analysis ---------------------------------------------------------

    def negotiate_response(self, conn: int = 0) -> Frame | None:
        for f in self.frames:
            if f.conn == conn and not f.to_server and f.command == CMD_NEGOTIATE:
                return f
        return None

    def negotiated(self, conn: int = 0) -> dict:
        """dialect, cipher and signing algorithm from the NEGOTIATE response."""
        f = self.negotiate_response(conn)
        if f is None:
            return {}
        body = f.head[64:]
        dialect = struct.unpack_from("<H", body, 4)[0]
        out = {"dialect": dialect, "cipher": None, "signing": None}
        if dialect == 0x0311:
            count = struct.unpack_from("<H", body, 6)[0]
            off = struct.unpack_from("<I", body, 60)[0]  # from the start of the SMB2 header
            for _ in range(count):
                if off + 8 > len(f.head):
                    break
                ctype, dlen = struct.unpack_from("<HH", f.head, off)
                data = f.head[off + 8: off + 8 + dlen]
                if ctype == CTX_ENCRYPTION and len(data) >= 4:
                    out["cipher"] = CIPHERS.get(struct.unpack_from("<H", data, 2)[0], "unknown")
                elif ctype == CTX_SIGNING and len(data) >= 4:
                    out["signing"] = SIGNING.get(struct.unpack_from("<H", data, 2)[0], "unknown")
                off = (off + 8 + dlen + 7) & ~7
        return out

    def after_session_setup(self, conn: int = 0) -> list[Frame]:
        """Frames of one connection after the successful SESSION_SETUP response."""
        frames = [f for f in self.frames if f.conn == conn]
        for i, f in enumerate(frames):
            if not f.to_server and f.command == CMD_SESSION_SETUP and f.status == 0:
                return frames[i + 1:]
        return []
