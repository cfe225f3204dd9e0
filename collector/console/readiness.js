// Readiness in the console: the per-region summary above the node grid, the marker on
// each node tile (beside its liveness colour), and the reasons in a node's detail, in the
// operator's language. Reads /api/v1/readiness and the `readiness` member of nodes.

import { t } from "./i18n.js";

const READINESS = ["not_ready", "degraded", "ready"];

/** The live rollups (GET api/v1/readiness), or null before the first load. */
let board = null;

export function readinessBoard() {
  return board;
}

export async function loadReadiness(api) {
  board = await api("api/v1/readiness");
  return board;
}

function pctText(p) {
  return p === null || p === undefined ? "–" : `${p.toFixed(1)} %`;
}

/**
 * The summary per region: ready share of sirens and the counts per state. `h` builds
 * elements, `regionName` gives a region's display name.
 */
export function readinessSummary(h, regionName) {
  const sec = h("section", { class: "card readiness", "data-testid": "readiness-summary", "aria-labelledby": "readiness-title" },
    h("h3", { id: "readiness-title" }, t("readiness.title")));
  if (!board) {
    sec.append(h("p", { class: "empty" }, t("grid.loading")));
    return sec;
  }
  const rows = [...board.regions.map((r) => [r.region, regionName(r.region), r]), ["", t("readiness.network"), board.network]];
  const table = h("table", { class: "readiness-table" },
    h("thead", {}, h("tr", {},
      h("th", { scope: "col" }, t("readiness.region")),
      h("th", { scope: "col" }, t("readiness.ready_pct")),
      ...READINESS.slice().reverse().map((st) => h("th", { scope: "col" }, t(`readiness.${st}`))),
      h("th", { scope: "col" }, t("readiness.maintenance")))));
  const body = h("tbody", {});
  for (const [id, label, r] of rows) {
    const s = r.sirens;
    body.append(h("tr", { "data-testid": "readiness-region", "data-region": id, "data-ready-pct": r.ready_pct ?? "" },
      h("th", { scope: "row" }, label),
      h("td", { class: `pct ${r.ready_pct !== null && r.ready_pct < 90 ? "low" : ""}` }, pctText(r.ready_pct)),
      h("td", { "data-state": "ready" }, String(s.ready)),
      h("td", { "data-state": "degraded" }, String(s.degraded)),
      h("td", { "data-state": "not_ready" }, String(s.not_ready)),
      h("td", { "data-state": "maintenance" }, String(s.maintenance))));
  }
  table.append(body);
  sec.append(table, h("p", { class: "readiness-note" }, t("readiness.hint")));
  return sec;
}

/** The small marker on a node tile: its readiness, beside the liveness colour. */
export function readinessMarker(h, node) {
  const st = node.readiness?.state;
  if (!st) return null;
  return h("span", { class: `rmark r-${st}`, "data-testid": "node-readiness", "data-readiness": st, title: t(`readiness.${st}`) },
    st === "ready" ? "✓" : st === "degraded" ? "!" : "✕");
}

/** One reason in words. `fmtTime` formats a time. */
export function reasonText(r, fmtTime) {
  const kind = r.test ? t(`testkind.${r.test}`) : "";
  const params = { fault: r.fault ?? "", test: kind.startsWith("testkind.") ? r.test : kind, severity: r.severity ? t(`sev.${r.severity}`) : "", last: r.last ? fmtTime(r.last, false) : "" };
  const key = `reason.${r.code}`;
  const text = t(key, params);
  return text === key ? r.code : text;
}

/** The readiness card of a node's detail page. */
export function readinessCard(h, info, fmtTime) {
  const r = info.readiness;
  const sec = h("section", { class: "card", "data-testid": "node-readiness-card" }, h("h3", {}, t("readiness.node")));
  if (!r) {
    sec.append(h("p", { class: "empty" }, t("readiness.none")));
    return sec;
  }
  sec.append(h("p", {},
    h("span", { class: `rmark r-${r.state}`, "data-testid": "node-readiness-state", "data-readiness": r.state }, t(`readiness.${r.state}`)),
    ` ${t("node.since")} ${fmtTime(r.since)}`));
  if (r.reasons.length) {
    sec.append(h("ul", { class: "reasons" }, r.reasons.map((x) =>
      h("li", { "data-testid": "readiness-reason", "data-code": x.code }, reasonText(x, fmtTime)))));
  }
  return sec;
}
