// UnionLedger auditor console: plain modern JavaScript (an ES module), no build step, no
// third-party code. Charts are SVG drawn here.
//
// - Auditors see everything, officials their subtree (the server scopes every answer).
// - The latest checkpoint is verified in the page: its C2SP signed note against the log's
//   public key, with WebCrypto Ed25519 (the member app's receipt.js does the work).
// - Tokens live in memory only (session.js, shared with the admin console): reloading signs out.
// - Every text from the server goes in with textContent, never as HTML (CSP: no inline code).
// - Exports need the bearer token: fetched here, then saved through a blob link.

import * as receipts from "/static/receipt.js";
import { ApiError, createSession, showSignedIn } from "/static/session.js";
import { has, lang, loadMessages, pickLanguage, t, useLanguage } from "/static/i18n.js";

const LANG_KEY = "unionledger.auditor.lang"; // the only thing kept in localStorage
const NATIONAL = "100000";
const SVG_NS = "http://www.w3.org/2000/svg";
const PALETTE = ["#b3261e", "#1a5fb4", "#26a269", "#c64600", "#613583", "#986a44", "#0b7285"];

// -- translations ---------------------------------------------------------------------------------

function setLanguage(next) {
  try {
    localStorage.setItem(LANG_KEY, next);
  } catch {
    // storage disabled: for this page only
  }
  useLanguage(next);
  renderAll();
}

// -- DOM and number helpers -----------------------------------------------------------------------

function $(id) {
  return document.getElementById(id);
}

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  for (const child of children.flat()) if (child !== null && child !== undefined) el.append(child);
  return el;
}

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  for (const child of children.flat()) if (child !== null && child !== undefined) el.append(child);
  return el;
}

function setAttrs(el, attrs) {
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") el.textContent = value;
    else if (key === "class") el.setAttribute("class", value);
    else if (key === "testid") el.dataset.testid = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : value);
  }
}

function show(el, visible) {
  el.hidden = !visible;
}

function count(n) {
  if (n === null || n === undefined) return t("common.none");
  return new Intl.NumberFormat(lang).format(n);
}

// Fen as yuan, two decimals.
function yuan(fen) {
  if (fen === null || fen === undefined) return t("common.none");
  return new Intl.NumberFormat(lang, { minimumFractionDigits: 2, maximumFractionDigits: 2 }).format(
    fen / 100,
  );
}

function net(f) {
  if (f.value === null || f.value === undefined) return null;
  return f.value - (f.reversed_value ?? 0);
}

function chinaToday() {
  // The figures' days are China dates (UTC+8), whatever the browser's zone.
  return new Date(Date.now() + 8 * 3600 * 1000).toISOString().slice(0, 10);
}

function daysBetween(from, to) {
  const out = [];
  const end = Date.parse(`${to}T00:00:00Z`);
  for (let at = Date.parse(`${from}T00:00:00Z`); at <= end && out.length < 1200; at += 86400000) {
    out.push(new Date(at).toISOString().slice(0, 10));
  }
  return out;
}

function formatTime(date) {
  return new Intl.DateTimeFormat(lang, {
    year: "numeric",
    month: "2-digit",
    day: "2-digit",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
  }).format(date);
}

function groupLabel(group) {
  return has(`group.${group}`) ? t(`group.${group}`) : group;
}

function unionLabel(code) {
  const name = state.names.get(code);
  if (!name) return code;
  return lang === "en" ? `${name} (${code})` : `${name}（${code}）`;
}

// A number cell; `raw` goes in data-raw for tests and copy-paste.
function num(text, raw, testid) {
  return h("td", { class: "num", "data-raw": raw ?? "", testid }, text);
}

// -- messages ------------------------------------------------------------------------------------

function problemText(problem) {
  const type = typeof problem.type === "string" ? problem.type : "";
  const slug = problem.slug ?? type.match(/\/problems\/([a-z0-9-]+)$/)?.[1];
  const seconds = problem.retryAfter ?? "?";
  let text;
  if (slug && has(`problem.${slug}`)) text = t(`problem.${slug}`, { seconds });
  else text = problem.title || t("problem.unknown", { status: problem.status ?? "?" });
  if (problem.detail && slug !== "validation-error") text += ` ${t("problem.detail", { detail: problem.detail })}`;
  return text;
}

