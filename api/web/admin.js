// UnionLedger admin console: plain modern JavaScript, no build step, no third-party code.
//
// Security notes:
// - Tokens live in memory only (session.js, shared with the auditor console; never
//   localStorage, sessionStorage or cookies): reloading the page signs the official out. The
//   access token is refreshed before it expires; refreshes are serialised because the server
//   revokes a session whose old refresh token is presented twice.
// - Every text from the server is put in the page with textContent, never as HTML.
// - The page runs under a Content-Security-Policy without 'unsafe-inline': no inline scripts,
//   no style attributes.

import { ApiError, createSession, showSignedIn } from "/static/session.js";
import { has, lang, loadMessages, pickLanguage, t, useLanguage } from "/static/i18n.js";

const PAGE_SIZE = 50;
const LANG_KEY = "unionledger.admin.lang"; // the only thing kept in localStorage
const GROUPS = [
  "delivery_rider", "courier", "ride_hailing_driver", "truck_driver", "migrant_worker",
  "female_worker", "hardship", "over_age_worker", "model_worker",
];
const MEMBER_STATUSES = ["pending", "active", "rejected", "left", "erased"];
const LOC_PREFIXES = ["body", "query", "path", "person"]; // of a validation error's field path
const VIEWS = ["members", "programs", "stations", "redemptions"]; // the tabs of a union
const PROGRAM_KINDS = ["universal", "targeted"];
const PROGRAM_STATUSES = ["open", "closed"];
const QUOTA_PERS = ["program", "month", "week", "day"];
const STATION_KINDS = [
  "union_station", "truck_driver_home", "mother_infant_room", "cultural_palace", "other",
];
const STATION_STATUSES = ["active", "closed"];
const DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const MAX_INTERVALS = 6; // per day (ledger/stations.py)
const STATION_PAGE = 100;
const MAX_FEN = 10 ** 12; // ledger/programs.py: any amount is below
const MAX_COUNT = 1000;
const ID_RE = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$/; // program, station and union ids
const DEGREES_RE = /^-?(?:0|[1-9][0-9]{0,2})(?:\.[0-9]{1,7})?$/;
const REVOKE_REASONS = ["keys.reason-lost", "keys.reason-replaced", "keys.reason-stolen"];
const REDEMPTION_PAGE = 20; // GET /v1/redemptions takes up to 100
const REVERSE_REASONS = [
  "reverse.reason-mistake", "reverse.reason-wrong-program", "reverse.reason-not-handed",
];

// -- translations ---------------------------------------------------------------------------------

function setLanguage(next) {
  try {
    localStorage.setItem(LANG_KEY, next);
  } catch {
    // storage disabled: the choice lasts for this page only
  }
  useLanguage(next);
  renderAll();
}

// -- small DOM helpers --------------------------------------------------------------------------

function $(id) {
  return document.getElementById(id);
}

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") el.textContent = value;
    else if (key === "class") el.className = value;
    else if (key === "testid") el.dataset.testid = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) if (child !== null && child !== undefined) el.append(child);
  return el;
}

function show(el, visible) {
  el.hidden = !visible;
}

function formatTime(iso) {
  if (!iso) return t("common.none");
  const when = new Date(iso);
  if (Number.isNaN(when.getTime())) return iso;
  return new Intl.DateTimeFormat(lang, {
    year: "numeric",
    month: "2-digit",
    day: "2-digit",
    hour: "2-digit",
    minute: "2-digit",
  }).format(when);
}

function formatDay(iso) {
  const when = new Date(iso);
  if (!iso || Number.isNaN(when.getTime())) return iso || t("common.none");
  const options = { year: "numeric", month: "2-digit", day: "2-digit" };
  return new Intl.DateTimeFormat(lang, options).format(when);
}

function badge(status, text) {
  return h("span", { class: `badge ${status}`, text });
}

function formatCount(n) {
  return new Intl.NumberFormat(lang).format(n);
}

function unionLabel(code) {
  const name = state.unionNames.get(code);
  if (!name) return code;
  return lang === "en" ? `${name} (${code})` : `${name}（${code}）`;
}

function fillSelect(select, values, labelOf, { allLabel = null } = {}) {
  const current = select.value;
  select.replaceChildren(
    ...(allLabel === null ? [] : [h("option", { value: "", text: allLabel })]),
    ...values.map((v) => h("option", { value: v, text: labelOf(v) })),
  );
  const keep = values.includes(current) || (current === "" && allLabel !== null);
  select.value = keep ? current : select.options[0]?.value ?? "";
}

// -- messages and errors ------------------------------------------------------------------------

function problemSlug(problem) {
  if (problem.slug) return problem.slug;
  const type = typeof problem.type === "string" ? problem.type : "";
  const match = type.match(/\/problems\/([a-z0-9-]+)$/);
  return match ? match[1] : null;
}

// The user's-language lines for a problem: a translated headline (by type slug, else the
// server's title), then the server's detail and the fields a validation error names.
function describeProblem(problem) {
  const slug = problemSlug(problem);
  const seconds = problem.retryAfter ?? "?";
  let headline;
  if (slug && has(`problem.${slug}`)) headline = t(`problem.${slug}`, { seconds });
  else if (problem.title) headline = problem.title;
  else headline = t("problem.unknown", { status: problem.status ?? "?" });
  const details = [];
  if (Array.isArray(problem.errors) && problem.errors.length) {
    const fields = problem.errors.map((e) => {
      const loc = (Array.isArray(e.loc) ? e.loc : []).filter((p) => !LOC_PREFIXES.includes(p));
      const name = loc.find((p) => has(`field.${p}`));
      return name ? t(`field.${name}`) : loc.join(".");
    });
    details.push(t("problem.fields", { fields: [...new Set(fields)].join(t("common.separator")) }));
  } else if (problem.detail && slug !== "validation-error" && !problem.hideDetail) {
    const known = translateDetail(problem.detail);
    details.push(known ?? t("problem.detail", { detail: problem.detail }));
  }
  return { headline, details };
}

// The server explains a refused rule or station in English: the explanations the console knows
// are said again in the official's language (with the unions named), any other as it is.
const DETAIL_PATTERNS = [
  [/^the allocations exceed the budget$/, "why.allocations-exceed"],
  [/^allocations need a budget$/, "why.allocations-need-budget"],
  [/^union '([^']+)' is not in the owner's subtree$/, "why.union-outside", ["union"]],
  [/^allocations go to unions below the owner$/, "why.allocation-to-owner"],
  [/^allocations to (\S+) and (\S+) overlap$/, "why.allocations-overlap", ["a", "b"]],
  [/^no_stack_with names an unknown program '([^']+)'$/, "why.unknown-no-stack", ["program"]],
  [/^a program always stacks with itself/, "why.self-stack"],
  [/^a targeted program needs an eligibility rule/, "why.targeted-needs-rule"],
  [/^a universal program has no eligibility rule/, "why.universal-no-rule"],
  [/^the period ends before it starts$/, "why.period-order"],
  [/^a new version takes effect now or later/, "why.effective-past"],
  [/^the budget would fall below what is already spent$/, "why.budget-below-spent"],
  [/^the allocation to (\S+) would fall below what it spent$/, "why.allocation-below-spent",
    ["union"]],
  [/^offline redemption needs/, "why.offline-per-day"],
  [/^a program id is /, "why.program-id"],
  [/^(?:latitude|longitude) must /, "why.coordinates"],
  [/^bad station id /, "why.station-id"],
  [/^not an Ed25519 public JWK/, "why.station-key"],
  [/^a station has at most (\d+) unrevoked keys$/, "why.too-many-keys", ["max"]],
  [/^a daily ceiling is /, "why.daily-ceiling"],
  [/^past the reversal window a reason is required$/, "why.reversal-reason"],
  [/^past the reversal window: ask an official$/, "why.reversal-station"],
  [/^this redemption was already reversed$/, "why.already-reversed"],
  [/^no redemption (\d+)$/, "why.unknown-redemption", ["id"]],
];

function translateDetail(detail) {
  for (const [pattern, key, names = []] of DETAIL_PATTERNS) {
    const match = String(detail).match(pattern);
    if (!match || !has(key)) continue;
    const params = {};
    names.forEach((name, i) => {
      const value = match[i + 1];
      params[name] = ["union", "a", "b"].includes(name) ? unionLabel(value) : value;
    });
    return t(key, params);
  }
  return null;
}

// What the banners say, kept so that a language switch can say it again:
// { problem, target } or { key, params, target }, and { key, params }.
let shownError = null;
let shownNotice = null;

function errorTarget() {
  for (const dialog of document.querySelectorAll("dialog[open]")) {
    const box = dialog.querySelector(".banner-error");
    if (box) return box;
  }
  return $("error");
}

function renderMessages() {
  for (const box of document.querySelectorAll(".banner-error")) {
    if (!shownError || shownError.target !== box) {
      box.replaceChildren();
      show(box, false);
    }
  }
  if (shownError) {
    const { target } = shownError;
    let headline;
    let details = [];
    if (shownError.problem) ({ headline, details } = describeProblem(shownError.problem));
    else headline = t(shownError.key, shownError.params);
    target.replaceChildren(
      dismissButton(() => {
        shownError = null;
        renderMessages();
      }),
      h("p", { text: headline }),
      ...details.map((d) => h("p", { class: "banner-detail", text: d })),
    );
    show(target, true);
  }
  const notice = $("notice");
  notice.replaceChildren(
    ...(shownNotice
      ? [
          dismissButton(() => {
            shownNotice = null;
            renderMessages();
          }),
          h("p", { text: t(shownNotice.key, shownNotice.params) }),
        ]
      : []),
  );
  show(notice, Boolean(shownNotice));
}

function dismissButton(onclick) {
  return h("button", {
    type: "button",
    class: "banner-close",
    "aria-label": t("common.dismiss"),
    testid: "dismiss",
    text: "×",
    onclick,
  });
}

function showError(errorOrKey, params = {}) {
  const target = errorTarget();
  if (errorOrKey instanceof ApiError) shownError = { problem: errorOrKey.problem, target };
  else if (typeof errorOrKey === "string") shownError = { key: errorOrKey, params, target };
  else {
    console.error(errorOrKey); // a bug in this page, not an answer of the server
    shownError = { problem: { status: 0, title: String(errorOrKey) }, target };
  }
  shownNotice = null;
  renderMessages();
}

function showNotice(key, params = {}) {
  shownNotice = { key, params };
  shownError = null;
  renderMessages();
}

function clearMessages() {
  shownError = null;
  shownNotice = null;
  renderMessages();
}

// -- the session and the API client (session.js) ----------------------------------------------

const { session, signedIn, api, signIn, logout: endAndLogout } = createSession({
  accept: "application/json, application/problem+json",
  onEnd: showLoginForm,
  minRefreshFraction: 0.5,
  offlineRetryMs: 15_000, // the LAN is down: try again soon
});

// Errors of a user's action: shown, unless the session ended meanwhile (already said).
function report(error) {
  if (error instanceof ApiError && error.problem.stale) return;
  showError(error);
}

async function busy(button, work) {
  if (button) button.disabled = true;
  try {
    return await work();
  } finally {
    if (button) button.disabled = false;
  }
}

// -- state ----------------------------------------------------------------------------------------

