#!/usr/bin/env python3
"""DEVELOPMENT AID: asks a running collector (or dev/serve.py) the read paths of the
contract and validates each answer against docs/openapi.yaml; also checks the error shape
of a bad parameter and that a write without a token is refused with 401.

    python3 collector/console/dev/check_server.py http://127.0.0.1:8080 [TOKEN]

Exit code 1 on any mismatch. Needs PyYAML and jsonschema."""

import json
import sys
import urllib.error
import urllib.request

import check_fixtures as cf


def call(base, path, token, method="GET", body=None):
    req = urllib.request.Request(base.rstrip("/") + path, method=method,
                                 data=None if body is None else json.dumps(body).encode())
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read()


def main():
    base = sys.argv[1]
    token = sys.argv[2] if len(sys.argv) > 2 else None
    ok = True

    def check(path, schema, status=200, method="GET", body=None, tok=token):
        nonlocal ok
        code, ctype, raw = call(base, path, tok, method, body)
        if code != status:
            print(f"{method} {path}: status {code}, expected {status}: {raw[:200]!r}")
            ok = False
            return None
        if "application/json" not in ctype:
            print(f"{method} {path}: Content-Type {ctype!r}")
            ok = False
        data = json.loads(raw)
        ok &= cf.validate(f"{method} {path}", schema, data)
        return data

    check("/api/v1/whoami", cf.response_schema("/api/v1/whoami"))
    check("/api/v1/summary", cf.response_schema("/api/v1/summary"))
    nodes = check("/api/v1/nodes?limit=5", cf.response_schema("/api/v1/nodes"))
    if nodes and nodes["items"]:
        n = nodes["items"][0]["node"]
        check(f"/api/v1/nodes/{n}", cf.response_schema("/api/v1/nodes/{node}"))
        check(f"/api/v1/nodes/{n}/history?since=7d", cf.response_schema("/api/v1/nodes/{node}/history"))
        check(f"/api/v1/nodes/{n}/history?type=faults&since=30d", cf.response_schema("/api/v1/nodes/{node}/history"))
        check(f"/api/v1/nodes/{n}/metrics", cf.response_schema("/api/v1/nodes/{node}/metrics"))
    check("/api/v1/nodes/no-such-node-x", cf.component("Error"), status=404)
    check("/api/v1/alerts?status=firing", cf.response_schema("/api/v1/alerts"))
    check("/api/v1/silences", cf.response_schema("/api/v1/silences"))
    for by in ("node", "site", "region"):
        check(f"/api/v1/uptime?since=1d&by={by}", cf.response_schema("/api/v1/uptime"))
    err = check("/api/v1/uptime?by=planet", cf.component("Error"), status=400)
    if err and err["error"].get("param") != "by":
        print(f"bad `by`: error.param is {err['error'].get('param')!r}")
        ok = False
    check("/api/v1/silences", cf.component("Error"), status=401, method="POST", body={"site": "x", "duration": "1h"}, tok=None)
    print("the server answers as the contract says" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
