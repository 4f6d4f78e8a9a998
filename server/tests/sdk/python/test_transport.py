"""The wire itself: HTTP/2 with prior knowledge (h2c) for unary and
streaming Connect calls, the Connect envelopes and end-of-stream frame,
and keepalives on an idle stream."""

import base64
import json
import os
import struct

import httpx

URL = os.environ["E2B_SANDBOX_URL"]


def envelopes(data):
    out = []
    while data:
        flags, length = struct.unpack(">BI", data[:5])
        out.append((flags, json.loads(data[5 : 5 + length])))
        data = data[5 + length :]
    return out


def start(client, sandbox, cmd, headers=None):
    body = json.dumps({"process": {"cmd": "/bin/bash", "args": ["-l", "-c", cmd]}}).encode()
    return client.post(
        "/process.Process/Start",
        content=struct.pack(">BI", 0, len(body)) + body,
        headers={
            "E2b-Sandbox-Id": sandbox.sandbox_id,
            "X-Access-Token": sandbox._envd_access_token,
            "Content-Type": "application/connect+json",
            "Connect-Protocol-Version": "1",
            **(headers or {}),
        },
    )


def test_h2c_unary_and_server_stream(sandbox):
    with httpx.Client(base_url=URL, http1=False, http2=True, timeout=30) as client:
        r = client.post(
            "/process.Process/List",
            content=b"{}",
            headers={
                "E2b-Sandbox-Id": sandbox.sandbox_id,
                "X-Access-Token": sandbox._envd_access_token,
                "Content-Type": "application/json",
            },
        )
        assert r.http_version == "HTTP/2" and r.status_code == 200 and r.json() == {}
        r = start(client, sandbox, "echo hi; exit 7")
        assert r.http_version == "HTTP/2" and r.headers["content-type"] == "application/connect+json"
        frames = envelopes(r.content)
        assert list(frames[0][1]["event"]) == ["start"]
        stdout = b"".join(base64.b64decode(f["event"]["data"]["stdout"]) for _, f in frames if "data" in f.get("event", {}))
        assert stdout == b"hi\n"
        end = frames[-2][1]["event"]["end"]
        assert end == {"exitCode": 7, "exited": True, "status": "exit status 7"}
        assert frames[-1] == (2, {})


def test_idle_streams_carry_keepalives(sandbox):
    with httpx.Client(base_url=URL, timeout=30) as client:
        r = start(client, sandbox, "sleep 2.5; echo done", headers={"Keepalive-Ping-Interval": "1"})
        events = [list(f["event"])[0] for flags, f in envelopes(r.content) if flags == 0]
        assert events[0] == "start" and events[-1] == "end"
        assert events.count("keepalive") >= 2, events


def test_errors_end_the_stream_in_its_last_frame(sandbox):
    with httpx.Client(base_url=URL, timeout=30) as client:
        r = start(client, sandbox, "sleep 10", headers={"Connect-Timeout-Ms": "300"})
        frames = envelopes(r.content)
        assert frames[-1][0] == 2
        assert frames[-1][1]["error"]["code"] == "deadline_exceeded"
