// UnionLedger admin console: plain modern JavaScript, no build step, no third-party code.
//
// Security notes:
// - Tokens live in this module's memory only (never localStorage, sessionStorage or cookies):
//   reloading the page signs the official out. The access token is refreshed before it expires;
//   refreshes are serialised because the server revokes a session whose old refresh token is
//   presented twice.
// - Every text from the server is put in the page with textContent, never as HTML.
// - The page runs under a Content-Security-Policy without 'unsafe-inline': no inline scripts,
//   no style attributes.

const PAGE_SIZE = 50;
const LANGS = ["zh-CN", "en"];
const LANG_KEY = "unionledger.admin.lang"; // the only thing kept in localStorage
const GROUPS = [
  "delivery_rider", "courier", "ride_hailing_driver", "truck_driver", "migrant_worker",
  "female_worker", "hardship", "over_age_worker", "model_worker",
];
const MEMBER_STATUSES = ["pending", "active", "rejected", "left", "erased"];
const REFRESH_MARGIN_S = 60; // refresh this long before the access token expires
const LOC_PREFIXES = ["body", "query", "path", "person"]; // of a validation error's field path

// -- translations ---------------------------------------------------------------------------------

let messages = { "zh-CN": {}, en: {} };
let lang = "zh-CN";

function t(key, params = {}) {
  const text = messages[lang]?.[key] ?? messages["zh-CN"]?.[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (whole, name) => (name in params ? String(params[name]) : whole));
}

function has(key) {
  return key in (messages[lang] ?? {});
}

function applyStaticTranslations() {
  document.documentElement.lang = lang;
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of document.querySelectorAll("[data-i18n-aria-label]")) {
    el.setAttribute("aria-label", t(el.dataset.i18nAriaLabel));
  }
  const other = LANGS.find((l) => l !== lang);
  $("lang-switch").setAttribute("lang", other);
  document.title = t("app.title");
}

function pickLanguage() {
  let saved = null;
  try {
    saved = localStorage.getItem(LANG_KEY);
  } catch {
    saved = null; // storage disabled: zh-CN
  }
  return LANGS.includes(saved) ? saved : "zh-CN";
}

function setLanguage(next) {
  lang = next;
  try {
    localStorage.setItem(LANG_KEY, next);
  } catch {
    // storage disabled: the choice lasts for this page only
  }
  applyStaticTranslations();
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

class ApiError extends Error {
  constructor(problem) {
    super(problem.title || `HTTP ${problem.status}`);
    this.problem = problem;
  }
}

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
    details.push(t("problem.detail", { detail: problem.detail }));
  }
  return { headline, details };
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

// -- the session and the API client -----------------------------------------------------------

const session = {
  access: null,
  refresh: null,
  expiresAt: 0, // ms since epoch, client clock
  timer: null,
  refreshing: null, // the one refresh in flight
  generation: 0, // bumped by every login and logout: late answers of an old session are dropped
  username: "",
  me: null,
};

function signedIn() {
  return session.access !== null;
}

function setTokens(body) {
  session.access = body.access_token;
  session.refresh = body.refresh_token;
  const lifetime = Number(body.expires_in) || 600;
  session.expiresAt = Date.now() + lifetime * 1000;
  clearTimeout(session.timer);
  const delay = Math.max(lifetime - REFRESH_MARGIN_S, lifetime / 2, 5) * 1000;
  session.timer = setTimeout(refreshInBackground, delay);
}

async function refreshInBackground() {
  const outcome = await refreshTokens();
  if (outcome === "offline" && signedIn()) {
    clearTimeout(session.timer);
    session.timer = setTimeout(refreshInBackground, 15_000); // the LAN is down: try again soon
  }
}

// "ok", "refused" (the session is over: back to the login form) or "offline".
function refreshTokens() {
  if (!session.refresh) return Promise.resolve("refused");
  if (!session.refreshing) {
    const generation = session.generation;
    session.refreshing = (async () => {
      let response;
      try {
        response = await fetch("/v1/auth/refresh", {
          method: "POST",
          headers: { "Content-Type": "application/json", Accept: "application/json" },
          body: JSON.stringify({ refresh_token: session.refresh }),
          cache: "no-store",
          credentials: "omit",
        });
      } catch {
        return "offline";
      }
      if (generation !== session.generation) return "refused";
      if (response.status >= 500 || response.status === 429) return "offline";
      if (!response.ok) {
        endSession("auth.session-ended");
        return "refused";
      }
      setTokens(await response.json());
      return "ok";
    })().finally(() => {
      session.refreshing = null;
    });
  }
  return session.refreshing;
}

