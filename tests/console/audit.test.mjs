// The console's audit page in headless Chromium against a real collector: a silence added
// by the operator and an acknowledgement a viewer was refused both appear with who, from
// where and what, in Chinese; the outcome filter narrows the list; a viewer sees no log.

import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";

import { chromium } from "playwright-core";

import { ARTIFACTS, OPERATOR, VIEWER, System } from "./harness.mjs";

const CHROMIUM = "/usr/bin/chromium";

let sys;
let context;
let profile;
const problems = [];

async function pageWith(token) {
  const page = await context.newPage();
  await page.addInitScript((t) => localStorage.setItem("alarmnet.token", t), token);
  page.on("console", (m) => { if (m.type() === "error") problems.push(`console: ${m.text()}`); });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  return page;
}

describe("audit page", { timeout: 120000 }, () => {
  before(async () => {
    sys = await System.start();
    profile = fs.mkdtempSync(path.join(os.tmpdir(), "alarmnet-console-audit-"));
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
      locale: "zh-CN",
      timezoneId: "UTC",
      viewport: { width: 1366, height: 768 },
    });
  });

  after(async () => {
    await context?.close().catch(() => {});
    if (profile) fs.rmSync(profile, { recursive: true, force: true });
    if (sys) {
      if (process.exitCode) console.error(sys.logs());
      await sys.stop();
    }
  });

  test("operator actions and refusals are listed; viewers see no log", async () => {
    await sys.api("/api/v1/silences", {
      method: "POST",
      body: { site: "lz-chengguan", duration: "2h", comment: "更换功放" },
    });
    const refused = await fetch(`${sys.base}/api/v1/alerts/a-none/ack`, {
      method: "POST",
      headers: { authorization: `Bearer ${VIEWER.token}` },
    });
    assert.equal(refused.status, 403);

    const page = await pageWith(OPERATOR.token);
    await page.goto(`${sys.base}/#/audit`);
    await page.waitForSelector("body[data-ready=true]", { timeout: 20000 });
    const added = await page.waitForSelector("[data-testid=audit-row][data-action='silence.add'][data-outcome=success]");
    const text = await added.innerText();
    for (const want of ["添加静默", OPERATOR.name, "值班员", "127.0.0.1", "成功", "更换功放"]) {
      assert.ok(text.includes(want), `${want} not in ${text}`);
    }
    const no = await page.waitForSelector("[data-testid=audit-row][data-action='alert.ack'][data-outcome=refused]");
    const noText = await no.innerText();
    for (const want of ["确认告警", VIEWER.name, "已拒绝", "403"]) {
      assert.ok(noText.includes(want), `${want} not in ${noText}`);
    }
    await page.selectOption("[data-testid=audit-outcome]", "refused");
    await page.click("[data-testid=audit-apply]");
    await page.waitForSelector("[data-testid=audit-row][data-action='silence.add']", { state: "detached" });
    assert.equal(await page.locator("[data-testid=audit-row]").count(), 1);
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: path.join(ARTIFACTS, "audit-zh-1366x768.png") });

    const wall = await pageWith(VIEWER.token);
    await wall.goto(`${sys.base}/#/audit`);
    await wall.waitForSelector("body[data-ready=true]", { timeout: 20000 });
    await wall.waitForSelector("[data-testid=audit-operator-only]");
    assert.equal(await wall.locator("[data-testid=audit-row]").count(), 0);
    assert.deepEqual(problems, []);
  });
});
