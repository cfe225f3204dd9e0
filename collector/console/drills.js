// The console's drills page (#/drills, #/drills/<id>): start a drill on a selector after a
// confirmation naming how many nodes will be asked (a dry run), the receipts arriving live
// from the event stream (`drill` events, no reload), the sounding rate, a printable result
// table and a CSV export. app.js mounts it with its helpers (`ctx`) and forwards `drill`
// events to `drillEvent`.

import { t } from "./i18n.js";

const TALLY = ["asked", "passed", "failed", "errored", "silent", "late", "waiting"];
const RESULTS_PAGE = 1000;

// The drill on screen: its JSON, its results by node, and where they are drawn.
const D = { id: null, drill: null, results: new Map(), ctx: null, main: null, listTimer: null };

function pct(v) {
  return `${Number(v || 0).toFixed(1)} %`;
}

/** #/drills or #/drills/<id>. */
export async function drillsView(main, ctx, id) {
  D.ctx = ctx;
  D.main = main;
  D.id = id || null;
  D.drill = null;
  D.results = new Map();
  if (id) return detailView(main, id);
  return listView(main);
}

/** A `drill` event: updates the drill on screen, or the list. */
export function drillEvent(d) {
  if (!D.main || !D.main.isConnected || !D.main.querySelector("[data-drills]")) return;
  if (D.id) {
    if (d.id !== D.id) return;
    D.drill = d;
    for (const r of d.results || []) D.results.set(r.node, r);
    if (d.results_omitted > 0) {
      loadResults(D.id).then(() => drawDetail(), () => {});
      return;
    }
    drawDetail();
  } else if (!D.listTimer) {
    // A burst of events reloads the list once a second at most.
    D.listTimer = setTimeout(() => {
      D.listTimer = null;
      const box = D.main.querySelector("[data-testid=drills-list]");
      if (box) loadList(box);
    }, 1000);
  }
}

// ---------- list and start form ----------

function listView(main) {
  const { h } = D.ctx;
  const operator = D.ctx.operator();
  const msg = h("p", { role: "status", "data-testid": "drill-msg" });
  const confirmBox = h("div", { "data-testid": "drill-confirm-box" });
  const field = (name, label, attrs = {}) =>
    h("label", {}, t(label), h("input", { name, "data-testid": `drill-${name}`, ...attrs }));
  const form = h("form", {
    class: "card", "data-testid": "drill-form",
    onsubmit: async (e) => {
      e.preventDefault();
      const body = requestBody(form);
      msg.textContent = "";
      try {
        const dry = await D.ctx.api("api/v1/drills", { method: "POST", body: { ...body, dry_run: true } });
        confirmBox.replaceChildren(h("div", { class: "confirm", role: "alertdialog", "aria-live": "assertive" },
          h("p", { "data-testid": "drill-confirm-text" }, t("drills.confirm", { n: dry.selected, test: body.test || "silent" })),
          h("button", {
            type: "button", class: "btn primary", "data-testid": "drill-confirm",
            onclick: async () => {
              try {
                const d = await D.ctx.api("api/v1/drills", { method: "POST", body });
                location.hash = `#/drills/${encodeURIComponent(d.id)}`;
              } catch (ex) {
                showError(msg, ex);
              }
            },
          }, t("drills.confirm.start")),
          h("button", { type: "button", class: "btn", onclick: () => confirmBox.replaceChildren() }, t("drills.confirm.cancel"))));
      } catch (ex) {
        confirmBox.replaceChildren();
        showError(msg, ex);
      }
    },
  },
  h("h3", {}, t("drills.new")),
  h("div", { class: "form-grid" },
    field("region", "drills.region"), field("site", "drills.site"),
    field("kind", "drills.kind"), field("nodes", "drills.nodes", { placeholder: "lz-cg-s001, lz-cg-s002" }),
    field("test", "drills.test", { placeholder: "silent" }),
    h("label", {}, t("drills.deadline"), h("select", { name: "deadline", "data-testid": "drill-deadline" },
      ["2m", "5m", "10m", "30m", "1h"].map((d) => h("option", { value: d, selected: d === "10m" }, d)))),
    h("div", {}, h("button", { type: "submit", class: "btn primary", "data-testid": "drill-check" }, t("drills.check")))));
  const listBox = h("div", { "data-testid": "drills-list" }, h("p", { class: "empty" }, t("grid.loading")));
  main.replaceChildren(h("section", { "data-drills": "list" },
    h("div", { class: "section-head" }, h("h2", {}, t("drills.title"))),
    operator ? form : h("p", { class: "empty" }, t("drills.operator_only")),
    confirmBox, msg, listBox));
  loadList(listBox);
}