function showError(error, params) {
  const box = $("error");
  if (error instanceof ApiError) {
    if (error.problem.stale) return;
    box.textContent = problemText(error.problem);
  } else if (typeof error === "string") {
    box.textContent = t(error, params);
  } else {
    box.textContent = String(error?.message ?? error);
    console.warn(error);
  }
  show(box, true);
  show($("notice"), false);
}

function showNotice(key, params) {
  $("notice").textContent = t(key, params);
  show($("notice"), true);
}

function clearMessages() {
  show($("error"), false);
  show($("notice"), false);
}

// -- the session (session.js, as the admin console) -----------------------------------------------

const { session, api, signIn, logout: endAndLogout } = createSession({
  accept: "application/json, application/problem+json, text/csv",
  onEnd: showLoginForm,
});

async function login(event) {
  event.preventDefault();
  const form = $("login-form");
  const username = form.username.value.trim();
  const password = form.password.value;
  const totp = form.totp.value.replace(/\s+/g, "");
  if (!username || !password) {
    showError("common.required", {
      fields: [t("auth.username"), t("auth.password")].join(t("common.separator")),
    });
    return;
  }
  $("login-submit").disabled = true;
  try {
    const me = await signIn(username, password, totp);
    if (me.role !== "auditor" && me.role !== "official") {
      await logout({ quiet: true });
      showError("auth.not-auditor");
      return;
    }
    session.me = me;
    form.password.value = "";
    form.totp.value = "";
    clearMessages();
    await enterConsole();
  } catch (error) {
    form.password.value = "";
    showError(error);
  } finally {
    $("login-submit").disabled = false;
  }
}

async function logout({ quiet = false } = {}) {
  await endAndLogout();
  if (!quiet) showNotice("auth.logged-out");
}

// The page's part of ending a session: back to the login form (with a message key, if given).
function showLoginForm(messageKey) {
  resetState();
  showSignedIn(false);
  if (messageKey) showError(messageKey);
  else clearMessages();
  $("login-username").focus();
}

// -- state ----------------------------------------------------------------------------------------

// What a session starts with; the dates and the station chosen are kept across sessions.
function freshState() {
  return {
    names: new Map(), // union code -> name
    root: NATIONAL, // the top of the user's view
    code: NATIONAL, // the union shown
    crumbs: [],
    figures: null,
    series: null,
    settlement: null,
    anomalies: null,
    unionStatement: null,
    stationStatement: null,
    stations: [],
    checkpoint: null, // { state: "pending" | "verified" | "failed", size, root, origin, at, key, reason }
  };
}

const state = { ...freshState(), from: "", to: "", day: "", station: "", seq: 0 };

function resetState() {
  Object.assign(state, freshState());
  state.seq += 1;
}

function isAuditor() {
  return session.me?.role === "auditor";
}

// -- the console ----------------------------------------------------------------------------------

async function enterConsole() {
  showSignedIn(true);
  state.root = session.me.scope || NATIONAL;
  state.code = state.root;
  state.crumbs = [state.root];
  const today = chinaToday();
  state.to = today;
  state.from = `${today.slice(0, 8)}01`;
  state.day = today;
  $("range-from").value = state.from;
  $("range-to").value = state.to;
  $("statement-day").value = state.day;
  renderWhoami();
  await Promise.all([verifyCheckpoint(), loadStations(), loadAll()]);
  document.body.dataset.loaded = "true"; // for tests: the first load is done
}

function renderWhoami() {
  if (!session.me) return;
  const scope = session.me.scope ? unionLabel(session.me.scope) : t("auth.scope-all");
  $("whoami").textContent = t("auth.whoami", {
    user: session.username,
    role: t(`role.${session.me.role}`),
    scope,
  });
}

function q(params) {
  const out = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") out.set(k, v);
  const text = out.toString();
  return text ? `?${text}` : "";
}

const paths = {
  figures: () => `/v1/stats/unions/${encodeURIComponent(state.code)}${q({ from: state.from, to: state.to })}`,
  series: () =>
    `/v1/stats/unions/${encodeURIComponent(state.code)}/series${q({ from: state.from, to: state.to })}`,
  unionStatement: () =>
    `/v1/stats/unions/${encodeURIComponent(state.code)}/statement${q({ day: state.day })}`,
  stationStatement: () =>
    `/v1/stats/stations/${encodeURIComponent(state.station)}/statement${q({ day: state.day })}`,
  settlement: () => `/v1/stats/settlement${q({ from: state.from, to: state.to })}`,
  anomalies: () => `/v1/stats/anomalies${q({ from: state.from, to: state.to })}`,
};

