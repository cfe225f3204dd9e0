// The alarmnet operations console: plain ES module, no framework, no build step.
// Talks only to the collector's API (docs/openapi.yaml) on the same origin.

import { t, setLang, lang, initialLang } from "./i18n.js";
import { drillsView, drillEvent } from "./drills.js";
import { auditView } from "./audit.js";
import { loadReadiness, readinessCard, readinessMarker, readinessSummary } from "./readiness.js";

const STATES = ["offline", "late", "stopped", "unknown", "maintenance", "online"];
const MAX_FEED = 300;

const S = {
  token: localStorage.getItem("alarmnet.token") || "",
  me: null,
  muted: localStorage.getItem("alarmnet.muted") === "1",
  summary: null,
  alerts: new Map(), // alert id -> normalized alert (its latest firing)
  seen: new Set(), // id@started_ms already shown, so a replayed event does not ring again
  zoneOffsetMin: null, // the collector's zone offset, learnt from its timestamps
  expanded: new Set(), // "region/site" of expanded sites
  siteNodes: new Map(), // "region/site" -> {items, total}
  nodeNames: new Map(), // node id -> display name
  ackOpen: null, // alert id whose ack form is open
  ackDraft: "",
  uptime: { period: "30d", month: "", by: "region", region: "", kind: "" },
  lastEventId: "",
  es: null,
  audio: null,
  soundsPlayed: 0,
  authFailed: false,
};

// ---------- small helpers ----------

/** Creates an element: h("a", {href: "#", class: "x"}, "text", child). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg";
function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  for (const c of children) el.append(c instanceof Node ? c : String(c));
  return el;
}

class ApiError extends Error {
  constructor(status, code, message, param) {
    super(message);
    this.status = status;
    this.code = code;
    this.param = param;
  }
}

async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (S.token) headers.Authorization = `Bearer ${S.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, "network", t("error.network"));
  }
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!res.ok) {
    const e = (data && data.error) || {};
    throw new ApiError(res.status, e.code || `http_${res.status}`, e.message || res.statusText, e.param);
  }
  return data;
}

function qs(params) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") p.set(k, v);
  const str = p.toString();
  return str ? `?${str}` : "";
}

/** Milliseconds of an RFC 3339 string (learning the collector's zone offset) or a number. */
function ms(v) {
  if (v === null || v === undefined) return null;
  if (typeof v === "number") return v;
  if (S.zoneOffsetMin === null) {
    const m = /([+-])(\d\d):(\d\d)$/.exec(v);
    if (m) S.zoneOffsetMin = (m[1] === "-" ? -1 : 1) * (Number(m[2]) * 60 + Number(m[3]));
    else if (/Z$/i.test(v)) S.zoneOffsetMin = 0;
  }
  return Date.parse(v);
}

/** `YYYY-MM-DD HH:MM:SS` in the collector's zone (the browser's until it is known). */
function fmtTime(v, withSeconds = true) {
  const t0 = ms(v);
  if (t0 === null || Number.isNaN(t0)) return "–";
  const off = S.zoneOffsetMin ?? -new Date(t0).getTimezoneOffset();
  const iso = new Date(t0 + off * 60000).toISOString();
  return `${iso.slice(0, 10)} ${iso.slice(11, withSeconds ? 19 : 16)}`;
}

function fmtAgo(v) {
  const d = Math.max(0, (Date.now() - ms(v)) / 1000);
  if (d < 60) return t("time.ago.s", { n: Math.floor(d) });
  if (d < 3600) return t("time.ago.m", { n: Math.floor(d / 60) });
  if (d < 86400) return t("time.ago.h", { n: Math.floor(d / 3600) });
  return t("time.ago.d", { n: Math.floor(d / 86400) });
}

function fmtDur(sec) {
  if (sec === null || sec === undefined) return t("dur.none");
  let x = Math.round(sec);
  if (x < 60) return t("dur.s", { n: x });
  const d = Math.floor(x / 86400);
  x -= d * 86400;
  const hh = Math.floor(x / 3600);
  x -= hh * 3600;
  const mm = Math.floor(x / 60);
  const parts = [];
  if (d) parts.push(t("dur.d", { n: d }));
  if (hh || d) parts.push(t("dur.h", { n: hh }));
  if (!d) parts.push(t("dur.m", { n: mm }));
  return parts.join(" ");
}

function fmtPct(p) {
  return p === null || p === undefined ? t("dur.none") : `${p.toFixed(3)} %`;
}

function regionName(region) {
  const r = S.summary?.regions.find((x) => x.region === region);
  return r?.name || region;
}

function siteName(region, site) {
  const r = S.summary?.regions.find((x) => x.region === region);
  const st = r?.sites.find((x) => x.site === site);
  return st?.name || site;
}

function nodeName(node) {
  return S.nodeNames.get(node) || node;
}

function worstState(states) {
  for (const st of STATES) if (states[st] > 0) return st;
  return "unknown";
}

function showBanner(text) {
  const b = document.getElementById("banner");
  b.textContent = text || "";
  b.hidden = !text;
}

/** Runs `render` and puts the focus (and a text field's content) back where it was. */
function keepFocus(render) {
  const a = document.activeElement;
  const key = a?.dataset?.focusKey;
  const value = a && "value" in a ? a.value : null;
  const sel = a && typeof a.selectionStart === "number" ? [a.selectionStart, a.selectionEnd] : null;
  render();
  if (!key) return;
  const b = document.querySelector(`[data-focus-key="${CSS.escape(key)}"]`);
  if (!b) return;
  b.focus({ preventScroll: true });
  if (value !== null && "value" in b && b.tagName !== "BUTTON") b.value = value;
  if (sel && typeof b.setSelectionRange === "function") b.setSelectionRange(sel[0], sel[1]);
}

// ---------- static text, header ----------

function applyStatic() {
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  const langBtn = document.getElementById("lang");
  langBtn.textContent = t("lang.switch");
  langBtn.setAttribute("aria-label", t("lang.switch.label"));
  langBtn.lang = lang() === "zh" ? "en" : "zh-CN";
  renderSound();
  renderLogin();
  renderStream(S.streamState || "connecting");
  document.title = t("app.title");
}

function renderTotals() {
  const box = document.getElementById("totals");
  box.replaceChildren();
  if (!S.summary) return;
  for (const st of STATES) {
    const n = S.summary.states[st] || 0;
    box.append(
      h("span", { class: `chip big${n ? "" : " zero"}`, "data-testid": `total-${st}`, "data-count": n },
        h("span", { class: `dot ${st}`, "aria-hidden": "true" }), `${t(`state.${st}`)} ${n}`),
    );
  }
}

function renderSound() {
  const b = document.getElementById("sound");
  b.textContent = S.muted ? t("sound.off") : t("sound.on");
  b.setAttribute("aria-pressed", S.muted ? "false" : "true");
  b.title = t("sound.label");
  const hint = document.getElementById("sound-hint");
  hint.textContent = t("sound.blocked");
  hint.hidden = S.muted || (S.audio !== null && S.audio.state === "running");
}

function renderLogin() {
  const b = document.getElementById("login");
  if (S.me && S.me.name) {
    b.textContent = t("login.signed", { name: S.me.name, role: t(`role.${S.me.role}`) });
  } else {
    b.textContent = t("login.button");
  }
}

function renderStream(state) {
  S.streamState = state;
  const el = document.getElementById("stream");
  el.className = `stream ${state}`;
  el.textContent = t(`stream.${state}`);
  el.dataset.state = state;
}

function tickClock() {
  document.getElementById("clock").textContent = fmtTime(Date.now()).slice(11);
}

// ---------- sound ----------