function requestBody(form) {
  const f = new FormData(form);
  const v = (k) => String(f.get(k) || "").trim();
  const selector = {};
  for (const k of ["region", "site", "kind"]) if (v(k)) selector[k] = v(k);
  const nodes = v("nodes").split(/[\s,]+/).filter(Boolean);
  if (nodes.length) selector.nodes = nodes;
  const body = { selector, deadline: v("deadline") || "10m" };
  if (v("test")) body.test = v("test");
  return body;
}

function showError(msg, ex) {
  msg.className = "error";
  msg.textContent = ex.status === 403 ? t("error.forbidden") : t("error.generic", { message: ex.message });
}

async function loadList(box) {
  const { h, api, qs, fmtTime } = D.ctx;
  let page;
  try {
    page = await api(`api/v1/drills${qs({ limit: 100 })}`);
  } catch (e) {
    box.replaceChildren(h("p", { class: "error" }, t("error.generic", { message: e.message })));
    return;
  }
  if (!page.items.length) {
    box.replaceChildren(h("p", { class: "empty", "data-testid": "drills-empty" }, t("drills.empty")));
    return;
  }
  box.replaceChildren(h("table", { "data-testid": "drills-table" },
    h("thead", {}, h("tr", {}, ["drills.id", "drills.status", "drills.started", "drills.by", "drills.asked", "drills.passed", "drills.rate"]
      .map((k) => h("th", {}, t(k))))),
    h("tbody", {}, page.items.map((d) => h("tr", { "data-testid": "drill-row", "data-drill-id": d.id },
      h("td", {}, h("a", { href: `#/drills/${encodeURIComponent(d.id)}` }, d.id)),
      h("td", {}, t(`drills.status.${d.status}`)),
      h("td", {}, fmtTime(d.started_at, false)),
      h("td", {}, d.started_by),
      h("td", { class: "num" }, String(d.tally.asked)),
      h("td", { class: "num" }, String(d.tally.passed)),
      h("td", { class: "num" }, pct(d.sounding_rate_pct)))))));
}

// ---------- one drill ----------

async function loadResults(id) {
  const { api, qs } = D.ctx;
  let cursor = "";
  const results = new Map();
  let drill = null;
  for (;;) {
    const page = await api(`api/v1/drills/${encodeURIComponent(id)}${qs({ limit: RESULTS_PAGE, cursor })}`);
    drill = page.drill;
    for (const r of page.items) results.set(r.node, r);
    if (!page.next_cursor || !page.items.length) break;
    cursor = page.next_cursor;
  }
  // Events that arrived while loading are newer than the page: keep them.
  for (const [node, r] of D.results) if (r.outcome !== "waiting") results.set(node, r);
  D.results = results;
  if (!D.drill || D.drill.tally.answered <= drill.tally.answered) D.drill = drill;
}

async function detailView(main, id) {
  const { h } = D.ctx;
  main.replaceChildren(h("section", { "data-drills": "detail" }, h("p", { class: "empty" }, t("grid.loading"))));
  try {
    await loadResults(id);
  } catch (e) {
    main.replaceChildren(h("section", { "data-drills": "detail" },
      h("p", { class: "error" }, e.status === 404 ? t("drills.not_found") : t("error.generic", { message: e.message }))));
    return;
  }
  drawDetail();
}

