#!/usr/bin/env python3
"""DEVELOPMENT AID: validates every fixture (and the dev stream's events) against the
schemas of docs/openapi.yaml, so the console is developed against the contract's shapes.
Needs PyYAML and jsonschema (`pip install openapi-spec-validator` brings both)."""

import sys
from pathlib import Path

import jsonschema
import yaml

sys.path.insert(0, str(Path(__file__).parent))
import serve  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
DOC = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text(encoding="utf-8"))


def response_schema(path, method="get", status="200"):
    return DOC["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]


def component(name):
    return {"$ref": f"#/components/schemas/{name}"}


CHECKS = {
    "summary.json": response_schema("/api/v1/summary"),
    "nodes.json": response_schema("/api/v1/nodes"),
    "node.json": response_schema("/api/v1/nodes/{node}"),
    "history-transitions.json": response_schema("/api/v1/nodes/{node}/history"),
    "history-faults.json": response_schema("/api/v1/nodes/{node}/history"),
    "metrics.json": response_schema("/api/v1/nodes/{node}/metrics"),
    "alerts.json": response_schema("/api/v1/alerts"),
    "silences.json": response_schema("/api/v1/silences"),
    "uptime-region.json": response_schema("/api/v1/uptime"),
    "uptime-site.json": response_schema("/api/v1/uptime"),
    "uptime-node.json": response_schema("/api/v1/uptime"),
    "whoami.json": response_schema("/api/v1/whoami"),
    "outages.json": {"type": "array", "items": {"$ref": "#/components/schemas/UptimeRow/properties/outage_list/items"}},
    "error-400.json": component("Error"),
}
EVENTS = {"state": "StateEvent", "alert": "AlertNotification", "ack": "AckEvent", "resync": "ResyncEvent"}


def validate(what, schema, data):
    full = dict(schema, components=DOC["components"])
    errors = list(jsonschema.Draft202012Validator(full, format_checker=jsonschema.FormatChecker()).iter_errors(data))
    for e in errors[:5]:
        print(f"{what}: {'/'.join(map(str, e.absolute_path))}: {e.message[:200]}")
    return not errors


def main():
    ok = True
    for name, schema in CHECKS.items():
        ok &= validate(name, schema, serve.load(name))
    for kind, data in serve.live_events():
        ok &= validate(f"event {kind}", component(EVENTS[kind]), data)
    print("all fixtures match the contract" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
