"""With --tls-cert/--tls-key and --domain D, the server answers over TLS
(HTTP/1.1 and h2 by ALPN) and routes by Host: api.D is the control plane,
PORT-ID.D a sandbox's port. Run by server/tests/sdk.rs with SANDLOT_TLS_PORT,
SANDLOT_TLS_CA, SANDLOT_DOMAIN and E2B_API_KEY; exits non-zero on failure.

The SDK itself would need wildcard DNS for D and port 443; this drives the
same requests with httpx, connecting to 127.0.0.1 while naming the host
(Host header and TLS SNI, against which the certificate is verified)."""

import os
import sys

import httpx

PORT = os.environ["SANDLOT_TLS_PORT"]
CA = os.environ["SANDLOT_TLS_CA"]
DOMAIN = os.environ["SANDLOT_DOMAIN"]
KEY = os.environ["E2B_API_KEY"]


def call(client, method, host, path, **kw):
    headers = {"Host": host, **kw.pop("headers", {})}
    return client.request(
        method,
        f"https://127.0.0.1:{PORT}{path}",
        headers=headers,
        extensions={"sni_hostname": host},
        **kw,
    )


def main():
    for http2 in (False, True):
        with httpx.Client(verify=CA, http2=http2, timeout=30) as client:
            api = f"api.{DOMAIN}"
            r = call(client, "POST", api, "/v2/sandboxes", json={"templateID": "base", "timeout": 60}, headers={"X-API-Key": KEY})
            assert r.status_code == 201, r.text
            assert r.http_version == ("HTTP/2" if http2 else "HTTP/1.1"), r.http_version
            created = r.json()
            sid, token = created["sandboxID"], created["envdAccessToken"]
            assert created["domain"] == DOMAIN
            envd = f"49983-{sid}.{DOMAIN}"
            try:
                assert call(client, "GET", envd, "/health", headers={"X-Access-Token": token}).status_code == 204
                assert call(client, "GET", envd, "/health").status_code == 401
                r = call(
                    client,
                    "POST",
                    envd,
                    "/files?path=/tmp/over-tls",
                    content=b"tls",
                    headers={"X-Access-Token": token, "Content-Type": "application/octet-stream"},
                )
                assert r.status_code == 200, r.text
                r = call(client, "GET", envd, "/files?path=/tmp/over-tls", headers={"X-Access-Token": token})
                assert r.content == b"tls", r.content
                # Another port of the sandbox is not open (no port forwarding yet).
                r = call(client, "GET", f"8080-{sid}.{DOMAIN}", "/", headers={"X-Access-Token": token})
                assert r.status_code == 502 and "port is not open" in r.json()["message"], r.text
                # The control plane on api.D still wants its key.
                assert call(client, "GET", api, f"/sandboxes/{sid}").status_code == 401
            finally:
                r = call(client, "DELETE", api, f"/sandboxes/{sid}", headers={"X-API-Key": KEY})
                assert r.status_code == 204, r.text
    print("tls and domain routing: 2 passed, 0 failed")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"tls and domain routing failed: {e!r}", file=sys.stderr)
        raise
