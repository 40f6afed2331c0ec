"""A fake HTTP proxy on 127.0.0.1 for the agent's proxy tests (tests/server/test_agent_proxy.py,
tests/agent/test_agent.py).

For CONNECT it opens a tunnel (bytes copied both ways until either side closes); for an
absolute-form request it forwards that one request to the server in origin form and copies the
reply back with "Connection: close", then closes. It resolves names itself from a table
("otter.test" -> 127.0.0.1): the client never resolves the server's name when a proxy is used,
which is why servers are named otter.test in these tests (a loopback address goes straight to
the server whatever the proxy setting). It can demand Basic credentials (407 otherwise) and
refuse tunnels, or never answer. Every thread is bounded in time, every socket has a timeout; nothing leaves
127.0.0.1."""
import base64
import select
import socket
import threading
import time

LIFETIME_S = 30
HEAD_MAX = 16 * 1024
HOSTS = {"otter.test": "127.0.0.1"}


class FakeProxy:
    def __init__(self, auth=None, refuse=None, silent=False):
        self.auth = auth          # (user, password) demanded, or None
        self.refuse = refuse      # a status line for every CONNECT, or None
        self.silent = silent      # read requests, never answer (until closed or stopped)
        self.lock = threading.Lock()
        self.connects = []        # (target, Proxy-Authorization or None), per CONNECT
        self.forwards = []        # (request line, Proxy-Authorization or None), per forward
        self.threads = []
        self.stopping = threading.Event()
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.lsock.settimeout(0.1)
        self.port = self.lsock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self.threads.append(t)

    def _accept(self):
        deadline = time.monotonic() + LIFETIME_S
        while not self.stopping.is_set() and time.monotonic() < deadline:
            try:
                s, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(s,), daemon=True)
            self.threads.append(t)
            t.start()

    @staticmethod
    def _read_head(s):
        buf = b""
        while b"\r\n\r\n" not in buf:
            if len(buf) > HEAD_MAX:
                return None, b""
            got = s.recv(4096)
            if not got:
                return None, b""
            buf += got
        h, rest = buf.split(b"\r\n\r\n", 1)
        lines = h.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        return (lines[0], headers), rest

    @staticmethod
    def _target(hostport):
        host, _, port = hostport.rpartition(":")
        return HOSTS.get(host, host), int(port)

    def _authorized(self, s, headers):
        if not self.auth:
            return True
        want = "Basic " + base64.b64encode(":".join(self.auth).encode()).decode()
        if headers.get("proxy-authorization") == want:
            return True
        s.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                  b"Proxy-Authenticate: Basic realm=\"otter\"\r\nContent-Length: 0\r\n"
                  b"Connection: close\r\n\r\n")
        return False

    def _serve(self, s):
        s.settimeout(10)
        up = None
        try:
            got, rest = self._read_head(s)
            if not got:
                return
            (line, headers) = got
            method, target, _ = line.split(" ", 2)
            with self.lock:
                (self.connects if method == "CONNECT" else self.forwards).append(
                    (line if method != "CONNECT" else target,
                     headers.get("proxy-authorization")))
            if self.silent:
                self.stopping.wait(LIFETIME_S)
                return
            if not self._authorized(s, headers):
                return
            if method == "CONNECT":
                if self.refuse:
                    s.sendall(self.refuse.encode() + b"\r\nContent-Length: 0\r\n\r\n")
                    return
                up = socket.create_connection(self._target(target), timeout=5)
                s.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                self._pump(s, up, rest)
                return
            # an absolute-form request: one, forwarded in origin form, then the reply until close
            assert target.startswith("http://"), target
            hostport, _, path = target[len("http://"):].partition("/")
            length = int(headers.get("content-length", "0"))
            while len(rest) < length:
                more = s.recv(65536)
                if not more:
                    return
                rest += more
            up = socket.create_connection(self._target(hostport), timeout=5)
            fwd = [f"{method} /{path} HTTP/1.1"] + [
                f"{k}: {v}" for k, v in headers.items()
                if k not in ("proxy-authorization", "connection")] + ["Connection: close"]
            up.sendall(("\r\n".join(fwd) + "\r\n\r\n").encode("latin-1") + rest[:length])
            # the reply (the fake server's all have a Content-Length), with "Connection: close":
            # this proxy serves one request per connection
            got, body = self._read_head(up)
            if not got:
                return
            (status, rh) = got
            length = int(rh.get("content-length", "0"))
            while len(body) < length:
                more = up.recv(65536)
                if not more:
                    return
                body += more
            lines = [status] + [f"{k}: {v}" for k, v in rh.items() if k != "connection"]
            s.sendall(("\r\n".join(lines + ["Connection: close"]) + "\r\n\r\n").encode("latin-1")
                      + body[:length])
        except OSError:
            return
        finally:
            if up:
                up.close()
            s.close()

    def _pump(self, a, b, first):
        if first:
            b.sendall(first)
        deadline = time.monotonic() + LIFETIME_S
        while not self.stopping.is_set() and time.monotonic() < deadline:
            r, _, _ = select.select([a, b], [], [], 0.1)
            for src in r:
                data = src.recv(65536)
                if not data:
                    return
                (b if src is a else a).sendall(data)

    def close(self):
        self.stopping.set()
        self.lsock.close()
        for t in self.threads:
            t.join(5)
