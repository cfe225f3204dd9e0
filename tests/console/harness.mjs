// Starts the real servers the console tests need (Mosquitto, `alarmnet-collector run`,
// `alarmnet-agent run`) on free loopback ports, waits for them by polling, and kills every
// process it started by PID, also when the test process is interrupted.

import { spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const ARTIFACTS = path.join(ROOT, "tests/artifacts/console");
const MOSQUITTO = "/usr/sbin/mosquitto";

export const OPERATOR = { name: "duty-officer", token: "console-e2e-operator-0123456789" };
export const VIEWER = { name: "wall-screen", token: "console-e2e-viewer-0123456789" };

const started = new Set();

function killAll() {
  for (const p of started) {
    try {
      process.kill(p.pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
  started.clear();
}
process.on("exit", killAll);
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, () => {
    killAll();
    process.exit(130);
  });
}

/** A binary from target/debug, or a clear failure if it was not built. */
export function binary(name) {
  const p = path.join(ROOT, "target/debug", name);
  if (!fs.existsSync(p)) {
    throw new Error(`${p} is missing: run \`cargo build --workspace --bins\` first`);
  }
  return p;
}

export async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Polls `check` (truthy result ends it) every 100 ms until `timeoutMs`. */
export async function waitFor(what, check, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${last.message}` : ""}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A child process whose output goes to a log file; `kill()` signals it by PID. */
export class Proc {
  constructor(name, cmd, args, logDir) {
    this.name = name;
    this.log = path.join(logDir, `${name}.log`);
    const out = fs.openSync(this.log, "a");
    this.child = spawn(cmd, args, { stdio: ["ignore", out, out] });
    fs.closeSync(out);
    this.pid = this.child.pid;
    this.exited = new Promise((resolve) => this.child.on("exit", (code, signal) => resolve({ code, signal })));
    this.exited.then(() => started.delete(this));
    started.add(this);
  }

  async kill(signal = "SIGKILL") {
    if (!started.has(this)) return;
    try {
      process.kill(this.pid, signal);
    } catch {
      // already gone
    }
    await this.exited;
  }

  tail(lines = 30) {
    try {
      return fs.readFileSync(this.log, "utf8").split("\n").slice(-lines).join("\n");
    } catch {
      return "";
    }
  }
}

function canConnect(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1");
    s.on("connect", () => { s.destroy(); resolve(true); });
    s.on("error", () => resolve(false));
  });
}

/** Mosquitto, the collector and the agents, all in one temp dir. */
export class System {
  static async start() {
    const sys = new System();
    sys.dir = fs.mkdtempSync(path.join(os.tmpdir(), "alarmnet-console-e2e-"));
    sys.agents = new Map();
    const collectorBin = binary("alarmnet-collector");
    binary("alarmnet-agent");
    if (!fs.existsSync(MOSQUITTO)) throw new Error(`${MOSQUITTO} is missing: install mosquitto`);

    const mqtt = await freePort();
    sys.brokerUrl = `mqtt://127.0.0.1:${mqtt}`;
    fs.writeFileSync(path.join(sys.dir, "mosquitto.conf"), [
      "user root", // ignored when not root; as root, keeps Mosquitto able to write here
      `listener ${mqtt} 127.0.0.1`,
      "allow_anonymous true",
      "max_queued_messages 1000000",
      "persistence false",
      `log_dest file ${path.join(sys.dir, "mosquitto.log")}`,
      "",
    ].join("\n"));
    sys.broker = new Proc("mosquitto", MOSQUITTO, ["-c", path.join(sys.dir, "mosquitto.conf")], sys.dir);
    await waitFor("Mosquitto to accept connections", () => canConnect(mqtt));

    const http = await freePort();
    sys.base = `http://127.0.0.1:${http}`;
    fs.writeFileSync(path.join(sys.dir, "collector.toml"), `
[mqtt]
broker = "${sys.brokerUrl}"
client_id = "console-e2e-collector-${process.pid}"
keep_alive = "5s"
reconnect_max = "1s"

[store]
path = "${path.join(sys.dir, "alarmnet.db")}"

[http]
listen = "127.0.0.1:${http}"
anonymous_read = false
[[http.tokens]]
name = "${OPERATOR.name}"
token = "${OPERATOR.token}"
role = "operator"
[[http.tokens]]
name = "${VIEWER.name}"
token = "${VIEWER.token}"
role = "viewer"

[uptime]
time_zone = "Asia/Shanghai"

[liveness]
late_factor = 1.5
offline_factor = 3.0

[alerts.node_offline]
severity = { siren = "critical", display = "major" }
default_severity = "major"
group_wait = "0s"

# One node_offline alert per killed node: no outage alert inhibiting them.
[alerts.site_outage]
enabled = false

[alerts.region_outage]
enabled = false

[alerts.flapping]
enabled = false
`);
    sys.collector = new Proc("collector", collectorBin, ["run", "--config", path.join(sys.dir, "collector.toml")], sys.dir);
    await waitFor("the collector's /readyz", async () => {
      if (sys.collector.child.exitCode !== null) {
        throw new Error(`collector exited:\n${sys.collector.tail()}`);
      }
      return (await fetch(`${sys.base}/readyz`)).ok;
    });
    return sys;
  }

  /** Starts (or restarts) an agent for `node` and waits until the collector has it online;
   *  `extra` is appended to its config (e.g. test procedures). */
  async startAgent(node, extra = "") {
    const spool = path.join(this.dir, `spool-${node.id}`);
    const conf = path.join(this.dir, `agent-${node.id}.toml`);
    fs.writeFileSync(conf, `
[node]
id = "${node.id}"
site = "${node.site}"
region = "${node.region}"
kind = "${node.kind}"
name = "${node.name}"

[mqtt]
brokers = ["${this.brokerUrl}"]
heartbeat_interval = "1s"
keep_alive = "5s"
reconnect_min = "200ms"
reconnect_max = "1s"

[spool]
dir = "${spool}"
${extra}
`);
    const proc = new Proc(`agent-${node.id}`, binary("alarmnet-agent"), ["run", "--config", conf], this.dir);
    this.agents.set(node.id, proc);
    await this.waitState(node.id, "online");
    return proc;
  }

  async killAgent(id) {
    await this.agents.get(id)?.kill("SIGKILL");
  }

  async waitState(id, state, timeoutMs = 20000) {
    return waitFor(`node ${id} to be ${state} in the API`, async () => {
      const r = await this.api(`/api/v1/nodes/${encodeURIComponent(id)}`);
      return r.state === state ? r : null;
    }, timeoutMs);
  }

  /** GET (or another method) on the API with the operator token; throws on a non-2xx. */
  async api(p, { method = "GET", body, token = OPERATOR.token } = {}) {
    const res = await fetch(`${this.base}${p}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body ? { "content-type": "application/json" } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    if (!res.ok) throw new Error(`${method} ${p}: HTTP ${res.status} ${await res.text()}`);
    return res.json();
  }

  async stop() {
    const procs = [...this.agents.values(), this.collector, this.broker].filter(Boolean);
    for (const p of procs) await p.kill("SIGKILL");
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  logs() {
    return [this.collector, this.broker, ...this.agents.values()]
      .filter(Boolean)
      .map((p) => `--- ${p.name} (pid ${p.pid}) ---\n${p.tail()}`)
      .join("\n");
  }
}