// The figures of the union shown, its charts and its statement; settlement and anomalies.
async function loadAll() {
  const seq = ++state.seq;
  const [figures, series, settlement, anomalies] = await Promise.all([
    api("GET", paths.figures()).catch(failed),
    api("GET", paths.series()).catch(failed),
    api("GET", paths.settlement()).catch(failed),
    api("GET", paths.anomalies()).catch(failed),
  ]);
  if (seq !== state.seq) return;
  Object.assign(state, { figures, series, settlement, anomalies });
  if (figures) {
    state.names.set(figures.union, figures.name);
    for (const child of figures.children) state.names.set(child.union, child.name);
  }
  renderAll();
  await Promise.all([loadStatements(), learnNames(seq)]);
}

// The names of the unions the settlement names that are not known yet (the tree's own names).
async function learnNames(seq) {
  const codes = new Set();
  for (const p of state.settlement?.pairs ?? []) codes.add(p.funding).add(p.operating);
  const unknown = [...codes].filter((code) => !state.names.has(code)).slice(0, 50);
  if (!unknown.length) return;
  const found = await Promise.all(
    unknown.map((code) => api("GET", `/v1/unions/${encodeURIComponent(code)}`).catch(() => null)),
  );
  if (seq !== state.seq) return;
  for (const union of found) if (union?.code && union?.name) state.names.set(union.code, union.name);
  renderSettlement();
}

function failed(error) {
  showError(error);
  return null;
}

async function loadStatements() {
  const seq = state.seq;
  const [unionStatement, stationStatement] = await Promise.all([
    api("GET", paths.unionStatement()).catch(failed),
    state.station ? api("GET", paths.stationStatement()).catch(failed) : null,
  ]);
  if (seq !== state.seq) return;
  Object.assign(state, { unionStatement, stationStatement });
  renderStatements();
}

async function loadStations() {
  try {
    const page = await api("GET", "/v1/stations?limit=1000");
    state.stations = (page.items ?? []).map((s) => ({ id: s.station_id, name: s.name, union: s.union }));
  } catch (error) {
    showError(error);
    state.stations = [];
  }
  state.station = state.stations[0]?.id ?? "";
  renderStationChoice();
}

function go(code) {
  const at = state.crumbs.indexOf(code);
  if (at >= 0) state.crumbs = state.crumbs.slice(0, at + 1);
  else state.crumbs.push(code);
  state.code = code;
  clearMessages();
  return loadAll();
}

// -- the checkpoint --------------------------------------------------------------------------------

async function verifyCheckpoint() {
  state.checkpoint = { state: "pending" };
  renderCheckpoint();
  const outcome = { state: "failed", at: new Date() };
  try {
    const [keyText, note] = await Promise.all([fetchText("/v1/log/public-key"), fetchText("/v1/log/checkpoint")]);
    const key = await receipts.parseVerifierKey(keyText);
    outcome.key = key.fingerprint;
    try {
      const parsed = receipts.parseCheckpoint(receipts.parseNote(note).text);
      Object.assign(outcome, {
        size: parsed.size,
        root: receipts.b64Encode(parsed.root),
        origin: parsed.origin,
      });
    } catch {
      // shown as failed below, with the reason of openNote
    }
    const body = await receipts.openNote(note, key);
    const checkpoint = receipts.parseCheckpoint(body);
    if (checkpoint.origin !== key.name) throw new receipts.ReceiptError("origin-mismatch");
    Object.assign(outcome, {
      state: "verified",
      size: checkpoint.size,
      root: receipts.b64Encode(checkpoint.root),
      origin: checkpoint.origin,
    });
  } catch (error) {
    outcome.reason = reasonOf(error);
  }
  state.checkpoint = outcome;
  renderCheckpoint();
  renderPinned();
}

async function fetchText(path) {
  const response = await fetch(path, { cache: "no-store", credentials: "omit" });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.text();
}

function reasonOf(error) {
  if (error instanceof receipts.ReceiptError) {
    if (error.code === "unsupported") return t("checkpoint.unsupported");
    if (error.code === "origin-mismatch") return t("checkpoint.origin-mismatch");
    return `${error.code}${error.params?.detail ? `: ${error.params.detail}` : ""}`;
  }
  return String(error?.message ?? error);
}