/** The browser only lets audio start after a user gesture: make the context then. */
function unlockAudio() {
  if (S.audio === null) {
    const AC = window.AudioContext || window.webkitAudioContext;
    if (!AC) return;
    S.audio = new AC();
  }
  if (S.audio.state === "suspended") S.audio.resume().then(renderSound, () => {});
  renderSound();
}

/** A two-tone siren pattern, about 1.5 s, synthesised (no audio file). */
function playAlarm() {
  if (S.muted) return;
  if (S.audio === null || S.audio.state !== "running") {
    document.getElementById("sound-hint").hidden = false;
    return;
  }
  const ctx = S.audio;
  const t0 = ctx.currentTime + 0.02;
  const osc = ctx.createOscillator();
  const gain = ctx.createGain();
  osc.type = "triangle";
  for (let i = 0; i < 4; i += 1) osc.frequency.setValueAtTime(i % 2 ? 660 : 880, t0 + i * 0.36);
  gain.gain.setValueAtTime(0.0001, t0);
  gain.gain.exponentialRampToValueAtTime(0.35, t0 + 0.04);
  gain.gain.setValueAtTime(0.35, t0 + 1.35);
  gain.gain.exponentialRampToValueAtTime(0.0001, t0 + 1.5);
  osc.connect(gain).connect(ctx.destination);
  osc.start(t0);
  osc.stop(t0 + 1.55);
  S.soundsPlayed += 1;
  document.body.dataset.soundsPlayed = String(S.soundsPlayed);
}

// ---------- alerts ----------

/** One shape for API alerts (RFC 3339 times) and event-stream notifications (ms). */
function normAlert(a) {
  return {
    id: a.id,
    rule: a.rule,
    severity: a.severity,
    status: a.status,
    region: a.region ?? null,
    site: a.site ?? null,
    node: a.node ?? null,
    kind: a.kind ?? null,
    started: ms(a.started_at),
    ended: ms(a.ended_at ?? null),
    summary: a.summary,
    args: a.args ?? null,
    ack: a.ack ?? null,
    notified: a.notified ?? true,
  };
}

/** A rule's name in the operator's language; rules from config keep their own name. */
function ruleName(rule) {
  const key = `rule.${rule}`;
  const s = t(key);
  return s === key ? rule : s;
}

/**
 * The alert in the operator's language, worded from its `args` (docs/api.md, "Alert
 * arguments") with the console's names for nodes, sites and regions. The English view shows
 * the collector's own summary, as does any alert whose args do not fit a known wording.
 */
function alertText(a) {
  if (lang() === "en" || !a.args) return a.summary;
  const x = a.args;
  const node = a.node ? nodeName(a.node) : "";
  const has = (...keys) => keys.every((k) => x[k] !== undefined && x[k] !== "");
  const secs = (v) => fmtDur(Number(v));
  switch (a.rule) {
    case "node_offline":
      return has("cause") ? t("alert.node_offline", { node, cause: t(`cause.${x.cause}`) }) : t("alert.node_offline.bare", { node });
    case "fault":
      if (!has("check", "code")) break;
      return t("alert.fault", {
        node, check: x.check, code: x.code,
        sev: t(`sev.${has("fault_severity") ? x.fault_severity : a.severity}`),
        message: has("message") ? `：${x.message}` : "",
      });
    case "site_outage":
    case "region_outage": {
      if (!has("offline", "total")) break;
      const vars = { offline: x.offline, total: x.total, region: regionName(a.region), site: `${siteName(a.region, a.site)} · ${regionName(a.region)}` };
      let text = t(`alert.${a.rule}`, vars);
      if (has("went_down") || has("came_back")) {
        const names = (v) => (v ? v.split(",").map(nodeName).join("、") : "–");
        text += t("alert.outage.change", { down: names(x.went_down), back: names(x.came_back) });
      }
      return text;
    }
    case "flapping":
      if (!has("count", "window_s")) break;
      return t("alert.flapping", { node, count: x.count, window: secs(x.window_s) });
    case "telemetry_gap":
      if (has("missing", "explained")) return t("alert.telemetry_gap.explained", { node, missing: x.missing });
      if (!has("missing", "window_s")) break;
      return t("alert.telemetry_gap", { node, missing: x.missing, window: secs(x.window_s) });
    case "clock_skew":
      if (!has("skew_s")) break;
      return t("alert.clock_skew", { node, skew: x.skew_s });
    case "collector_blind":
      if (x.cause === "broker" || x.cause === "store") return t(`alert.collector_blind.${x.cause}`);
      break;
    case "collector_failover":
      if (!has("from", "to")) break;
      return t("alert.collector_failover", { from: x.from, to: x.to });
    case "readiness_low":
      if (!has("ready", "judged", "ready_pct", "floor_pct")) break;
      return t("alert.readiness_low", { region: regionName(a.region), ready: x.ready, judged: x.judged, pct: x.ready_pct, floor: x.floor_pct });
    default:
      if (has("metric", "value", "op", "threshold", "for_s")) {
        return t("alert.threshold", { node, metric: x.metric, value: x.value, op: x.op, threshold: x.threshold, for: secs(x.for_s) });
      }
  }
  return a.summary;
}

/** Merges an alert in; returns true when it is a firing not seen before. */
function upsertAlert(a) {
  const prev = S.alerts.get(a.id);
  if (prev && prev.started > a.started) return false;
  if (prev && prev.started === a.started) {
    if (prev.status === "resolved" && a.status === "firing") return false;
    if (!a.ack) a.ack = prev.ack;
    if (a.notified === true && prev.notified === false && a.status === prev.status) a.notified = prev.notified;
  }
  S.alerts.set(a.id, a);
  const key = `${a.id}@${a.started}`;
  const isNew = a.status === "firing" && !S.seen.has(key);
  S.seen.add(key);
  return isNew;
}

function sortedAlerts() {
  const list = [...S.alerts.values()];
  list.sort((x, y) => {
    if (x.status !== y.status) return x.status === "firing" ? -1 : 1;
    return y.started - x.started;
  });
  return list.slice(0, MAX_FEED);
}

function alertWhere(a) {
  if (a.node) return h("a", { href: `#/node/${encodeURIComponent(a.node)}`, class: "where" }, nodeName(a.node));
  if (a.site) return h("span", { class: "where" }, `${siteName(a.region, a.site)} · ${regionName(a.region)}`);
  if (a.region) return h("span", { class: "where" }, regionName(a.region));
  return h("span", { class: "where" }, t("alerts.network"));
}

/** Rendered feed rows by alert id, so an unchanged alert keeps its element: the feed is an
 * aria-live log, and only new or changed rows should be announced. */
const feedRows = new Map();

function renderAlerts() {
  keepFocus(() => {
    const list = sortedAlerts();
    const ol = document.getElementById("alerts");
    const want = list.map((a) => {
      const sig = JSON.stringify([a.status, a.severity, a.summary, a.ack, a.notified, a.started, a.ended,
        S.ackOpen === a.id, lang(), nodeName(a.node), S.summary ? 1 : 0]);
      let row = feedRows.get(a.id);
      if (!row || row.sig !== sig) {
        row = { sig, el: alertRow(a) };
        feedRows.set(a.id, row);
      } else {
        refreshTimes(row.el, a);
      }
      return row.el;
    });
    const keep = new Set(want);
    for (const el of [...ol.children]) if (!keep.has(el)) el.remove();
    want.forEach((el, i) => { if (ol.children[i] !== el) ol.insertBefore(el, ol.children[i] || null); });
    for (const [id, row] of feedRows) if (!keep.has(row.el)) feedRows.delete(id);
    document.getElementById("alerts-empty").hidden = list.some((a) => a.status === "firing");
    const firing = list.filter((a) => a.status === "firing");
    const unacked = firing.filter((a) => !a.ack).length;
    document.getElementById("feed-counts").textContent =
      `${t("alerts.firing", { n: firing.length })} · ${t("alerts.unacked", { n: unacked })}`;
  });
}