const state = {
  unionNames: new Map(), // code -> name, learnt while browsing
  unionCode: null,
  union: null,
  unionMissing: false,
  children: [],
  crumbs: [],
  members: [],
  cursors: [null], // `after` of each page seen, for "previous"
  page: 0,
  hasNext: false,
  highlight: null, // the member id just enrolled or opened
  memberId: null,
  member: null, // { row, personal, personalGone, groups, history }
  unionSeq: 0,
  memberSeq: 0,
  view: "members", // the union's tab: members, programs or stations
  viewKey: null, // "<union>|<view>" whose list is loaded
  scopeCodes: null, // Set of the open unions of the official's subtree (null: not known)
  programs: [],
  programsLoaded: false,
  program: null, // the program opened (with its versions)
  programForm: null, // { mode: "create" | "revise", program }
  stations: [],
  stationsNext: null,
  stationsLoaded: false,
  station: null, // { row, keys }
  stationForm: null, // { mode: "create" | "edit", row }
  revokeKid: null,
  privateKeyUrl: null,
  redemptions: [], // the rows listed (without their receipts), newest first
  redemptionsNext: null, // `before` of the next (older) page, null at the end
  redemptionsLoaded: false,
  reversing: null, // the redemption the reverse dialog is about
  pastWindow: new Set(), // redemptions the server said are past the reversal window
  highlightRedemption: null, // the one just reversed
  programsSeq: 0,
  stationsSeq: 0,
  stationSeq: 0,
  redemptionsSeq: 0,
};

function resetState() {
  Object.assign(state, {
    unionNames: new Map(),
    unionCode: null,
    union: null,
    unionMissing: false,
    children: [],
    crumbs: [],
    members: [],
    cursors: [null],
    page: 0,
    hasNext: false,
    highlight: null,
    memberId: null,
    member: null,
    view: "members",
    viewKey: null,
    scopeCodes: null,
    programs: [],
    programsLoaded: false,
    program: null,
    programForm: null,
    stations: [],
    stationsNext: null,
    stationsLoaded: false,
    station: null,
    stationForm: null,
    revokeKid: null,
    redemptions: [],
    redemptionsNext: null,
    redemptionsLoaded: false,
    reversing: null,
    pastWindow: new Set(),
    highlightRedemption: null,
  });
  state.unionSeq += 1;
  state.memberSeq += 1;
  state.programsSeq += 1;
  state.stationsSeq += 1;
  state.stationSeq += 1;
  state.redemptionsSeq += 1;
}

// -- logging in and out ---------------------------------------------------------------------------

async function login(event) {
  event.preventDefault();
  const form = $("login-form");
  const username = form.username.value.trim();
  const password = form.password.value;
  const totp = form.totp.value.replace(/\s+/g, "");
  const missing = [];
  if (!username) missing.push(t("field.username"));
  if (!password) missing.push(t("field.password"));
  if (missing.length) {
    showError("common.required", { fields: missing.join(t("common.separator")) });
    return;
  }
  await busy($("login-submit"), async () => {
    try {
      const me = await signIn(username, password, totp);
      if (me.role !== "official") {
        await logout({ quiet: true });
        showError("auth.not-official");
        return;
      }
      session.me = me;
      form.password.value = "";
      form.totp.value = "";
      clearMessages();
      await enterConsole();
    } catch (error) {
      form.password.value = "";
      form.password.focus();
      report(error);
    }
  });
}

async function logout({ quiet = false } = {}) {
  await endAndLogout();
  if (!quiet) showNotice("auth.logged-out");
}

// The page's part of ending a session: back to the login form (with a message key, if given).
function showLoginForm(messageKey) {
  for (const dialog of document.querySelectorAll("dialog[open]")) dialog.close();
  resetState();
  $("union-options").replaceChildren();
  showSignedIn(false);
  if (messageKey) showError(messageKey);
  else clearMessages();
  $("login-username").focus();
}

async function enterConsole() {
  showSignedIn(true);
  renderWhoami();
  loadUnionOptions(); // suggestions for target unions: in the background
  const scope = session.me.scope;
  try {
    const root = await api("GET", `/v1/unions/${encodeURIComponent(scope)}`);
    state.unionNames.set(root.code, root.name);
  } catch (error) {
    report(error);
  }
  renderWhoami();
  if (parseHash()) await route();
  else location.hash = routeHash(scope, null);
}

function renderWhoami() {
  if (!session.me) return;
  const scope = session.me.scope;
  $("whoami").textContent = t("auth.whoami", {
    user: session.username,
    role: t(`role.${session.me.role}`),
    scope: unionLabel(scope),
  });
}

async function loadUnionOptions() {
  const generation = session.generation;
  try {
    const page = await api(
      "GET",
      `/v1/unions/${encodeURIComponent(session.me.scope)}/subtree?status=active&limit=1000`,
    );
    if (generation !== session.generation) return;
    for (const u of page.items) state.unionNames.set(u.code, u.name);
    // Which programs this official may change: those owned by an open union of the subtree.
    state.scopeCodes = page.next ? null : new Set(page.items.map((u) => u.code));
    $("union-options").replaceChildren(
      ...page.items.map((u) => h("option", { value: u.code, label: `${u.name}` })),
    );
    renderWhoami();
    renderPrograms();
    renderProgram();
  } catch {
    // only suggestions: typing a code still works
  }
}

// -- routing: #/union/<code>[/member/<id> | /programs | /stations | /redemptions] --------------

function routeHash(union, member, view = "members") {
  let hash = `#/union/${encodeURIComponent(union)}`;
  if (member) hash += `/member/${encodeURIComponent(member)}`;
  else if (view !== "members") hash += `/${view}`;
  return hash;
}

function parseHash() {
  const match = location.hash.match(
    /^#\/union\/([^/]+)(?:\/member\/([^/]+)|\/(programs|stations|redemptions))?$/,
  );
  if (!match) return null;
  try {
    return {
      union: decodeURIComponent(match[1]),
      member: match[2] ? decodeURIComponent(match[2]) : null,
      view: match[3] ?? "members",
    };
  } catch {
    return null;
  }
}

function go(union, member = null, view = "members") {
  const hash = routeHash(union, member, view);
  if (location.hash === hash) route();
  else location.hash = hash;
}

async function route() {
  if (!signedIn() || !session.me) return;
  const target = parseHash();
  if (!target) {
    location.replace(routeHash(session.me.scope, null));
    return;
  }
  if (target.union !== state.unionCode) {
    Object.assign(state, { programs: [], programsLoaded: false, stations: [], stationsNext: null });
    state.stationsLoaded = false;
    Object.assign(state, { redemptions: [], redemptionsNext: null, redemptionsLoaded: false });
    renderPrograms();
    renderStations();
    renderRedemptions();
  }
  if (target.view !== state.view || target.union !== state.unionCode) {
    closeProgram(); // an opened program or station belongs to its tab and union
    closeStation();
  }
  state.view = target.view;
  renderView();
  const jobs = [];
  if (target.union !== state.unionCode) jobs.push(loadUnion(target.union));
  if (target.member !== state.memberId) {
    if (target.member) jobs.push(loadMember(target.member, { focus: true }));
    else closeMember();
  }
  await Promise.all(jobs);
  await loadView();
}

// The list of the tab shown, once per union and tab visited.
async function loadView() {
  if (!state.union || state.union.code !== state.unionCode) return; // missing, or still loading
  const key = `${state.unionCode}|${state.view}`;
  if (key === state.viewKey) return;
  state.viewKey = key;
  if (state.view === "programs") await loadPrograms();
  else if (state.view === "stations") await loadStations();
  else if (state.view === "redemptions") await loadRedemptions();
}

function renderView() {
  const ok = Boolean(state.union) && !state.unionMissing;
  show($("tabs"), ok);
  for (const view of VIEWS) {
    const tab = $(`tab-${view}`);
    if (state.unionCode) tab.setAttribute("href", routeHash(state.unionCode, null, view));
    if (view === state.view) tab.setAttribute("aria-current", "page");
    else tab.removeAttribute("aria-current");
  }
  show($("children-section"), ok && state.view === "members");
  show($("members-section"), ok && state.view === "members");
  show($("programs-section"), ok && state.view === "programs");
  show($("stations-section"), ok && state.view === "stations");
  show($("redemptions-section"), ok && state.view === "redemptions");
}

// -- the union tree --------------------------------------------------------------------------

async function loadUnion(code, { keepPage = false } = {}) {
  const seq = ++state.unionSeq;
  const changed = code !== state.unionCode;
  state.unionCode = code;
  if (changed || !keepPage) {
    state.cursors = [null];
    state.page = 0;
  }
  try {
    const path = `/v1/unions/${encodeURIComponent(code)}`;
    const [union, children] = await Promise.all([api("GET", path), api("GET", `${path}/children`)]);
    if (seq !== state.unionSeq) return;
    state.union = union;
    state.children = children;
    state.unionMissing = false;
    state.unionNames.set(union.code, union.name);
    for (const child of children) state.unionNames.set(child.code, child.name);
    state.crumbs = await crumbsFor(union);
    if (seq !== state.unionSeq) return;
    await loadMembers(seq);
    if (seq !== state.unionSeq) return;
    renderUnion();
    if (changed && shownError?.target === $("error")) {
      shownError = null; // an error about the union left behind
      renderMessages();
    }
  } catch (error) {
    if (seq !== state.unionSeq) return;
    state.union = null;
    state.children = [];
    state.members = [];
    state.unionMissing = error instanceof ApiError && error.problem.status === 404;
    state.crumbs = [];
    renderUnion();
    report(error);
  }
}

async function crumbsFor(union) {
  const codes = union.path.split("/").filter(Boolean);
  const scope = session.me.scope;
  const from = codes.indexOf(scope);
  const chain = from >= 0 ? codes.slice(from) : [union.code];
  const unknown = chain.filter((c) => !state.unionNames.has(c));
  await Promise.all(
    unknown.map(async (c) => {
      try {
        const row = await api("GET", `/v1/unions/${encodeURIComponent(c)}`);
        state.unionNames.set(row.code, row.name);
      } catch {
        // a code instead of a name
      }
    }),
  );
  return chain;
}

async function loadMembers(seq = state.unionSeq) {
  const form = $("member-filter");
  const params = new URLSearchParams({ union: state.unionCode, limit: String(PAGE_SIZE) });
  if (form.status.value) params.set("status", form.status.value);
  if (form.group.value) params.set("group", form.group.value);
  const after = state.cursors[state.page];
  if (after) params.set("after", after);
  const page = await api("GET", `/v1/members?${params}`);
  if (seq !== state.unionSeq) return;
  state.members = page.items;
  state.hasNext = Boolean(page.next);
  state.cursors[state.page + 1] = page.next;
}

async function reloadMembers() {
  try {
    await loadMembers();
    renderMembers();
  } catch (error) {
    report(error);
  }
}

// The union and the list again, on the same page (counts and statuses change).
async function refreshUnion() {
  if (state.unionCode) await loadUnion(state.unionCode, { keepPage: true });
}

function renderUnion() {
  const union = state.union;
  show($("union-missing"), state.unionMissing);
  $("union-home").setAttribute("href", session.me ? routeHash(session.me.scope, null) : "#");
  show($("union"), Boolean(union));
  renderView();
  renderCrumbs();
  if (!union) return;
  $("union-name").textContent = union.name;
  $("union-code").textContent = union.code;
  $("union-kind").textContent = t(`kind.${union.kind}`);
  $("union-status").replaceChildren(badge(union.status, t(`ustatus.${union.status}`)));
  $("union-own").textContent = formatCount(union.members_own);
  $("union-subtree").textContent = formatCount(union.members_subtree);
  $("union-join-code").textContent = union.join_code ?? t("common.none");
  $("children").replaceChildren(
    ...state.children.map((child) =>
      h(
        "li",
        {},
        h(
          "a",
          {
            class: "child",
            href: routeHash(child.code, null, state.view),
            testid: `child-${child.code}`,
          },
          h("span", { class: "child-name", text: child.name }),
          h("span", {
            class: "child-meta",
            text: [
              child.code,
              t(`kind.${child.kind}`),
              t("children.counts", { subtree: formatCount(child.members_subtree) }),
              ...(child.status === "closed" ? [t("ustatus.closed")] : []),
            ].join(" · "),
          }),
        ),
      ),
    ),
  );
  show($("children-empty"), state.children.length === 0);
  renderMembers();
}

