// The console's drills page in headless Chromium against a real collector, Mosquitto and
// agents: start a drill on a region after the confirmation names how many nodes will be
// asked, then see the receipts arrive on the page without a reload.

import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";

import { chromium } from "playwright-core";

import { ARTIFACTS, OPERATOR, System } from "./harness.mjs";

const CHROMIUM = "/usr/bin/chromium";
// The silent test passes on sirens and fails on the display.
const NODES = [
  { id: "lz-cg-s01", site: "lz-chengguan", region: "lanzhou", kind: "siren", name: "城关区 1号警报器", test: "true" },
  { id: "lz-cg-s02", site: "lz-chengguan", region: "lanzhou", kind: "siren", name: "城关区 2号警报器", test: "true" },
  { id: "lz-cg-d01", site: "lz-chengguan", region: "lanzhou", kind: "display", name: "城关区 1号显示屏", test: "false" },
  { id: "ts-qz-s01", site: "ts-qinzhou", region: "tianshui", kind: "siren", name: "秦州区 1号警报器", test: "true" },
];

let sys;
let context;
let profile;
let page;
const problems = [];

describe("drills page", { timeout: 180000 }, () => {
  before(async () => {
    sys = await System.start();
    for (const n of NODES) {
      // The harness's collector has no signing key: these agents run its unsigned commands.
      await sys.startAgent(n, `[commands]\nallow_unsigned = true\n[tests.silent]\ncommand = ["${n.test}"]\n`);
    }
    profile = fs.mkdtempSync(path.join(os.tmpdir(), "alarmnet-console-drills-"));
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
      locale: "zh-CN",
      timezoneId: "UTC",
      viewport: { width: 1366, height: 768 },
    });
    await context.addInitScript((token) => {
      if (!localStorage.getItem("alarmnet.token")) localStorage.setItem("alarmnet.token", token);
    }, OPERATOR.token);
    page = context.pages()[0] ?? (await context.newPage());
    page.on("console", (m) => { if (m.type() === "error") problems.push(`console: ${m.text()}`); });
    page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
    page.on("response", (r) => { if (r.status() >= 400) problems.push(`HTTP ${r.status()}: ${r.url()}`); });
  });

  after(async () => {
    await context?.close().catch(() => {});
    if (profile) fs.rmSync(profile, { recursive: true, force: true });
    if (sys) {
      if (process.exitCode) console.error(sys.logs());
      await sys.stop();
    }
  });

  test("a drill started from the page shows its receipts live", async () => {
    await page.goto(`${sys.base}/#/drills`);
    await page.waitForSelector("body[data-ready=true]", { timeout: 20000 });
    await page.waitForSelector("[data-testid=stream-status][data-state=live]", { timeout: 20000 });
    await page.waitForSelector("[data-testid=drills-empty]");
    await page.fill("[data-testid=drill-region]", "lanzhou");
    await page.click("[data-testid=drill-check]");
    const confirm = await page.waitForSelector("[data-testid=drill-confirm-text]");
    const text = await confirm.innerText();
    assert.match(text, /将要求 3 个节点/, text);
    // Nothing started before the confirmation.
    assert.equal((await sys.api("/api/v1/drills")).total, 0);
    await page.evaluate(() => { window.__sameDocument = true; });
    await page.click("[data-testid=drill-confirm]");
    await page.waitForSelector("[data-drills=detail][data-drill-id]");
    // The receipts arrive through the event stream: same document, no reload.
    await page.waitForSelector("[data-testid=drill-result][data-node=lz-cg-s01][data-outcome=pass]", { timeout: 30000 });
    await page.waitForSelector("[data-testid=drill-result][data-node=lz-cg-s02][data-outcome=pass]", { timeout: 30000 });
    await page.waitForSelector("[data-testid=drill-result][data-node=lz-cg-d01][data-outcome=fail]", { timeout: 30000 });
    assert.equal(await page.evaluate(() => window.__sameDocument), true, "the page was not reloaded");
    await page.waitForSelector("[data-testid=drill-status]:has-text('已完成')", { timeout: 10000 });
    assert.equal(await page.getAttribute("[data-testid=tally-passed]", "data-count"), "2");
    assert.equal(await page.getAttribute("[data-testid=tally-failed]", "data-count"), "1");
    assert.equal(await page.innerText("[data-testid=drill-rate]"), "66.7 %");
    assert.equal(await page.locator("[data-testid=drill-result]").count(), 3, "the tianshui node is not asked");
    // The CSV export holds every result.
    const [download] = await Promise.all([
      page.waitForEvent("download"),
      page.click("[data-testid=drill-csv]"),
    ]);
    const csv = fs.readFileSync(await download.path(), "utf8");
    assert.match(csv, /^node,region,site,kind,outcome,result,received_at,duration_ms,message\r\n/);
    assert.equal(csv.trim().split("\r\n").length, 4, csv);
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: path.join(ARTIFACTS, "drill-zh-1366x768.png") });
    assert.deepEqual(problems, []);
  });
});
