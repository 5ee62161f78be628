#!/usr/bin/env python3
"""A load balancer for the replica tests: every HTTP request goes to a backend picked at
random, so one push's POST, PATCHes and PUT land on different registry replicas. Standard
library only; bodies are streamed (chunked or sized), never held whole.

usage: random_lb.py LISTEN_PORT BACKEND_PORT... (all on 127.0.0.1)
Logs one line per request to stderr: METHOD PATH -> backend port, status.
"""

import http.client
import random
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BACKENDS = [int(p) for p in sys.argv[2:]]
HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
       "proxy-connection"}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return
                data = self.rfile.read(size)
                self.rfile.readline()
                yield data
        else:
            left = int(self.headers.get("Content-Length") or 0)
            while left > 0:
                data = self.rfile.read(min(left, 1 << 20))
                if not data:
                    return
                left -= len(data)
                yield data

    def forward(self):
        port = random.choice(BACKENDS)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        chunked = self.headers.get("Transfer-Encoding", "").lower() == "chunked"
        has_body = chunked or "Content-Length" in self.headers
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
        for k, v in headers.items():
            conn.putheader(k, v)
        if chunked:
            conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        if has_body:
            for data in self.body():
                if chunked:
                    conn.send(b"%x\r\n%s\r\n" % (len(data), data))
                else:
                    conn.send(data)
            if chunked:
                conn.send(b"0\r\n\r\n")
        resp = conn.getresponse()
        sys.stderr.write(f"{self.command} {self.path} -> {port} {resp.status}\n")
        self.send_response_only(resp.status, resp.reason)
        length = resp.getheader("Content-Length")
        for k, v in resp.getheaders():
            if k.lower() not in HOP:
                self.send_header(k, v)
        if length is None and self.command != "HEAD" and resp.status not in (204, 304):
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            while data := resp.read1(1 << 20):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.end_headers()
            if self.command != "HEAD":
                while data := resp.read1(1 << 20):
                    self.wfile.write(data)
        conn.close()

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = forward


ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