function whenText(a) {
  return a.status === "resolved" ? t("alerts.ended", { when: fmtAgo(a.ended ?? a.started) }) : fmtAgo(a.started);
}

function ackText(a) {
  return t("alerts.acked", { by: a.ack.by, when: fmtAgo(a.ack.at) }) + (a.ack.comment ? `: ${a.ack.comment}` : "");
}

/** Updates the relative times of a row in place (not announced: the log is additions-only). */
function refreshTimes(el, a) {
  el.querySelector(".when").textContent = whenText(a);
  const info = el.querySelector("[data-testid=ack-info]");
  if (info && a.ack) info.textContent = ackText(a);
}

function alertRow(a) {
  const li = h("li", {
    class: `alert sev-${a.severity} ${a.status}${a.fresh ? " fresh" : ""}`,
    "data-testid": "alert-row",
    "data-alert-id": a.id,
    "data-severity": a.severity,
    "data-status": a.status,
    "data-acked": a.ack ? "true" : "false",
  });
  li.append(
    h("div", { class: "alert-top" },
      h("span", { class: `sev ${a.severity}` }, t(`sev.${a.severity}`)),
      alertWhere(a),
      h("time", { class: "when", datetime: new Date(a.started).toISOString(), title: fmtTime(a.started) }, whenText(a))),
    h("p", { class: "summary", "data-testid": "alert-summary" }, alertText(a)),
  );
  const meta = h("div", { class: "meta" },
    h("span", { class: "tag" }, ruleName(a.rule)),
    a.status === "resolved" ? h("span", { class: "tag" }, t("status.resolved")) : null,
    a.notified ? null : h("span", { class: "tag" }, t("alerts.silenced")),
    h("span", {}, t("alerts.since", { when: fmtTime(a.started, false) })),
  );
  if (a.ack) {
    meta.append(h("span", { class: "ok", "data-testid": "ack-info" }, ackText(a)));
  } else if (a.status === "firing" && S.ackOpen !== a.id) {
    meta.append(h("button", {
      type: "button", class: "btn small", "data-testid": "ack-button", "data-focus-key": `ack-${a.id}`,
      onclick: () => {
        if (S.me?.role !== "operator") {
          openLogin(t("login.operator_needed"));
          return;
        }
        S.ackOpen = a.id;
        S.ackDraft = "";
        renderAlerts();
        focusKey(`ackc-${a.id}`);
      },
    }, t("alerts.ack")));
  }
  li.append(meta);
  if (S.ackOpen === a.id && !a.ack && a.status === "firing") li.append(ackForm(a));
  return li;
}

function focusKey(key) {
  document.querySelector(`[data-focus-key="${CSS.escape(key)}"]`)?.focus();
}

function ackForm(a) {
  const err = h("p", { class: "error", role: "alert", hidden: true, "data-testid": "ack-error" });
  const area = h("textarea", {
    "data-testid": "ack-comment", "data-focus-key": `ackc-${a.id}`, placeholder: t("alerts.ack.placeholder"),
    maxlength: "1024", oninput: (e) => { S.ackDraft = e.target.value; },
  });
  area.value = S.ackDraft;
  const form = h("form", {
    class: "ack-form",
    onsubmit: async (e) => {
      e.preventDefault();
      const btn = form.querySelector("button[type=submit]");
      btn.disabled = true;
      try {
        const comment = S.ackDraft.trim();
        const res = await api(`api/v1/alerts/${encodeURIComponent(a.id)}/ack`, {
          method: "POST", body: comment ? { comment } : {},
        });
        S.ackOpen = null;
        S.ackDraft = "";
        // The ack is of the latest firing, the one shown.
        const shown = S.alerts.get(a.id);
        if (shown) shown.ack = res.ack;
        upsertAlert(normAlert(res));
        renderAlerts();
      } catch (ex) {
        btn.disabled = false;
        err.hidden = false;
        err.textContent = ex.status === 403 ? t("error.forbidden") : t("error.generic", { message: ex.message });
        if (ex.status === 401) openLogin();
      }
    },
  },
  h("label", {}, t("alerts.ack.comment"), area),
  err,
  h("div", { class: "row" },
    h("button", { type: "submit", class: "btn primary small", "data-testid": "ack-submit", "data-focus-key": `acks-${a.id}` }, t("alerts.ack.submit")),
    h("button", {
      type: "button", class: "btn small", "data-focus-key": `ackx-${a.id}`,
      onclick: () => { S.ackOpen = null; renderAlerts(); focusKey(`ack-${a.id}`); },
    }, t("alerts.ack.cancel"))));
  form.addEventListener("keydown", (e) => {
    if (e.key === "Escape") { S.ackOpen = null; renderAlerts(); focusKey(`ack-${a.id}`); }
  });
  return form;
}

async function loadAlerts() {
  const page = await api(`api/v1/alerts${qs({ status: "firing", limit: 500 })}`);
  for (const raw of page.items) upsertAlert(normAlert(raw));
  const recent = await api(`api/v1/alerts${qs({ status: "resolved", since: "1h", limit: 50 })}`);
  for (const raw of recent.items) upsertAlert(normAlert(raw));
  renderAlerts();
}

// ---------- event stream ----------

// With a token, every connection starts with a single-use ticket (POST
// api/v1/events/ticket), so the token never appears in a URL. A ticket cannot be reused, so
// the browser's own reconnection (same URL) is replaced by ours, with a new ticket.
async function connectEvents() {
  if (S.es) S.es.close();
  S.es = null;
  const attempt = (S.eventsAttempt = (S.eventsAttempt || 0) + 1);
  renderStream("connecting");
  const params = {};
  if (S.token) {
    try {
      params.ticket = (await api("api/v1/events/ticket", { method: "POST" })).ticket;
    } catch {
      if (attempt !== S.eventsAttempt) return;
      renderStream("down");
      setTimeout(() => { if (attempt === S.eventsAttempt) connectEvents(); }, 5000);
      return;
    }
    // A newer connection (a token change) started meanwhile.
    if (attempt !== S.eventsAttempt) return;
  }
  if (S.lastEventId) params.last_event_id = S.lastEventId;
  const es = new EventSource(`api/v1/events${qs(params)}`);
  S.es = es;
  const track = (e) => { if (e.lastEventId) S.lastEventId = e.lastEventId; };
  es.onopen = () => renderStream("live");
  es.onerror = () => {
    const closed = es.readyState === EventSource.CLOSED;
    if (closed || params.ticket) {
      es.close();
      renderStream(closed ? "down" : "connecting");
      setTimeout(() => { if (S.es === es) connectEvents(); }, params.ticket ? 3000 : 5000);
    } else {
      renderStream("connecting");
    }
  };
  es.addEventListener("alert", (e) => {
    track(e);
    const a = normAlert(JSON.parse(e.data));
    const isNew = upsertAlert(a);
    if (isNew) {
      a.fresh = true;
      setTimeout(() => { a.fresh = false; }, 4000);
      if (a.severity === "critical") playAlarm();
    }
    renderAlerts();
  });
  es.addEventListener("ack", (e) => {
    track(e);
    const d = JSON.parse(e.data);
    const a = S.alerts.get(d.id);
    if (a && a.started === ms(d.started_at)) {
      a.ack = d.ack;
      if (S.ackOpen === d.id) S.ackOpen = null;
      renderAlerts();
    }
  });
  es.addEventListener("state", (e) => {
    track(e);
    applyState(JSON.parse(e.data));
  });
  es.addEventListener("drill", (e) => {
    track(e);
    drillEvent(JSON.parse(e.data));
  });
  es.addEventListener("readiness", (e) => {
    track(e);
    applyReadiness(JSON.parse(e.data));
  });
  es.addEventListener("resync", (e) => {
    track(e);
    reloadAll();
  });
}