function renderCrumbs() {
  const items = state.crumbs.map((code, i) => {
    const last = i === state.crumbs.length - 1;
    const label = state.unionNames.get(code) ?? code;
    return h(
      "li",
      {},
      last
        ? h("span", { "aria-current": "page", testid: `crumb-${code}`, text: label })
        : h("a", { href: routeHash(code, null, state.view), testid: `crumb-${code}`, text: label }),
    );
  });
  $("breadcrumbs").replaceChildren(...items);
}

function renderFilters() {
  const all = { allLabel: t("filter.all") };
  fillSelect($("filter-status"), MEMBER_STATUSES, (s) => t(`mstatus.${s}`), all);
  fillSelect($("filter-group"), GROUPS, (g) => t(`group.${g}`), all);
}

function renderMembers() {
  const rows = state.members.map((m) => {
    const actions = [];
    if (m.status === "pending") {
      actions.push(
        h("button", {
          type: "button",
          class: "button small primary",
          testid: `approve-${m.member_id}`,
          "aria-label": t("action.approve-row", { id: m.member_id }),
          text: t("action.approve"),
          onclick: (e) => decide(e.currentTarget, m.member_id, "approve"),
        }),
        h("button", {
          type: "button",
          class: "button small",
          testid: `reject-${m.member_id}`,
          "aria-label": t("action.reject-row", { id: m.member_id }),
          text: t("action.reject"),
          onclick: (e) => decide(e.currentTarget, m.member_id, "reject"),
        }),
      );
    }
    return h(
      "tr",
      {
        testid: `member-row-${m.member_id}`,
        class: m.member_id === state.highlight ? "highlight" : null,
      },
      h(
        "td",
        { "data-label": t("members.col-id") },
        h("a", {
          class: "mono nowrap",
          href: routeHash(state.unionCode, m.member_id),
          testid: `open-${m.member_id}`,
          "aria-label": t("members.open", { id: m.member_id }),
          text: m.member_id,
        }),
      ),
      h(
        "td",
        { "data-label": t("members.col-union") },
        h("span", { class: "union-cell" }, state.unionNames.get(m.union) ?? m.union,
          h("small", { class: "mono", text: m.union })),
      ),
      h(
        "td",
        { "data-label": t("members.col-status") },
        h("span", {
          class: `badge ${m.status}`,
          testid: `status-${m.member_id}`,
          text: t(`mstatus.${m.status}`),
        }),
      ),
      h("td", {
        class: "nowrap",
        "data-label": t("members.col-since"),
        title: formatTime(m.since),
        text: formatDay(m.since),
      }),
      h("td", { "data-label": t("members.col-actions") }, actions),
    );
  });
  $("members-body").replaceChildren(...rows);
  show($("members-empty"), rows.length === 0);
  $("members-prev").disabled = state.page === 0;
  $("members-next").disabled = !state.hasNext;
  $("members-page").textContent = t("members.page", { page: state.page + 1 });
}

async function turnPage(delta) {
  state.page = Math.max(0, state.page + delta);
  await reloadMembers();
}

async function decide(button, memberId, verdict) {
  await busy(button, async () => {
    try {
      await api("POST", `/v1/members/${encodeURIComponent(memberId)}/${verdict}`);
      showNotice(verdict === "approve" ? "action.approved" : "action.rejected", { id: memberId });
      state.highlight = memberId;
      await Promise.all([refreshUnion(), state.memberId === memberId ? loadMember(memberId) : null]);
    } catch (error) {
      report(error);
    }
  });
}

// -- searching -------------------------------------------------------------------------------

async function search(event) {
  event.preventDefault();
  const idNumber = $("search-id").value.trim().toUpperCase();
  if (!idNumber) {
    showError("common.required", { fields: t("field.id_number") });
    return;
  }
  await busy($("search-submit"), async () => {
    try {
      const member = await api("POST", "/v1/members/search", { body: { id_number: idNumber } });
      clearMessages();
      state.highlight = member.member_id;
      go(member.union, member.member_id);
    } catch (error) {
      if (error instanceof ApiError && error.problem.status === 404) showError("search.not-found");
      else report(error);
    }
  });
}

// -- enrolling -------------------------------------------------------------------------------

function renderEnrolGroups() {
  const box = $("enrol-groups");
  const checked = new Set([...box.querySelectorAll("input:checked")].map((i) => i.value));
  const legend = box.querySelector("legend");
  box.replaceChildren(
    legend,
    ...GROUPS.map((g) =>
      h(
        "label",
        { class: "check" },
        h("input", {
          type: "checkbox",
          name: "groups",
          value: g,
          testid: `enrol-group-${g}`,
          checked: checked.has(g),
        }),
        h("span", { text: t(`group.${g}`) }),
      ),
    ),
  );
}

function openEnrol() {
  const form = $("enrol-form");
  form.reset();
  form.union.value = state.unionCode ?? session.me.scope;
  renderEnrolGroups();
  if (shownError?.target === $("enrol-error")) shownError = null;
  renderMessages();
  $("enrol-dialog").showModal();
  form.name.focus();
}

async function enrol(event) {
  event.preventDefault();
  const form = $("enrol-form");
  const person = {
    name: form.name.value.trim(),
    id_number: form.id_number.value.trim().toUpperCase(),
    phone: form.phone.value.trim(),
    employer: form.employer.value.trim() || null,
  };
  const union = form.union.value.trim();
  const missing = [];
  for (const key of ["name", "id_number", "phone"]) if (!person[key]) missing.push(t(`field.${key}`));
  if (!union) missing.push(t("field.union"));
  if (missing.length) {
    showError("common.required", { fields: missing.join(t("common.separator")) });
    return;
  }
  const groups = [...form.querySelectorAll("input[name=groups]:checked")].map((i) => i.value);
  await busy($("enrol-submit"), async () => {
    try {
      const member = await api("POST", "/v1/members", { body: { union, person, groups } });
      $("enrol-dialog").close();
      showNotice("enrol.done", { id: member.member_id });
      state.highlight = member.member_id;
      await refreshUnion();
      go(state.unionCode, member.member_id);
    } catch (error) {
      report(error);
    }
  });
}

// -- one member ------------------------------------------------------------------------------

async function loadMember(memberId, { focus = false } = {}) {
  const seq = ++state.memberSeq;
  state.memberId = memberId;
  const base = `/v1/members/${encodeURIComponent(memberId)}`;
  const [row, personal, groups, history] = await Promise.allSettled([
    api("GET", base),
    api("GET", `${base}/personal`),
    api("GET", `${base}/groups`),
    api("GET", `${base}/history`),
  ]);
  if (seq !== state.memberSeq) return;
  if (row.status === "rejected") {
    state.member = null;
    renderMember();
    report(row.reason);
    return;
  }
  const gone =
    personal.status === "rejected" &&
    (row.value.status === "erased" || problemSlug(personal.reason.problem ?? {}) === "member-erased");
  state.member = {
    row: row.value,
    personal: personal.status === "fulfilled" ? personal.value : null,
    personalGone: gone,
    groups: groups.status === "fulfilled" ? groups.value : [],
    history: history.status === "fulfilled" ? history.value : [],
  };
  if (!state.unionNames.has(row.value.union)) {
    try {
      const u = await api("GET", `/v1/unions/${encodeURIComponent(row.value.union)}`);
      state.unionNames.set(u.code, u.name);
    } catch {
      // the code is shown instead
    }
  }
  if (seq !== state.memberSeq) return;
  renderMember();
  const failed = [personal, groups, history].find((r) => r.status === "rejected");
  if (failed && !(failed === personal && gone)) report(failed.reason);
  if (focus) $("member-title").focus();
}

function closeMember() {
  state.memberSeq += 1;
  state.memberId = null;
  state.member = null;
  renderMember();
}

function renderMember() {
  const pane = $("member");
  const data = state.member;
  show(pane, Boolean(data));
  if (!data) return;
  const { row } = data;
  $("member-id").textContent = row.member_id;
  $("member-union").textContent = unionLabel(row.union);
  $("member-status").replaceChildren(badge(row.status, t(`mstatus.${row.status}`)));
  $("member-joined").textContent = formatTime(row.joined_at);
  $("member-since").textContent = formatTime(row.since);
  show($("member-left-row"), Boolean(row.left_at));
  $("member-left").textContent = formatTime(row.left_at);

  const p = data.personal;
  show($("member-personal"), Boolean(p));
  show($("member-personal-gone"), data.personalGone);
  if (p) {
    $("member-name").textContent = p.name;
    $("member-id-number").textContent = p.id_number;
    $("member-phone").textContent = p.phone;
    $("member-employer").textContent = p.employer || t("common.none");
  }

  const active = row.status === "active";
  $("member-groups-body").replaceChildren(
    ...data.groups.map((span) =>
      h(
        "tr",
        { testid: `group-row-${span.group}` },
        h("td", { text: t(`group.${span.group}`) }),
        h("td", { text: span.start }),
        h("td", { text: span.end ?? t("common.none") }),
        h(
          "td",
          {},
          span.end === null && active
            ? h("button", {
                type: "button",
                class: "button small",
                testid: `group-end-${span.group}`,
                "aria-label": t("groups.end-label", { group: t(`group.${span.group}`) }),
                text: t("groups.end"),
                onclick: (e) => endGroup(e.currentTarget, span.group),
              })
            : null,
        ),
      ),
    ),
  );
  show($("member-groups-empty"), data.groups.length === 0);
  const open = new Set(data.groups.filter((s) => s.end === null).map((s) => s.group));
  fillSelect($("add-group-select"), GROUPS.filter((g) => !open.has(g)), (g) => t(`group.${g}`));
  show($("add-group-form"), active);

  $("member-history").replaceChildren(
    ...(data.history.length
      ? data.history.map((item) =>
          h("li", {
            testid: `history-${item.entry}`,
            text: t("history.item", {
              when: formatTime(item.at),
              event: has(`event.${item.event}`) ? t(`event.${item.event}`) : item.event,
              union: unionLabel(item.union),
            }),
          }),
        )
      : [h("li", { text: t("history.none") })]),
  );

  show($("member-pending-actions"), row.status === "pending");
  show($("transfer-form"), active);
  show($("rejoin-form"), row.status === "left");
  show($("member-leave"), active);
  show($("member-erase"), row.status !== "erased");
}

async function memberAction(button, path, body, noticeKey, params) {
  const memberId = state.memberId;
  await busy(button, async () => {
    try {
      await api("POST", `/v1/members/${encodeURIComponent(memberId)}${path}`, { body });
      showNotice(noticeKey, { id: memberId, ...params });
      await Promise.all([loadMember(memberId), refreshUnion()]);
    } catch (error) {
      report(error);
    }
  });
}

async function addGroup(event) {
  event.preventDefault();
  const group = $("add-group-select").value;
  if (!group) return;
  const start = $("add-group-start").value || null;
  const params = { group: t(`group.${group}`) };
  await memberAction($("add-group-submit"), "/groups", { group, start }, "groups.added", params);
  $("add-group-start").value = "";
}

async function endGroup(button, group) {
  const path = `/groups/${encodeURIComponent(group)}/end`;
  await memberAction(button, path, {}, "groups.ended", { group: t(`group.${group}`) });
}

async function transfer(event) {
  event.preventDefault();
  const union = $("transfer-union").value.trim();
  if (!union) {
    showError("common.required", { fields: t("field.union") });
    return;
  }
  const params = { union: unionLabel(union) };
  await memberAction($("transfer-submit"), "/transfer", { union }, "transfer.done", params);
  $("transfer-union").value = "";
}

