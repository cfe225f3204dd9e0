// The operations console in real headless Chromium against a real collector, real agents
// and a real Mosquitto. Tests run in order and share the system: later ones build on the
// alerts earlier ones caused.
//
//   npm ci --prefix tests/console && node --test tests/console/

import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";

import { chromium } from "playwright-core";

import { ARTIFACTS, OPERATOR, System, waitFor } from "./harness.mjs";

const CHROMIUM = "/usr/bin/chromium";
const SIZES = [[1920, 1080], [1366, 768]];
const NODES = [
  { id: "lz-cg-s01", site: "lz-chengguan", region: "lanzhou", kind: "siren", name: "城关区 1号警报器" },
  { id: "lz-cg-s02", site: "lz-chengguan", region: "lanzhou", kind: "siren", name: "城关区 2号警报器" },
  { id: "lz-cg-d01", site: "lz-chengguan", region: "lanzhou", kind: "display", name: "城关区 1号显示屏" },
  { id: "ts-qz-s01", site: "ts-qinzhou", region: "tianshui", kind: "siren", name: "秦州区 1号警报器" },
];
const KILLED = NODES[1]; // a siren: its node_offline is critical
const KEYBOARD = NODES[2]; // a display: major
const MUTED = NODES[3]; // a siren killed while the sound is muted

let sys;
let context;
let profile;
let page;
let problems = []; // console errors, page errors, failed requests of `page`

function watch(p) {
  p.on("console", (m) => { if (m.type() === "error") problems.push(`console: ${m.text()}`); });
  p.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  p.on("requestfailed", (r) => {
    // Leaving a page aborts its event stream; that is not a failure.
    if (r.failure()?.errorText === "net::ERR_ABORTED" && r.url().includes("/api/v1/events")) return;
    problems.push(`request failed: ${r.url()} ${r.failure()?.errorText}`);
  });
  p.on("response", (r) => { if (r.status() >= 400) problems.push(`HTTP ${r.status()}: ${r.url()}`); });
}

async function ready(p) {
  await p.waitForSelector("body[data-ready=true]", { timeout: 20000 });
  await p.waitForSelector("[data-testid=stream-status][data-state=live]", { timeout: 20000 });
}

/**
 * Waits until `fn(arg)` is true in the page. `page.waitForFunction` polls by evaluating a
 * string inside the page, which the console's content security policy (no eval) refuses;
 * `page.evaluate` runs through the debugging protocol, outside the policy.
 */