function renderCheckpoint() {
  const cp = state.checkpoint;
  if (!cp) return;
  const status = $("checkpoint-status");
  status.dataset.state = cp.state;
  status.className = `badge ${{ verified: "active", failed: "rejected", pending: "pending" }[cp.state]}`;
  status.textContent = t(`checkpoint.${cp.state}`);
  $("checkpoint-size").textContent = cp.size === undefined ? "" : count(cp.size);
  $("checkpoint-size").dataset.raw = cp.size === undefined ? "" : String(cp.size);
  $("checkpoint-root").textContent = cp.root ?? "";
  $("checkpoint-origin").textContent = cp.origin ?? "";
  $("checkpoint-time").textContent = cp.at ? formatTime(cp.at) : "";
  $("checkpoint-key").textContent = cp.key ?? "";
  let detail = "";
  if (cp.state === "verified") detail = t("checkpoint.verified-detail", { key: cp.key });
  else if (cp.state === "failed") detail = t("checkpoint.failed-detail", { reason: cp.reason ?? "" });
  $("checkpoint-detail").textContent = detail;
}

// -- rendering --------------------------------------------------------------------------------------

function renderAll() {
  renderWhoami();
  renderCheckpoint();
  renderCrumbs();
  renderFigures();
  renderCharts();
  renderSettlement();
  renderAnomalies();
  renderStationChoice();
  renderStatements();
  renderExports();
}

function renderCrumbs() {
  $("breadcrumbs").replaceChildren(
    ...state.crumbs.map((code, i) => {
      const last = i === state.crumbs.length - 1;
      if (last) return h("li", {}, h("span", { "aria-current": "page", text: unionLabel(code) }));
      return h(
        "li",
        {},
        h("a", {
          href: "#",
          testid: `crumb-${code}`,
          text: unionLabel(code),
          onclick: (e) => {
            e.preventDefault();
            go(code);
          },
        }),
      );
    }),
  );
}

function renderPinned() {
  const f = state.figures;
  const el = $("figures-pinned");
  if (!f?.pinned) {
    el.textContent = "";
    return;
  }
  let text = t("figures.pinned", { size: count(f.pinned.size), root: f.pinned.root });
  const cp = state.checkpoint;
  if (cp?.state === "verified") {
    if (BigInt(f.pinned.size) === cp.size && f.pinned.root === cp.root) text += t("figures.pinned-verified");
    else if (BigInt(f.pinned.size) < cp.size) text += t("figures.pinned-newer");
  }
  el.textContent = text;
}

function fact(label, value, raw, testid) {
  return [h("div", {}, h("dt", { text: label }), h("dd", { class: "count", "data-raw": raw ?? "", testid, text: value }))];
}