async function rejoin(event) {
  event.preventDefault();
  const union = $("rejoin-union").value.trim();
  if (!union) {
    showError("common.required", { fields: t("field.union") });
    return;
  }
  const params = { union: unionLabel(union) };
  await memberAction($("rejoin-submit"), "/rejoin", { union }, "rejoin.done", params);
  $("rejoin-union").value = "";
}

// A modal question; resolves true when the official confirms.
function confirmAction(kind, params) {
  const dialog = $("confirm-dialog");
  $("confirm-title").textContent = t(`confirm.${kind}-title`, params);
  $("confirm-text").textContent = t(`confirm.${kind}-text`, params);
  $("confirm-ok").textContent = t(`confirm.${kind}-ok`, params);
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
    $("confirm-cancel").focus();
  });
}

async function leave() {
  const memberId = state.memberId;
  if (!(await confirmAction("leave", { id: memberId }))) return;
  await memberAction($("member-leave"), "/leave", undefined, "action.left", {});
}

async function erase() {
  const memberId = state.memberId;
  if (!(await confirmAction("erase", { id: memberId }))) return;
  await memberAction($("member-erase"), "/erase", undefined, "action.erased", {});
}

// -- money, days and lists --------------------------------------------------------------------

const enc = encodeURIComponent;

// A problem the page finds in a form before asking the server: a message key and its values.
class FormProblem extends Error {
  constructor(key, params = {}) {
    super(key);
    this.key = key;
    this.params = params;
  }
}

// "25.5" yuan -> 2550 fen, exactly (no floating point); null when it is not an amount.
function yuanToFen(text) {
  const clean = String(text).trim().replace(/[,，\s]/g, "").replace(/^[¥￥]/, "");
  const match = clean.match(/^(\d{1,10})(?:\.(\d{0,2}))?$/);
  if (!match) return null;
  return Number(match[1]) * 100 + Number((match[2] ?? "").padEnd(2, "0"));
}

// 2550 fen -> "25.50" (for a form field), 1000000 -> "10000".
function fenToYuan(fen) {
  const whole = Math.trunc(fen / 100);
  const cents = fen % 100;
  return cents ? `${whole}.${String(cents).padStart(2, "0")}` : String(whole);
}

function formatYuan(fen) {
  return new Intl.NumberFormat(lang, { style: "currency", currency: "CNY" }).format(fen / 100);
}

// Today in China (programs run on China dates).
function chinaToday() {
  return new Intl.DateTimeFormat("en-CA", { timeZone: "Asia/Shanghai" }).format(new Date());
}

function splitIds(text) {
  return [...new Set(String(text).split(/[\s,，、;；]+/).filter(Boolean))];
}

function listText(items) {
  return items.join(t("common.separator"));
}

function requireFields(pairs) {
  const missing = pairs
    .filter(([value]) => value === "" || value === null)
    .map(([, key]) => t(key));
  if (missing.length) throw new FormProblem("common.required", { fields: listText(missing) });
}

function wholeNumber(text, fieldKey, low, high) {
  const value = String(text).trim();
  if (!/^\d{1,13}$/.test(value) || Number(value) < low || Number(value) > high) {
    throw new FormProblem("pform.bad-number", { field: t(fieldKey), low, high });
  }
  return Number(value);
}

function moneyField(text, fieldKey) {
  const fen = yuanToFen(text);
  if (fen === null || fen > MAX_FEN) {
    throw new FormProblem("pform.bad-money", { field: t(fieldKey) });
  }
  return fen;
}

function idList(text, fieldKey) {
  const ids = splitIds(text);
  const bad = ids.find((id) => !ID_RE.test(id));
  if (bad) throw new FormProblem("pform.bad-id-in-list", { field: t(fieldKey), id: bad });
  return ids;
}

function unionCodeField(text, fieldKey) {
  const code = String(text).trim();
  if (code && !ID_RE.test(code)) throw new FormProblem("pform.bad-union", { field: t(fieldKey) });
  return code || null;
}

// Checkboxes, one per value, after the group's label; the labels follow the language.
function fillCheckboxes(box, values, { name, testid, labelKey, checked = [] }) {
  const label = box.querySelector(".label");
  box.replaceChildren(
    label,
    ...values.map((value) =>
      h(
        "label",
        { class: "check" },
        h("input", {
          type: "checkbox",
          name,
          value,
          testid: `${testid}-${value}`,
          checked: checked.includes(value),
        }),
        h("span", { "data-i18n": labelKey(value), text: t(labelKey(value)) }),
      ),
    ),
  );
}

function checkedValues(box) {
  return [...box.querySelectorAll("input[type=checkbox]:checked")].map((i) => i.value);
}

function mayManage(owner) {
  return state.scopeCodes === null || state.scopeCodes.has(owner);
}

// -- programs: the list ------------------------------------------------------------------------

async function loadPrograms() {
  const seq = ++state.programsSeq;
  const union = state.unionCode;
  const params = new URLSearchParams({ union });
  const status = $("program-filter-status").value;
  if (status) params.set("status", status);
  try {
    const list = await api("GET", `/v1/programs?${params}`);
    if (seq !== state.programsSeq || union !== state.unionCode) return;
    state.programs = list;
    state.programsLoaded = true;
    renderPrograms();
  } catch (error) {
    if (seq === state.programsSeq) report(error);
  }
}

// The version in force now (the first one before it starts).
function currentVersion(program) {
  const now = Date.now();
  let found = program.versions[0];
  for (const v of program.versions) if (Date.parse(v.effective) <= now) found = v;
  return found;
}

function renderProgramFilters() {
  const all = { allLabel: t("filter.all") };
  fillSelect($("program-filter-status"), PROGRAM_STATUSES, (s) => t(`pstatus.${s}`), all);
}

function programBadge(program) {
  return h("span", {
    class: `badge ${program.status === "open" ? "active" : "closed"}`,
    testid: `program-status-${program.program}`,
    text: t(`pstatus.${program.status}`),
  });
}

function ownerCell(owner) {
  const name = state.unionNames.get(owner);
  const note = mayManage(owner) ? owner : `${owner} · ${t("programs.readonly-tag")}`;
  return h("span", { class: "union-cell" }, name ?? "", h("small", { class: "mono", text: note }));
}

function renderPrograms() {
  const rows = state.programs.map((p) => {
    const rules = currentVersion(p).rules;
    return h(
      "tr",
      {
        testid: `program-row-${p.program}`,
        class: p.program === state.program?.program ? "highlight" : null,
      },
      h(
        "td",
        { "data-label": t("programs.col-id") },
        h("button", {
          type: "button",
          class: "link-button mono",
          testid: `program-open-${p.program}`,
          "aria-label": t("programs.open", { id: p.program }),
          text: p.program,
          onclick: () => openProgram(p.program),
        }),
      ),
      h("td", { "data-label": t("programs.col-name"), text: p.name }),
      h("td", { "data-label": t("programs.col-owner") }, ownerCell(p.owner)),
      h("td", { "data-label": t("programs.col-kind"), text: t(`pkind.${rules.kind}`) }),
      h("td", {
        class: "nowrap",
        "data-label": t("programs.col-period"),
        text: t("rules.period-value", { from: rules.period.from, until: rules.period.until }),
      }),
      h("td", { "data-label": t("programs.col-status") }, programBadge(p)),
    );
  });
  $("programs-body").replaceChildren(...rows);
  show($("programs-empty"), state.programsLoaded && rows.length === 0);
}

// -- programs: one program and its versions ------------------------------------------------------

function openProgram(id) {
  const found = state.programs.find((p) => p.program === id);
  if (!found) return;
  state.program = found;
  renderPrograms();
  renderProgram();
  $("program-detail-name").focus();
}

function closeProgram() {
  state.program = null;
  renderProgram();
  if (state.programs.length) renderPrograms();
}

function renderProgram() {
  const p = state.program;
  show($("program-detail"), Boolean(p) && state.view === "programs");
  if (!p) return;
  $("program-detail-name").textContent = p.name;
  $("program-detail-id").textContent = p.program;
  $("program-detail-owner").textContent = unionLabel(p.owner);
  $("program-detail-status").replaceChildren(programBadge(p));
  $("program-detail-created").textContent = formatTime(p.created_at);
  show($("program-detail-closed-row"), Boolean(p.closed_at));
  $("program-detail-closed").textContent = formatTime(p.closed_at);
  const open = p.status === "open";
  const manage = open && mayManage(p.owner);
  show($("program-actions"), manage);
  show($("program-readonly"), open && !manage);
  const current = currentVersion(p);
  $("program-versions").replaceChildren(
    ...[...p.versions].reverse().map((v) => versionItem(v, current, p.owner)),
  );
}

function versionItem(version, current, owner) {
  let status = "past";
  if (Date.parse(version.effective) > Date.now()) status = "scheduled";
  else if (version === current) status = "current";
  return h(
    "li",
    { class: "version", testid: `version-${version.version}` },
    h(
      "div",
      { class: "version-head" },
      h("strong", { text: t("program.version", { version: version.version }) }),
      h("span", {
        class: `badge ${status === "current" ? "active" : status === "scheduled" ? "pending" : ""}`,
        testid: `version-status-${version.version}`,
        text: t(`vstatus.${status}`),
      }),
      h("span", {
        class: "version-when",
        text: t("program.effective", { when: formatTime(version.effective) }),
      }),
    ),
    rulesFacts(version.rules, owner, version.version),
  );
}

// A version's rules in words: who, when, how often, how much, where.
function rulesFacts(r, owner, version) {
  const items = [];
  const add = (key, name, value, wide = false) =>
    items.push(
      h(
        "div",
        { class: wide ? "wide" : null },
        h("dt", { text: t(key) }),
        h("dd", { testid: `rule-${name}-${version}` }, value),
      ),
    );
  const and = t("rules.and");
  add("rules.kind", "kind", t(`pkind.${r.kind}`));
  const { from, until } = r.period;
  add("rules.period", "period", t("rules.period-value", { from, until }));
  add("rules.quota", "quota", t(`rules.quota-${r.quota.per}`, { count: r.quota.count }));
  add("rules.unit-value", "unit-value", r.unit_value ? formatYuan(r.unit_value) : t("rules.free"));
  const most = t("rules.max-quantity-value", { count: r.max_quantity });
  add("rules.max-quantity", "max-quantity", most);
  add("rules.budget", "budget", r.budget === null ? t("rules.no-budget") : formatYuan(r.budget));

  const elig = r.eligibility ?? {};
  const who = [];
  if (elig.groups_any?.length) {
    who.push(t("rules.groups", { groups: listText(elig.groups_any.map((g) => t(`group.${g}`))) }));
  }
  if (elig.min_tenure_days !== null && elig.min_tenure_days !== undefined) {
    who.push(t("rules.tenure", { days: elig.min_tenure_days }));
  }
  if (elig.home_subtree) who.push(t("rules.home", { union: unionLabel(elig.home_subtree) }));
  add(
    "rules.eligibility",
    "eligibility",
    who.length ? who.join(and) : t("rules.everyone", { union: unionLabel(owner) }),
    true,
  );

  const allocations = Object.entries(r.allocations ?? {});
  if (allocations.length) {
    const allocated = allocations.reduce((sum, [, fen]) => sum + fen, 0);
    add(
      "rules.allocations",
      "allocations",
      h(
        "ul",
        { class: "plain" },
        ...allocations.map(([code, fen]) => {
          const text = t("rules.allocation", { union: unionLabel(code), amount: formatYuan(fen) });
          return h("li", { text });
        }),
        r.budget === null
          ? null
          : h("li", {
              text: t("rules.unallocated", {
                union: unionLabel(owner),
                amount: formatYuan(r.budget - allocated),
              }),
            }),
      ),
      true,
    );
  } else {
    add("rules.allocations", "allocations", t("rules.no-allocations"), true);
  }

  const where = r.where ?? {};
  const places = [];
  if (where.station_kinds?.length) {
    const kinds = listText(where.station_kinds.map((k) => t(`skind.${k}`)));
    places.push(t("rules.where-kinds", { kinds }));
  }
  if (where.stations?.length) {
    places.push(t("rules.where-stations", { ids: listText(where.stations) }));
  }
  if (!places.length) places.push(t("rules.where-any"));
  places.push(t("rules.where-subtree", { union: unionLabel(where.subtree ?? owner) }));
  add("rules.where", "where", places.join(and), true);

  const off = r.offline ?? {};
  add(
    "rules.offline",
    "offline",
    off.allowed
      ? t("rules.offline-yes", {
          count: off.per_member_per_day,
          amount: formatYuan(off.station_daily_value ?? 0),
        })
      : t("rules.offline-no"),
    true,
  );
  add(
    "rules.no-stack",
    "no-stack",
    r.no_stack_with?.length
      ? t("rules.no-stack-value", { ids: listText(r.no_stack_with) })
      : t("rules.stacks"),
    true,
  );
  return h("dl", { class: "facts rules" }, ...items);
}

