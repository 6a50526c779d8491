"""A webhook receiver that verifies the service's Standard Webhooks signature.

Python's standard library only. Run it behind your HTTPS front end:

    WEBHOOK_SECRET=whsec_... python3 receiver.py 8080

`verify` is the part to copy: it refuses a delivery whose signature does not
match or whose timestamp is more than five minutes off (a replay), and returns
the parsed payload. Keep the `webhook-id` of what you processed: a retry of a
delivery you already handled carries the same id.
"""

import base64
import hashlib
import hmac
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

TOLERANCE_SECONDS = 300


class InvalidSignature(Exception):
    """The delivery is not signed with the secret, or is too old."""


def verify(secret, headers, body, now=None):
    """The payload of a delivery signed with `secret` (`whsec_...`).

    `headers` maps lower-case header names to values; `body` is the raw bytes.
    """
    message_id = headers.get("webhook-id", "")
    timestamp = headers.get("webhook-timestamp", "")
    signatures = headers.get("webhook-signature", "")
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise InvalidSignature("no webhook-timestamp")
    if abs((now or time.time()) - sent_at) > TOLERANCE_SECONDS:
        raise InvalidSignature("timestamp outside the tolerance")
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    # Several signatures while a rotated-out secret still signs: any may match.
    for candidate in signatures.split(" "):
        version, _, signature = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(signature, expected):
            return json.loads(body)
    raise InvalidSignature("no signature matches")


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            payload = verify(os.environ["WEBHOOK_SECRET"], headers, body)
        except InvalidSignature as refused:
            self.send_response(400)
            self.end_headers()
            self.wfile.write(str(refused).encode())
            return
        print(headers["webhook-id"], payload["type"], payload["data"].get("connection_id"))
        self.send_response(204)
        self.end_headers()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--check":
        # `--check FILE`: verify one delivery saved as {"secret", "headers",
        # "body"} (the test suite uses this); exit 0 if it verifies.
        with open(sys.argv[2]) as f:
            saved = json.load(f)
        try:
            verify(saved["secret"], saved["headers"], saved["body"].encode())
        except InvalidSignature as refused:
            print(refused)
            sys.exit(1)
        sys.exit(0)
    HTTPServer(("", int(sys.argv[1]) if len(sys.argv) > 1 else 8080), Handler).serve_forever()
