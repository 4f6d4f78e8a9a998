"""What the server refuses: control-plane calls without the API key, one
sandbox's access token on another, paths that try to leave the sandbox,
and a flood of malformed requests (after which the server still serves
and its memory has not grown)."""

import base64
import json
import os
import socket
import struct
import uuid
from urllib.parse import urlparse

import httpx
import pytest
from e2b import Sandbox

API = os.environ["E2B_API_URL"]
KEY = os.environ["E2B_API_KEY"]

CONTROL_ROUTES = [
    ("POST", "/sandboxes"),
    ("GET", "/sandboxes"),
    ("POST", "/v2/sandboxes"),
    ("GET", "/v2/sandboxes"),
    ("GET", "/sandboxes/metrics?sandbox_ids=x"),
    ("GET", "/sandboxes/{id}"),
    ("DELETE", "/sandboxes/{id}"),
    ("POST", "/sandboxes/{id}/timeout"),
    ("POST", "/sandboxes/{id}/refreshes"),
    ("POST", "/sandboxes/{id}/pause"),
    ("POST", "/sandboxes/{id}/resume"),
    ("POST", "/sandboxes/{id}/connect"),
    ("POST", "/v2/sandboxes/{id}/connect"),
    ("GET", "/sandboxes/{id}/metrics"),
    ("PUT", "/sandboxes/{id}/network"),
    ("POST", "/sandboxes/{id}/snapshots"),
    ("GET", "/sandboxes/{id}/logs"),
    ("GET", "/no/such/route"),
]


@pytest.mark.parametrize("method,route", CONTROL_ROUTES)
def test_every_control_route_needs_the_api_key(sandbox, method, route):
    url = API + route.format(id=sandbox.sandbox_id)
    body = {"timeout": 30} if method in ("POST", "PUT") else None
    for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": KEY + "x"}, {"X-API-Key": ""}):
        r = httpx.request(method, url, json=body, headers=headers)
        assert r.status_code == 401, (method, route, headers, r.status_code, r.text)
        assert r.json()["code"] == 401 and r.json()["message"]
    # The refused calls changed nothing.
    assert sandbox.is_running()
    assert sandbox.get_info().state.value == "running"


def envd(sbx_id, path, token=None, **kw):
    headers = {"E2b-Sandbox-Id": sbx_id, "E2b-Sandbox-Port": "49983", **kw.pop("headers", {})}
    if token is not None:
        headers["X-Access-Token"] = token
    return httpx.request(kw.pop("method", "GET"), os.environ["E2B_SANDBOX_URL"] + path, headers=headers, **kw)


def test_one_sandboxs_token_never_opens_another(created):
    a = Sandbox.create(timeout=60)
    b = Sandbox.create(timeout=60)
    created.extend([a, b])
    token_a = a._envd_access_token
    token_b = b._envd_access_token
    assert token_a and token_b and token_a != token_b
    assert envd(a.sandbox_id, "/health", token_a).status_code == 204
    for token in (token_a, None, "", token_b[:-1]):
        r = envd(b.sandbox_id, "/files?path=/etc/hostname", token)
        assert r.status_code == 401, (token, r.status_code)
        r = envd(
            b.sandbox_id,
            "/process.Process/List",
            token,
            method="POST",
            content=b"{}",
            headers={"Content-Type": "application/json"},
        )
        assert r.status_code == 401
    r = envd(b.sandbox_id, "/files?path=/etc/passwd", token_b)
    assert r.status_code == 200 and "user:x:1000:1000" in r.text