function drawDetail() {
  const { h, fmtTime } = D.ctx;
  const d = D.drill;
  if (!d || !D.main) return;
  const operator = D.ctx.operator();
  const msg = h("p", { role: "status", "data-testid": "drill-msg" });
  const rows = [...D.results.values()].sort((a, b) =>
    a.region.localeCompare(b.region) || a.site.localeCompare(b.site) || a.node.localeCompare(b.node));
  const tally = h("div", { class: "chips", "data-testid": "drill-tally" },
    TALLY.map((k) => h("span", { class: `chip outcome-${k}`, "data-testid": `tally-${k}`, "data-count": d.tally[k] },
      `${t(`drills.tally.${k}`)} ${d.tally[k]}`)));
  const head = h("div", { class: "section-head" },
    h("h2", {}, t("drills.one", { id: d.id })),
    h("span", { class: "tag", "data-testid": "drill-status" }, t(`drills.status.${d.status}`)),
    h("span", { class: "spacer" }),
    h("button", { type: "button", class: "btn no-print", "data-testid": "drill-print", onclick: () => window.print() }, t("drills.print")),
    h("button", { type: "button", class: "btn no-print", "data-testid": "drill-csv", onclick: () => downloadCsv(d, rows) }, t("drills.csv")),
    operator && d.status === "open" ? h("button", {
      type: "button", class: "btn danger no-print", "data-testid": "drill-cancel",
      onclick: async () => {
        try {
          D.drill = await D.ctx.api(`api/v1/drills/${encodeURIComponent(d.id)}/cancel`, { method: "POST" });
          await loadResults(d.id);
          drawDetail();
        } catch (ex) {
          showError(msg, ex);
        }
      },
    }, t("drills.cancel")) : null);
  const facts = h("p", { class: "sub" },
    t("drills.facts", {
      test: d.test, by: d.started_by, start: fmtTime(d.started_at), deadline: fmtTime(d.deadline),
    }));
  const rate = h("p", { class: "rate" }, t("drills.rate"), " ",
    h("strong", { "data-testid": "drill-rate" }, pct(d.sounding_rate_pct)),
    ` (${d.tally.passed} / ${d.tally.asked})`);
  const table = h("table", { "data-testid": "drill-results" },
    h("thead", {}, h("tr", {}, ["drills.node", "drills.region.col", "drills.site", "drills.outcome", "drills.received", "drills.duration", "drills.message"]
      .map((k) => h("th", {}, t(k))))),
    h("tbody", {}, rows.map((r) => h("tr", { "data-testid": "drill-result", "data-node": r.node, "data-outcome": r.outcome },
      h("td", { title: r.node }, D.ctx.nodeName(r.node)),
      h("td", { title: r.region }, D.ctx.regionName(r.region)),
      h("td", { title: r.site }, D.ctx.siteName(r.region, r.site)),
      h("td", {}, h("span", { class: `outcome outcome-${r.outcome}` }, t(`drills.outcome.${r.outcome}`))),
      h("td", {}, r.received_at ? fmtTime(r.received_at) : ""),
      h("td", { class: "num" }, r.duration_ms === null || r.duration_ms === undefined ? "" : `${r.duration_ms} ms`),
      h("td", {}, r.message || "")))));
  D.main.replaceChildren(h("section", { "data-drills": "detail", "data-drill-id": d.id },
    h("p", { class: "no-print" }, h("a", { href: "#/drills" }, t("drills.back"))),
    head, facts, rate, tally, msg, table));
}

function downloadCsv(d, rows) {
  const cols = ["node", "region", "site", "kind", "outcome", "result", "received_at", "duration_ms", "message"];
  const lines = [cols.join(",")].concat(rows.map((r) => cols.map((c) => D.ctx.csvField(r[c])).join(",")));
  const blob = new Blob([`${lines.join("\r\n")}\r\n`], { type: "text/csv;charset=utf-8" });
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = `${d.id}.csv`;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}