// -- programs: the rules form (a new program, or its next version) -------------------------------

let allocSerial = 0;

function allocationRow(union = "", amount = "") {
  const i = allocSerial++;
  const row = h(
    "div",
    { class: "alloc-row", testid: `alloc-row-${i}` },
    h(
      "div",
      { class: "field" },
      h("label", {
        for: `alloc-union-${i}`,
        "data-i18n": "pform.alloc-union",
        text: t("pform.alloc-union"),
      }),
      h("input", {
        id: `alloc-union-${i}`,
        testid: `alloc-union-${i}`,
        class: "alloc-union",
        list: "union-options",
        autocomplete: "off",
        spellcheck: "false",
        maxlength: "32",
        value: union,
      }),
    ),
    h(
      "div",
      { class: "field" },
      h("label", {
        for: `alloc-amount-${i}`,
        "data-i18n": "pform.alloc-amount",
        text: t("pform.alloc-amount"),
      }),
      h("input", {
        id: `alloc-amount-${i}`,
        testid: `alloc-amount-${i}`,
        class: "alloc-amount",
        inputmode: "decimal",
        autocomplete: "off",
        maxlength: "16",
        value: amount,
      }),
    ),
    h("button", {
      type: "button",
      class: "button small",
      testid: `alloc-remove-${i}`,
      "data-i18n": "pform.alloc-remove",
      text: t("pform.alloc-remove"),
      onclick: () => row.remove(),
    }),
  );
  return row;
}

function addAllocation() {
  const row = allocationRow();
  $("program-allocations").append(row);
  row.querySelector("input").focus();
}

function syncProgramForm() {
  const kind = $("program-form").querySelector("input[name=kind]:checked")?.value;
  const targeted = kind === "targeted";
  show($("program-eligibility"), targeted);
  const offline = $("program-offline").checked;
  for (const input of $("program-offline-limits").querySelectorAll("input")) {
    input.disabled = !offline;
  }
}

function fillProgramForm(rules) {
  const r = rules ?? {};
  const elig = r.eligibility ?? {};
  $("program-name").value = r.name ?? "";
  for (const radio of $("program-form").querySelectorAll("input[name=kind]")) {
    radio.checked = radio.value === (r.kind ?? "universal");
  }
  fillCheckboxes($("program-groups"), GROUPS, {
    name: "groups",
    testid: "program-group",
    labelKey: (g) => `group.${g}`,
    checked: elig.groups_any ?? [],
  });
  $("program-tenure").value = elig.min_tenure_days ?? "";
  $("program-home").value = elig.home_subtree ?? "";
  $("program-from").value = r.period?.from ?? chinaToday();
  $("program-until").value = r.period?.until ?? "";
  $("program-quota-count").value = r.quota?.count ?? 1;
  $("program-quota-per").value = r.quota?.per ?? "program";
  $("program-unit-value").value = r.unit_value === undefined ? "" : fenToYuan(r.unit_value);
  $("program-max-quantity").value = r.max_quantity ?? 1;
  const budget = r.budget ?? null;
  $("program-budget").value = budget === null ? "" : fenToYuan(budget);
  allocSerial = 0;
  $("program-allocations").replaceChildren(
    ...Object.entries(r.allocations ?? {}).map(([code, fen]) =>
      allocationRow(code, fenToYuan(fen)),
    ),
  );
  fillCheckboxes($("program-station-kinds"), STATION_KINDS, {
    name: "station_kinds",
    testid: "program-skind",
    labelKey: (k) => `skind.${k}`,
    checked: r.where?.station_kinds ?? [],
  });
  $("program-stations").value = (r.where?.stations ?? []).join(" ");
  $("program-where-subtree").value = r.where?.subtree ?? "";
  $("program-offline").checked = Boolean(r.offline?.allowed);
  $("program-offline-per-day").value = r.offline?.per_member_per_day || 1;
  $("program-offline-daily").value = fenToYuan(r.offline?.station_daily_value ?? 0);
  $("program-no-stack").value = (r.no_stack_with ?? []).join(" ");
  $("program-effective").value = "";
  syncProgramForm();
}

function renderProgramForm() {
  const f = state.programForm;
  if (!f) return;
  const create = f.mode === "create";
  $("program-form-title").textContent = create
    ? t("pform.title-create")
    : t("pform.title-revise", { id: f.program.program });
  $("program-submit").textContent = create ? t("pform.submit-create") : t("pform.submit-revise");
}

function openProgramForm(mode, program = null) {
  state.programForm = { mode, program };
  const create = mode === "create";
  $("program-form").reset();
  show($("program-id-field"), create);
  show($("program-owner-field"), create);
  show($("program-effective-group"), !create);
  $("program-id").value = "";
  $("program-owner").value = create ? state.unionCode ?? session.me.scope : program.owner;
  fillProgramForm(create ? null : program.versions[program.versions.length - 1].rules);
  renderProgramForm();
  dropDialogError($("program-dialog"));
  $("program-dialog").showModal();
  (create ? $("program-id") : $("program-name")).focus();
}

// The form as a rules document (ledger/programs.py), or a FormProblem in plain words.
function readProgramForm() {
  const create = state.programForm.mode === "create";
  const program = $("program-id").value.trim();
  const owner = $("program-owner").value.trim();
  const name = $("program-name").value.trim();
  const from = $("program-from").value;
  const until = $("program-until").value;
  const count = $("program-quota-count").value.trim();
  const unit = $("program-unit-value").value.trim();
  requireFields([
    ...(create ? [[program, "field.program"], [owner, "field.owner"]] : []),
    [name, "field.rule-name"],
    [from, "field.from"],
    [until, "field.until-day"],
    [count, "field.quota-count"],
    [unit, "field.unit-value"],
  ]);
  if (create && !ID_RE.test(program)) throw new FormProblem("why.program-id");
  if (create && !ID_RE.test(owner)) {
    throw new FormProblem("pform.bad-union", { field: t("field.owner") });
  }
  if (until < from) throw new FormProblem("why.period-order");
  const ownerCode = create ? owner : state.programForm.program.owner;

  const kind = $("program-form").querySelector("input[name=kind]:checked")?.value ?? "universal";
  let eligibility = { groups_any: [], min_tenure_days: null, home_subtree: null };
  if (kind === "targeted") {
    const tenure = $("program-tenure").value.trim();
    eligibility = {
      groups_any: checkedValues($("program-groups")),
      min_tenure_days: tenure === "" ? null : wholeNumber(tenure, "field.tenure", 0, 36500),
      home_subtree: unionCodeField($("program-home").value, "field.home"),
    };
    const { groups_any: groups, min_tenure_days: days, home_subtree: home } = eligibility;
    if (!groups.length && !days && !home) throw new FormProblem("why.targeted-needs-rule");
  }

  const budgetText = $("program-budget").value.trim();
  const budget = budgetText === "" ? null : moneyField(budgetText, "field.budget");
  const allocations = {};
  for (const row of $("program-allocations").querySelectorAll(".alloc-row")) {
    const code = row.querySelector(".alloc-union").value.trim();
    const amount = row.querySelector(".alloc-amount").value.trim();
    if (!code && !amount) continue; // an empty row: ignored
    if (!code || !amount) throw new FormProblem("pform.alloc-incomplete");
    if (!ID_RE.test(code)) {
      throw new FormProblem("pform.bad-union", { field: t("field.allocations") });
    }
    if (code in allocations) {
      throw new FormProblem("pform.alloc-twice", { union: unionLabel(code) });
    }
    if (code === ownerCode) throw new FormProblem("why.allocation-to-owner");
    allocations[code] = moneyField(amount, "field.allocations");
  }
  const allocated = Object.values(allocations).reduce((a, b) => a + b, 0);
  if (allocated && budget === null) throw new FormProblem("why.allocations-need-budget");
  if (budget !== null && allocated > budget) {
    throw new FormProblem("pform.alloc-exceed", {
      allocated: formatYuan(allocated),
      budget: formatYuan(budget),
    });
  }

  const offline = $("program-offline").checked;
  let perDay = 0;
  let daily = 0;
  if (offline) {
    const perDayText = $("program-offline-per-day").value.trim();
    requireFields([[perDayText, "field.offline-per-day"]]);
    perDay = wholeNumber(perDayText, "field.offline-per-day", 1, MAX_COUNT);
    const dailyText = $("program-offline-daily").value.trim();
    daily = dailyText === "" ? 0 : moneyField(dailyText, "field.offline-daily");
  }
  const noStack = idList($("program-no-stack").value, "field.no-stack");
  const self = create ? program : state.programForm.program.program;
  if (noStack.includes(self)) throw new FormProblem("why.self-stack");

  let effective = null;
  const when = $("program-effective").value;
  if (!create && when) {
    const at = new Date(when);
    if (Number.isNaN(at.getTime())) throw new FormProblem("why.effective-past");
    if (at.getTime() < Date.now() - 60_000) throw new FormProblem("why.effective-past");
    effective = at.toISOString();
  }

  const rules = {
    name,
    kind,
    eligibility,
    period: { from, until },
    quota: {
      count: wholeNumber(count, "field.quota-count", 1, MAX_COUNT),
      per: $("program-quota-per").value,
    },
    unit_value: moneyField(unit, "field.unit-value"),
    max_quantity: wholeNumber(
      $("program-max-quantity").value.trim() || "1",
      "field.max-quantity",
      1,
      MAX_COUNT,
    ),
    budget,
    allocations,
    where: {
      stations: idList($("program-stations").value, "field.stations"),
      station_kinds: checkedValues($("program-station-kinds")),
      subtree: unionCodeField($("program-where-subtree").value, "field.where-subtree"),
    },
    offline: { allowed: offline, per_member_per_day: perDay, station_daily_value: daily },
    no_stack_with: noStack,
  };
  return { program, owner, rules, effective };
}

async function submitProgram(event) {
  event.preventDefault();
  let read;
  try {
    read = readProgramForm();
  } catch (error) {
    if (!(error instanceof FormProblem)) throw error;
    showError(error.key, error.params);
    return;
  }
  const { mode, program } = state.programForm;
  await busy($("program-submit"), async () => {
    try {
      let saved;
      if (mode === "create") {
        const body = { program: read.program, owner: read.owner, rules: read.rules };
        saved = await api("POST", "/v1/programs", { body });
      } else {
        const body = { rules: read.rules, effective: read.effective };
        saved = await api("POST", `/v1/programs/${enc(program.program)}/versions`, { body });
      }
      $("program-dialog").close();
      const latest = saved.versions[saved.versions.length - 1];
      showNotice(mode === "create" ? "programs.created" : "program.revised", {
        id: saved.program,
        version: latest.version,
      });
      state.program = saved;
      renderProgram();
      $("program-detail-name").focus();
      await loadPrograms();
    } catch (error) {
      report(error);
    }
  });
}

