// Static checks of the console's translations: both languages have the same keys, and every
// key the page names literally (t("...") in app.js, data-i18n in index.html) exists.

import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { test } from "node:test";

import { ROOT } from "./harness.mjs";

const CONSOLE = path.join(ROOT, "collector/console");
const read = (f) => fs.readFileSync(path.join(CONSOLE, f), "utf8");

// i18n.js is an ES module without a package.json saying so: import it from its source.
const i18n = await import(`data:text/javascript,${encodeURIComponent(read("i18n.js"))}`);

test("both languages have the same keys", () => {
  assert.deepEqual(i18n.missingKeys(), { zh: [], en: [] });
});

test("every key the page names exists in both languages", () => {
  const keys = new Set([
    ...[...read("app.js").matchAll(/\bt\("([^"]+)"/g)].map((m) => m[1]),
    ...[...read("drills.js").matchAll(/\bt\("([^"]+)"/g)].map((m) => m[1]),
    ...[...read("readiness.js").matchAll(/\bt\("([^"]+)"/g)].map((m) => m[1]),
    ...[...read("index.html").matchAll(/data-i18n(?:-[a-z]+)?="([^"]+)"/g)].map((m) => m[1]),
  ]);
  assert.ok(keys.size > 50, `found only ${keys.size} keys: the patterns no longer match`);
  for (const lang of i18n.LANGS) {
    globalThis.localStorage = { setItem() {}, getItem() { return null; } };
    globalThis.document = { documentElement: {} };
    i18n.setLang(lang);
    const missing = [...keys].filter((k) => i18n.t(k) === k);
    assert.deepEqual(missing, [], `keys missing in ${lang}`);
  }
});