def test_files_paths_stay_inside_the_sandbox(sandbox):
    marker = f"escape-{uuid.uuid4().hex}"
    # .. past the root stops at the sandbox's root.
    sandbox.files.write(f"../../../../../../tmp/{marker}", "inside")
    assert not os.path.exists(f"/tmp/{marker}")
    assert sandbox.commands.run(f"cat /tmp/{marker}").stdout == "inside"
    # A symlink to / inside the sandbox leads to the sandbox's /, not the host's.
    sandbox.files.write(f"/srv/{marker}", sandbox.sandbox_id, user="root")
    sandbox.commands.run(f"ln -s / /home/user/to-root && ln -s /srv/{marker} /home/user/abs-link")
    assert sandbox.files.read(f"/home/user/to-root/srv/{marker}") == sandbox.sandbox_id
    assert sandbox.files.read("abs-link") == sandbox.sandbox_id
    assert not os.path.exists(f"/srv/{marker}")
    # The host's secrets are not there to read.
    with pytest.raises(Exception):
        sandbox.files.read("/etc/shadow")
    # Raw query paths with traversal and NUL bytes are refused or contained.
    token = sandbox._envd_access_token
    r = envd(sandbox.sandbox_id, f"/files?path=%2F..%2F..%2F..%2Fsrv%2F{marker}", token)
    assert r.status_code == 200 and r.text == sandbox.sandbox_id
    r = envd(sandbox.sandbox_id, "/files?path=%2Ftmp%2Fa%00b", token)
    assert r.status_code in (400, 404)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def malformed_requests(sbx_id, token):
    """Bad requests of every kind the issue lists, as (method, path, headers, body)."""
    sb = {"E2b-Sandbox-Id": sbx_id, "X-Access-Token": token}
    stream = {**sb, "Content-Type": "application/connect+json"}
    unary = {**sb, "Content-Type": "application/json"}
    env = lambda flags, payload, length=None: struct.pack(">BI", flags, len(payload) if length is None else length) + payload
    key = {"X-API-Key": KEY, "Content-Type": "application/json"}
    yield "POST", "/process.Process/Start", stream, env(0, b'{"process":{"cmd":"/bin/true"}}')[:-5]  # truncated frame
    yield "POST", "/process.Process/Start", stream, env(0, b"{}", length=0xFFFFFFF0)  # huge length
    yield "POST", "/process.Process/Start", stream, env(1, b"{}")  # compressed, never negotiated
    yield "POST", "/process.Process/Start", stream, env(0, b"not json")
    yield "POST", "/process.Process/Start", stream, env(0, b'{"process":{"cmd":"/bin/true"},"bogus":1}')
    yield "POST", "/process.Process/Start", {**sb, "Content-Type": "text/plain"}, b"hello"  # wrong type
    yield "POST", "/process.Process/SendInput", unary, b'{"process":{"pid":1},"input":{"stdin":"!!!not base64!!!"}}'
    yield "POST", "/process.Process/SendInput", unary, b'{"process":{"pid":"x"}}'
    yield "POST", "/process.Process/StreamInput", stream, env(0, b'{"start":{}}') + b"\x00\x00"
    yield "POST", "/process.Process/List", {**sb, "Content-Type": "application/xml"}, b"<x/>"
    yield "POST", "/filesystem.Filesystem/Stat", unary, b'{"path": 5}'
    yield "POST", "/filesystem.Filesystem/ListDir", unary, b'{"path": "/", "depth": -1}'
    yield "POST", "/filesystem.Filesystem/WatchDir", stream, env(0, b'{"path":"/nope"}')
    yield "POST", "/filesystem.Filesystem/Nope", unary, b"{}"
    yield "POST", "/files?path=/tmp/x", {**sb, "Content-Type": "application/octet-stream", "Content-Encoding": "gzip"}, b"not gzip at all"
    yield "POST", "/files", {**sb, "Content-Type": "multipart/form-data; boundary=zz"}, b"--zz\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\ntrunc"
    yield "POST", "/files?path=/tmp/x", {**sb, "Content-Type": "image/png"}, b"\x89PNG"
    yield "GET", "/files?path=/tmp/x&evil=1", sb, b""
    yield "POST", "/v2/sandboxes", key, b'{"templateID": '
    yield "POST", "/v2/sandboxes", key, b'{"templateID": "base", "timeout": "soon"}'
    yield "POST", "/v2/sandboxes", key, b'{"templateID": "base", "unknownField": true}'
    yield "POST", "/v2/sandboxes", key, b'{"templateID": "base", "metadata": {"a": ["b"]}}'
    yield "POST", "/v2/sandboxes", {**key, "Idempotency-Key": ""}, b'{"templateID":"base"}'
    yield "GET", "/v2/sandboxes?limit=0", key, b""
    yield "GET", "/v2/sandboxes?nextToken=" + base64.b64encode(b"\xff\xfe").decode(), key, b""
    yield "POST", f"/sandboxes/{sbx_id}/timeout", key, b'{"timeout": -5}'
    yield "POST", f"/sandboxes/{sbx_id}/timeout", key, b"[" * 10000
    yield "GET", "/sandboxes/" + "a" * 5000, key, b""

