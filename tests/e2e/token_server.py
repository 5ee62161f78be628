#!/usr/bin/env python3
"""A minimal Docker token server for the e2e tests (tests/e2e/auth_tls.sh).

GET /token?service=...&scope=repository:<name>:pull,push[&scope=...] with Basic
credentials answers {"token": <JWT>} as the Docker token spec says. The JWT is
RS256, signed with `openssl dgst -sha256 -sign KEY` (no Python packages
needed), and carries the signing certificate in `x5c` (Distribution verifies
it against its rootcertbundle; berth tries its configured keys). Each user may
get at most the actions listed for them in USERS_JSON; requested actions
beyond those are silently left out, as real token servers do.

usage: token_server.py PORT KEY.pem CERT.pem ISSUER SERVICE USERS_JSON
  USERS_JSON: {"alice": {"password": "...", "actions": ["pull", "push", "delete", "*"]}}
"""

import base64
import http.server
import json
import subprocess
import sys
import time
import urllib.parse

PORT, KEY, CERT, ISSUER, SERVICE, USERS = sys.argv[1:7]
USERS = json.loads(USERS)
with open(CERT) as f:
    pem = f.read()
CERT_DER_B64 = "".join(line for line in pem.splitlines() if "-----" not in line)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(claims: dict) -> str:
    header = {"alg": "RS256", "typ": "JWT", "x5c": [CERT_DER_B64]}
    signing_input = (
        b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    )
    sig = subprocess.run(
        ["openssl", "dgst", "-sha256", "-sign", KEY],
        input=signing_input.encode(),
        capture_output=True,
        check=True,
    ).stdout
    return signing_input + "." + b64url(sig)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        query = urllib.parse.parse_qs(url.query)
        user, allowed = "", []
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            name, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            entry = USERS.get(name)
            if entry is None or entry["password"] != password:
                self.send_response(401)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            user, allowed = name, entry["actions"]
        access = []
        for scope in query.get("scope", []):
            for item in scope.split(" "):
                parts = item.split(":")
                if len(parts) < 3:
                    continue
                kind, name, actions = parts[0], ":".join(parts[1:-1]), parts[-1]
                granted = [
                    a for a in actions.split(",") if a in allowed or "*" in allowed
                ]
                if granted:
                    access.append({"type": kind, "name": name, "actions": granted})
        now = int(time.time())
        token = sign(
            {
                "iss": ISSUER,
                "sub": user,
                "aud": query.get("service", [SERVICE])[0],
                "exp": now + 300,
                "nbf": now - 10,
                "iat": now,
                "jti": str(now) + user,
                "access": access,
            }
        )
        body = json.dumps(
            {"token": token, "access_token": token, "expires_in": 300}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        sys.stderr.write("token_server: " + (fmt % args) + "\n")


http.server.ThreadingHTTPServer(("0.0.0.0", int(PORT)), Handler).serve_forever()