/** Moves one node between state counts, without asking the server. */
function applyState(ev) {
  if (ev.name) S.nodeNames.set(ev.node, ev.name);
  const sm = S.summary;
  if (!sm) return;
  const region = sm.regions.find((r) => r.region === ev.region);
  const site = region?.sites.find((x) => x.site === ev.site);
  if (!site) {
    scheduleSummary();
    return;
  }
  for (const counts of [sm.states, region.states, site.states]) {
    if (counts[ev.from] > 0) counts[ev.from] -= 1;
    counts[ev.to] = (counts[ev.to] || 0) + 1;
  }
  const nodes = S.siteNodes.get(`${ev.region}/${ev.site}`);
  const n = nodes?.items.find((x) => x.node === ev.node);
  if (n) {
    n.state = ev.to;
    n.since = ev.at;
  }
  renderTotals();
  if (currentRoute().view === "overview") scheduleRender();
  if (currentRoute().view === "node" && currentRoute().node === ev.node) renderView();
}

/** A node's readiness changed: its tile now, the rollups in a moment (one request). */
let readinessTimer = null;
function applyReadiness(ev) {
  const n = S.siteNodes.get(`${ev.region}/${ev.site}`)?.items.find((x) => x.node === ev.node);
  if (n) n.readiness = { state: ev.to, reasons: ev.reasons, since: ev.at };
  if (currentRoute().view === "node" && currentRoute().node === ev.node) renderView();
  if (readinessTimer) return;
  readinessTimer = setTimeout(async () => {
    readinessTimer = null;
    await loadReadiness(api).catch(() => {});
    if (currentRoute().view === "overview") scheduleRender();
  }, 1000);
}

let summaryTimer = null;
function scheduleSummary() {
  if (summaryTimer) return;
  summaryTimer = setTimeout(async () => {
    summaryTimer = null;
    await loadSummary().catch(() => {});
    if (currentRoute().view === "overview") scheduleRender();
  }, 1000);
}

let renderQueued = false;
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    keepFocus(renderView);
  });
}

// ---------- data loading ----------

async function loadSummary() {
  S.summary = await api("api/v1/summary");
  ms(S.summary.at);
  renderTotals();
}

async function loadSiteNodes(region, site) {
  const page = await api(`api/v1/nodes${qs({ region, site, limit: 1000 })}`);
  for (const n of page.items) if (n.name) S.nodeNames.set(n.node, n.name);
  S.siteNodes.set(`${region}/${site}`, { items: page.items, total: page.total });
}

async function reloadAll() {
  try {
    await loadSummary();
    await loadReadiness(api);
    // Start the feed afresh (alerts resolved while the stream was away must not linger);
    // `seen` is kept, so nothing already shown rings again.
    S.alerts.clear();
    await loadAlerts();
    for (const key of S.expanded) {
      const [region, site] = key.split("/");
      await loadSiteNodes(region, site);
    }
    showBanner("");
    S.authFailed = false;
    renderView();
    return true;
  } catch (e) {
    if (e.status === 401) {
      S.authFailed = true;
      showBanner(t("login.needed"));
      openLogin();
    } else {
      showBanner(t("error.generic", { message: e.message }));
    }
    renderView();
    return false;
  }
}

// ---------- routing ----------

function currentRoute() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [head, ...rest] = hash.split("/");
  if (head === "node" && rest.length) return { view: "node", node: decodeURIComponent(rest.join("/")) };
  if (head === "uptime") return { view: "uptime" };
  if (head === "silences") return { view: "silences" };
  if (head === "drills") return { view: "drills", id: rest.length ? decodeURIComponent(rest.join("/")) : null };
  if (head === "audit") return { view: "audit" };
  return { view: "overview" };
}