async function pollPage(fn, arg, timeout = 15000) {
  const end = Date.now() + timeout;
  while (!(await page.evaluate(fn, arg))) {
    if (Date.now() > end) throw new Error(`page condition not met within ${timeout} ms: ${fn}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function shot(name) {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const file = path.join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path: file });
  return file;
}

/** The firing alert of `rule` for `node`, from the API. */
async function firingAlert(rule, node) {
  const page = await sys.api(`/api/v1/alerts?status=firing&limit=500`);
  return page.items.find((a) => a.rule === rule && a.node === node && a.status === "firing");
}

describe("operations console", { timeout: 330000 }, () => {
  before(async () => {
    sys = await System.start();
    for (const n of NODES) await sys.startAgent(n);
    profile = fs.mkdtempSync(path.join(os.tmpdir(), "alarmnet-console-chromium-"));
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
      ],
      locale: "zh-CN",
      timezoneId: "UTC", // not the collector's zone: the page must show the collector's
      viewport: { width: 1920, height: 1080 },
    });
    // Logged in as an operator before the first request, so nothing is ever refused.
    await context.addInitScript((token) => {
      if (!localStorage.getItem("alarmnet.token")) localStorage.setItem("alarmnet.token", token);
    }, OPERATOR.token);
    page = context.pages()[0] ?? (await context.newPage());
    watch(page);
  });

  after(async () => {
    await context?.close().catch(() => {});
    if (profile) fs.rmSync(profile, { recursive: true, force: true });
    if (sys) {
      if (process.exitCode) console.error(sys.logs());
      await sys.stop();
    }
  });

  test("the page loads with no console errors or failed requests", async () => {
    await page.goto(`${sys.base}/`);
    await ready(page);
    await page.waitForSelector(`[data-testid=site-tile][data-site=lz-chengguan]`);
    const online = await page.getAttribute("[data-testid=total-online]", "data-count");
    assert.equal(Number(online), NODES.length, "all agents counted online");
    // The clock is in the collector's zone (UTC+8) from the first moment, not the browser's.
    const clock = await page.locator("#clock").innerText();
    const now = Date.now();
    const inZone = (t) => new Date(t + 8 * 3600e3).toISOString().slice(11, 19);
    assert.ok([inZone(now - 1000), inZone(now)].includes(clock), `clock ${clock} is UTC+8 (${inZone(now)})`);
    await shot("overview-zh-1920x1080");
    assert.deepEqual(problems, []);
  });

  test("a killed agent's alert appears live, coloured by severity", async () => {
    // A click is the gesture that lets the page start audio; the hint then hides.
    await page.click("[data-testid=sound-hint]");
    await page.waitForSelector("[data-testid=sound-hint]", { state: "hidden" });
    await page.evaluate(() => { window.__sameLoad = true; });
    const listRequests = [];
    const onRequest = (r) => { if (/\/api\/v1\/alerts(\?|$)/.test(r.url())) listRequests.push(r.url()); };
    page.on("request", onRequest);
    await sys.killAgent(KILLED.id);
    const alert = await waitFor("a firing node_offline alert in the API", () => firingAlert("node_offline", KILLED.id));
    assert.equal(alert.severity, "critical");
    const row = page.locator(`[data-testid=alert-row][data-alert-id="${alert.id}"]`);
    await row.waitFor({ timeout: 15000 });
    page.off("request", onRequest);
    assert.equal(await page.evaluate(() => window.__sameLoad), true, "no reload happened");
    assert.deepEqual(listRequests, [], "the alert came through the event stream, not a list reload");
    assert.equal(await row.getAttribute("data-severity"), "critical");
    assert.equal(await row.getAttribute("data-status"), "firing");
    // The Chinese view words the alert from its args, with the node's Chinese name.
    assert.equal(alert.args.cause, "will");
    assert.equal(await row.locator("[data-testid=alert-summary]").textContent(), `${KILLED.name} 离线（连接丢失）`);
    assert.match(await row.getAttribute("class"), /\bsev-critical\b/);
    const [border, critical] = await row.evaluate((el) => [
      getComputedStyle(el).borderLeftColor,
      (() => {
        const probe = document.createElement("span");
        probe.style.color = "var(--critical)";
        document.body.append(probe);
        const c = getComputedStyle(probe).color;
        probe.remove();
        return c;
      })(),
    ]);
    assert.equal(border, critical, "the row's edge has the critical colour");
    await page.waitForSelector("body[data-sounds-played='1']", { timeout: 5000 });
    await shot("alert-live-zh-1920x1080");
    assert.deepEqual(problems, []);
  });

  test("ack with a comment from the UI reaches the API with the token's name", async () => {
    const alert = await firingAlert("node_offline", KILLED.id);
    const row = page.locator(`[data-testid=alert-row][data-alert-id="${alert.id}"]`);
    await row.locator("[data-testid=ack-button]").click();
    const comment = `技术员已派出 (console e2e ${Date.now()})`;
    await row.locator("[data-testid=ack-comment]").fill(comment);
    await shot("ack-form-zh-1920x1080");
    await row.locator("[data-testid=ack-submit]").click();
    await page.waitForSelector(`[data-testid=alert-row][data-alert-id="${alert.id}"][data-acked=true]`);
    const info = await row.locator("[data-testid=ack-info]").innerText();
    assert.ok(info.includes(OPERATOR.name), `ack info "${info}" names the operator`);
    const listed = (await sys.api(`/api/v1/alerts?limit=500`)).items.find((a) => a.id === alert.id);
    assert.equal(listed.ack?.by, OPERATOR.name);
    assert.equal(listed.ack?.comment, comment);
    assert.deepEqual(problems, []);
  });

  test("keyboard: Tab reaches an ack button and Enter opens and submits the form", async () => {
    await sys.killAgent(KEYBOARD.id);
    const alert = await waitFor("the display's alert", () => firingAlert("node_offline", KEYBOARD.id));
    assert.equal(alert.severity, "major");
    const button = `[data-testid=alert-row][data-alert-id="${alert.id}"] [data-testid=ack-button]`;
    await page.waitForSelector(button, { timeout: 15000 });
    await page.evaluate(() => document.activeElement?.blur());
    let reached = false;
    for (let i = 0; i < 300 && !reached; i++) {
      await page.keyboard.press("Tab");
      reached = await page.evaluate((sel) => document.activeElement === document.querySelector(sel), button);
    }
    assert.ok(reached, "Tab reaches the ack button");
    await page.keyboard.press("Enter");
    const area = `[data-testid=alert-row][data-alert-id="${alert.id}"] [data-testid=ack-comment]`;
    await pollPage((sel) => document.activeElement === document.querySelector(sel), area);
    await page.keyboard.type("keyboard ack");
    await page.keyboard.press("Tab");
    assert.equal(await page.evaluate(() => document.activeElement?.dataset.testid), "ack-submit");
    await page.keyboard.press("Enter");
    await page.waitForSelector(`[data-testid=alert-row][data-alert-id="${alert.id}"][data-acked=true]`);
    const listed = (await sys.api(`/api/v1/alerts?limit=500`)).items.find((a) => a.id === alert.id);
    assert.equal(listed.ack?.comment, "keyboard ack");
    assert.deepEqual(problems, []);
  });

  test("a muted console stays silent on a new critical alert, and remembers it", async () => {
    await page.click("[data-testid=sound-toggle]");
    assert.equal(await page.getAttribute("[data-testid=sound-toggle]", "aria-pressed"), "false");
    assert.equal(await page.evaluate(() => localStorage.getItem("alarmnet.muted")), "1");
    await sys.killAgent(MUTED.id);
    const alert = await waitFor("the muted siren's alert", () => firingAlert("node_offline", MUTED.id));
    assert.equal(alert.severity, "critical");
    await page.waitForSelector(`[data-testid=alert-row][data-alert-id="${alert.id}"]`, { timeout: 15000 });
    assert.equal(await page.evaluate(() => document.body.dataset.soundsPlayed), "1", "no sound while muted");
    await page.click("[data-testid=sound-toggle]");
    assert.equal(await page.evaluate(() => localStorage.getItem("alarmnet.muted")), "0");
    assert.deepEqual(problems, []);
  });

  test("the node grid colours a killed node offline and its detail shows history", async () => {
    const site = page.locator(`[data-testid=site-tile][data-site=lz-chengguan]`);
    await page.waitForSelector(`[data-testid=site-tile][data-site=lz-chengguan][data-worst=offline]`);
    await site.click();
    const tile = page.locator(`[data-testid=node-tile][data-node="${KILLED.id}"]`);
    await tile.waitFor();
    assert.equal(await tile.getAttribute("data-state"), "offline");
    const healthy = page.locator(`[data-testid=node-tile][data-node="${NODES[0].id}"]`);
    assert.equal(await healthy.getAttribute("data-state"), "online");
    const colour = (l) => l.evaluate((el) => {
      const cs = getComputedStyle(el);
      const dot = el.querySelector(".dot");
      return [cs.backgroundColor, cs.borderColor, dot ? getComputedStyle(dot).backgroundColor : ""].join("|");
    });
    assert.notEqual(await colour(tile), await colour(healthy), "offline and online tiles look different");
    await shot("grid-offline-zh-1920x1080");
    await tile.click();
    await page.waitForSelector(`[data-testid=node-state][data-state=offline]`);
    const history = page.locator("[data-testid=node-history] [data-testid=transition-row]");
    await history.first().waitFor();
    assert.ok((await history.count()) >= 2, "history has the node coming online and going offline");
    assert.match(await page.locator("[data-testid=node-history]").innerText(), /offline|离线/);
    await shot("node-detail-zh-1920x1080");
    assert.deepEqual(problems, []);
  });

  test("the language switch changes labels and survives a reload", async () => {
    await page.goto(`${sys.base}/#/`);
    await ready(page);
    const nav = page.locator("[data-testid=nav-uptime]");
    assert.equal((await nav.innerText()).trim(), "可用率");
    await page.click("[data-testid=lang-switch]");
    assert.equal((await nav.innerText()).trim(), "Uptime");
    assert.equal(await page.evaluate(() => document.documentElement.lang), "en");
    await page.reload();
    await ready(page);
    assert.equal((await nav.innerText()).trim(), "Uptime", "English survives a reload");
    for (const [w, hgt] of SIZES) {
      await page.setViewportSize({ width: w, height: hgt });
      await shot(`overview-en-${w}x${hgt}`);
    }
    await page.click("[data-testid=lang-switch]");
    assert.equal((await nav.innerText()).trim(), "可用率");
    await page.reload();
    await ready(page);
    assert.equal((await nav.innerText()).trim(), "可用率", "Chinese survives a reload");
    await page.setViewportSize({ width: 1366, height: 768 });
    await shot("overview-zh-1366x768");
    await page.setViewportSize({ width: 1920, height: 1080 });
    assert.deepEqual(problems, []);
  });

  test("the uptime page shows the API's numbers", async () => {
    // Bring the killed nodes back, so downtime stops growing while we compare.
    for (const n of [KILLED, KEYBOARD, MUTED]) await sys.startAgent(n);
    await page.evaluate(() => localStorage.setItem("alarmnet.lang", "en"));
    await page.goto(`${sys.base}/#/uptime`);
    await page.reload();
    await ready(page);
    await page.click("[data-testid=uptime-period-24h]");
    await page.waitForSelector("[data-testid=uptime-table]");
    for (const by of ["node", "region"]) {
      const apiBefore = await sys.api(`/api/v1/uptime?by=${by}&since=24h`);
      const shown = page.waitForResponse((r) => r.url().includes("/api/v1/uptime") && r.url().includes(`by=${by}`));
      await page.click(`[data-testid=uptime-by-${by}]`);
      await shown;
      await pollPage((n) => document.querySelectorAll("[data-testid=uptime-row]").length === n, apiBefore.rows.length);
      const cells = await page.$$eval("[data-testid=uptime-cell]", (els) => els.map((el) => ({
        key: el.dataset.key, col: el.dataset.col, value: el.dataset.value, text: el.innerText.trim(),
      })));
      const apiAfter = await sys.api(`/api/v1/uptime?by=${by}&since=24h`);
      assert.equal(apiAfter.rows.length, apiBefore.rows.length);
      for (let i = 0; i < apiBefore.rows.length; i++) {
        const [b, a] = [apiBefore.rows[i], apiAfter.rows[i]];
        const key = [b.region, b.site, b.node, b.kind].filter(Boolean).join("/");
        const cell = (col) => cells.find((c) => c.key === key && c.col === col);
        const avail = cell("availability_pct");
        const down = cell("downtime_s");
        assert.ok(avail && down, `row ${key} is shown`);
        // Figures run up to now: what the page shows lies between two API answers around it.
        const shownPct = Number(avail.value);
        const [lo, hi] = [Math.min(b.availability_pct, a.availability_pct), Math.max(b.availability_pct, a.availability_pct)];
        assert.ok(shownPct >= lo - 1e-9 && shownPct <= hi + 1e-9, `${key}: availability ${shownPct} within [${lo}, ${hi}]`);
        assert.equal(avail.text, `${shownPct.toFixed(3)} %`, `${key}: availability shown rounded`);
        assert.equal(b.downtime_s, a.downtime_s, `${key}: downtime is settled`);
        assert.equal(Number(down.value), b.downtime_s, `${key}: downtime value`);
        assert.equal(down.text, fmtDurEn(b.downtime_s), `${key}: downtime shown`);
        assert.equal(Number(cell("tests").value), b.tests, `${key}: tests`);
        assert.equal(cell("test_pass_pct").value, b.test_pass_pct === null ? "" : String(b.test_pass_pct), `${key}: test pass rate`);
        if (b.node === KILLED.id) assert.ok(b.downtime_s > 0, "the killed node has downtime");
      }
      await shot(`uptime-by-${by}-en-1920x1080`);
      // The CSV export holds the same rows, with raw numbers.
      const [download] = await Promise.all([page.waitForEvent("download"), page.click("[data-testid=uptime-csv]")]);
      const csv = fs.readFileSync(await download.path(), "utf8").replace(/^\ufeff/, "").trim().split("\r\n");
      const header = csv[0].split(",");
      assert.equal(csv.length - 1, apiBefore.rows.length, "one CSV line per row");
      for (let i = 0; i < apiBefore.rows.length; i++) {
        const line = Object.fromEntries(csv[i + 1].split(",").map((v, j) => [header[j], v]));
        assert.equal(line[by], apiBefore.rows[i][by], "CSV rows in the report's order");
        assert.equal(Number(line.downtime_s), apiBefore.rows[i].downtime_s, "CSV downtime");
      }
    }
    await page.setViewportSize({ width: 1366, height: 768 });
    await shot("uptime-by-region-en-1366x768");
    await page.setViewportSize({ width: 1920, height: 1080 });
    await page.click("[data-testid=lang-switch]");
    await shot("uptime-by-region-zh-1920x1080");
    assert.deepEqual(problems, []);
  });

  test("the readiness summary and a node's readiness show the API's numbers", async () => {
    // The rollups move as agents come and go: compare a page and an API answer taken while
    // nothing changed in between.
    const rowsOnPage = async () => page.$$eval("[data-testid=readiness-region]", (rows) => rows.map((r) => ({
      region: r.dataset.region,
      pct: r.dataset.readyPct,
      counts: ["ready", "degraded", "not_ready", "maintenance"].map((st) => r.querySelector(`[data-state=${st}]`).textContent),
    })));
    const fromApi = (body) => [...body.regions.map((r) => [r.region, r]), ["", body.network]].map(([region, r]) => ({
      region,
      pct: r.ready_pct === null ? "" : String(r.ready_pct),
      counts: ["ready", "degraded", "not_ready", "maintenance"].map((st) => String(r.sirens[st])),
    }));
    await waitFor("the readiness summary to match the API", async () => {
      await page.goto(`${sys.base}/#/`);
      await ready(page);
      await page.waitForSelector("[data-testid=readiness-region]");
      const before = fromApi(await sys.api("/api/v1/readiness"));
      const shown = await rowsOnPage();
      const after = fromApi(await sys.api("/api/v1/readiness"));
      return JSON.stringify(before) === JSON.stringify(after) && JSON.stringify(shown) === JSON.stringify(before);
    }, 60000);
    const regions = (await rowsOnPage()).map((r) => r.region);
    assert.deepEqual(regions, ["lanzhou", "tianshui", ""], "a row per region, then the network");
    assert.match(await page.locator("[data-testid=readiness-summary]").innerText(), /警报器就绪情况/);
    await shot("readiness-summary-zh-1920x1080");

    // A node's detail lists its readiness and reasons, in the operator's language.
    const node = NODES[0];
    const info = await sys.api(`/api/v1/nodes/${node.id}`);
    assert.ok(info.readiness, "the API derived the node's readiness");
    await page.goto(`${sys.base}/#/node/${node.id}`);
    const state = page.locator("[data-testid=node-readiness-state]");
    await state.waitFor();
    const now = await sys.api(`/api/v1/nodes/${node.id}`);
    assert.equal(await state.getAttribute("data-readiness"), now.readiness.state);
    const codes = await page.$$eval("[data-testid=readiness-reason]", (li) => li.map((x) => x.dataset.code));
    assert.deepEqual(codes, now.readiness.reasons.map((r) => r.code));
    if (codes.includes("test_never")) {
      assert.match(await page.locator("[data-testid=node-readiness-card]").innerText(), /尚无静默测试/);
    }
    assert.deepEqual(problems, []);
  });
});

/** English duration as the console writes it: "42 s", "3 min", "2 h 5 min", "1 d 4 h". */
function fmtDurEn(sec) {
  let x = Math.round(sec);
  if (x < 60) return `${x} s`;
  const d = Math.floor(x / 86400);
  x -= d * 86400;
  const h = Math.floor(x / 3600);
  x -= h * 3600;
  const m = Math.floor(x / 60);
  const parts = [];
  if (d) parts.push(`${d} d`);
  if (h || d) parts.push(`${h} h`);
  if (!d) parts.push(`${m} min`);
  return parts.join(" ");
}
