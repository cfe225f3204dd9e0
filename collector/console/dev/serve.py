#!/usr/bin/env python3
"""DEVELOPMENT AID, not shipped and not the collector: serves the console's static files and
answers /api/v1/... from the JSON fixtures in dev/fixtures/ (see make_fixtures.py), so the
console can be looked at without a running collector.

    python3 collector/console/dev/serve.py [--port 0]

Prints `http://127.0.0.1:PORT/` once listening (port 0 = any free port). Tokens: none is
anonymous (reads allowed), `op` is an operator, `view` a viewer, anything else is refused.
`/api/v1/events` sends a `state` and a critical `alert` event two seconds after connecting,
then keep-alive comments."""

import argparse
import json
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

DEV = Path(__file__).resolve().parent
CONSOLE = DEV.parent
FIX = DEV / "fixtures"
TZ = timezone(timedelta(hours=8))
TOKENS = {"op": ("ops-desk-1", "operator"), "view": ("wall-screen", "viewer")}
LOCK = threading.Lock()


def load(name):
    return json.loads((FIX / name).read_text(encoding="utf-8"))


def now_stamp():
    return datetime.now(TZ).isoformat(timespec="seconds")


def live_events():
    """The events the dev stream sends: (type, data) in contract shapes."""
    n = next(x for x in load("nodes.json")["items"] if x["state"] == "online" and x["kind"] == "siren")
    now_ms = int(time.time() * 1000)
    return [
        ("state", {"node": n["node"], "region": n["region"], "site": n["site"], "kind": n["kind"], "name": n["name"],
                   "from": "online", "to": "offline", "at": now_stamp(), "cause": "will"}),
        ("alert", {"v": 1, "id": "dev0000000000001", "rule": "node_offline", "severity": "critical", "status": "firing",
                   "region": n["region"], "site": n["site"], "node": n["node"], "kind": n["kind"],
                   "started_at": now_ms, "summary": f"{n['name']} ({n['node']}) is offline: connection lost"}),
    ]


def rollup(row, members):
    """Sums node rows into one group row, as the uptime engine does."""
    total = lambda k: sum(m[k] for m in members)
    up, down, unknown, outages = total("up_s"), total("downtime_s"), total("unknown_s"), total("outages")
    longest = [m["longest_outage_s"] for m in members if m["longest_outage_s"] is not None]
    row.update({"nodes": len(members), "availability_pct": 100.0 * up / (up + down) if up + down else None,
                "coverage_pct": 100.0 * (up + down) / (up + down + unknown) if up + down + unknown else None,
                "up_s": up, "downtime_s": down, "maintenance_s": total("maintenance_s"), "unknown_s": unknown,
                "outages": outages, "longest_outage_s": max(longest) if longest else None,
                "mttr_s": down / outages if outages else None, "mtbf_s": up / outages if outages else None})
    return row