function renderView() {
  const route = currentRoute();
  for (const a of document.querySelectorAll(".tabs a")) {
    const on = a.dataset.route === route.view;
    if (on) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const main = document.getElementById("view");
  if (route.view === "overview") main.replaceChildren(overview());
  else if (route.view === "node") nodeView(main, route.node);
  else if (route.view === "uptime") uptimeView(main);
  else if (route.view === "drills") drillsView(main, drillsCtx, route.id);
  else if (route.view === "audit") auditView(main, drillsCtx);
  else silencesView(main);
}

// ---------- overview: node grid ----------

function stateChips(states, testid) {
  return h("div", { class: "chips" },
    STATES.filter((st) => states[st] > 0).map((st) =>
      h("span", { class: "chip", "data-testid": testid, "data-state": st, "data-count": states[st] },
        h("span", { class: `dot ${st}`, "aria-hidden": "true" }), `${t(`state.${st}`)} ${states[st]}`)));
}

function stateBar(states, total) {
  return h("div", { class: "bar", "aria-hidden": "true" },
    STATES.filter((st) => states[st] > 0).map((st) =>
      h("span", { class: `bg-${st}`, style: `width:${(100 * states[st]) / Math.max(1, total)}%` })));
}

function overview() {
  const sec = h("section", { "aria-labelledby": "grid-title" },
    h("div", { class: "section-head" }, h("h2", { id: "grid-title" }, t("grid.title"))));
  if (!S.summary) {
    sec.append(h("p", { class: "empty" }, S.authFailed ? t("login.needed") : t("grid.loading")));
    return sec;
  }
  if (!S.summary.regions.length) {
    sec.append(h("p", { class: "empty" }, t("grid.empty")));
    return sec;
  }
  const grid = h("div", { class: "regions" });
  for (const r of S.summary.regions) {
    const card = h("article", { class: "region", "data-testid": "region-card", "data-region": r.region },
      h("div", { class: "region-head" },
        h("h3", {}, r.name || r.region),
        r.name ? h("span", { class: "tag" }, r.region) : null,
        h("span", { class: "n" }, t(r.nodes === 1 ? "grid.nodes.one" : "grid.nodes", { n: r.nodes }))),
      stateBar(r.states, r.nodes),
      stateChips(r.states, "region-count"));
    const sites = h("div", { class: "sites" });
    for (const st of r.sites) {
      const key = `${r.region}/${st.site}`;
      const worst = worstState(st.states);
      const open = S.expanded.has(key);
      const label = st.name || st.site;
      sites.append(h("button", {
        type: "button", class: `site w-${worst}`, "aria-expanded": open ? "true" : "false",
        "data-testid": "site-tile", "data-site": st.site, "data-region": r.region, "data-worst": worst,
        "data-focus-key": `site-${key}`,
        "aria-label": t("grid.site.label", { site: label, online: st.states.online || 0, n: st.nodes, worst: t(`state.${worst}`) }),
        onclick: () => toggleSite(r.region, st.site),
      },
      h("span", { class: "sname" }, label),
      h("span", { class: "scount" }, t("grid.site.count", { online: st.states.online || 0, n: st.nodes }))));
      if (open) sites.append(siteNodesBox(r.region, st.site));
    }
    card.append(sites);
    grid.append(card);
  }
  sec.append(readinessSummary(h, regionName), grid);
  return sec;
}

async function toggleSite(region, site) {
  const key = `${region}/${site}`;
  if (S.expanded.has(key)) {
    S.expanded.delete(key);
  } else {
    S.expanded.add(key);
    if (!S.siteNodes.has(key)) {
      try {
        await loadSiteNodes(region, site);
      } catch (e) {
        showBanner(t("error.generic", { message: e.message }));
      }
    }
  }
  keepFocus(renderView);
}

function siteNodesBox(region, site) {
  const data = S.siteNodes.get(`${region}/${site}`);
  const box = h("div", { class: "site-nodes", "data-testid": "site-nodes" });
  if (!data) {
    box.append(h("p", { class: "empty" }, t("grid.loading")));
    return box;
  }
  const wrap = h("div", { class: "nodes" });
  for (const n of data.items) {
    wrap.append(h("a", {
      class: `node bg-${n.state} ${n.state}`, href: `#/node/${encodeURIComponent(n.node)}`,
      "data-testid": "node-tile", "data-node": n.node, "data-state": n.state,
      title: `${n.node} · ${t(`state.${n.state}`)}${n.readiness ? ` · ${t(`readiness.${n.readiness.state}`)}` : ""} · ${fmtTime(n.since)}`,
    }, h("span", {}, n.name || n.node), readinessMarker(h, n)));
  }
  box.append(wrap);
  if (data.total > data.items.length) box.append(h("p", { class: "empty" }, t("grid.more", { n: data.total - data.items.length })));
  return box;
}

// ---------- node detail ----------

let nodeSeq = 0;
async function nodeView(main, node) {
  const seq = ++nodeSeq;
  const enc = encodeURIComponent(node);
  const back = h("p", {}, h("a", { href: "#/" }, `← ${t("node.back")}`));
  if (!main.querySelector(`[data-node-detail="${CSS.escape(node)}"]`)) main.replaceChildren(back, h("p", { class: "empty" }, t("grid.loading")));
  let info;
  let transitions;
  let faults;
  let metrics;
  let uptime = null;
  try {
    [info, transitions, faults, metrics] = await Promise.all([
      api(`api/v1/nodes/${enc}`),
      api(`api/v1/nodes/${enc}/history${qs({ since: "7d", limit: 1000 })}`),
      api(`api/v1/nodes/${enc}/history${qs({ type: "faults", since: "30d", limit: 100 })}`),
      api(`api/v1/nodes/${enc}/metrics`),
    ]);
    uptime = await api(`api/v1/uptime${qs({ node, since: "30d" })}`).catch(() => null);
  } catch (e) {
    if (seq !== nodeSeq) return;
    main.replaceChildren(back, h("p", { class: "error", "data-testid": "node-error" },
      e.status === 404 ? t("node.notfound") : t("error.generic", { message: e.message })));
    return;
  }
  if (seq !== nodeSeq || currentRoute().node !== node) return;
  if (info.name) S.nodeNames.set(info.node, info.name);
  const title = info.name || info.node;
  const badge = h("span", { class: `state-badge bg-${info.state} ${info.state}`, "data-testid": "node-state", "data-state": info.state }, t(`state.${info.state}`));
  const head = h("div", { class: "section-head" }, h("h2", {}, t("node.title", { name: title })), badge,
    h("span", { class: "counts" }, `${t("node.since")} ${fmtTime(info.since)} (${fmtAgo(info.since)})`));
  const kv = (pairs) => h("dl", { class: "kv" }, pairs.filter(([, v]) => v !== null && v !== undefined && v !== "")
    .flatMap(([k, v]) => [h("dt", {}, t(k)), h("dd", {}, v)]));
  const reg = h("section", { class: "card", "data-testid": "node-info" }, kv([
    ["node.id", info.node],
    ["node.region", `${regionName(info.region)} (${info.region})`],
    ["node.site", `${siteName(info.region, info.site)} (${info.site})`],
    ["node.kind", info.kind],
    ["node.model", info.model],
    ["node.firmware", info.firmware],
    ["node.agent", info.agent],
    ["node.location", info.lat !== null && info.lat !== undefined ? `${info.lat.toFixed(5)}, ${info.lon.toFixed(5)}` : null],
    ["node.hb", fmtDur(info.hb_interval_s)],
    ["node.last_seen", info.last_seen ? `${fmtTime(info.last_seen)} (${fmtAgo(info.last_seen)})` : null],
    ["node.boot", info.boot],
    ["node.tags", Object.entries(info.tags || {}).map(([k, v]) => `${k}=${v}`).join(", ")],
  ]));
  const active = h("section", { class: "card", "data-testid": "node-faults" }, h("h3", {}, t("node.faults")),
    info.faults_active.length ? faultTable(info.faults_active) : h("p", { class: "empty" }, t("node.faults.none")));
  const hist = h("section", { class: "card", "data-testid": "node-history" }, h("h3", {}, t("node.history")),
    timeline(transitions.items, info, ms(transitions.from), ms(transitions.to)),
    h("div", { class: "timeline-axis" }, h("span", {}, fmtTime(transitions.from, false)), h("span", {}, fmtTime(Math.min(ms(transitions.to), Date.now()), false))),
    h("div", { class: "chips legend" }, STATES.map((st) => h("span", { class: "chip" }, h("span", { class: `dot ${st}`, "aria-hidden": "true" }), t(`state.${st}`)))),
    transitions.items.length ? transitionTable(transitions.items.slice(0, 50)) : h("p", { class: "empty" }, t("node.history.none")),
    transitions.items.length > 50 ? h("p", { class: "empty" }, t("node.more", { n: transitions.total - 50 })) : null);
  const chart = h("section", { class: "card", "data-testid": "node-metrics" }, h("h3", {}, t("node.metrics")), metricsChart(metrics));
  const fh = h("section", { class: "card", "data-testid": "node-fault-history" }, h("h3", {}, t("node.fault_history")),
    faults.items.length ? faultTable(faults.items) : h("p", { class: "empty" }, t("node.fault_history.none")));
  const avail = h("section", { class: "card", "data-testid": "node-uptime" }, h("h3", {}, t("node.uptime")),
    uptime && uptime.rows.length ? nodeUptime(uptime.rows[0]) : h("p", { class: "empty" }, t("dur.none")));
  const grid = h("div", { class: "detail", "data-node-detail": node }, reg, readinessCard(h, info, fmtTime), active, hist, chart, avail, fh);
  keepFocus(() => main.replaceChildren(back, head, grid));
}

function nodeUptime(row) {
  const outages = row.outage_list || [];
  return h("div", {},
    h("dl", { class: "kv" },
      h("dt", {}, t("uptime.col.availability")), h("dd", { class: availClass(row.availability_pct), "data-testid": "node-availability", "data-value": String(row.availability_pct) }, fmtPct(row.availability_pct)),
      h("dt", {}, t("uptime.col.coverage")), h("dd", {}, fmtPct(row.coverage_pct)),
      h("dt", {}, t("uptime.col.downtime")), h("dd", {}, fmtDur(row.downtime_s)),
      h("dt", {}, t("uptime.col.outages")), h("dd", {}, String(row.outages))),
    outages.length ? h("table", {},
      h("thead", {}, h("tr", {}, ["node.outage.start", "node.outage.end", "node.outage.duration", "node.cause"].map((k) => h("th", {}, t(k))))),
      h("tbody", {}, [...outages].reverse().slice(0, 50).map((o) => h("tr", { "data-testid": "outage-row" },
        h("td", {}, fmtTime(o.start)), h("td", {}, o.end ? fmtTime(o.end) : t("node.outage.ongoing")),
        h("td", { class: "num" }, fmtDur(o.duration_s)), h("td", {}, o.cause ? t(`cause.${o.cause}`) : "–")))))
      : h("p", { class: "empty" }, t("node.outages.none")));
}

function faultTable(items) {
  return h("table", {},
    h("thead", {}, h("tr", {}, ["node.fault.key", "node.fault.severity", "node.fault.time", "node.fault.message"].map((k) => h("th", {}, t(k))))),
    h("tbody", {}, items.map((f) => h("tr", { "data-testid": "fault-row" },
      h("td", {}, f.key), h("td", {}, h("span", { class: `sev ${f.severity}` }, t(`sev.${f.severity}`))),
      h("td", {}, fmtTime(f.raised_at) + (f.cleared_at ? ` → ${fmtTime(f.cleared_at)}` : "")),
      h("td", {}, f.message || "")))));
}

function transitionTable(items) {
  return h("table", {},
    h("thead", {}, h("tr", {}, h("th", {}, t("node.since")), h("th", {}, t("node.state")), h("th", {}, t("node.cause")))),
    h("tbody", {}, items.map((x) => h("tr", { "data-testid": "transition-row" },
      h("td", {}, fmtTime(x.at)),
      h("td", {}, t("node.transition", { from: t(`state.${x.from}`), to: t(`state.${x.to}`) })),
      h("td", {}, t(`cause.${x.cause}`))))));
}

/** A horizontal bar of the node's states over [from, to), from its transitions (newest first). */
function timeline(items, info, from, to) {
  const W = 1000;
  const H = 30;
  const svg = s("svg", { class: "timeline", viewBox: `0 0 ${W} ${H + 14}`, preserveAspectRatio: "none", role: "img", "aria-label": t("node.history") });
  const asc = [...items].sort((a, b) => ms(a.at) - ms(b.at));
  const end = Math.min(to, Date.now());
  const span = Math.max(1, end - from);
  let state = asc.length ? asc[0].from : info.state;
  let at = from;
  const segs = [];
  for (const x of asc) {
    const xt = Math.max(from, ms(x.at));
    segs.push([at, xt, state]);
    state = x.to;
    at = xt;
  }
  segs.push([at, end, state]);
  for (const [a, b, st] of segs) {
    if (b <= a) continue;
    const x = ((a - from) / span) * W;
    const w = Math.max(0.5, ((b - a) / span) * W);
    const r = s("rect", { x, y: 0, width: w, height: H, style: `fill: var(--${st})` });
    r.append(s("title", {}, `${t(`state.${st}`)}: ${fmtTime(a)} → ${fmtTime(b)}`));
    svg.append(r);
  }
  const days = Math.round(span / 86400000);
  for (let i = 0; i <= days; i += 1) {
    const x = Math.min(W - 1, (i / Math.max(1, days)) * W);
    svg.append(s("line", { x1: x, x2: x, y1: 0, y2: H + 3, stroke: "#0f1419", "stroke-width": 1 }));
  }
  return svg;
}

function metricsChart(data) {
  const samples = data.samples || [];
  if (!samples.length) return h("p", { class: "empty" }, t("node.metrics.none"));
  const names = [...new Set(samples.flatMap((x) => Object.keys(x.metrics)))].sort();
  const wrap = h("div", {});
  const pick = S.metricPick && names.includes(S.metricPick) ? S.metricPick : (names.includes("battery_v") ? "battery_v" : names[0]);
  const select = h("select", {
    "data-testid": "metric-select", "data-focus-key": "metric-select",
    onchange: (e) => { S.metricPick = e.target.value; wrap.replaceChildren(...metricsChart(data).childNodes); },
  }, names.map((n) => h("option", { value: n, selected: n === pick }, n)));
  const pts = samples.filter((x) => typeof x.metrics[pick] === "number").map((x) => [ms(x.at), x.metrics[pick]]);
  const W = 600;
  const H = 160;
  const P = { l: 48, r: 8, t: 8, b: 22 };
  const svg = s("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${pick}`, "data-testid": "metric-chart" });
  if (pts.length) {
    const xs = pts.map((p) => p[0]);
    const ys = pts.map((p) => p[1]);
    let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
    if (y0 === y1) { y0 -= 1; y1 += 1; }
    const [x0, x1] = [Math.min(...xs), Math.max(...xs) === Math.min(...xs) ? Math.min(...xs) + 1 : Math.max(...xs)];
    const X = (v) => P.l + ((v - x0) / (x1 - x0)) * (W - P.l - P.r);
    const Y = (v) => H - P.b - ((v - y0) / (y1 - y0)) * (H - P.t - P.b);
    svg.append(
      s("line", { class: "axis", x1: P.l, x2: W - P.r, y1: H - P.b, y2: H - P.b }),
      s("line", { class: "axis", x1: P.l, x2: P.l, y1: P.t, y2: H - P.b }),
      s("text", { x: P.l - 4, y: P.t + 10, "text-anchor": "end" }, fmtNum(y1)),
      s("text", { x: P.l - 4, y: H - P.b, "text-anchor": "end" }, fmtNum(y0)),
      s("text", { x: P.l, y: H - 6 }, fmtTime(x0).slice(11)),
      s("text", { x: W - P.r, y: H - 6, "text-anchor": "end" }, fmtTime(x1).slice(11)),
      s("polyline", { class: "line", points: pts.map((p) => `${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join(" ") }),
    );
  }
  const last = pts.length ? fmtNum(pts[pts.length - 1][1]) : "–";
  wrap.append(h("div", { class: "row" }, h("label", {}, t("node.metric"), select), h("strong", { "data-testid": "metric-last" }, `${pick} = ${last}`)), svg);
  return wrap;
}

function fmtNum(v) {
  return Math.abs(v) >= 100 ? v.toFixed(0) : Number(v.toFixed(2)).toString();
}

// ---------- uptime ----------

let uptimeSeq = 0;
function uptimeParams() {
  const u = S.uptime;
  const p = { by: u.by, region: u.region, kind: u.kind };
  if (u.period === "month" && u.month) p.month = u.month;
  else p.since = u.period === "month" ? "30d" : u.period;
  return p;
}

async function uptimeView(main) {
  const seq = ++uptimeSeq;
  const u = S.uptime;
  const periodBtn = (key, label) => h("button", {
    type: "button", class: "btn", "aria-pressed": u.period === key ? "true" : "false",
    "data-testid": `uptime-period-${key}`, "data-focus-key": `up-${key}`,
    onclick: () => { u.period = key; keepFocus(renderView); },
  }, t(label));
  const byBtn = (key) => h("button", {
    type: "button", class: "btn", "aria-pressed": u.by === key ? "true" : "false",
    "data-testid": `uptime-by-${key}`, "data-focus-key": `upby-${key}`,
    onclick: () => { u.by = key; keepFocus(renderView); },
  }, t(`uptime.by.${key}`));
  const month = h("input", {
    type: "month", value: u.month, "data-testid": "uptime-month", "data-focus-key": "up-month-input",
    onchange: (e) => { u.month = e.target.value; u.period = e.target.value ? "month" : "30d"; keepFocus(renderView); },
  });
  const pickRegion = h("select", {
    "data-testid": "uptime-region", "data-focus-key": "up-region",
    onchange: (e) => { u.region = e.target.value; keepFocus(renderView); },
  }, h("option", { value: "" }, t("uptime.all")),
  (S.summary?.regions || []).map((r) => h("option", { value: r.region, selected: r.region === u.region }, r.name || r.region)));
  const pickKind = h("select", {
    "data-testid": "uptime-kind", "data-focus-key": "up-kind",
    onchange: (e) => { u.kind = e.target.value; keepFocus(renderView); },
  }, h("option", { value: "" }, t("uptime.all")),
  ["siren", "display"].map((k) => h("option", { value: k, selected: k === u.kind }, t(`kind.${k}`))));
  const status = h("p", { class: "counts", "data-testid": "uptime-window" }, t("uptime.loading"));
  const csv = h("button", { type: "button", class: "btn", "data-testid": "uptime-csv", disabled: true, "data-focus-key": "up-csv" }, t("uptime.csv"));
  const tableBox = h("div", {});
  keepFocus(() => main.replaceChildren(
    h("div", { class: "section-head" }, h("h2", {}, t("uptime.title"))),
    h("div", { class: "controls" },
      h("span", {}, t("uptime.period")),
      h("div", { class: "seg", role: "group", "aria-label": t("uptime.period") },
        periodBtn("24h", "uptime.24h"), periodBtn("7d", "uptime.7d"), periodBtn("30d", "uptime.30d")),
      h("label", {}, t("uptime.month"), month),
      h("span", {}, t("uptime.by")),
      h("div", { class: "seg", role: "group", "aria-label": t("uptime.by") }, byBtn("region"), byBtn("site"), byBtn("node")),
      h("label", {}, t("uptime.region"), pickRegion),
      h("label", {}, t("uptime.kind"), pickKind),
      csv),
    status, tableBox));
  let report;
  let total;
  try {
    if (u.by === "node") await ensureNodeNames();
    [report, total] = await Promise.all([
      api(`api/v1/uptime${qs(uptimeParams())}`),
      api(`api/v1/uptime${qs({ ...uptimeParams(), by: "network" })}`),
    ]);
  } catch (e) {
    if (seq === uptimeSeq) status.textContent = t("error.generic", { message: e.message });
    return;
  }
  if (seq !== uptimeSeq) return;
  status.textContent = t("uptime.window", { from: fmtTime(report.from, false), to: fmtTime(report.to, false), until: fmtTime(report.until, false) });
  csv.disabled = false;
  csv.onclick = () => downloadCsv(report);
  tableBox.replaceChildren(uptimeTable(report, total.rows[0]));
}

let nodeNamesLoaded = false;
async function ensureNodeNames() {
  if (nodeNamesLoaded) return;
  const page = await api(`api/v1/nodes${qs({ limit: 1000 })}`);
  for (const n of page.items) if (n.name) S.nodeNames.set(n.node, n.name);
  nodeNamesLoaded = true;
}

function groupKey(row) {
  return [row.region, row.site, row.node, row.kind].filter(Boolean).join("/") || "network";
}

function groupLabel(row, by) {
  if (by === "region") return regionName(row.region);
  if (by === "site") return `${siteName(row.region, row.site)} · ${regionName(row.region)}`;
  if (by === "node") return `${nodeName(row.node)} (${row.node})`;
  return row.kind || t("alerts.network");
}

const UPTIME_COLS = [
  ["nodes", "uptime.col.nodes", (v) => String(v)],
  ["availability_pct", "uptime.col.availability", fmtPct],
  ["coverage_pct", "uptime.col.coverage", fmtPct],
  ["downtime_s", "uptime.col.downtime", fmtDur],
  ["maintenance_s", "uptime.col.maintenance", fmtDur],
  ["outages", "uptime.col.outages", (v) => String(v)],
  ["longest_outage_s", "uptime.col.longest", fmtDur],
  ["mttr_s", "uptime.col.mttr", fmtDur],
  ["mtbf_s", "uptime.col.mtbf", fmtDur],
  ["tests", "uptime.col.tests", (v) => String(v)],
  ["test_pass_pct", "uptime.col.testPass", fmtPct],
];

function availClass(p) {
  return p === null || p === undefined ? "" : p >= 99.9 ? "avail-good" : p >= 99 ? "avail-warn" : "avail-bad";
}

/** The report's rows, and the same window over every node matching the filters as a total. */
function uptimeTable(report, total) {
  if (!report.rows.length) return h("p", { class: "empty" }, t("uptime.empty"));
  const totalRow = total ? h("tfoot", {}, h("tr", { class: "total", "data-testid": "uptime-total" },
    h("th", {}, t("uptime.total")),
    UPTIME_COLS.map(([col, , fmt]) => h("td", {
      class: `num${col === "availability_pct" ? ` ${availClass(total[col])}` : ""}`,
      "data-testid": "uptime-total-cell", "data-col": col, "data-value": total[col] === null ? "" : String(total[col]),
    }, fmt(total[col]))))) : null;
  return h("table", { class: "uptime", "data-testid": "uptime-table" },
    h("thead", {}, h("tr", {}, h("th", {}, t("uptime.col.group")),
      UPTIME_COLS.map(([, label]) => h("th", { class: "num" }, t(label))))),
    h("tbody", {}, report.rows.map((row) => {
      const key = groupKey(row);
      const tr = h("tr", { "data-testid": "uptime-row", "data-key": key },
        h("td", { "data-testid": "uptime-cell", "data-col": "group", "data-key": key },
          row.node ? h("a", { href: `#/node/${encodeURIComponent(row.node)}` }, groupLabel(row, report.by)) : groupLabel(row, report.by)),
        UPTIME_COLS.map(([col, , fmt]) => h("td", {
          class: `num${col === "availability_pct" ? ` ${availClass(row[col])}` : ""}`,
          "data-testid": "uptime-cell", "data-col": col, "data-key": key,
          "data-value": row[col] === null ? "" : String(row[col]),
        }, fmt(row[col]))));
      return tr;
    })),
    totalRow);
}

function csvField(v) {
  let str = v === null || v === undefined ? "" : String(v);
  // Text a spreadsheet would run as a formula gets a leading ' (names come from agents).
  if (/^[=+\-@\t\r]/.test(str) && !Number.isFinite(Number(str))) str = `'${str}`;
  return /[",\n\r]/.test(str) ? `"${str.replace(/"/g, '""')}"` : str;
}

/** The report as CSV, from the same JSON the table shows: raw numbers, names added. */
function uptimeCsv(report) {
  const ids = { node: ["region", "site", "node", "kind"], site: ["region", "site"], region: ["region"], kind: ["kind"], network: [] }[report.by] || [];
  const cols = ["nodes", "availability_pct", "coverage_pct", "up_s", "downtime_s", "maintenance_s", "unknown_s",
    "outages", "longest_outage_s", "mttr_s", "mtbf_s", "tests", "tests_passed", "tests_failed", "test_pass_pct"];
  const lines = [[...ids, "name", "from", "to", "until", ...cols].join(",")];
  for (const row of report.rows) {
    const name = report.by === "node" ? nodeName(row.node) : report.by === "site" ? siteName(row.region, row.site)
      : report.by === "region" ? regionName(row.region) : (row.kind || "");
    lines.push([...ids.map((k) => row[k]), name, report.from, report.to, report.until, ...cols.map((k) => row[k])].map(csvField).join(","));
  }
  return `${lines.join("\r\n")}\r\n`;
}

function downloadCsv(report) {
  const blob = new Blob(["\ufeff", uptimeCsv(report)], { type: "text/csv;charset=utf-8" });
  const a = h("a", { href: URL.createObjectURL(blob), download: `uptime-${report.by}-${report.from.slice(0, 10)}-${report.until.slice(0, 10)}.csv` });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

// ---------- drills (drills.js) ----------

const drillsCtx = {
  h, api, qs, fmtTime, nodeName, regionName, siteName, csvField,
  operator: () => S.me?.role === "operator",
};

// ---------- silences ----------

async function silencesView(main) {
  const operator = S.me?.role === "operator";
  const msg = h("p", { role: "status", "data-testid": "silence-msg" });
  const listBox = h("div", {}, h("p", { class: "empty" }, t("grid.loading")));
  const field = (name, label, attrs = {}) => h("label", {}, t(label), h("input", { name, "data-testid": `silence-${name}`, ...attrs }));
  // Suggestions from the grid's data; any id may still be typed.
  const regions = S.summary?.regions || [];
  const lists = [
    ["dl-region", regions.map((r) => [r.region, r.name])],
    ["dl-site", regions.flatMap((r) => r.sites.map((x) => [x.site, x.name]))],
    ["dl-kind", [["siren", null], ["display", null]]],
  ].map(([id, opts]) => h("datalist", { id }, opts.map(([v, label]) => h("option", { value: v }, label || v))));
  const form = h("form", {
    class: "card", "data-testid": "silence-form",
    onsubmit: async (e) => {
      e.preventDefault();
      const f = new FormData(form);
      const body = {};
      for (const k of ["region", "site", "node", "kind", "starts_at", "duration", "comment"]) {
        const v = String(f.get(k) || "").trim();
        if (v) body[k] = v;
      }
      try {
        await api("api/v1/silences", { method: "POST", body });
        msg.className = "ok";
        msg.textContent = t("silences.created");
        form.reset();
        loadSilences(listBox, operator, msg);
      } catch (ex) {
        msg.className = "error";
        msg.textContent = ex.status === 403 ? t("error.forbidden") : t("error.generic", { message: ex.message });
      }
    },
  },
  h("h3", {}, t("silences.new")),
  h("div", { class: "form-grid" },
    field("region", "silences.region", { list: "dl-region" }), field("site", "silences.site", { list: "dl-site" }),
    field("node", "silences.node"), field("kind", "silences.kind", { list: "dl-kind" }),
    field("starts_at", "silences.starts", { type: "datetime-local", title: t("silences.start_now") }),
    h("label", {}, t("silences.duration"), h("select", { name: "duration", "data-testid": "silence-duration" },
      ["1h", "2h", "4h", "8h", "1d", "3d", "7d"].map((d) => h("option", { value: d, selected: d === "2h" }, d)))),
    h("label", { class: "wide" }, t("silences.comment"), h("input", { name: "comment", maxlength: "1024", "data-testid": "silence-comment" })),
    h("div", {}, h("button", { type: "submit", class: "btn primary", "data-testid": "silence-create" }, t("silences.create")))));
  main.replaceChildren(
    h("div", { class: "section-head" }, h("h2", {}, t("silences.title"))),
    operator ? form : h("p", { class: "empty" }, t("silences.operator_only")),
    ...lists,
    msg, listBox);
  loadSilences(listBox, operator, msg);
}

async function loadSilences(box, operator, msg) {
  let page;
  try {
    page = await api(`api/v1/silences${qs({ limit: 500 })}`);
  } catch (e) {
    box.replaceChildren(h("p", { class: "error" }, t("error.generic", { message: e.message })));
    return;
  }
  if (!page.items.length) {
    box.replaceChildren(h("p", { class: "empty", "data-testid": "silences-empty" }, t("silences.empty")));
    return;
  }
  const matchers = (x) => ["region", "site", "node", "kind"].filter((k) => x[k]).map((k) => `${k}=${x[k]}`).join(" ") || t("silences.any");
  box.replaceChildren(h("table", { "data-testid": "silences-table" },
    h("thead", {}, h("tr", {}, ["silences.status", "silences.matchers", "silences.starts", "silences.ends", "silences.by", "silences.comment", null]
      .map((k) => h("th", {}, k ? t(k) : "")))),
    h("tbody", {}, page.items.map((x) => h("tr", { "data-testid": "silence-row", "data-silence-id": x.id },
      h("td", {}, t(`silences.status.${x.status}`)), h("td", {}, matchers(x)), h("td", {}, fmtTime(x.starts_at, false)),
      h("td", {}, fmtTime(x.ends_at, false)), h("td", {}, x.created_by), h("td", {}, x.comment || ""),
      h("td", {}, operator && x.status !== "expired" ? h("button", {
        type: "button", class: "btn small danger", "data-testid": "silence-end",
        onclick: async () => {
          try {
            await api(`api/v1/silences/${encodeURIComponent(x.id)}`, { method: "DELETE" });
            msg.className = "ok";
            msg.textContent = t("silences.ended");
          } catch (ex) {
            msg.className = "error";
            msg.textContent = t("error.generic", { message: ex.message });
          }
          loadSilences(box, operator, msg);
        },
      }, t("silences.end")) : ""))))));
}

// ---------- login ----------

/** Opens the token box, with `why` shown when a write needs a better token. */
function openLogin(why) {
  const d = document.getElementById("login-dialog");
  if (d.open) return;
  document.getElementById("login-token").value = S.token;
  const err = document.getElementById("login-error");
  err.textContent = typeof why === "string" ? why : "";
  err.hidden = typeof why !== "string";
  d.showModal();
}

async function whoami() {
  if (!S.token) {
    S.me = { name: null, role: "anonymous" };
    return true;
  }
  try {
    S.me = await api("api/v1/whoami");
    return true;
  } catch (e) {
    S.me = null;
    if (e.status === 401) return false;
    throw e;
  }
}

async function saveToken(token) {
  const old = S.token;
  S.token = token;
  const ok = await whoami().catch(() => false);
  if (!ok) {
    S.token = old;
    const err = document.getElementById("login-error");
    err.textContent = t("login.bad");
    err.hidden = false;
    return false;
  }
  if (token) localStorage.setItem("alarmnet.token", token);
  else localStorage.removeItem("alarmnet.token");
  renderLogin();
  await reloadAll();
  connectEvents();
  return true;
}

function setupLogin() {
  const d = document.getElementById("login-dialog");
  document.getElementById("login").addEventListener("click", () => openLogin());
  document.getElementById("login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    if (await saveToken(document.getElementById("login-token").value.trim())) d.close();
  });
  document.getElementById("login-signout").addEventListener("click", async () => {
    await saveToken("");
    d.close();
  });
  document.getElementById("login-cancel").addEventListener("click", () => d.close());
}

// ---------- start ----------

async function start() {
  setLang(initialLang());
  applyStatic();
  setupLogin();
  document.getElementById("lang").addEventListener("click", () => {
    setLang(lang() === "zh" ? "en" : "zh");
    applyStatic();
    renderTotals();
    renderAlerts();
    keepFocus(renderView);
  });
  document.getElementById("sound").addEventListener("click", () => {
    S.muted = !S.muted;
    localStorage.setItem("alarmnet.muted", S.muted ? "1" : "0");
    renderSound();
  });
  document.getElementById("sound-hint").addEventListener("click", unlockAudio);
  document.getElementById("skip").addEventListener("click", () => document.getElementById("view").focus());
  // Any first gesture unlocks audio (browsers refuse to start it before one).
  for (const ev of ["pointerdown", "keydown"]) document.addEventListener(ev, unlockAudio, { once: true, capture: true });
  window.addEventListener("hashchange", () => {
    renderView();
    document.getElementById("view").focus({ preventScroll: true });
  });
  tickClock();
  setInterval(tickClock, 1000);
  setInterval(() => { if (!S.ackOpen) renderAlerts(); }, 30000);
  setInterval(() => { if (S.summary) loadSummary().then(() => { if (currentRoute().view === "overview") scheduleRender(); }, () => {}); }, 60000);
  renderView();
  const ok = await whoami().catch(() => false);
  if (!ok) {
    S.token = "";
    localStorage.removeItem("alarmnet.token");
    S.me = { name: null, role: "anonymous" };
  }
  renderLogin();
  if (await reloadAll()) {
    connectEvents();
    // Display names of nodes outside expanded sites (alert feed, uptime by node).
    ensureNodeNames().then(() => { renderAlerts(); scheduleRender(); }, () => {});
  }
  tickClock(); // in the collector's zone, now that its timestamps told it
  document.body.dataset.ready = "true";
}

start();
