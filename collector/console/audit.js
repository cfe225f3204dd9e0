// The console's audit page (#/audit): the collector's audit log for operators, newest
// first: who acted, when, from where, on what, and whether it was done or refused; with
// filters by token name, action and outcome, and further pages on demand. app.js mounts it
// with its helpers (`ctx`).

import { t } from "./i18n.js";

const PAGE = 100;
const ACTIONS = ["alert.ack", "silence.add", "silence.end", "drill.start", "drill.cancel", "config.reload", "write"];
const OUTCOMES = ["success", "refused", "failed"];

// The filters in use: kept across re-renders of the page (the app re-renders the current
// view when its data reloads).
let current = { since: "7d" };

/** #/audit */
export function auditView(main, ctx) {
  const { h } = ctx;
  if (!ctx.operator()) {
    main.replaceChildren(h("section", { "data-audit": "" },
      h("div", { class: "section-head" }, h("h2", {}, t("audit.title"))),
      h("p", { class: "empty", "data-testid": "audit-operator-only" }, t("audit.operator_only"))));
    return;
  }
  const select = (name, values, label) => h("label", {}, t(label),
    h("select", { name, "data-testid": `audit-${name}` },
      h("option", { value: "" }, t("audit.any")),
      values.map((v) => h("option", { value: v, selected: current[name] === v }, t(`audit.${name}.${v}`)))));
  const box = h("div", { "data-testid": "audit-list" }, h("p", { class: "empty" }, t("grid.loading")));
  const form = h("form", {
    class: "card", "data-testid": "audit-filter",
    onsubmit: (e) => {
      e.preventDefault();
      current = filters(form);
      load(ctx, box, current);
    },
  },
  h("div", { class: "form-grid" },
    h("label", {}, t("audit.actor"), h("input", { name: "actor", value: current.actor || "", "data-testid": "audit-actor" })),
    select("action", ACTIONS, "audit.action"),
    select("outcome", OUTCOMES, "audit.outcome"),
    h("label", {}, t("audit.since"), h("select", { name: "since", "data-testid": "audit-since" },
      ["1d", "7d", "30d", "400d"].map((d) => h("option", { value: d, selected: d === current.since }, d)))),
    h("div", {}, h("button", { type: "submit", class: "btn primary", "data-testid": "audit-apply" }, t("audit.apply")))));
  main.replaceChildren(h("section", { "data-audit": "" },
    h("div", { class: "section-head" }, h("h2", {}, t("audit.title"))),
    form, box));
  load(ctx, box, current);
}

function filters(form) {
  const f = new FormData(form);
  const out = {};
  for (const k of ["actor", "action", "outcome", "since"]) {
    const v = String(f.get(k) || "").trim();
    if (v) out[k] = v;
  }
  return out;
}

async function load(ctx, box, params) {
  const { h, api, qs } = ctx;
  const body = h("tbody", {});
  const more = h("button", { type: "button", class: "btn", "data-testid": "audit-more", hidden: true }, t("audit.more"));
  const total = h("p", { class: "sub", "data-testid": "audit-total" });
  let cursor = "";
  const next = async () => {
    let page;
    try {
      page = await api(`api/v1/audit${qs({ ...params, limit: PAGE, cursor })}`);
    } catch (e) {
      box.replaceChildren(h("p", { class: "error" }, t("error.generic", { message: e.message })));
      return;
    }
    if (!cursor && !page.items.length) {
      box.replaceChildren(h("p", { class: "empty", "data-testid": "audit-empty" }, t("audit.empty")));
      return;
    }
    for (const e of page.items) body.append(row(ctx, e));
    total.textContent = t("audit.total", { n: page.total });
    cursor = page.next_cursor || "";
    more.hidden = !cursor;
  };
  more.addEventListener("click", next);
  box.replaceChildren(total, h("table", { "data-testid": "audit-table" },
    h("thead", {}, h("tr", {}, ["audit.at", "audit.actor", "audit.peer", "audit.action", "audit.target", "audit.outcome", "audit.message"]
      .map((k) => h("th", {}, t(k))))),
    body), more);
  await next();
}

function row(ctx, e) {
  const { h, fmtTime } = ctx;
  const who = e.actor ? `${e.actor} (${t(`audit.role.${e.role}`)})` : t(`audit.role.${e.role}`);
  const detail = e.detail || {};
  const message = detail.message || (detail.request && detail.request.comment) || "";
  return h("tr", { "data-testid": "audit-row", "data-action": e.action, "data-outcome": e.outcome },
    h("td", {}, fmtTime(e.at)),
    h("td", {}, who),
    h("td", {}, e.peer || "–"),
    h("td", {}, t(`audit.action.${e.action}`)),
    h("td", {}, e.target || "–"),
    h("td", { class: `outcome-${e.outcome}` }, t(`audit.outcome.${e.outcome}`), e.status ? ` (${e.status})` : ""),
    h("td", {}, message));
}