async function finishProgram() {
  const p = state.program;
  if (!p) return;
  if (!(await confirmAction("program-close", { id: p.program, name: p.name }))) return;
  await busy($("program-close"), async () => {
    try {
      await api("POST", `/v1/programs/${enc(p.program)}/close`);
      showNotice("program.closed-done", { id: p.program });
      state.program = await api("GET", `/v1/programs/${enc(p.program)}`);
      renderProgram();
      await loadPrograms();
    } catch (error) {
      report(error);
    }
  });
}

// -- redemptions: the list, and reversing one ------------------------------------------------

// A redemption as listed: the receipt (the entry's proof bundle) is not needed here.
function slimRedemption(row) {
  const { receipt: _receipt, ...rest } = row;
  return rest;
}

async function loadRedemptions({ more = false } = {}) {
  const seq = ++state.redemptionsSeq;
  const union = state.unionCode;
  const params = new URLSearchParams({ union, limit: String(REDEMPTION_PAGE) });
  if (more && state.redemptionsNext !== null) params.set("before", String(state.redemptionsNext));
  try {
    const page = await api("GET", `/v1/redemptions?${params}`);
    if (seq !== state.redemptionsSeq || union !== state.unionCode) return;
    const items = page.items.map(slimRedemption);
    state.redemptions = more ? [...state.redemptions, ...items] : items;
    state.redemptionsNext = page.next ?? null;
    state.redemptionsLoaded = true;
    renderRedemptions();
  } catch (error) {
    if (seq === state.redemptionsSeq) report(error);
  }
}

// One redemption read again (after reversing it, or when the server says it is reversed).
async function refreshRedemption(id) {
  try {
    const fresh = slimRedemption(await api("GET", `/v1/redemptions/${id}`));
    state.redemptions = state.redemptions.map((r) => (r.redemption === id ? fresh : r));
    if (state.reversing?.redemption === id) state.reversing = fresh;
    renderRedemptions();
  } catch (error) {
    report(error);
  }
}

function amountText(row) {
  const quantity = formatCount(row.quantity);
  if (!row.value) return t("redemptions.amount-free", { quantity });
  return t("redemptions.amount", { quantity, value: formatYuan(row.value) });
}

function redemptionBadge(row) {
  const id = row.redemption;
  if (row.reversed_at) {
    return h("span", {
      class: "badge reversed",
      testid: `redemption-state-${id}`,
      title: row.reversed_at,
      text: t("redemptions.reversed-at", { time: formatTime(row.reversed_at) }),
    });
  }
  return h("span", {
    class: "badge active",
    testid: `redemption-state-${id}`,
    text: t("redemptions.recorded"),
  });
}

function renderRedemptions() {
  const rows = state.redemptions.map((r) => {
    const id = r.redemption;
    const actions = [];
    if (!r.reversed_at && r.can_reverse === false) {
      // The server says this official may not (they see it through the member's home union).
      actions.push(
        h("small", {
          class: "past-window",
          testid: `not-yours-${id}`,
          text: t("redemptions.not-yours"),
        }),
      );
    } else if (!r.reversed_at) {
      actions.push(
        h("button", {
          type: "button",
          class: "button small danger",
          testid: `reverse-${id}`,
          "aria-label": t("redemptions.reverse-row", { id }),
          text: t("redemptions.reverse"),
          onclick: () => openReverse(id),
        }),
      );
      if (pastWindow(r)) {
        actions.push(
          h("small", {
            class: "past-window",
            testid: `past-window-${id}`,
            text: t("redemptions.past-window"),
          }),
        );
      }
    }
    return h(
      "tr",
      {
        testid: `redemption-row-${id}`,
        "data-reversed": r.reversed_at ? "true" : "false",
        class: id === state.highlightRedemption ? "highlight" : null,
      },
      h("td", {
        class: "nowrap",
        "data-label": t("redemptions.col-time"),
        title: r.at,
        text: formatTime(r.at),
      }),
      h(
        "td",
        { "data-label": t("redemptions.col-program") },
        h("span", { class: "union-cell" }, r.program_name,
          h("small", { class: "mono", text: `${r.program} · #${id}` })),
      ),
      h("td", {
        class: "mono nowrap",
        "data-label": t("redemptions.col-station"),
        text: r.station,
      }),
      h("td", {
        class: "nowrap",
        "data-label": t("redemptions.col-amount"),
        text: amountText(r),
      }),
      h("td", {
        class: "mono nowrap",
        "data-label": t("redemptions.col-member"),
        testid: `redemption-member-${id}`,
        text: r.member_id,
      }),
      h("td", { "data-label": t("redemptions.col-state") }, redemptionBadge(r)),
      h("td", { class: "row-actions", "data-label": t("redemptions.col-actions") }, actions),
    );
  });
  $("redemptions-body").replaceChildren(...rows);
  show($("redemptions-empty"), state.redemptionsLoaded && rows.length === 0);
  show($("redemptions-more"), state.redemptionsNext !== null);
}

function renderReverse() {
  $("reverse-reasons").replaceChildren(
    ...REVERSE_REASONS.map((key) => h("option", { value: t(key) })),
  );
  const row = state.reversing;
  if (!row) return;
  $("reverse-text").textContent = t("reverse.text", {
    id: row.redemption,
    program: row.program_name,
    station: row.station,
    amount: amountText(row),
    time: formatTime(row.at),
    member: row.member_id,
  });
  const required = pastWindow(row);
  const input = $("reverse-reason");
  input.required = required;
  input.setAttribute("aria-required", required ? "true" : "false");
  const label = required ? "reverse.reason-required" : "reverse.reason";
  $("reverse-reason-label").textContent = t(label);
  $("reverse-reason-hint").textContent = t(
    required ? "reverse.reason-hint-required" : "reverse.reason-hint",
  );
}

function openReverse(id) {
  const row = state.redemptions.find((r) => r.redemption === id);
  if (!row || row.reversed_at) return;
  state.reversing = row;
  $("reverse-form").reset();
  renderReverse();
  dropDialogError($("reverse-dialog"));
  $("reverse-dialog").showModal();
  $("reverse-reason").focus();
}

// Past the reversal window (a reason is then required): as the server said of the row when it
// was read (`window_ends`), or when it refused a reversal without a reason.
function pastWindow(r) {
  if (state.pastWindow.has(r.redemption)) return true;
  return Boolean(r.window_ends) && Date.parse(r.window_ends) <= Date.now();
}

async function submitReverse(event) {
  event.preventDefault();
  const row = state.reversing;
  if (!row) return;
  const id = row.redemption;
  const reason = $("reverse-reason").value.trim();
  if (!reason && pastWindow(row)) {
    showError("common.required", { fields: t("field.reason") });
    $("reverse-reason").focus();
    return;
  }
  await busy($("reverse-submit"), async () => {
    try {
      await api("POST", `/v1/redemptions/${id}/reverse`, { body: { reason: reason || null } });
      $("reverse-dialog").close();
      state.highlightRedemption = id;
      showNotice("reverse.done", { id });
      await refreshRedemption(id);
    } catch (error) {
      const slug = error instanceof ApiError ? problemSlug(error.problem) : null;
      if (slug === "reversal-window-closed") {
        // Past the window: from now on this one needs a reason (the server's rule).
        state.pastWindow.add(id);
        renderReverse();
        renderRedemptions();
      }
      report(error);
      if (slug === "reversal-window-closed") $("reverse-reason").focus();
      if (slug === "already-reversed") await refreshRedemption(id);
    }
  });
}

// -- stations: the list ------------------------------------------------------------------------

async function loadStations({ more = false } = {}) {
  const seq = ++state.stationsSeq;
  const union = state.unionCode;
  const params = new URLSearchParams({ union, limit: String(STATION_PAGE) });
  const kind = $("station-filter-kind").value;
  const status = $("station-filter-status").value;
  if (kind) params.set("kind", kind);
  if (status) params.set("status", status);
  if (more && state.stationsNext) params.set("after", state.stationsNext);
  try {
    const page = await api("GET", `/v1/stations?${params}`);
    if (seq !== state.stationsSeq || union !== state.unionCode) return;
    state.stations = more ? [...state.stations, ...page.items] : page.items;
    state.stationsNext = page.next;
    state.stationsLoaded = true;
    renderStations();
  } catch (error) {
    if (seq === state.stationsSeq) report(error);
  }
}

function renderStationFilters() {
  const all = { allLabel: t("filter.all") };
  fillSelect($("station-filter-kind"), STATION_KINDS, (k) => t(`skind.${k}`), all);
  fillSelect($("station-filter-status"), STATION_STATUSES, (s) => t(`sstatus.${s}`), all);
  fillSelect($("station-kind"), STATION_KINDS, (k) => t(`skind.${k}`));
}

function spansText(spans) {
  if (!spans.length) return t("hours.closed");
  return listText(spans.map(([start, end]) => `${start}–${end}`));
}

// "周一至周五 08:00–20:00；周六 09:00–12:00、13:00–17:00；周日 休息"
function hoursSummary(hours) {
  if (!hours) return t("hours.always");
  const runs = [];
  for (const day of DAYS) {
    const spans = hours[day] ?? [];
    const key = JSON.stringify(spans);
    const last = runs[runs.length - 1];
    if (last && last.key === key) last.to = day;
    else runs.push({ key, from: day, to: day, spans });
  }
  return runs
    .map((run) => {
      const days =
        run.from === run.to
          ? t(`day.${run.from}`)
          : t("hours.day-range", { from: t(`day.${run.from}`), to: t(`day.${run.to}`) });
      return `${days} ${spansText(run.spans)}`;
    })
    .join(t("hours.separator"));
}

function stationBadge(row, testid) {
  return h("span", {
    class: `badge ${row.status}`,
    testid,
    text: t(`sstatus.${row.status}`),
  });
}

function renderStations() {
  const rows = state.stations.map((s) =>
    h(
      "tr",
      {
        testid: `station-row-${s.station_id}`,
        class: s.station_id === state.station?.row.station_id ? "highlight" : null,
      },
      h(
        "td",
        { "data-label": t("stations.col-id") },
        h("button", {
          type: "button",
          class: "link-button mono",
          testid: `station-open-${s.station_id}`,
          "aria-label": t("stations.open", { id: s.station_id }),
          text: s.station_id,
          onclick: () => loadStation(s.station_id, { focus: true }),
        }),
      ),
      h("td", { "data-label": t("stations.col-name"), text: s.name }),
      h("td", { "data-label": t("stations.col-kind"), text: t(`skind.${s.kind}`) }),
      h(
        "td",
        { "data-label": t("stations.col-union") },
        h("span", { class: "union-cell" }, state.unionNames.get(s.union) ?? "",
          h("small", { class: "mono", text: s.union })),
      ),
      h("td", {
        "data-label": t("stations.col-hours"),
        testid: `station-hours-${s.station_id}`,
        text: hoursSummary(s.hours),
      }),
      h(
        "td",
        { "data-label": t("stations.col-status") },
        stationBadge(s, `station-status-${s.station_id}`),
      ),
    ),
  );
  $("stations-body").replaceChildren(...rows);
  show($("stations-empty"), state.stationsLoaded && rows.length === 0);
  show($("stations-more"), Boolean(state.stationsNext));
}

// -- stations: one station and its device keys --------------------------------------------------

async function loadStation(id, { focus = false } = {}) {
  const seq = ++state.stationSeq;
  const base = `/v1/stations/${enc(id)}`;
  try {
    const [row, keyRows] = await Promise.all([api("GET", base), api("GET", `${base}/keys`)]);
    if (seq !== state.stationSeq) return;
    state.station = { row, keys: keyRows };
    renderStation();
    renderStations();
    if (focus) $("station-detail-name").focus();
  } catch (error) {
    if (seq === state.stationSeq) report(error);
  }
}