async function api(method, path, { body, auth = true, retry = true } = {}) {
  const generation = session.generation;
  if (auth && signedIn() && Date.now() > session.expiresAt - 30_000) {
    await refreshTokens(); // a sleeping laptop or a throttled tab may have missed the timer
  }
  const headers = { Accept: "application/json, application/problem+json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (auth && session.access) headers.Authorization = `Bearer ${session.access}`;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
    });
  } catch {
    throw new ApiError({ type: "/problems/network", status: 0 });
  }
  if (auth && generation !== session.generation) throw staleError();
  if (response.status === 401 && auth && retry && session.refresh) {
    const outcome = await refreshTokens();
    if (outcome === "ok") return api(method, path, { body, auth, retry: false });
    if (outcome === "refused") throw staleError(); // endSession has said so already
  }
  if (response.status === 204) return null;
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const problem = data && typeof data === "object" && !Array.isArray(data) ? data : {};
    problem.status ??= response.status;
    problem.retryAfter = response.headers.get("Retry-After");
    if (response.status === 401 && auth) {
      endSession("auth.session-ended");
      throw staleError();
    }
    throw new ApiError(problem);
  }
  return data;
}

// An answer for a session that has ended meanwhile: dropped without a word.
function staleError() {
  return new ApiError({ type: "/problems/stale", status: 0, stale: true });
}

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
  });
  state.unionSeq += 1;
  state.memberSeq += 1;
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
      const tokens = await api("POST", "/v1/auth/login", {
        auth: false,
        body: { username, password, totp: totp || null },
      });
      session.generation += 1;
      setTokens(tokens);
      session.username = username;
      const me = await api("GET", "/v1/auth/me");
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
  const access = session.access;
  endSession(null);
  if (access) {
    try {
      await fetch("/v1/auth/logout", {
        method: "POST",
        headers: { Authorization: `Bearer ${access}` },
        cache: "no-store",
        credentials: "omit",
      });
    } catch {
      // offline: the tokens are forgotten here and expire on their own
    }
  }
  if (!quiet) showNotice("auth.logged-out");
}

// Forget the session and show the login form (with a message key, if given).
function endSession(messageKey) {
  clearTimeout(session.timer);
  Object.assign(session, {
    access: null,
    refresh: null,
    expiresAt: 0,
    timer: null,
    refreshing: null,
    username: "",
    me: null,
  });
  session.generation += 1;
  for (const dialog of document.querySelectorAll("dialog[open]")) dialog.close();
  resetState();
  $("union-options").replaceChildren();
  show($("console"), false);
  show($("whoami"), false);
  show($("logout"), false);
  show($("login"), true);
  if (messageKey) showError(messageKey);
  else clearMessages();
  $("login-username").focus();
}

async function enterConsole() {
  show($("login"), false);
  show($("console"), true);
  show($("whoami"), true);
  show($("logout"), true);
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
    $("union-options").replaceChildren(
      ...page.items.map((u) => h("option", { value: u.code, label: `${u.name}` })),
    );
    renderWhoami();
  } catch {
    // only suggestions: typing a code still works
  }
}

// -- routing: #/union/<code>[/member/<id>] -----------------------------------------------------

function routeHash(union, member) {
  let hash = `#/union/${encodeURIComponent(union)}`;
  if (member) hash += `/member/${encodeURIComponent(member)}`;
  return hash;
}

function parseHash() {
  const match = location.hash.match(/^#\/union\/([^/]+)(?:\/member\/([^/]+))?$/);
  if (!match) return null;
  try {
    return {
      union: decodeURIComponent(match[1]),
      member: match[2] ? decodeURIComponent(match[2]) : null,
    };
  } catch {
    return null;
  }
}

function go(union, member = null) {
  const hash = routeHash(union, member);
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
  const jobs = [];
  if (target.union !== state.unionCode) jobs.push(loadUnion(target.union));
  if (target.member !== state.memberId) {
    if (target.member) jobs.push(loadMember(target.member, { focus: true }));
    else closeMember();
  }
  await Promise.all(jobs);
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
  show($("children-section"), Boolean(union));
  show($("members-section"), Boolean(union));
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
          { class: "child", href: routeHash(child.code, null), testid: `child-${child.code}` },
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
        : h("a", { href: routeHash(code, null), testid: `crumb-${code}`, text: label }),
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

// -- wiring ------------------------------------------------------------------------------------

function renderAll() {
  renderFilters();
  renderEnrolGroups();
  renderWhoami();
  if (state.union || state.unionMissing) renderUnion();
  renderMember();
  renderMessages();
}

async function start() {
  try {
    const response = await fetch("/static/i18n.json", { cache: "no-cache" });
    messages = await response.json();
  } catch {
    // the page still works, with the keys as labels
  }
  lang = pickLanguage();
  applyStaticTranslations();
  renderFilters();
  renderEnrolGroups();

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
  window.addEventListener("hashchange", () => route());

  show($("loading"), false);
  show($("login"), true);
  document.body.dataset.ready = "true"; // for tests and monitoring: the page is wired up
  $("login-username").focus();
}

start();