class Handler(SimpleHTTPRequestHandler):
    alerts = None
    silences = None

    def __init__(self, *a, **kw):
        super().__init__(*a, directory=str(CONSOLE), **kw)

    def log_message(self, fmt, *args):
        sys.stderr.write("dev-serve: " + fmt % args + "\n")

    # --- helpers ---
    def send_json(self, status, data, headers=()):
        body = json.dumps(data, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def error(self, status, code, message, param=None):
        err = {"code": code, "message": message}
        if param:
            err["param"] = param
        extra = [("WWW-Authenticate", "Bearer")] if status == 401 else []
        self.send_json(status, {"error": err}, extra)

    def caller(self, query):
        """(name, role) or None for an anonymous caller; False when the token is unknown."""
        auth = self.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else query.get("access_token", [None])[0]
        if not token:
            return None
        return TOKENS.get(token, False)

    def operator(self, query):
        who = self.caller(query)
        if who is False or who is None:
            self.error(401, "unauthorized", "this request needs an operator token")
            return None
        if who[1] != "operator":
            self.error(403, "forbidden", f"this needs the operator role; token {who[0]} is a viewer")
            return None
        return who

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n) or b"{}")

    # --- routes ---
    def do_GET(self):
        url = urlparse(self.path)
        q = parse_qs(url.query)
        if not url.path.startswith("/api/"):
            return super().do_GET()
        if self.caller(q) is False:
            return self.error(401, "unauthorized", "unknown token")
        parts = url.path.strip("/").split("/")[2:]
        one = lambda k: q.get(k, [None])[0]
        if parts == ["whoami"]:
            who = self.caller(q)
            return self.send_json(200, {"name": who[0], "role": who[1]} if who else {"name": None, "role": "anonymous"})
        if parts == ["summary"]:
            return self.send_json(200, load("summary.json"))
        if parts == ["nodes"]:
            items = load("nodes.json")["items"]
            for k in ("region", "site", "kind"):
                if one(k):
                    items = [n for n in items if n[k] == one(k)]
            if one("state"):
                items = [n for n in items if n["state"] in one("state").split(",")]
            limit = int(one("limit") or 100)
            return self.send_json(200, {"items": items[:limit], "next_cursor": None, "total": len(items)})
        if parts[:1] == ["nodes"] and len(parts) >= 2:
            node = next((n for n in load("nodes.json")["items"] if n["node"] == parts[1]), None)
            if node is None:
                return self.error(404, "not_found", f"no node {parts[1]}", "node")
            if len(parts) == 2:
                d = load("node.json")
                d.update(node)
                return self.send_json(200, d)
            if parts[2] == "history":
                kind = one("type") or "transitions"
                if kind not in ("transitions", "faults"):
                    return self.error(400, "bad_parameter", "expected transitions or faults", "type")
                d = load(f"history-{kind}.json")
                d["node"] = node["node"]
                return self.send_json(200, d)
            if parts[2] == "metrics":
                d = load("metrics.json")
                d["node"] = node["node"]
                return self.send_json(200, d)
        if parts == ["alerts"]:
            with LOCK:
                items = list(Handler.alerts)
            if one("status"):
                items = [a for a in items if a["status"] == one("status")]
            return self.send_json(200, {"items": items, "next_cursor": None, "total": len(items)})
        if parts == ["silences"]:
            with LOCK:
                items = list(Handler.silences)
            return self.send_json(200, {"items": items, "next_cursor": None, "total": len(items)})
        if parts == ["uptime"]:
            return self.uptime(one)
        if parts == ["events"]:
            return self.stream()
        return self.error(404, "not_found", f"no route {url.path}")

    def uptime(self, one):
        """Filters the per-node fixture and rolls it up like the engine (time-weighted)."""
        by = one("by") or "node"
        if by not in ("node", "site", "region", "kind", "network"):
            return self.error(400, "bad_parameter", f"bad parameter `by` ({by!r}): expected one of node, site, region, kind, network", "by")
        report = load("uptime-node.json")
        rows = [r for r in report["rows"] if all(not one(k) or r[k] == one(k) for k in ("region", "site", "node", "kind"))]
        if one("node"):
            for r in rows:
                r["outage_list"] = load("outages.json")
        if by != "node":
            keys = {"site": ("region", "site"), "region": ("region",), "kind": ("kind",), "network": ()}[by]
            groups = {}
            for r in rows:
                groups.setdefault(tuple(r[k] for k in keys), []).append(r)
            rows = [rollup(dict(zip(keys, key)), members) for key, members in sorted(groups.items())]
            if by == "network" and not rows:
                rows = [rollup({}, [])]
        report.update(by=by, rows=rows)
        return self.send_json(200, report)

    def do_POST(self):
        url = urlparse(self.path)
        q = parse_qs(url.query)
        parts = url.path.strip("/").split("/")[2:]
        if len(parts) == 3 and parts[0] == "alerts" and parts[2] == "ack":
            who = self.operator(q)
            if not who:
                return
            body = self.body()
            with LOCK:
                a = next((a for a in Handler.alerts if a["id"] == parts[1]), None)
                if a is None:
                    return self.error(404, "not_found", f"no alert {parts[1]}", "id")
                if a["ack"]:
                    return self.error(409, "already_acknowledged", f"acknowledged by {a['ack']['by']}")
                a["ack"] = {"by": who[0], "at": now_stamp(), "comment": body.get("comment")}
                return self.send_json(200, a)
        if parts == ["silences"]:
            who = self.operator(q)
            if not who:
                return
            b = self.body()
            if not any(b.get(k) for k in ("region", "site", "node", "kind")):
                return self.error(400, "bad_body", "give at least one of region, site, node, kind", "region")
            start = datetime.now(TZ)
            s = {k: b[k] for k in ("region", "site", "node", "kind") if b.get(k)}
            hours = {"1h": 1, "2h": 2, "4h": 4, "8h": 8, "1d": 24, "3d": 72, "7d": 168}.get(b.get("duration"), 2)
            s.update({"id": f"dev-{int(time.time() * 1000)}", "starts_at": b.get("starts_at") or start.isoformat(timespec="seconds"),
                      "ends_at": (start + timedelta(hours=hours)).isoformat(timespec="seconds"),
                      "created_by": who[0], "comment": b.get("comment"), "status": "active"})
            with LOCK:
                Handler.silences.insert(0, s)
            return self.send_json(201, s, [("Location", f"/api/v1/silences/{s['id']}")])
        return self.error(404, "not_found", f"no route {url.path}")

    def do_DELETE(self):
        url = urlparse(self.path)
        q = parse_qs(url.query)
        parts = url.path.strip("/").split("/")[2:]
        if len(parts) == 2 and parts[0] == "silences":
            if not self.operator(q):
                return
            with LOCK:
                s = next((s for s in Handler.silences if s["id"] == parts[1]), None)
                if s is None:
                    return self.error(404, "not_found", f"no silence {parts[1]}", "id")
                s["status"] = "expired"
                s["ends_at"] = now_stamp()
                return self.send_json(200, s)
        return self.error(404, "not_found", f"no route {url.path}")

    @staticmethod
    def remember(n):
        """Keeps a streamed notification as an API alert, so it can be listed and acked."""
        a = {k: v for k, v in n.items() if k != "v"}
        a["started_at"] = datetime.fromtimestamp(n["started_at"] / 1000, TZ).isoformat(timespec="milliseconds")
        a.update(ended_at=None, ack=None, notified=True)
        with LOCK:
            Handler.alerts[:] = [x for x in Handler.alerts if x["id"] != a["id"]]
            Handler.alerts.insert(0, a)

    def stream(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        try:
            self.wfile.write(b"retry: 3000\n\n")
            self.wfile.flush()
            time.sleep(2)
            for i, (kind, data) in enumerate(live_events(), start=1):
                if kind == "alert":
                    self.remember(data)
                line = f"id: dev-{i}\nevent: {kind}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"
                self.wfile.write(line.encode())
                self.wfile.flush()
            while True:
                time.sleep(15)
                self.wfile.write(b": keep-alive\n\n")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    Handler.alerts = load("alerts.json")["items"]
    Handler.silences = load("silences.json")["items"]
    srv = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    srv.daemon_threads = True
    print(f"http://127.0.0.1:{srv.server_address[1]}/", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