function renderFigures() {
  const f = state.figures;
  if (!f) {
    $("union-title").textContent = unionLabel(state.code);
    $("totals").replaceChildren();
    $("children").replaceChildren();
    $("programs").replaceChildren();
    return;
  }
  $("union-title").textContent = `${t("union.title", { name: f.name, code: f.union })} · ${t("figures.period", {
    from: f.from,
    to: f.to,
  })}`;
  renderPinned();
  const total = f.subtree.total;
  const own = f.own.total;
  const facts = [];
  if (total.suppressed) {
    facts.push(fact(t("total.redemptions"), t("total.suppressed"), "", "total-redemptions"));
  } else {
    const share = total.redemptions ? `${((100 * total.offline) / total.redemptions).toFixed(1)}%` : "0%";
    facts.push(
      fact(t("total.redemptions"), count(total.redemptions), total.redemptions, "total-redemptions"),
      fact(t("total.value"), yuan(total.value), total.value, "total-value"),
      fact(t("total.reversals"), count(total.reversals), total.reversals, "total-reversals"),
      fact(t("total.reversed_value"), yuan(total.reversed_value), total.reversed_value, "total-reversed-value"),
      fact(t("total.net"), yuan(net(total)), net(total), "total-net"),
      fact(t("total.offline"), count(total.offline), total.offline, "total-offline"),
      fact(t("total.offline_share"), share, share, "total-offline-share"),
      fact(t("total.conflicts"), count(total.conflicts), total.conflicts, "total-conflicts"),
      fact(
        t("total.members"),
        total.members === null ? t("total.members-whole") : count(total.members),
        total.members,
        "total-members",
      ),
      fact(t("total.own"), own.suppressed ? t("total.suppressed") : count(own.redemptions), own.redemptions, "own-redemptions"),
    );
  }
  $("totals").replaceChildren(...facts.flat());

  const children = [...f.children].sort((a, b) => (b.redemptions ?? -1) - (a.redemptions ?? -1));
  $("children").replaceChildren(
    ...children.map((c) =>
      h(
        "tr",
        { testid: `child-${c.union}`, "data-union": c.union },
        h(
          "td",
          {},
          h("button", {
            type: "button",
            class: "link-button",
            testid: `drill-${c.union}`,
            text: unionLabel(c.union),
            onclick: () => go(c.union),
          }),
        ),
        num(c.suppressed ? t("total.suppressed") : count(c.redemptions), c.redemptions, "child-redemptions"),
        num(yuan(c.value), c.value, "child-value"),
        num(count(c.reversals), c.reversals),
        num(yuan(net(c)), net(c)),
      ),
    ),
  );
  show($("children-empty"), f.children.length === 0);

  const programs = Object.entries(f.subtree.programs);
  $("programs").replaceChildren(
    ...programs.map(([program, p]) =>
      h(
        "tr",
        { testid: `program-${program}` },
        h("td", { class: "mono", text: program }),
        num(p.suppressed ? t("total.suppressed") : count(p.redemptions), p.redemptions, "program-redemptions"),
        num(yuan(p.value), p.value, "program-value"),
        num(count(p.reversals), p.reversals),
        num(count(p.offline), p.offline),
        num(count(p.conflicts), p.conflicts),
      ),
    ),
  );

  $("budgets").replaceChildren(
    ...f.budgets.map((b) =>
      h(
        "tr",
        { testid: `budget-${b.program}` },
        h("td", { class: "mono", text: b.program }),
        num(yuan(b.allocated), b.allocated),
        num(yuan(b.used), b.used, "budget-used"),
        num(yuan(b.left), b.left),
      ),
    ),
  );
  show($("budgets-empty"), f.budgets.length === 0);
}

// -- charts -------------------------------------------------------------------------------------------

const W = 560;

function emptyChart() {
  return h("p", { class: "empty", text: t("charts.empty") });
}

// Vertical bars, one per day of the range (redemptions, all programs).
function seriesChart() {
  const doc = state.series;
  if (!doc) return emptyChart();
  const days = daysBetween(doc.from, doc.to);
  const per = new Map(days.map((d) => [d, 0]));
  for (const row of doc.days) per.set(row.day, (per.get(row.day) ?? 0) + (row.redemptions ?? 0));
  const max = Math.max(1, ...per.values());
  const H = 200;
  const top = 14;
  const bottom = 26;
  const left = 40;
  const bw = (W - left - 8) / Math.max(days.length, 1);
  const y = (v) => top + (H - top - bottom) * (1 - v / max);
  const bars = days.map((d, i) => {
    const v = per.get(d);
    return s(
      "rect",
      {
        x: (left + i * bw + 1).toFixed(1),
        y: y(v).toFixed(1),
        width: Math.max(bw - 2, 1).toFixed(1),
        height: (H - bottom - y(v)).toFixed(1),
        fill: PALETTE[0],
        "data-day": d,
        "data-value": v,
      },
      s("title", { text: t("charts.day-bar", { day: d, n: count(v) }) }),
    );
  });
  const labels = [0, Math.floor((days.length - 1) / 2), days.length - 1]
    .filter((v, i, a) => a.indexOf(v) === i && days[v])
    .map((i) =>
      s("text", { x: (left + i * bw + bw / 2).toFixed(1), y: H - 8, "text-anchor": "middle", class: "tick", text: days[i].slice(5) }),
    );
  const axis = [
    s("line", { x1: left, y1: H - bottom, x2: W - 4, y2: H - bottom, class: "axis" }),
    s("text", { x: left - 6, y: top + 4, "text-anchor": "end", class: "tick", text: count(max) }),
    s("text", { x: left - 6, y: H - bottom, "text-anchor": "end", class: "tick", text: "0" }),
  ];
  return s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": t("charts.series"), class: "svg-chart" }, axis, bars, labels);
}