# Answered before the body is read, so the server closes that connection:
# sent on a connection of its own.
def oversized_request():
    return "POST", "/v2/sandboxes", {"X-API-Key": KEY, "Content-Type": "application/json"}, b'{"templateID": "' + b"x" * (2 << 20) + b'"}'


def raw_garbage(host, port):
    """Bytes that are not HTTP at all, and an HTTP/2 preface cut short."""
    for payload in (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00", b"GET / HTTP/1.1\r\nHost: " + b"h" * 100_000):
        with socket.create_connection((host, port), timeout=5) as s:
            try:
                s.sendall(payload)
                s.shutdown(socket.SHUT_WR)
                s.recv(1024)
            except OSError:
                pass


def test_malformed_requests_leave_the_server_serving_with_flat_memory(sandbox):
    pid = int(os.environ["SANDLOT_SERVER_PID"])
    token = sandbox._envd_access_token
    url = urlparse(API)
    requests = list(malformed_requests(sandbox.sandbox_id, token))
    with httpx.Client(base_url=API, timeout=10) as client:

        def flood(rounds):
            statuses = set()
            for i in range(rounds):
                method, path, headers, body = requests[i % len(requests)]
                r = client.request(method, path, headers=headers, content=body)
                statuses.add(r.status_code)
                if r.status_code >= 400 and r.headers.get("content-type", "").startswith("application/json"):
                    err = r.json()
                    assert isinstance(err.get("message"), str) and err["message"], (path, err)
                if i % 100 == 0:
                    raw_garbage(url.hostname, url.port)
                    method, path, headers, body = oversized_request()
                    r = httpx.request(method, API + path, headers=headers, content=body)
                    assert r.status_code == 413
                    statuses.add(r.status_code)
            return statuses

        flood(200)  # warm up: allocator arenas, connection pools
        before = rss_kib(pid)
        statuses = flood(1000)
        after = rss_kib(pid)
    assert 500 not in statuses, "a malformed request crashed a handler"
    assert all(s < 500 or s in (501, 502, 504) for s in statuses), statuses
    assert after - before < 8 * 1024, f"RSS grew from {before} KiB to {after} KiB over 1,000 malformed requests"
    # Still serving: the sandbox and the server answer normally.
    assert sandbox.commands.run("echo alive").stdout == "alive\n"
    assert Sandbox.list().next_items() is not None


def test_legacy_create_secure_or_not():
    def create(secure):
        r = httpx.post(API + "/sandboxes", json={"templateID": "base", "timeout": 30, "secure": secure}, headers={"X-API-Key": KEY})
        assert r.status_code == 201, r.text
        return r.json()

    open_one, secure_one = create(False), create(True)
    try:
        assert "envdAccessToken" not in open_one
        assert envd(open_one["sandboxID"], "/health").status_code == 204
        token = secure_one["envdAccessToken"]
        assert envd(secure_one["sandboxID"], "/health").status_code == 401
        assert envd(secure_one["sandboxID"], "/health", token).status_code == 204
        # The legacy create's default lifetime is its spec's 15 s.
        r = httpx.post(API + "/sandboxes", json={"templateID": "base"}, headers={"X-API-Key": KEY})
        short = r.json()
        info = httpx.get(f"{API}/sandboxes/{short['sandboxID']}", headers={"X-API-Key": KEY}).json()
        from datetime import datetime

        started, ends = (datetime.fromisoformat(info[k].replace("Z", "+00:00")) for k in ("startedAt", "endAt"))
        assert abs((ends - started).total_seconds() - 15) < 2
        httpx.delete(f"{API}/sandboxes/{short['sandboxID']}", headers={"X-API-Key": KEY})
    finally:
        for s in (open_one, secure_one):
            httpx.delete(f"{API}/sandboxes/{s['sandboxID']}", headers={"X-API-Key": KEY})
