"""Calling the service from outside AWS, in Python: every request is signed with
SigV4 for `execute-api` by botocore's own signer, with credentials from the
standard AWS chain (environment, profile, SSO, role).

    pip install botocore
    python3 call_service.py https://<api-id>.execute-api.<region>.amazonaws.com GET /connections
    python3 call_service.py "$URL" POST /connect/sessions '{"connection_id": "shop-42", "product": "crm"}'

The region is AWS_REGION, else the one in the execute-api host name. Against
`make run` (http://127.0.0.1:8787) the same code works: the local run checks no
signature.
"""

import json
import os
import sys
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import botocore.session
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest


def region_of(url):
    """AWS_REGION, else the region in an execute-api host name."""
    if os.environ.get("AWS_REGION"):
        return os.environ["AWS_REGION"]
    labels = (urlsplit(url).hostname or "").split(".")
    if len(labels) > 2 and labels[1] == "execute-api":
        return labels[2]
    raise SystemExit("set AWS_REGION: the URL names no region")


def call(base_url, method, path, body=None):
    """`method path` on the service, signed; returns (status, parsed JSON)."""
    url = base_url.rstrip("/") + path
    data = json.dumps(body).encode() if body is not None else None
    headers = {"content-type": "application/json"} if data is not None else {}
    credentials = botocore.session.Session().get_credentials()
    if credentials is None:
        raise SystemExit("no AWS credentials found")
    request = AWSRequest(method=method, url=url, data=data, headers=headers)
    SigV4Auth(credentials, "execute-api", region_of(base_url)).add_auth(request)
    prepared = urllib.request.Request(
        url, data=data, headers=dict(request.headers.items()), method=method
    )
    try:
        with urllib.request.urlopen(prepared) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as refused:
        # The service's errors are JSON too: {"code", "message"}.
        return refused.code, json.loads(refused.read() or b"null")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    base = sys.argv[1]
    method = sys.argv[2] if len(sys.argv) > 2 else "GET"
    path = sys.argv[3] if len(sys.argv) > 3 else "/connections"
    payload = json.loads(sys.argv[4]) if len(sys.argv) > 4 else None
    status, answer = call(base, method, path, payload)
    print(json.dumps({"status": status, "body": answer}))
    sys.exit(0 if status < 400 else 1)
