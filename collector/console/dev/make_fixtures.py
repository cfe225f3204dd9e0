#!/usr/bin/env python3
"""DEVELOPMENT AID, not shipped: writes deterministic JSON fixtures shaped like the API
contract (docs/openapi.yaml) into dev/fixtures/, for looking at the console without a
collector. `check_fixtures.py` validates them against the contract's schemas."""

import hashlib
import json
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

OUT = Path(__file__).with_name("fixtures")
TZ = timezone(timedelta(hours=8))
NOW = datetime(2026, 11, 28, 20, 0, 0, tzinfo=TZ)
STATES = ["unknown", "online", "late", "offline", "stopped", "maintenance"]

REGIONS = [
    ("lanzhou", "兰州市", [("lz-chengguan", "城关区"), ("lz-qilihe", "七里河区"), ("lz-anning", "安宁区"),
                          ("lz-xigu", "西固区"), ("lz-honggu", "红古区")]),
    ("tianshui", "天水市", [("ts-qinzhou", "秦州区"), ("ts-maiji", "麦积区"), ("ts-gangu", "甘谷县")]),
    ("jiuquan", "酒泉市", [("jq-suzhou", "肃州区"), ("jq-dunhuang", "敦煌市")]),
    ("baiyin", "白银市", [("by-baiyin", "白银区"), ("by-pingchuan", "平川区"), ("by-jingyuan", "靖远县")]),
]
PLACES = ["人防办楼顶", "第一中学", "火车站广场", "人民医院", "街道办", "体育馆", "工业园", "社区中心"]


def stamp(dt):
    return dt.isoformat(timespec="seconds")


