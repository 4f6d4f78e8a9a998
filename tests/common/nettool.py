# A network client and server for the sandbox network tests, run inside
# sandboxes by the host's python3 (the base template binds /usr). Each
# client command prints one JSON object: {"ok": true, ...} or
# {"ok": false, "error": <exception class>, "errno": <n>}; the exit code is
# 0 either way (the test decides what is expected).
#
#   get HOST PORT HOSTHEADER PATH   HTTP/1.1 GET, the whole response
#   resolve NAME                    getaddrinfo (the sandbox's resolv.conf,
#                                   /etc/hosts, nsswitch)
#   tls HOST PORT SNI               a TLS ClientHello naming SNI
#   udp HOST PORT                   one datagram, wait for an answer
#   serve ADDR PORT                 echo server: prints "listening", then
#                                   answers each connection "inside:<line>"

import json
import socket
import ssl
import sys
import time


def out(**fields):
    print(json.dumps(fields), flush=True)
    sys.exit(0)


def main():
    cmd = sys.argv[1]
    if cmd == "get":
        host, port, header, path = sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
        start = time.monotonic()
        s = socket.create_connection((host, port), timeout=30)
        request = f"GET {path} HTTP/1.1\r\nHost: {header}\r\nConnection: close\r\n\r\n"
        s.sendall(request.encode())
        size, head = 0, b""
        while True:
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            if len(head) < 4096:
                head += chunk[: 4096 - len(head)]
            size += len(chunk)
        if size == 0:
            raise ConnectionResetError(104, "closed without a reply")
        out(ok=True, body=head.decode("latin-1"), bytes=size,
            seconds=time.monotonic() - start)
    elif cmd == "resolve":
        infos = socket.getaddrinfo(sys.argv[2], 80, type=socket.SOCK_STREAM)
        out(ok=True, addrs=sorted({info[4][0] for info in infos}))
    elif cmd == "tls":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        s = socket.create_connection((sys.argv[2], int(sys.argv[3])), timeout=30)
        tls = context.wrap_socket(s, server_hostname=sys.argv[4],
                                  do_handshake_on_connect=False)
        try:
            tls.do_handshake()
        except ssl.SSLError as e:
            # The fake server answers in plain text: reaching it ends here.
            out(ok=True, handshake=type(e).__name__)
        out(ok=True, handshake="done")
    elif cmd == "udp":
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.settimeout(5)
        u.connect((sys.argv[2], int(sys.argv[3])))
        u.send(b"ping")
        out(ok=True, answer=u.recv(512).decode("latin-1"))
    elif cmd == "serve":
        addr, port = sys.argv[2], int(sys.argv[3])
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        server = socket.socket(family, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((addr, port))
        server.listen(16)
        print("listening", flush=True)
        while True:
            conn, _ = server.accept()
            line = conn.recv(256)
            conn.sendall(b"inside:" + line)
            conn.close()
    else:
        raise SystemExit(f"unknown command {cmd}")


try:
    main()
except SystemExit:
    raise
except Exception as e:  # the test reads what failed
    out(ok=False, error=type(e).__name__, errno=getattr(e, "errno", None), text=str(e))