// Horizontal bars of labelled counts.
function barChart(items, label, testid) {
  const shown = items.filter(([, v]) => typeof v === "number");
  if (!shown.length) return emptyChart();
  const max = Math.max(1, ...shown.map(([, v]) => v));
  const row = 26;
  const labelW = 200;
  const H = shown.length * row + 6;
  const bars = shown.map(([name, v], i) =>
    s(
      "g",
      { "data-key": name, "data-value": v },
      s("text", { x: labelW - 8, y: i * row + 18, "text-anchor": "end", class: "label", text: name }),
      s("rect", {
        x: labelW,
        y: i * row + 5,
        width: Math.max(((W - labelW - 60) * v) / max, 1).toFixed(1),
        height: row - 10,
        fill: PALETTE[i % PALETTE.length],
      }),
      s("text", { x: labelW + ((W - labelW - 60) * v) / max + 6, y: i * row + 18, class: "tick", text: count(v) }),
    ),
  );
  return s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label, class: "svg-chart", "data-testid": testid }, bars);
}

// Budget left at the end of each day of the range, per budget the union funds: what is left now,
// plus the program's net value redeemed in this subtree after that day (at most what was used).
function budgetChart() {
  const f = state.figures;
  const doc = state.series;
  if (!f || !doc || !f.budgets.length) return emptyChart();
  const days = daysBetween(doc.from, doc.to);
  const lines = f.budgets.map((b) => {
    const perDay = new Map();
    for (const row of doc.days) {
      if (row.program !== b.program) continue;
      perDay.set(row.day, (perDay.get(row.day) ?? 0) + (net(row) ?? 0));
    }
    let after = 0;
    const left = new Array(days.length);
    for (let i = days.length - 1; i >= 0; i -= 1) {
      left[i] = b.left + Math.min(after, b.used);
      after += perDay.get(days[i]) ?? 0;
    }
    return { program: b.program, allocated: b.allocated, points: left };
  });
  const H = 220;
  const top = 14;
  const bottom = 26;
  const left = 70;
  const right = 8;
  const plotW = W - left - right;
  const legendH = lines.length * 18;
  const x = (i) => left + (days.length > 1 ? (plotW * i) / (days.length - 1) : plotW / 2);
  // Left as a share of the budget; the axis runs from just below the lowest share to 100%.
  const share = (line, v) => (line.allocated > 0 ? v / line.allocated : 0);
  const lowest = Math.min(...lines.flatMap((line) => line.points.map((v) => share(line, v))));
  const floor = Math.max(0, Math.floor((lowest - Math.max((1 - lowest) * 0.25, 0.001)) * 1000) / 1000);
  const y = (v) => top + (H - top - bottom) * (1 - (v - floor) / (1 - floor || 1));
  const paths = lines.map((line, k) => {
    const d = line.points
      .map((v, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(share(line, v)).toFixed(1)}`)
      .join(" ");
    return s("path", { d, fill: "none", stroke: PALETTE[k % PALETTE.length], "stroke-width": 2.5, "data-program": line.program },
      s("title", { text: `${line.program}: ${yuan(line.points.at(-1))} / ${yuan(line.allocated)}` }));
  });
  const legend = lines.map((line, k) =>
    s("g", {},
      s("rect", { x: left, y: H + 4 + k * 18, width: 12, height: 12, fill: PALETTE[k % PALETTE.length] }),
      s("text", { x: left + 18, y: H + 14 + k * 18, class: "label", text: `${line.program} · ${yuan(line.points.at(-1))} / ${yuan(line.allocated)}` }),
    ),
  );
  const axis = [
    s("line", { x1: left, y1: H - bottom, x2: W - right, y2: H - bottom, class: "axis" }),
    s("text", { x: left - 6, y: top + 4, "text-anchor": "end", class: "tick", text: "100%" }),
    s("text", { x: left - 6, y: H - bottom, "text-anchor": "end", class: "tick", text: `${(floor * 100).toFixed(1)}%` }),
    s("text", { x: left, y: H - 8, class: "tick", text: days[0]?.slice(5) ?? "" }),
    s("text", { x: W - right, y: H - 8, "text-anchor": "end", class: "tick", text: days.at(-1)?.slice(5) ?? "" }),
  ];
  return s("svg", { viewBox: `0 0 ${W} ${H + legendH + 8}`, role: "img", "aria-label": t("charts.budget"), class: "svg-chart" }, axis, paths, legend);
}

function renderCharts() {
  const f = state.figures;
  $("chart-series").replaceChildren(seriesChart());
  $("chart-programs").replaceChildren(
    f ? barChart(Object.entries(f.subtree.programs).map(([p, v]) => [p, v.redemptions]), t("charts.programs"), "programs-svg") : emptyChart(),
  );
  $("chart-groups").replaceChildren(
    f
      ? barChart(Object.entries(f.groups.figures).map(([g, v]) => [groupLabel(g), v.redemptions]), t("charts.groups"), "groups-svg")
      : emptyChart(),
  );
  $("chart-budget").replaceChildren(budgetChart());
}

// -- statements, settlement, anomalies ------------------------------------------------------------

function renderStationChoice() {
  const select = $("statement-station");
  select.replaceChildren(
    ...state.stations.map((st) => h("option", { value: st.id, text: `${st.name}（${st.id}）` })),
  );
  select.value = state.station;
}

function statementRow(line, subject, f, testid) {
  return h(
    "tr",
    { testid },
    h("td", { text: t(`line.${line}`) }),
    h("td", { class: "mono", text: subject }),
    num(count(f.redemptions), f.redemptions, "statement-redemptions"),
    num(yuan(f.value), f.value, "statement-value"),
    num(count(f.reversals), f.reversals),
    num(count(f.offline), f.offline),
  );
}

function renderStatements() {
  const u = state.unionStatement;
  $("union-statement-title").textContent = u ? t("statement.union", { name: unionLabel(u.union), day: u.day }) : "";
  $("union-statement").replaceChildren(
    ...(u
      ? [
          ...Object.entries(u.subtree).map(([p, f]) => statementRow("subtree", p, f, `us-subtree-${p}`)),
          ...Object.entries(u.own).map(([p, f]) => statementRow("own", p, f, `us-own-${p}`)),
          ...u.stations.map((st) => statementRow("station", `${st.name}（${st.station}）`, st, `us-station-${st.station}`)),
        ]
      : []),
  );
  const st = state.stationStatement;
  $("station-statement-title").textContent = st
    ? t("statement.station-title", { name: st.name, id: st.station, day: st.day })
    : state.stations.length
      ? ""
      : t("statement.no-station");
  if (!st) {
    $("station-statement-facts").replaceChildren();
    $("station-statement").replaceChildren();
    return;
  }
  const records = (x) => t("statement.records", { n: count(x.records), value: yuan(x.value) });
  $("station-statement-facts").replaceChildren(
    ...fact(t("statement.ledger-total"), `${count(st.ledger.total.redemptions)} · ${yuan(st.ledger.total.value)}`, st.ledger.total.redemptions, "station-ledger-total"),
    ...fact(t("statement.reported"), records(st.station_reported), st.station_reported.records),
    ...fact(t("statement.counted"), records(st.offline_counted), st.offline_counted.records),
    ...fact(t("statement.refused"), count(st.refused_records.count), st.refused_records.count),
  );
  $("station-statement").replaceChildren(
    ...Object.entries(st.ledger.programs).map(([p, f]) =>
      h("tr", { testid: `ss-ledger-${p}` }, h("td", { text: t("line.ledger") }), h("td", { class: "mono", text: p }),
        num(count(f.redemptions), f.redemptions), num(yuan(f.value), f.value), h("td")),
    ),
    ...st.differences.map((d) =>
      h("tr", { class: "difference" }, h("td", { text: t("line.difference") }), h("td", { class: "mono", text: d.program ?? "" }),
        num(count(d.quantity), d.quantity), num(yuan(d.value), d.value),
        h("td", { text: `${d.status}${d.reason ? `: ${d.reason}` : ""} (#${d.entry})` })),
    ),
    ...st.refused_records.lines.map((r) =>
      h("tr", { class: "difference" }, h("td", { text: t("line.refused") }), h("td", { class: "mono", text: r.kid ?? "" }),
        h("td"), h("td"), h("td", { text: `${r.reason ?? ""} (#${r.entry})` })),
    ),
  );
}

function renderSettlement() {
  const doc = state.settlement;
  $("settlement-summary").textContent = doc
    ? t("settlement.summary", { from: doc.from, to: doc.to, pairs: count(doc.pairs.length), net: yuan(doc.net_total) })
    : "";
  $("settlement-summary").dataset.net = doc ? String(doc.net_total) : "";
  $("settlement-pairs").replaceChildren(
    ...(doc?.pairs ?? []).map((p) =>
      h(
        "tr",
        { testid: `pair-${p.funding}-${p.operating}` },
        h("td", { text: unionLabel(p.funding) }),
        h("td", { text: unionLabel(p.operating) }),
        num(count(p.redemptions), p.redemptions),
        num(count(p.reversals), p.reversals),
        num(yuan(p.owed), p.owed, "pair-owed"),
      ),
    ),
  );
  $("settlement-balances").replaceChildren(
    ...(doc?.balances ?? []).map((b) =>
      h("tr", { testid: `balance-${b.union}` }, h("td", { text: unionLabel(b.union) }), num(yuan(b.net), b.net, "balance-net")),
    ),
  );
}

function renderAnomalies() {
  const items = state.anomalies?.items ?? [];
  $("anomaly-rows").replaceChildren(
    ...items.map((a) =>
      h(
        "tr",
        { "data-kind": a.kind },
        h("td", { text: has(`anomaly.${a.kind}`) ? t(`anomaly.${a.kind}`) : a.kind }),
        h("td", { class: "mono", text: a.subject }),
        num(count(a.count), a.count),
        num(a.peer_median === null ? t("common.none") : count(a.peer_median), a.peer_median ?? ""),
        h("td", { text: a.detail }),
      ),
    ),
  );
  show($("anomalies-empty"), state.anomalies !== null && items.length === 0);
}

// -- exports ------------------------------------------------------------------------------------------

function exportButtons(path, testid, formats = ["csv", "json"], label = null) {
  return formats.map((format) => {
    const url = format === "json" ? path : path + (path.includes("?") ? "&" : "?") + "format=csv";
    return h("button", {
      type: "button",
      class: "button",
      testid: `${testid}-${format}`,
      "data-href": url,
      text: t(label ?? `export.${format}`),
      onclick: (e) => download(e.currentTarget, url, `${testid}.${format}`),
    });
  });
}

function renderExports() {
  if (!session.me) return;
  $("figures-exports").replaceChildren(...exportButtons(paths.figures(), "export-figures"), ...exportButtons(paths.series(), "export-series", ["csv"], "export.series-csv"));
  $("union-statement-exports").replaceChildren(...exportButtons(paths.unionStatement(), "export-union-statement"));
  $("station-statement-exports").replaceChildren(
    ...(state.station ? exportButtons(paths.stationStatement(), "export-station-statement") : []),
  );
  $("settlement-exports").replaceChildren(...exportButtons(paths.settlement(), "export-settlement"));
  $("anomalies-exports").replaceChildren(...exportButtons(paths.anomalies(), "export-anomalies"));
  const full = isAuditor()
    ? [h("button", {
        type: "button",
        class: "button primary",
        testid: "export-full",
        "data-href": "/v1/stats/export",
        text: t("export.full"),
        onclick: (e) => download(e.currentTarget, "/v1/stats/export", "unionledger-stats-export.json"),
      })]
    : [];
  $("full-export").replaceChildren(...full);
  show($("export-auditors-only"), !isAuditor());
}

// Fetch with the token, then save through a blob link (a plain link would carry no token).
async function download(button, url, fallback) {
  button.disabled = true;
  try {
    const response = await api("GET", url, { raw: true });
    const disposition = response.headers.get("Content-Disposition") ?? "";
    const name = disposition.match(/filename="([^"]+)"/)?.[1] ?? fallback;
    const blob = await response.blob();
    const href = URL.createObjectURL(blob);
    const link = h("a", { href, download: name, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(href), 10_000);
    showNotice("export.done", { name });
  } catch (error) {
    showError(error);
  } finally {
    button.disabled = false;
  }
}

// -- wiring ---------------------------------------------------------------------------------------------

async function start() {
  await loadMessages("/static/auditor-i18n.json");
  useLanguage(pickLanguage(LANG_KEY));
  $("lang-switch").addEventListener("click", () => setLanguage(lang === "en" ? "zh-CN" : "en"));
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", () => logout());
  $("checkpoint-refresh").addEventListener("click", () => verifyCheckpoint());
  $("range-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const from = $("range-from").value;
    const to = $("range-to").value;
    if (!from || !to) return;
    Object.assign(state, { from, to });
    clearMessages();
    loadAll();
  });
  $("statement-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.day = $("statement-day").value || state.day;
    state.station = $("statement-station").value;
    clearMessages();
    renderExports();
    loadStatements();
  });
  show($("loading"), false);
  show($("login"), true);
  document.body.dataset.ready = "true";
  $("login-username").focus();
}

start();