def main():
    rnd = random.Random(7)
    OUT.mkdir(exist_ok=True)
    nodes = []
    for region, rname, sites in REGIONS:
        for site, sname, in sites:
            for i in range(rnd.randint(3, 9)):
                kind = "siren" if i % 3 != 2 else "display"
                place = PLACES[i % len(PLACES)]
                node = f"{site}-{kind[0]}{i + 1:03d}"
                state = rnd.choices(STATES, [1, 40, 2, 3, 1, 1])[0]
                since = NOW - timedelta(minutes=rnd.randint(3, 6000))
                nodes.append({
                    "node": node, "region": region, "site": site, "kind": kind,
                    "name": f"{sname}{place}{'警报器' if kind == 'siren' else '显示屏'}",
                    "state": state, "since": stamp(since),
                    "last_seen": stamp(NOW - timedelta(seconds=rnd.randint(1, 40) if state in ("online", "late") else rnd.randint(600, 9000))),
                    "faults": 1 if rnd.random() < 0.1 else 0,
                    "_region_name": rname, "_site_name": sname,
                })
    # A site cut: every node of lz-xigu offline.
    for n in nodes:
        if n["site"] == "lz-xigu":
            n["state"] = "offline"

    def counts(items):
        c = {s: 0 for s in STATES}
        for n in items:
            c[n["state"]] += 1
        return c

    regions = []
    for region, rname, sites in REGIONS:
        rn = [n for n in nodes if n["region"] == region]
        regions.append({
            "region": region, "name": rname, "nodes": len(rn), "states": counts(rn),
            "sites": [{"site": s, "name": sn, "nodes": len([n for n in rn if n["site"] == s]),
                       "states": counts([n for n in rn if n["site"] == s])} for s, sn in sites],
        })

    alerts = []
    sev_for = {"siren": "critical", "display": "major"}
    for n in nodes:
        if n["state"] == "offline" and n["site"] != "lz-xigu":
            alerts.append({
                "id": hashlib.sha256(n["node"].encode()).hexdigest()[:16], "rule": "node_offline",
                "severity": sev_for[n["kind"]], "status": "firing", "region": n["region"], "site": n["site"],
                "node": n["node"], "kind": n["kind"], "started_at": n["since"], "ended_at": None,
                "summary": f"{n['name']} ({n['node']}) is offline: connection lost", "ack": None, "notified": True,
            })
    alerts.append({"id": "77aa01bc93e2f410", "rule": "site_outage", "severity": "critical", "status": "firing",
                   "region": "lanzhou", "site": "lz-xigu", "started_at": stamp(NOW - timedelta(minutes=42)),
                   "ended_at": None, "summary": "site lz-xigu: all nodes offline", "notified": True,
                   "ack": {"by": "ops-desk-1", "at": stamp(NOW - timedelta(minutes=30)), "comment": "电力公司已通知，抢修中"}})
    alerts.append({"id": "a1b2c3d4e5f60718", "rule": "fault", "severity": "minor", "status": "firing",
                   "region": "tianshui", "site": "ts-maiji", "node": "ts-maiji-s001", "kind": "siren",
                   "started_at": stamp(NOW - timedelta(hours=3)), "ended_at": None,
                   "summary": "power/on_battery: mains lost, running on battery (87 %)", "ack": None, "notified": False})
    alerts.append({"id": "5e5e5e5e00000001", "rule": "flapping", "severity": "warning", "status": "firing",
                   "region": "jiuquan", "site": "jq-dunhuang", "node": "jq-dunhuang-s002", "kind": "siren",
                   "started_at": stamp(NOW - timedelta(minutes=7)), "ended_at": None,
                   "summary": "jq-dunhuang-s002 changed state 6 times in 10 min", "ack": None, "notified": True})
    alerts.append({"id": "0000000000000b1d", "rule": "node_offline", "severity": "critical", "status": "resolved",
                   "region": "baiyin", "site": "by-pingchuan", "node": "by-pingchuan-s001", "kind": "siren",
                   "started_at": stamp(NOW - timedelta(minutes=50)), "ended_at": stamp(NOW - timedelta(minutes=20)),
                   "summary": "平川区人防办楼顶警报器 (by-pingchuan-s001) is offline: heartbeat timeout",
                   "ack": None, "notified": True})
    alerts.sort(key=lambda a: a["started_at"], reverse=True)

    public = [{k: v for k, v in n.items() if not k.startswith("_")} for n in nodes]
    summary = {"at": stamp(NOW), "nodes": len(nodes), "states": counts(nodes),
               "alerts": {"firing": sum(a["status"] == "firing" for a in alerts),
                          "unacked": sum(a["status"] == "firing" and not a["ack"] for a in alerts),
                          "by_severity": {s: sum(a["status"] == "firing" and a["severity"] == s for a in alerts)
                                          for s in ["critical", "major", "minor", "warning", "info"]}},
               "regions": regions}

    n0 = public[0]
    detail = dict(n0, lat=36.06111, lon=103.83417, model="WS-600 电声警报器", firmware="3.2.1",
                  agent="alarmnet-agent 0.1.0", checks=["system", "power", "amplifier"],
                  tags={"owner": "chengguan", "region_name": "兰州市", "site_name": "城关区"},
                  boot="9f2c41d07be35a10", born_at=stamp(NOW - timedelta(days=2, hours=3)), hb_interval_s=10.0,
                  first_seen=stamp(NOW - timedelta(days=200)),
                  faults_active=[{"key": "amplifier/no_load", "check": "amplifier", "code": "no_load", "severity": "major",
                                  "raised_at": stamp(NOW - timedelta(hours=5)), "cleared_at": None,
                                  "message": "amplifier output 0.2 A, expected > 1.5 A", "replay": False}],
                  last_heartbeat={"received_at": stamp(NOW - timedelta(seconds=4)), "ts": stamp(NOW - timedelta(seconds=4)),
                                  "seq": 18234, "uptime_s": 183600,
                                  "metrics": {"battery_v": 12.71, "cpu_pct": 7.5, "temp_c": 41.0, "mains": 1.0},
                                  "checks": {"ok": 2, "warning": 0, "critical": 1, "unknown": 0}})
    transitions = []
    t = NOW - timedelta(days=6, hours=20)
    state = "online"
    seq = [("late", "timeout", 0.3), ("offline", "timeout", 0.2), ("online", "birth", 3.5), ("stopped", "shutdown", 30.0),
           ("online", "birth", 0.5), ("maintenance", "maintenance_start", 20), ("online", "maintenance_end", 2.0),
           ("late", "timeout", 0.1), ("online", "heartbeat", 40.0), ("offline", "will", 1.2), ("online", "birth", 5)]
    for to, cause, hours in seq:
        transitions.append({"at": stamp(t), "from": state, "to": to, "cause": cause})
        state = to
        t += timedelta(hours=hours)
    transitions.reverse()
    history = {"node": n0["node"], "type": "transitions", "from": stamp(NOW - timedelta(days=7)), "to": stamp(NOW),
               "items": transitions, "next_cursor": None, "total": len(transitions)}
    faults = {"node": n0["node"], "type": "faults", "from": stamp(NOW - timedelta(days=30)), "to": stamp(NOW),
              "items": detail["faults_active"] + [{"key": "power/on_battery", "check": "power", "code": "on_battery",
                                                   "severity": "minor", "raised_at": stamp(NOW - timedelta(days=3)),
                                                   "cleared_at": stamp(NOW - timedelta(days=3) + timedelta(minutes=48)),
                                                   "message": "mains lost", "replay": True}],
              "next_cursor": None, "total": 2}
    samples = []
    for i in range(60):
        at = NOW - timedelta(seconds=10 * (59 - i))
        samples.append({"at": stamp(at), "seq": 18175 + i,
                        "metrics": {"battery_v": round(12.9 - 0.004 * i + 0.03 * ((i * 7) % 5), 3),
                                    "cpu_pct": round(5 + (i * 13) % 9, 1), "temp_c": round(40 + (i % 6) * 0.5, 1)}})
    metrics = {"node": n0["node"], "capacity": 120, "samples": samples}

    silences = {"items": [
        {"id": "sil-20261128-01", "region": "lanzhou", "site": "lz-anning", "starts_at": stamp(NOW - timedelta(hours=1)),
         "ends_at": stamp(NOW + timedelta(hours=2)), "created_by": "ops-desk-1", "comment": "警报器检修", "status": "active"},
        {"id": "sil-20261129-01", "kind": "display", "region": "baiyin", "starts_at": stamp(NOW + timedelta(hours=13)),
         "ends_at": stamp(NOW + timedelta(hours=16)), "created_by": "ops-desk-2", "comment": "display firmware upgrade",
         "status": "pending"}], "next_cursor": None, "total": 2}

    def uptime_rows(by):
        rows = []
        groups = {}
        for n in nodes:
            key = {"region": (n["region"],), "site": (n["region"], n["site"]),
                   "node": (n["region"], n["site"], n["node"], n["kind"])}[by]
            groups.setdefault(key, []).append(n)
        for key, members in sorted(groups.items()):
            span = 30 * 86400.0 * len(members)
            down = sum(rnd.choice([0, 0, 0, 120, 900, 3600, 14000]) for _ in members)
            if key[0] == "lanzhou" and (by == "region" or key[1] == "lz-xigu"):
                down += 42 * 60 * (len(members) if by != "region" else 6)
            maint = 3 * 3600.0 if key[0] == "lanzhou" else 0.0
            unknown = 600.0 * len(members)
            up = span - down - maint - unknown
            outages = 0 if down == 0 else max(1, int(down // 2000))
            row = dict(zip({"region": ["region"], "site": ["region", "site"], "node": ["region", "site", "node", "kind"]}[by], key))
            row.update({"nodes": len(members), "availability_pct": 100.0 * up / (up + down),
                        "coverage_pct": 100.0 * (up + down) / (up + down + unknown), "up_s": up, "downtime_s": float(down),
                        "maintenance_s": maint, "unknown_s": unknown, "outages": outages,
                        "longest_outage_s": float(down) if outages == 1 else (down / outages * 1.7 if outages else None),
                        "mttr_s": down / outages if outages else None, "mtbf_s": up / outages if outages else None})
            rows.append(row)
        return {"from": stamp(NOW - timedelta(days=30)), "to": stamp(NOW), "until": stamp(NOW), "by": by, "rows": rows}

    files = {
        "summary.json": summary,
        "nodes.json": {"items": public, "next_cursor": None, "total": len(public)},
        "node.json": detail,
        "history-transitions.json": history,
        "history-faults.json": faults,
        "metrics.json": metrics,
        "alerts.json": {"items": alerts, "next_cursor": None, "total": len(alerts)},
        "silences.json": silences,
        "uptime-region.json": uptime_rows("region"),
        "uptime-site.json": uptime_rows("site"),
        "uptime-node.json": uptime_rows("node"),
        "outages.json": [
            {"start": stamp(NOW - timedelta(days=6, hours=4)), "end": stamp(NOW - timedelta(days=6, hours=3, minutes=48)),
             "duration_s": 720.0, "cause": "timeout"},
            {"start": stamp(NOW - timedelta(days=2, hours=5, minutes=57)), "end": None, "duration_s": 194580.0, "cause": "will"},
        ],
        "whoami.json": {"name": "ops-desk-1", "role": "operator"},
        "error-400.json": {"error": {"code": "bad_parameter", "param": "month",
                                     "message": "bad parameter `month` (\"2026-13\"): expected a month like 2026-10"}},
    }
    for name, data in files.items():
        (OUT / name).write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {len(files)} fixtures to {OUT}")


if __name__ == "__main__":
    main()
