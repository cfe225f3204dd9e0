// DEVELOPMENT AID: opens a URL in headless Chromium over the DevTools protocol, runs a few
// optional steps, saves a screenshot and prints every console message and page error.
// Exit code 1 when the page logged an error or threw.
//
//   node --experimental-websocket collector/console/dev/look.mjs URL OUT.png \
//        [--lang zh-CN] [--size 1920x1080] [--wait 3000] [--step 'click:[data-testid=lang-switch]'] ...
//
// Steps: `click:SELECTOR`, `wait:MS`, `eval:JS`, `hash:#/uptime`, `key:Tab`.

import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const args = process.argv.slice(2);
const [url, out] = args;
let lang = "en-US";
let size = "1920x1080";
let wait = 3000;
const steps = [];
for (let i = 2; i < args.length; i += 2) {
  if (args[i] === "--lang") lang = args[i + 1];
  else if (args[i] === "--size") size = args[i + 1];
  else if (args[i] === "--wait") wait = Number(args[i + 1]);
  else if (args[i] === "--step") steps.push(args[i + 1]);
}
const [w, h] = size.split("x").map(Number);
const dir = mkdtempSync(join(tmpdir(), "look-"));
const chrome = spawn("/usr/bin/chromium", [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--no-first-run", `--user-data-dir=${dir}`,
  "--remote-debugging-port=0", `--lang=${lang}`, `--window-size=${w},${h}`, "about:blank",
], { stdio: "ignore" });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let port = null;
for (let i = 0; i < 100 && !port; i += 1) {
  await sleep(100);
  const f = join(dir, "DevToolsActivePort");
  if (existsSync(f)) port = readFileSync(f, "utf8").split("\n")[0];
}
const targets = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
const page = targets.find((t) => t.type === "page");
const ws = new WebSocket(page.webSocketDebuggerUrl);
await new Promise((r) => ws.addEventListener("open", r));
let id = 0;
const pending = new Map();
const problems = [];
ws.addEventListener("message", (ev) => {
  const m = JSON.parse(ev.data);
  if (m.id && pending.has(m.id)) {
    pending.get(m.id)(m);
    pending.delete(m.id);
  } else if (m.method === "Runtime.consoleAPICalled") {
    const text = m.params.args.map((a) => a.value ?? a.description ?? "").join(" ");
    console.log(`console.${m.params.type}: ${text}`);
    if (m.params.type === "error" || m.params.type === "assert") problems.push(text);
  } else if (m.method === "Runtime.exceptionThrown") {
    const d = m.params.exceptionDetails;
    const text = `${d.exception?.description || d.text} at ${d.url}:${d.lineNumber}`;
    console.log(`exception: ${text}`);
    problems.push(text);
  } else if (m.method === "Log.entryAdded") {
    const e = m.params.entry;
    console.log(`log.${e.level}: ${e.text} ${e.url || ""}`);
    if (e.level === "error") problems.push(e.text);
  }
});
const send = (method, params = {}) => new Promise((r) => {
  id += 1;
  pending.set(id, r);
  ws.send(JSON.stringify({ id, method, params }));
});
await send("Runtime.enable");
await send("Log.enable");
await send("Emulation.setDeviceMetricsOverride", { width: w, height: h, deviceScaleFactor: 1, mobile: false });
const version = await send("Browser.getVersion");
await send("Emulation.setUserAgentOverride", { userAgent: version.result.userAgent, acceptLanguage: lang });
await send("Emulation.setLocaleOverride", { locale: lang });
await send("Page.navigate", { url });
await sleep(wait);
for (const step of steps) {
  const [kind, ...rest] = step.split(":");
  const arg = rest.join(":");
  if (kind === "click") {
    const r = await send("Runtime.evaluate", { expression: `(() => { const e = document.querySelector(${JSON.stringify(arg)}); if (!e) return "missing"; e.click(); return "ok"; })()`, returnByValue: true });
    console.log(`step click ${arg}: ${r.result.result.value}`);
  } else if (kind === "wait") {
    await sleep(Number(arg));
  } else if (kind === "eval") {
    const r = await send("Runtime.evaluate", { expression: arg, returnByValue: true, awaitPromise: true });
    console.log(`step eval: ${JSON.stringify(r.result.result.value)}`);
  } else if (kind === "hash") {
    await send("Runtime.evaluate", { expression: `location.hash = ${JSON.stringify(arg)}` });
  } else if (kind === "key") {
    await send("Input.dispatchKeyEvent", { type: "keyDown", key: arg, code: arg, windowsVirtualKeyCode: arg === "Tab" ? 9 : arg === "Enter" ? 13 : 0 });
    await send("Input.dispatchKeyEvent", { type: "keyUp", key: arg, code: arg, windowsVirtualKeyCode: arg === "Tab" ? 9 : arg === "Enter" ? 13 : 0 });
  }
  await sleep(300);
}
const shot = await send("Page.captureScreenshot", { format: "png" });
writeFileSync(out, Buffer.from(shot.result.data, "base64"));
ws.close();
chrome.kill();
await sleep(300);
rmSync(dir, { recursive: true, force: true });
console.log(problems.length ? `${problems.length} problem(s)` : "no console errors");
process.exit(problems.length ? 1 : 0);
