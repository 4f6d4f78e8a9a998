"""Networking through the unmodified SDK: `get_host(port)` reaches a
server inside the sandbox (by Host `PORT-ID.D` with `--domain`, and by the
SDK's headers), `allowPublicTraffic: false` requires the traffic token, and
`allow_internet_access` / `network` rules / `update_network` reach the
library's rules.

Traffic only ever goes to loopback: the rules are checked by what they
refuse (a denied destination is refused by sandlot's proxy inside the
machine and never dialled), never by reaching the world."""

import os
import time

import httpx
import pytest
from e2b import CommandExitException, Sandbox, SandboxException

URL = os.environ["E2B_SANDBOX_URL"]
DOMAIN = os.environ.get("SANDLOT_DOMAIN")

# A server in the sandbox that answers with its path and the Host it saw.
SERVER = r"""
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{self.path} {self.headers.get('Host')} {self.headers.get('X-Access-Token')}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_POST(self):
        n = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(n)[::-1]
        self.send_response(201)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def serve(sbx, port):
    sbx.files.write("/tmp/server.py", SERVER)
    sbx.commands.run(f"python3 /tmp/server.py {port}", background=True)
    check = f"python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}))\""
    for _ in range(100):
        try:
            sbx.commands.run(check, timeout=10)
            return
        except CommandExitException:
            time.sleep(0.05)
    raise AssertionError(f"the server on port {port} did not start")


def port_headers(sbx, port, **extra):
    return {"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": str(port), **extra}


def test_get_host_reaches_a_server_in_the_sandbox(sandbox):
    serve(sandbox, 8000)
    host = sandbox.get_host(8000)
    assert host == f"8000-{sandbox.sandbox_id}.{DOMAIN}"
    r = httpx.get(URL + "/hello?x=1", headers={"Host": host}, timeout=10)
    assert r.status_code == 200
    # The path and Host arrive as sent; the SDK's tokens never do.
    assert r.text == f"/hello?x=1 {host} None"
    r = httpx.post(URL + "/", content=b"abc", headers=port_headers(sandbox, 8000), timeout=10)
    assert (r.status_code, r.text) == (201, "cba")
    # Nothing on the port: the SDK's "port is not open".
    r = httpx.get(URL + "/", headers={"Host": sandbox.get_host(8001)}, timeout=10)
    assert r.status_code == 502 and "port is not open" in r.text


def test_private_ports_need_the_traffic_token(created):
    sbx = Sandbox.create(timeout=120, network={"allow_public_traffic": False, "mask_request_host": "app-${PORT}.local"})
    created.append(sbx)
    serve(sbx, 8000)
    assert httpx.get(URL + "/", headers=port_headers(sbx, 8000), timeout=10).status_code == 401
    wrong = port_headers(sbx, 8000, **{"E2B-Traffic-Access-Token": sbx._envd_access_token})
    assert httpx.get(URL + "/", headers=wrong, timeout=10).status_code == 401
    right = port_headers(sbx, 8000, **{"E2B-Traffic-Access-Token": sbx.traffic_access_token})
    r = httpx.get(URL + "/p", headers=right, timeout=10)
    assert (r.status_code, r.text) == (200, "/p app-8000.local None")
    info = sbx.get_info()
    assert info.network["allow_public_traffic"] is False


PROBE = r"""
import socket, sys, time
started = time.monotonic()
try:
    s = socket.create_connection((sys.argv[1], 80), timeout=10)
    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    data = s.recv(100)
    print("closed" if not data else "answered")
except (ConnectionResetError, ConnectionRefusedError, BrokenPipeError):
    print("refused")
except socket.timeout:
    print("timeout")
print(round(time.monotonic() - started, 1), file=sys.stderr)
"""


def probe(sbx, address):
    sbx.files.write("/tmp/probe.py", PROBE)
    return sbx.commands.run(f"python3 /tmp/probe.py {address}", timeout=30).stdout.strip()


def test_no_internet_is_a_deny_of_all_traffic(created):
    # 203.0.113.0/24 is TEST-NET-3: a denied connection there is refused by
    # sandlot's proxy on this machine, never dialled.
    sbx = Sandbox.create(timeout=120, allow_internet_access=False)
    created.append(sbx)
    assert sbx.get_info().allow_internet_access is False
    assert probe(sbx, "203.0.113.7") in ("refused", "closed")
    # Names are not resolved either (NXDOMAIN from the sandbox's resolver,
    # nothing forwarded).
    r = sbx.commands.run("getent hosts example.com || echo unresolved", timeout=30)
    assert r.stdout.strip() == "unresolved"


def test_update_network_replaces_the_rules(created):
    sbx = Sandbox.create(timeout=120)
    created.append(sbx)
    info = sbx.get_info()
    assert info.allow_internet_access is True
    sbx.update_network({"deny_out": ["203.0.113.0/24"]})
    assert probe(sbx, "203.0.113.7") in ("refused", "closed")
    assert sbx.get_info().network["deny_out"] == ["203.0.113.0/24"]
    sbx.update_network({"allow_internet_access": False})
    assert sbx.get_info().allow_internet_access is False
    assert probe(sbx, "203.0.113.9") in ("refused", "closed")


def test_rules_sandlot_cannot_express_are_refused_by_name(created):
    with pytest.raises(SandboxException) as e:
        created.append(Sandbox.create(timeout=60, network={"allow_out": ["8.8.8.8"], "deny_out": ["8.8.0.0/16"]}))
    assert "8.8.0.0/16" in str(e.value)
    with pytest.raises(SandboxException) as e:
        created.append(Sandbox.create(timeout=60, network={"deny_out": ["not a rule!"]}))
    assert "denyOut" in str(e.value)
    with pytest.raises(SandboxException) as e:
        created.append(Sandbox.create(timeout=60, network={"egress_proxy": {"address": "127.0.0.1:1080"}}))
    assert "egressProxy" in str(e.value)


# A server that switches protocols (as a WebSocket server does) and then
# echoes raw bytes.
UPGRADE_SERVER = r"""
import socket, sys, threading
def serve(conn):
    head = b""
    while b"\r\n\r\n" not in head:
        head += conn.recv(1024)
    assert b"upgrade: echo" in head.lower(), head
    conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
    while data := conn.recv(1024):
        conn.sendall(data.upper())
s = socket.create_server(("127.0.0.1", int(sys.argv[1])))
while True:
    conn, _ = s.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""


def test_upgraded_connections_are_spliced_both_ways(sandbox):
    import socket
    from urllib.parse import urlparse

    sandbox.files.write("/tmp/upgrade.py", UPGRADE_SERVER)
    sandbox.commands.run("python3 /tmp/upgrade.py 9000 >/dev/null 2>&1", background=True)
    serve_check = f"python3 -c \"import socket; socket.create_connection(('127.0.0.1', 9000))\""
    for _ in range(100):
        try:
            sandbox.commands.run(serve_check, timeout=10)
            break
        except CommandExitException:
            time.sleep(0.05)
    target = urlparse(URL)
    with socket.create_connection((target.hostname, target.port), timeout=10) as conn:
        conn.sendall(
            f"GET /ws HTTP/1.1\r\nHost: {sandbox.get_host(9000)}\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += conn.recv(1024)
        assert head.startswith(b"HTTP/1.1 101"), head
        for word in (b"hello", b"again"):
            conn.sendall(word)
            assert conn.recv(1024) == word.upper()