function closeStation() {
  state.stationSeq += 1;
  state.station = null;
  renderStation();
  if (state.stations.length) renderStations();
}

function canGenerateKeys() {
  return Boolean(window.isSecureContext && globalThis.crypto?.subtle?.generateKey);
}

function renderStation() {
  const data = state.station;
  show($("station-detail"), Boolean(data) && state.view === "stations");
  if (!data) return;
  const { row } = data;
  const active = row.status === "active";
  $("station-detail-name").textContent = row.name;
  $("station-detail-id").textContent = row.station_id;
  $("station-detail-kind").textContent = t(`skind.${row.kind}`);
  $("station-detail-union").textContent = unionLabel(row.union);
  $("station-detail-status").replaceChildren(stationBadge(row, "station-detail-status-badge"));
  $("station-detail-location").textContent = row.location || t("common.none");
  $("station-detail-coordinates").textContent =
    row.lat === null ? t("common.none") : `${row.lat}, ${row.lon}`;
  $("station-detail-daily-ceiling").textContent =
    row.daily_ceiling === null || row.daily_ceiling === undefined
      ? t("station.daily-ceiling-none")
      : formatYuan(row.daily_ceiling);
  $("station-detail-updated").textContent = formatTime(row.closed_at ?? row.updated_at);
  $("station-detail-hours").replaceChildren(
    ...(row.hours === null
      ? [h("div", { class: "wide" }, h("dt", { text: t("hours.always") }), h("dd", {}))]
      : DAYS.map((day) =>
          h(
            "div",
            {},
            h("dt", { text: t(`day.${day}`) }),
            h("dd", { testid: `station-day-${day}`, text: spansText(row.hours[day] ?? []) }),
          ),
        )),
  );
  show($("station-actions"), active);
  show($("key-register"), active);
  const generate = canGenerateKeys();
  $("key-generate").disabled = !generate;
  show($("key-generate-unavailable"), !generate);

  $("station-keys-body").replaceChildren(
    ...data.keys.map((k) => {
      const revoked = k.revoked_at !== null;
      return h(
        "tr",
        { testid: `key-row-${k.kid}` },
        h("td", { class: "mono kid", "data-label": t("keys.col-kid"), text: k.kid }),
        h("td", {
          class: "nowrap",
          "data-label": t("keys.col-registered"),
          text: formatTime(k.registered_at),
        }),
        h(
          "td",
          { "data-label": t("keys.col-status"), testid: `key-status-${k.kid}` },
          h("span", {
            class: `badge ${revoked ? "closed" : "active"}`,
            text: t(revoked ? "keys.revoked-badge" : "keys.valid"),
          }),
          revoked
            ? h("small", {
                class: "key-why",
                text: t("keys.revoked-at", {
                  when: formatTime(k.revoked_at),
                  reason: k.revoke_reason ?? "",
                }),
              })
            : null,
        ),
        h(
          "td",
          { "data-label": t("keys.col-actions") },
          !revoked && active
            ? h("button", {
                type: "button",
                class: "button small danger",
                testid: `key-revoke-${k.kid}`,
                "aria-label": t("keys.revoke-label", { kid: k.kid }),
                text: t("keys.revoke"),
                onclick: () => openRevoke(k.kid),
              })
            : null,
        ),
      );
    }),
  );
  show($("station-keys-empty"), data.keys.length === 0);
}

// -- stations: the form (register, or change name, place, hours and offline ceiling) -----------

const START_RE = /^(?:[01][0-9]|2[0-3]):[0-5][0-9]$/;
const END_RE = /^(?:(?:[01][0-9]|2[0-3]):[0-5][0-9]|24:00)$/;
const DEFAULT_SPAN = ["08:00", "20:00"];

function minutes(hhmm) {
  return Number(hhmm.slice(0, 2)) * 60 + Number(hhmm.slice(3));
}

function normaliseTime(text) {
  const match = String(text).trim().replace("：", ":").match(/^(\d{1,2}):(\d{2})$/);
  return match ? `${match[1].padStart(2, "0")}:${match[2]}` : null;
}

// The editor's intervals as typed: { mon: [[start, end], ...], ... }.
function readHoursRaw() {
  const raw = {};
  for (const day of DAYS) {
    raw[day] = [...$("hours-days").querySelectorAll(`[data-day="${day}"] .span-edit`)].map((el) => [
      el.querySelector(".span-start").value,
      el.querySelector(".span-end").value,
    ]);
  }
  return raw;
}

function renderHoursEditor(raw) {
  $("hours-days").replaceChildren(...DAYS.map((day) => dayEditor(day, raw[day] ?? [])));
}

function dayEditor(day, spans) {
  const dayName = t(`day.${day}`);
  const edit = (change, focusIndex = null) => {
    const raw = readHoursRaw();
    change(raw[day]);
    renderHoursEditor(raw);
    if (focusIndex !== null) $(`hours-${day}-start-${focusIndex}`)?.focus();
    else $(`hours-${day}-add`)?.focus();
  };
  return h(
    "div",
    { class: "day-row", "data-day": day, testid: `hours-${day}` },
    h("span", { class: "day-name", text: dayName }),
    h(
      "div",
      { class: "spans" },
      spans.length
        ? spans.map(([start, end], i) =>
            h(
              "span",
              { class: "span-edit" },
              h("input", {
                id: `hours-${day}-start-${i}`,
                class: "span-start",
                testid: `hours-${day}-start-${i}`,
                value: start,
                inputmode: "numeric",
                maxlength: "5",
                placeholder: "08:00",
                autocomplete: "off",
                "aria-label": t("sform.span-start", { day: dayName, n: i + 1 }),
              }),
              h("span", { "aria-hidden": "true", text: "–" }),
              h("input", {
                class: "span-end",
                testid: `hours-${day}-end-${i}`,
                value: end,
                inputmode: "numeric",
                maxlength: "5",
                placeholder: "20:00",
                autocomplete: "off",
                "aria-label": t("sform.span-end", { day: dayName, n: i + 1 }),
              }),
              h("button", {
                type: "button",
                class: "button small",
                testid: `hours-${day}-remove-${i}`,
                "aria-label": t("sform.span-remove", { day: dayName, n: i + 1 }),
                text: "×",
                onclick: () => edit((list) => list.splice(i, 1)),
              }),
            ),
          )
        : h("span", { class: "closed-day", text: t("hours.closed") }),
    ),
    h("button", {
      type: "button",
      class: "button small",
      id: `hours-${day}-add`,
      testid: `hours-${day}-add`,
      "aria-label": t("sform.span-add-label", { day: dayName }),
      text: t("sform.span-add"),
      disabled: spans.length >= MAX_INTERVALS,
      onclick: () =>
        edit((list) => list.push(list.length ? ["", ""] : [...DEFAULT_SPAN]), spans.length),
    }),
  );
}

function copyMondayToWeekdays() {
  const raw = readHoursRaw();
  for (const day of DAYS.slice(1, 5)) raw[day] = raw.mon.map((span) => [...span]);
  renderHoursEditor(raw);
}

function syncStationForm() {
  show($("hours-editor"), !$("station-always-open").checked);
}

// The schedule of the editor (null: always open), or a FormProblem in plain words.
function readHours() {
  if ($("station-always-open").checked) return null;
  const raw = readHoursRaw();
  const hours = {};
  for (const day of DAYS) {
    const dayName = t(`day.${day}`);
    const spans = [];
    for (const [a, b] of raw[day]) {
      if (!a.trim() && !b.trim()) continue; // an empty interval: ignored
      const start = normaliseTime(a);
      const end = normaliseTime(b);
      if (!start || !START_RE.test(start)) {
        throw new FormProblem("sform.bad-start", { day: dayName, time: a.trim() });
      }
      if (!end || !END_RE.test(end)) {
        throw new FormProblem("sform.bad-end", { day: dayName, time: b.trim() });
      }
      if (minutes(end) <= minutes(start)) {
        throw new FormProblem("sform.span-backwards", { day: dayName, start, end });
      }
      spans.push([start, end]);
    }
    spans.sort((x, y) => minutes(x[0]) - minutes(y[0]));
    for (let i = 1; i < spans.length; i += 1) {
      if (minutes(spans[i][0]) <= minutes(spans[i - 1][1])) {
        throw new FormProblem("sform.span-overlap", { day: dayName });
      }
    }
    hours[day] = spans;
  }
  return hours;
}

function readCoordinates() {
  const lat = $("station-lat").value.trim();
  const lon = $("station-lon").value.trim();
  if (!lat && !lon) return [null, null];
  if (!lat || !lon) throw new FormProblem("sform.coordinates-pair");
  for (const [value, limit] of [[lat, 90], [lon, 180]]) {
    if (!DEGREES_RE.test(value) || Math.abs(Number(value)) > limit) {
      throw new FormProblem("why.coordinates");
    }
  }
  return [lat, lon];
}

// The offline daily ceiling typed in yuan, as fen (null: empty, no ceiling).
function readDailyCeiling() {
  const text = $("station-daily-ceiling").value.trim();
  return text ? moneyField(text, "field.daily_ceiling") : null;
}

function readStationForm() {
  const { mode, row } = state.stationForm;
  const name = $("station-name").value.trim();
  const location = $("station-location").value.trim();
  if (mode === "create") {
    const stationId = $("station-id").value.trim();
    const union = $("station-union").value.trim();
    requireFields([
      [stationId, "field.station_id"],
      [name, "field.station-name"],
      [union, "field.union"],
    ]);
    if (!ID_RE.test(stationId)) throw new FormProblem("why.station-id");
    const [lat, lon] = readCoordinates();
    const dailyCeiling = readDailyCeiling();
    return {
      station_id: stationId,
      name,
      kind: $("station-kind").value,
      union,
      location,
      lat,
      lon,
      hours: readHours(),
      daily_ceiling: dailyCeiling,
    };
  }
  requireFields([[name, "field.station-name"]]);
  const [lat, lon] = readCoordinates();
  const hours = readHours();
  const dailyCeiling = readDailyCeiling();
  const changes = {};
  if (name !== row.name) changes.name = name;
  if (location !== row.location) changes.location = location;
  if (lat !== row.lat || lon !== row.lon) Object.assign(changes, { lat, lon });
  if (JSON.stringify(hours) !== JSON.stringify(row.hours)) changes.hours = hours;
  if (dailyCeiling !== (row.daily_ceiling ?? null)) changes.daily_ceiling = dailyCeiling;
  return changes;
}

function renderStationForm() {
  const f = state.stationForm;
  if (!f) return;
  const create = f.mode === "create";
  $("station-form-title").textContent = create
    ? t("sform.title-create")
    : t("sform.title-edit", { name: f.row.name });
  $("station-submit").textContent = create ? t("sform.submit-create") : t("sform.submit-edit");
}

function openStationForm(mode) {
  const row = mode === "edit" ? state.station?.row : null;
  if (mode === "edit" && !row) return;
  state.stationForm = { mode, row };
  $("station-form").reset();
  renderStationFilters();
  $("station-id").value = row?.station_id ?? "";
  $("station-kind").value = row?.kind ?? "union_station";
  $("station-union").value = row?.union ?? state.unionCode ?? session.me.scope;
  for (const id of ["station-id", "station-kind", "station-union"]) $(id).disabled = Boolean(row);
  $("station-name").value = row?.name ?? "";
  $("station-location").value = row?.location ?? "";
  $("station-lat").value = row?.lat ?? "";
  $("station-lon").value = row?.lon ?? "";
  const ceiling = row?.daily_ceiling ?? null;
  $("station-daily-ceiling").value = ceiling === null ? "" : fenToYuan(ceiling);
  $("station-always-open").checked = Boolean(row) && row.hours === null;
  const everyDay = Object.fromEntries(DAYS.map((day) => [day, [[...DEFAULT_SPAN]]]));
  renderHoursEditor(row?.hours ?? everyDay);
  syncStationForm();
  renderStationForm();
  dropDialogError($("station-dialog"));
  $("station-dialog").showModal();
  (row ? $("station-name") : $("station-id")).focus();
}

async function submitStation(event) {
  event.preventDefault();
  const { mode, row } = state.stationForm;
  let body;
  try {
    body = readStationForm();
  } catch (error) {
    if (!(error instanceof FormProblem)) throw error;
    showError(error.key, error.params);
    return;
  }
  if (mode === "edit" && Object.keys(body).length === 0) {
    showError("sform.no-changes");
    return;
  }
  await busy($("station-submit"), async () => {
    try {
      const saved =
        mode === "create"
          ? await api("POST", "/v1/stations", { body })
          : await api("PATCH", `/v1/stations/${enc(row.station_id)}`, { body });
      $("station-dialog").close();
      showNotice(mode === "create" ? "stations.registered" : "stations.updated", {
        id: saved.station_id,
        name: saved.name,
      });
      await Promise.all([loadStation(saved.station_id, { focus: true }), loadStations()]);
    } catch (error) {
      report(error);
    }
  });
}

async function shutStation() {
  const row = state.station?.row;
  if (!row) return;
  if (!(await confirmAction("station-close", { id: row.station_id, name: row.name }))) return;
  await busy($("station-close"), async () => {
    try {
      await api("POST", `/v1/stations/${enc(row.station_id)}/close`);
      showNotice("station.closed-done", { id: row.station_id, name: row.name });
      await Promise.all([loadStation(row.station_id), loadStations()]);
    } catch (error) {
      report(error);
    }
  });
}

// -- stations: device keys ---------------------------------------------------------------------

async function registerKey(jwk, button) {
  const station = state.station.row.station_id;
  const key = await busy(button, () =>
    api("POST", `/v1/stations/${enc(station)}/keys`, { body: { jwk } }),
  );
  await loadStation(station);
  return key;
}

// A pasted public JWK: only kty, crv and x go to the server (a private key never does).
async function submitKey(event) {
  event.preventDefault();
  const box = $("key-jwk");
  const text = box.value.trim();
  if (!text) {
    showError("common.required", { fields: t("field.jwk") });
    return;
  }
  let jwk;
  try {
    jwk = JSON.parse(text);
  } catch {
    showError("keys.not-json");
    return;
  }
  if (!jwk || typeof jwk !== "object" || Array.isArray(jwk)) {
    showError("keys.not-ed25519");
    return;
  }
  if ("d" in jwk) {
    box.value = ""; // a private key: not kept on the page, never sent
    showError("keys.private-pasted");
    return;
  }
  if (jwk.kty !== "OKP" || jwk.crv !== "Ed25519" || typeof jwk.x !== "string") {
    showError("keys.not-ed25519");
    return;
  }
  try {
    const key = await registerKey({ kty: "OKP", crv: "Ed25519", x: jwk.x }, $("key-submit"));
    box.value = "";
    showNotice("keys.registered", { kid: key.kid });
  } catch (error) {
    report(error);
  }
}

// A key pair made here, for a device that cannot make its own. The private key must be
// extractable to be handed over: it is shown once, never stored, and forgotten when its dialog
// closes. It is shown only once its public key is on the ledger.
async function generateKey() {
  const button = $("key-generate");
  if (!canGenerateKeys()) {
    showError("keys.generate-unavailable");
    return;
  }
  let privateJwk;
  let publicJwk;
  try {
    const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, true, ["sign", "verify"]);
    [privateJwk, publicJwk] = await Promise.all([
      crypto.subtle.exportKey("jwk", pair.privateKey),
      crypto.subtle.exportKey("jwk", pair.publicKey),
    ]);
  } catch {
    showError("keys.generate-unavailable");
    return;
  }
  const station = state.station.row.station_id;
  try {
    const key = await registerKey({ kty: "OKP", crv: "Ed25519", x: publicJwk.x }, button);
    showNotice("keys.generated", { kid: key.kid });
    showPrivateKey(station, key.kid, {
      kty: "OKP",
      crv: "Ed25519",
      kid: key.kid,
      x: privateJwk.x,
      d: privateJwk.d,
    });
  } catch (error) {
    report(error); // the private key is dropped: its public half is not on the ledger
  }
}

function showPrivateKey(station, kid, jwk) {
  const text = JSON.stringify(jwk, null, 2);
  $("private-key-kid").textContent = t("private.kid", { station, kid });
  $("private-key-jwk").value = text;
  const url = URL.createObjectURL(new Blob([`${text}\n`], { type: "application/jwk+json" }));
  state.privateKeyUrl = { url, name: `${station}-${kid.slice(0, 8)}.private.jwk.json` };
  $("private-key-dialog").showModal();
  $("private-key-jwk").focus();
  $("private-key-jwk").select();
}

function downloadPrivateKey() {
  const file = state.privateKeyUrl;
  if (!file) return;
  const link = h("a", { href: file.url, download: file.name, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
}

function forgetPrivateKey() {
  $("private-key-jwk").value = "";
  $("private-key-kid").textContent = "";
  if (state.privateKeyUrl) URL.revokeObjectURL(state.privateKeyUrl.url);
  state.privateKeyUrl = null;
}

function renderRevoke() {
  if (!state.revokeKid || !state.station) return;
  $("revoke-text").textContent = t("revoke.text", {
    kid: state.revokeKid,
    name: state.station.row.name,
  });
  $("revoke-reasons").replaceChildren(
    ...REVOKE_REASONS.map((key) => h("option", { value: t(key) })),
  );
}

function openRevoke(kid) {
  state.revokeKid = kid;
  $("revoke-form").reset();
  renderRevoke();
  dropDialogError($("revoke-dialog"));
  $("revoke-dialog").showModal();
  $("revoke-reason").focus();
}

async function submitRevoke(event) {
  event.preventDefault();
  const reason = $("revoke-reason").value.trim();
  if (!reason) {
    showError("common.required", { fields: t("field.reason") });
    return;
  }
  const station = state.station.row.station_id;
  const kid = state.revokeKid;
  await busy($("revoke-submit"), async () => {
    try {
      await api("POST", `/v1/stations/${enc(station)}/keys/${enc(kid)}/revoke`, {
        body: { reason },
      });
      $("revoke-dialog").close();
      showNotice("keys.revoked", { kid });
      await loadStation(station);
    } catch (error) {
      report(error);
    }
  });
}

// An error shown in a dialog goes with it.
function dropDialogError(dialog) {
  if (shownError && dialog.contains(shownError.target)) {
    shownError = null;
    renderMessages();
  }
}

// -- wiring ------------------------------------------------------------------------------------

function renderAll() {
  renderFilters();
  renderEnrolGroups();
  renderProgramFilters();
  renderStationFilters();
  renderWhoami();
  if (state.union || state.unionMissing) renderUnion();
  renderMember();
  renderPrograms();
  renderProgram();
  renderProgramForm();
  renderStations();
  renderStation();
  renderStationForm();
  if ($("station-dialog").open) renderHoursEditor(readHoursRaw());
  renderRevoke();
  renderRedemptions();
  renderReverse();
  renderMessages();
}

async function start() {
  await loadMessages("/static/i18n.json");
  useLanguage(pickLanguage(LANG_KEY));
  renderFilters();
  renderEnrolGroups();
  renderProgramFilters();
  renderStationFilters();

  $("lang-switch").addEventListener("click", () => setLanguage(lang === "en" ? "zh-CN" : "en"));
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", () => logout());
  $("search-form").addEventListener("submit", search);
  $("member-filter").addEventListener("change", () => {
    state.cursors = [null];
    state.page = 0;
    reloadMembers();
  });
  $("member-filter").addEventListener("submit", (e) => e.preventDefault());
  $("members-prev").addEventListener("click", () => turnPage(-1));
  $("members-next").addEventListener("click", () => turnPage(1));
  $("enrol-open").addEventListener("click", openEnrol);
  $("enrol-form").addEventListener("submit", enrol);
  $("enrol-cancel").addEventListener("click", () => $("enrol-dialog").close());
  $("enrol-dialog").addEventListener("close", () => {
    if (shownError?.target === $("enrol-error")) clearMessages();
  });
  $("member-close").addEventListener("click", () => go(state.unionCode ?? session.me.scope));
  for (const verdict of ["approve", "reject"]) {
    const button = $(`member-${verdict}`);
    button.addEventListener("click", () => decide(button, state.memberId, verdict));
  }
  $("add-group-form").addEventListener("submit", addGroup);
  $("transfer-form").addEventListener("submit", transfer);
  $("rejoin-form").addEventListener("submit", rejoin);
  $("member-leave").addEventListener("click", leave);
  $("member-erase").addEventListener("click", erase);

  // Programs
  $("program-filter").addEventListener("change", () => loadPrograms());
  $("program-filter").addEventListener("submit", (e) => e.preventDefault());
  $("program-new").addEventListener("click", () => openProgramForm("create"));
  $("program-detail-close").addEventListener("click", closeProgram);
  $("program-revise").addEventListener("click", () => openProgramForm("revise", state.program));
  $("program-close").addEventListener("click", finishProgram);
  $("program-form").addEventListener("submit", submitProgram);
  $("program-form").addEventListener("change", syncProgramForm);
  $("program-alloc-add").addEventListener("click", addAllocation);
  $("program-cancel").addEventListener("click", () => $("program-dialog").close());

  // Stations
  $("station-filter").addEventListener("change", () => loadStations());
  $("station-filter").addEventListener("submit", (e) => e.preventDefault());
  $("stations-more").addEventListener("click", () => loadStations({ more: true }));
  $("station-new").addEventListener("click", () => openStationForm("create"));
  $("station-detail-close").addEventListener("click", closeStation);
  $("station-edit").addEventListener("click", () => openStationForm("edit"));
  $("station-close").addEventListener("click", shutStation);
  $("station-form").addEventListener("submit", submitStation);
  $("station-always-open").addEventListener("change", syncStationForm);
  $("hours-copy-weekdays").addEventListener("click", copyMondayToWeekdays);
  $("station-cancel").addEventListener("click", () => $("station-dialog").close());
  $("key-form").addEventListener("submit", submitKey);
  $("key-generate").addEventListener("click", generateKey);
  $("revoke-form").addEventListener("submit", submitRevoke);
  $("revoke-cancel").addEventListener("click", () => $("revoke-dialog").close());
  $("private-key-download").addEventListener("click", downloadPrivateKey);
  $("private-key-done").addEventListener("click", () => {
    forgetPrivateKey();
    $("private-key-dialog").close();
  });
  $("private-key-dialog").addEventListener("cancel", (e) => e.preventDefault()); // say "saved"
  $("private-key-dialog").addEventListener("close", forgetPrivateKey);
  // Redemptions
  $("redemptions-refresh").addEventListener("click", () => loadRedemptions());
  $("redemptions-more").addEventListener("click", (e) =>
    busy(e.currentTarget, () => loadRedemptions({ more: true })),
  );
  $("reverse-form").addEventListener("submit", submitReverse);
  $("reverse-cancel").addEventListener("click", () => $("reverse-dialog").close());
  $("reverse-dialog").addEventListener("close", () => {
    state.reversing = null;
  });
  for (const id of ["program-dialog", "station-dialog", "revoke-dialog", "reverse-dialog"]) {
    $(id).addEventListener("close", () => dropDialogError($(id)));
  }
  window.addEventListener("hashchange", () => route());

  show($("loading"), false);
  show($("login"), true);
  document.body.dataset.ready = "true"; // for tests and monitoring: the page is wired up
  $("login-username").focus();
}

start();
