// UnionLedger member app: join a union, log in with a one-time code, see the membership and
// show the rotating station QR code; see the benefits the member may redeem now and the
// redemptions made, each with its receipt, verified here against the log's pinned public key
// (receipt.js). Plain ES modules; the third-party code (CBOR, base45, QR model) is vendored in
// /static/vendor/ (see its README.md).
//
// The station QR (verifier/credential.py, docs/credentials.md) is
//   "UL1:" + base45([credential, proof time, holder signature, disclosure...])
// where the holder key signs the CBOR of
//   [HOLDER_PROOF_CONTEXT, SHA-256(credential), proof time, null, [disclosure...]].
// The credential and the disclosures are the issuer's bytes, copied verbatim.
//
// Security notes:
// - The holder key is a WebCrypto Ed25519 key generated here, non-extractable: the private key
//   never leaves the browser (IndexedDB holds the CryptoKey object, not its bytes). Only the raw
//   public key is sent, once, when the credential is issued.
// - IndexedDB also holds what the app needs offline: the credential and its disclosures, the
//   membership as last read, and the refresh token (a session ends 12 hours after login; the QR
//   code does not need one). The access token lives in this module's memory only.
// - Group disclosures are chosen per presentation, default none; the choice is not stored.
//   "Show the QR code for this program" chooses one group of the program's rule that the
//   member has (any one of `groups_any` is enough), and never more.
// - The benefits (entitlements, redemptions and their receipts) are kept in IndexedDB for
//   offline display, with the time they were read. The log's public key is pinned the first
//   time the app sees it (trust on first use) and kept across sign-outs: receipts verify
//   against it only, never against a key the server serves later.
// - Every text from the server is put in the page with textContent, never as HTML. The page
//   runs under a Content-Security-Policy without 'unsafe-inline'.

import { decode as cborDecode, encode as cborEncode } from "/static/vendor/cbor.js";
import { encode as base45Encode } from "/static/vendor/base45.js";
import { qrcode } from "/static/vendor/qrcode.js";
import * as receipts from "/static/receipt.js";

export const PREFIX = "UL1:";
export const HOLDER_PROOF_CONTEXT = "unionledger/station-qr/v1 holder proof";
export const QR_PERIOD_S = 5; // a fresh presentation this often
const MAX_DISCLOSURES = 20;
const QUIET_ZONE = 4; // modules of white around the code (ISO/IEC 18004)
const MIN_MODULE_PX = 4; // below about 4 camera pixels per module scanners fail
const MAX_MODULE_PX = 8;
const SYNC_EVERY_MS = 15 * 60 * 1000; // re-read the membership this often while the app is open
const CHECK_EVERY_MS = 60 * 1000;
const LANGS = ["zh-CN", "en"];
const LANG_KEY = "unionledger.member.lang"; // localStorage: the language only
const DB_NAME = "unionledger-member";
const DB_STORE = "state";
const SENSITIVE_GROUPS = ["hardship"];
const HISTORY_LIMIT = 50; // the redemptions listed (newest first)
const CHINA_TZ = "Asia/Shanghai"; // times of redemptions and renewals: China time (UTC+8)
const LOC_PREFIXES = ["body", "query", "path", "person"];
const CLAIM_EXP = 4;
const CLAIM_IAT = 6;
const CLAIM_HOLDER_KEY = -2;

// -- bytes --------------------------------------------------------------------------------------

function concatBytes(parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

export function b64urlEncode(bytes) {
  let text = "";
  for (const b of bytes) text += String.fromCharCode(b);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

export function b64urlDecode(text) {
  if (typeof text !== "string" || !/^[A-Za-z0-9_-]*$/.test(text)) {
    throw new Error("not base64url");
  }
  const plain = atob(text.replace(/-/g, "+").replace(/_/g, "/"));
  return Uint8Array.from(plain, (c) => c.charCodeAt(0));
}

function sameBytes(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

// -- the presentation (byte-exact with verifier/credential.py) ----------------------------------

/** What the holder key signs: the CBOR of [context, credential hash, time, null, [d...]]. */
export function holderMessage(credentialHash, proofTime, disclosures) {
  return cborEncode([HOLDER_PROOF_CONTEXT, credentialHash, proofTime, null, disclosures]);
}

/**
 * The QR text for `token` (the credential's bytes) with the holder proof made at `proofTime`
 * (NumericDate seconds) by `privateKey`, disclosing `disclosures` (their bytes as issued).
 */
export async function presentationText(token, privateKey, disclosures, proofTime) {
  return PREFIX + base45Encode(await presentationData(token, privateKey, disclosures, proofTime));
}

/** The presentation's bytes (what the QR text base45-encodes after its prefix). */
export async function presentationData(token, privateKey, disclosures, proofTime) {
  if (!(token instanceof Uint8Array) || token[0] !== 0x84) {
    throw new Error("the credential is not a COSE_Sign1");
  }
  if (disclosures.length > MAX_DISCLOSURES) throw new Error("too many disclosures");
  if (!Number.isSafeInteger(proofTime) || proofTime < 0) throw new Error("bad proof time");
  const hash = new Uint8Array(await crypto.subtle.digest("SHA-256", token));
  const message = holderMessage(hash, proofTime, disclosures);
  const signature = new Uint8Array(
    await crypto.subtle.sign({ name: "Ed25519" }, privateKey, message),
  );
  const data = concatBytes([
    Uint8Array.of(0x83 + disclosures.length), // array head: 3 + d items (d <= 20)
    token, // an untagged COSE_Sign1, verbatim
    cborEncode(proofTime),
    cborEncode(signature),
    ...disclosures.map((d) => cborEncode(d)),
  ]);
  return data;
}

/** The claims a wallet needs from a credential (NOT verified: the station does that). */
export function credentialClaims(token) {
  const cose = cborDecode(token, { useMaps: true });
  if (!Array.isArray(cose) || cose.length !== 4 || !(cose[2] instanceof Uint8Array)) {
    throw new Error("the credential is not a COSE_Sign1");
  }
  const claims = cborDecode(cose[2], { useMaps: true });
  const exp = claims.get(CLAIM_EXP);
  const iat = claims.get(CLAIM_IAT);
  const holderKey = claims.get(CLAIM_HOLDER_KEY);
  if (
    !Number.isSafeInteger(exp) ||
    !Number.isSafeInteger(iat) ||
    !(holderKey instanceof Uint8Array)
  ) {
    throw new Error("the credential lacks its times or holder key");
  }
  return { exp, iat, holderKey };
}

// -- storage (IndexedDB) ------------------------------------------------------------------------

let dbPromise = null;

function openDb() {
  dbPromise ??= new Promise((resolve, reject) => {
    const request = indexedDB.open(DB_NAME, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(DB_STORE);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
  return dbPromise;
}

async function dbDo(mode, work) {
  const db = await openDb();
  return new Promise((resolve, reject) => {
    const tx = db.transaction(DB_STORE, mode);
    const request = work(tx.objectStore(DB_STORE));
    tx.oncomplete = () => resolve(request?.result);
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error);
  });
}

const dbGet = (key) => dbDo("readonly", (store) => store.get(key));
const dbPut = (key, value) => dbDo("readwrite", (store) => store.put(value, key));
const dbDelete = (key) => dbDo("readwrite", (store) => store.delete(key));
const dbClear = () => dbDo("readwrite", (store) => store.clear());

// -- the holder key -----------------------------------------------------------------------------

let keyPromise = null;

/**
 * This browser's holder key: { privateKey (non-extractable CryptoKey), publicRaw (32 bytes) },
 * generated on first use and kept in IndexedDB. With `create: false`, null when there is none.
 */
export function holderKey({ create = true } = {}) {
  if (!create) return storedKey();
  // One at a time: two calls must not make two keys.
  keyPromise = (keyPromise ?? Promise.resolve(null))
    .catch(() => null)
    .then(async () => (await storedKey()) ?? newKey());
  return keyPromise;
}

async function storedKey() {
  const stored = await dbGet("holder-key");
  return stored?.privateKey && stored?.publicRaw ? stored : null;
}

async function newKey() {
  const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
  const publicRaw = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
  const key = { privateKey: pair.privateKey, publicRaw, created_at: new Date().toISOString() };
  await dbPut("holder-key", key);
  return key;
}

// -- translations -------------------------------------------------------------------------------

let messages = { "zh-CN": {}, en: {} };
let lang = "zh-CN";

function t(key, params = {}) {
  const text = messages[lang]?.[key] ?? messages["zh-CN"]?.[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (whole, name) =>
    name in params ? String(params[name]) : whole,
  );
}

function has(key) {
  return key in (messages[lang] ?? {});
}

function pickLanguage() {
  let saved = null;
  try {
    saved = localStorage.getItem(LANG_KEY);
  } catch {
    saved = null;
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

function applyStaticTranslations() {
  document.documentElement.lang = lang;
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of document.querySelectorAll("[data-i18n-aria-label]")) {
    el.setAttribute("aria-label", t(el.dataset.i18nAriaLabel));
  }
  $("lang-switch").setAttribute(
    "lang",
    LANGS.find((l) => l !== lang),
  );
  document.title = t("app.title");
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

function formatTime(when) {
  const date = when instanceof Date ? when : new Date(when);
  if (Number.isNaN(date.getTime())) return String(when ?? t("common.none"));
  return new Intl.DateTimeFormat(lang, {
    year: "numeric",
    month: "2-digit",
    day: "2-digit",
    hour: "2-digit",
    minute: "2-digit",
  }).format(date);
}

function formatDay(when) {
  const date = new Date(when);
  if (!when || Number.isNaN(date.getTime())) return when || t("common.none");
  return new Intl.DateTimeFormat(lang, {
    year: "numeric",
    month: "2-digit",
    day: "2-digit",
  }).format(date);
}

function groupLabel(group) {
  return has(`group.${group}`) ? t(`group.${group}`) : group;
}

function nowSeconds() {
  return Math.floor(Date.now() / 1000);
}

// -- messages and errors ------------------------------------------------------------------------

class ApiError extends Error {
  constructor(problem) {
    super(problem.title || `HTTP ${problem.status}`);
    this.problem = problem;
  }
}

class NetworkError extends Error {}

class SessionEnded extends Error {}

function problemSlug(problem) {
  const type = typeof problem.type === "string" ? problem.type : "";
  const match = type.match(/\/problems\/([a-z0-9-]+)$/);
  return match ? match[1] : null;
}

// Plain words for a problem: a translated headline (by its type), then the fields a
// validation error names. The server's English detail is shown only for an unknown type.
function describeProblem(problem) {
  const slug = problemSlug(problem);
  const seconds = problem.retryAfter ?? "?";
  let headline;
  const known = slug && has(`problem.${slug}`);
  if (known) headline = t(`problem.${slug}`, { seconds });
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
  } else if (!known && problem.detail) {
    details.push(t("problem.detail", { detail: problem.detail }));
  }
  return { headline, details };
}

// What the banners say, kept so that a language switch can say it again.
let shownError = null; // { error | key, params, target }
let shownNotice = null; // { key, params }

function renderMessages() {
  for (const box of document.querySelectorAll(".banner-error")) {
    if (!shownError || shownError.target !== box) {
      box.replaceChildren();
      show(box, false);
    }
  }
  if (shownError) {
    let headline;
    let details = [];
    if (shownError.error instanceof ApiError) {
      ({ headline, details } = describeProblem(shownError.error.problem));
    } else if (shownError.error instanceof NetworkError) headline = t("problem.network");
    else if (shownError.error) headline = t("problem.page", { detail: String(shownError.error) });
    else headline = t(shownError.key, shownError.params);
    shownError.target.replaceChildren(
      h("p", { text: headline }),
      ...details.map((d) => h("p", { class: "banner-detail", text: d })),
    );
    show(shownError.target, true);
  }
  const notice = $("notice");
  notice.replaceChildren(
    ...(shownNotice ? [h("p", { text: t(shownNotice.key, shownNotice.params) })] : []),
  );
  show(notice, Boolean(shownNotice));
}

function showError(errorOrKey, { params = {}, target = $("error") } = {}) {
  if (typeof errorOrKey === "string") shownError = { key: errorOrKey, params, target };
  else {
    if (!(errorOrKey instanceof ApiError || errorOrKey instanceof NetworkError)) {
      console.error(errorOrKey); // a bug in this page, not an answer of the server
    }
    shownError = { error: errorOrKey, target };
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

// -- being online -------------------------------------------------------------------------------

let offline = !navigator.onLine;

function setOffline(value) {
  if (offline === value) return;
  offline = value;
  renderOffline();
  if (state.view === "member") renderBenefits(); // "as of" says whether it is a saved copy
}

function renderOffline() {
  show($("offline"), offline);
}

// -- the API client -----------------------------------------------------------------------------

async function request(method, path, { body, token } = {}) {
  const headers = { Accept: "application/json, application/problem+json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (token) headers.Authorization = `Bearer ${token}`;
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
    setOffline(true);
    throw new NetworkError("offline");
  }
  setOffline(false);
  if (response.status === 204) return null;
  let data = null;
  if ((response.headers.get("content-type") || "").includes("json")) {
    try {
      data = await response.json();
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const problem = data && typeof data === "object" && !Array.isArray(data) ? data : {};
    problem.status ??= response.status;
    const retry = Number.parseInt(response.headers.get("retry-after") || "", 10);
    if (Number.isFinite(retry)) problem.retryAfter = retry;
    throw new ApiError(problem);
  }
  return data;
}

function isStatus(error, ...statuses) {
  return error instanceof ApiError && statuses.includes(error.problem.status);
}

// The session: the access token in memory, the refresh token in IndexedDB. Refreshes are
// serialised (across tabs too, with a Web Lock): the server ends a session whose old refresh
// token is presented twice.
const session = { access: null, expiresAt: 0, refreshing: null };

async function storeTokens(tokens) {
  session.access = tokens.access_token;
  session.expiresAt = Date.now() + (Number(tokens.expires_in) || 600) * 1000;
  await dbPut("session", {
    refresh_token: tokens.refresh_token,
    stored_at: new Date().toISOString(),
  });
}

function withSessionLock(work) {
  if (navigator.locks?.request) return navigator.locks.request("unionledger-member-session", work);
  return work();
}

function refreshSession() {
  session.refreshing ??= withSessionLock(async () => {
    const stored = await dbGet("session");
    if (!stored?.refresh_token) throw new SessionEnded();
    let tokens;
    try {
      tokens = await request("POST", "/v1/auth/refresh", {
        body: { refresh_token: stored.refresh_token },
      });
    } catch (e) {
      if (isStatus(e, 400, 401, 422)) {
        await dbDelete("session");
        session.access = null;
        throw new SessionEnded();
      }
      throw e;
    }
    await storeTokens(tokens);
    return tokens.access_token;
  }).finally(() => {
    session.refreshing = null;
  });
  return session.refreshing;
}

async function accessToken() {
  if (session.access && session.expiresAt - 30_000 > Date.now()) return session.access;
  return refreshSession();
}

async function authed(method, path, options = {}) {
  const token = await accessToken();
  try {
    return await request(method, path, { ...options, token });
  } catch (e) {
    if (!isStatus(e, 401)) throw e;
    session.access = null; // expired early (or the clock is off): refresh once and try again
    return request(method, path, { ...options, token: await refreshSession() });
  }
}

// -- the app's state ----------------------------------------------------------------------------

const state = {
  view: "loading", // loading | join | login | member
  profile: null, // { me, groups, fetched_at }: the membership as last read
  credential: null, // { doc, token, claims, disclosures: Map(group -> bytes) }
  key: null, // the holder key
  hasSession: false,
  syncing: null,
  lastSync: 0,
  otherDevice: false, // the member's current credential is another device's
  showFor: "", // the group to disclose in the next presentations ("" none)
  qr: { time: null, drawing: false, dirty: true },
  join: { code: null, target: null, result: null, phone: "" },
  unsupported: false,
  // { member_id, entitlements, programs: { id: { version, groups_any } | null }, history,
  //   fetched_at }: the benefits as last read (the API's answers), kept for offline display
  benefits: null,
  logKeyRecord: null, // { text, pinned_at }: the pinned log key as stored (never replaced unasked)
  logKey: null, // the pinned key, parsed (receipts.parseVerifierKey) with its pinned_at
  logKeyOffered: null, // the key the server serves now when it is not the pinned one
  verifications: new Map(), // redemption id -> { status: busy | ok | bad, code, params, receipt }
  program: null, // the program the QR code is shown for: { id, name, missing, unknown }
};

function parseCredential(doc) {
  const token = b64urlDecode(doc.credential);
  const claims = credentialClaims(token);
  const disclosures = new Map();
  for (const [group, value] of Object.entries(doc.disclosures ?? {})) {
    disclosures.set(group, b64urlDecode(value));
  }
  return { doc, token, claims, disclosures };
}

async function loadStored() {
  const [profile, stored, sessionRow, key, benefits, logKey] = await Promise.all([
    dbGet("profile"),
    dbGet("credential"),
    dbGet("session"),
    holderKey({ create: false }),
    dbGet("benefits"),
    dbGet("log-key"),
  ]);
  state.profile = profile ?? null;
  state.benefits = benefits ?? null;
  await loadLogKey(logKey);
  state.hasSession = Boolean(sessionRow?.refresh_token);
  state.key = key;
  state.credential = null;
  if (stored?.doc) {
    try {
      state.credential = parseCredential(stored.doc);
    } catch {
      await dbDelete("credential"); // unreadable: fetch it again
    }
  }
}

function credentialUsable() {
  const c = state.credential;
  return Boolean(c && state.key && sameBytes(c.claims.holderKey, state.key.publicRaw));
}

function credentialExpired() {
  return state.credential !== null && nowSeconds() >= state.credential.claims.exp;
}

// Renew after the server's `renew_after` (a week before `exp`), or, without one, when a tenth
// of the credential's life (at least 5 minutes) is left.
function expiresSoon(parsed) {
  const renewAfter = Date.parse(parsed.doc.renew_after ?? "");
  if (Number.isFinite(renewAfter)) return Date.now() >= renewAfter;
  const { iat, exp } = parsed.claims;
  return nowSeconds() >= exp - Math.max((exp - iat) / 10, 300);
}

function credentialNeedsRenewal() {
  return !state.credential || expiresSoon(state.credential);
}

// -- views --------------------------------------------------------------------------------------

function showView(view) {
  state.view = view;
  show($("loading"), view === "loading");
  show($("join"), view === "join");
  show($("login"), view === "login");
  show($("member"), view === "member");
}

function renderAll() {
  renderMessages();
  renderOffline();
  if (state.view === "join") renderJoin();
  if (state.view === "login") renderLogin();
  if (state.view === "member") renderMember();
}

// -- joining ------------------------------------------------------------------------------------

async function startJoin(code) {
  state.join.code = code;
  showView("join");
  renderJoin();
  try {
    state.join.target = await request("GET", `/v1/join/${encodeURIComponent(code)}`);
  } catch (e) {
    if (isStatus(e, 404)) state.join.target = false;
    else showError(e, { target: $("join-error") });
    if (e instanceof NetworkError) show($("join-form"), false);
  }
  renderJoin();
}

function renderJoin() {
  const { target, result } = state.join;
  show($("join-target"), Boolean(target));
  show($("join-bad-code"), target === false);
  show($("join-form"), Boolean(target) && !result);
  show($("join-result"), Boolean(result));
  if (target) {
    $("join-union-name").textContent = target.name;
    $("join-union-code").textContent = t("join.code", { code: target.code });
    $("join-policy").textContent = t(target.auto_approve ? "join.auto" : "join.review");
  }
  if (result) {
    const active = result.status === "active";
    $("join-result").dataset.status = result.status;
    $("join-result-title").textContent = t(active ? "join.active-title" : "join.pending-title");
    $("join-result-text").textContent = t(active ? "join.active-text" : "join.pending-text", {
      phone: state.join.phone,
    });
  }
}

async function onJoin(event) {
  event.preventDefault();
  const form = $("join-form");
  const value = (name) => form.elements[name].value.trim();
  const person = {
    name: value("name"),
    id_number: value("id_number").toUpperCase(),
    phone: value("phone").replace(/[\s-]/g, ""),
  };
  const missing = ["name", "id_number", "phone"].filter((k) => !person[k]);
  if (missing.length) {
    showError("common.required", {
      params: { fields: missing.map((k) => t(`field.${k}`)).join(t("common.separator")) },
      target: $("join-error"),
    });
    form.elements[missing[0]].focus();
    return;
  }
  if (value("employer")) person.employer = value("employer");
  const button = $("join-submit");
  button.disabled = true;
  try {
    const answer = await request("POST", `/v1/join/${encodeURIComponent(state.join.code)}`, {
      body: { person },
    });
    state.join.phone = person.phone;
    state.join.result = answer;
    clearMessages();
    form.reset();
    renderJoin();
    $("join-result").focus?.();
  } catch (e) {
    showError(e, { target: $("join-error") });
  } finally {
    button.disabled = false;
  }
}

// -- logging in ---------------------------------------------------------------------------------

const login = { phone: "", codeSent: false };

function renderLogin() {
  show($("phone-form"), !login.codeSent);
  show($("code-form"), login.codeSent);
  $("code-sent").textContent = login.codeSent ? t("login.sent", { phone: login.phone }) : "";
}

function startLogin() {
  login.codeSent = false;
  showView("login");
  renderLogin();
  $("login-phone").value = login.phone || state.join.phone || "";
}

async function onPhone(event) {
  event.preventDefault();
  const phone = $("login-phone").value.trim().replace(/[\s-]/g, "");
  if (!phone) {
    showError("common.required", { params: { fields: t("field.phone") } });
    return;
  }
  const button = $("phone-submit");
  button.disabled = true;
  try {
    await request("POST", "/v1/auth/otp/request", { body: { phone } });
    login.phone = phone;
    login.codeSent = true;
    clearMessages();
    renderLogin();
    $("login-code").value = "";
    $("login-code").focus();
  } catch (e) {
    showError(e);
  } finally {
    button.disabled = false;
  }
}

async function onCode(event) {
  event.preventDefault();
  const code = $("login-code").value.trim();
  if (!/^[0-9]{6}$/.test(code)) {
    showError("login.code-format");
    return;
  }
  const button = $("code-submit");
  button.disabled = true;
  try {
    const tokens = await request("POST", "/v1/auth/otp/verify", {
      body: { phone: login.phone, code },
    });
    await storeTokens(tokens);
    state.hasSession = true;
    login.codeSent = false;
    clearMessages();
    showView("member");
    renderMember();
    await sync({ force: true, takeOver: true });
  } catch (e) {
    showError(e);
    $("login-code").select(); // ready to type again, without a trip through the page
    $("login-code").focus();
  } finally {
    button.disabled = false;
  }
}

// A new code for the same number (the earlier one stops working: docs/auth.md section 4.2).
async function onResend() {
  const button = $("resend-code");
  button.disabled = true;
  try {
    await request("POST", "/v1/auth/otp/request", { body: { phone: login.phone } });
    clearMessages();
    showNotice("login.resent", { phone: login.phone });
    $("login-code").value = "";
    $("login-code").focus();
  } catch (e) {
    showError(e);
  } finally {
    button.disabled = false;
  }
}

async function onLogout() {
  const button = $("logout");
  button.disabled = true;
  try {
    if (state.hasSession) await authed("POST", "/v1/auth/logout");
  } catch {
    // offline or already ended: forgetting this device's copy is what matters
  } finally {
    button.disabled = false;
  }
  // The session, the credential, the membership, the benefits and the holder key; the pinned
  // log key stays (it is the log's, not the member's, and trust on first use means once).
  const pinned = await dbGet("log-key");
  await dbClear();
  if (pinned) await dbPut("log-key", pinned);
  keyPromise = null;
  Object.assign(session, { access: null, expiresAt: 0 });
  Object.assign(state, { profile: null, credential: null, key: null, hasSession: false });
  Object.assign(state, { benefits: null, program: null });
  state.verifications.clear();
  state.showFor = "";
  state.qr.time = null;
  startLogin();
  showNotice("auth.logged-out");
}

// -- syncing with the server --------------------------------------------------------------------

// takeOver: make this device the member's (a login, or the member's explicit choice) even if
// the current credential names another device's key; a background sync never does.
function sync({ force = false, takeOver = false } = {}) {
  if (!state.hasSession) return Promise.resolve();
  if (!force && Date.now() - state.lastSync < 30_000) return Promise.resolve();
  state.syncing ??= doSync(takeOver).finally(() => {
    state.syncing = null;
  });
  return state.syncing;
}

async function doSync(takeOver) {
  try {
    const me = await authed("GET", "/v1/members/me");
    const groups = await authed("GET", `/v1/members/${encodeURIComponent(me.member_id)}/groups`);
    if (state.profile && state.profile.me.member_id !== me.member_id) {
      state.credential = null; // another member logged in on this device
      await dbDelete("credential");
      state.benefits = null;
      await dbDelete("benefits");
      state.verifications.clear();
    }
    state.profile = { me, groups, fetched_at: new Date().toISOString() };
    await dbPut("profile", state.profile);
    if (me.status === "active") await syncCredential(takeOver);
    else {
      state.credential = null;
      await dbDelete("credential");
    }
    await syncBenefits(me.member_id);
    await syncLogKey();
    state.lastSync = Date.now();
    if (shownError && !(shownError.error instanceof ApiError)) clearMessages();
  } catch (e) {
    if (e instanceof SessionEnded) {
      state.hasSession = false;
      if (!state.credential) startLogin();
      showError("auth.session-ended");
    } else if (!(e instanceof NetworkError)) showError(e);
    // offline: the stored membership and credential stay on screen, the badge says why
  } finally {
    renderMember();
  }
}

// The current credential: re-read on each sync (the server re-issues it on a transfer or a
// group change, for the same holder key); a new one is issued for this browser's holder key
// (made only if there is none) when there is no credential, when it is about to expire, or,
// with takeOver, when it names another device's key. Issuing revokes the previous credential,
// so a background sync leaves another device's credential alone: the member chooses.
async function syncCredential(takeOver) {
  state.key = await holderKey();
  let doc = null;
  try {
    doc = await authed("GET", "/v1/members/me/credential");
  } catch (e) {
    if (!isStatus(e, 404)) throw e;
  }
  let parsed = doc ? parseCredential(doc) : null;
  const ours = parsed !== null && sameBytes(parsed.claims.holderKey, state.key.publicRaw);
  if (parsed && !ours && !takeOver) {
    state.otherDevice = true; // ours, if any, was revoked when the other device registered
    state.credential = null;
    await dbDelete("credential");
    return;
  }
  state.otherDevice = false;
  if (!parsed || !ours || expiresSoon(parsed)) {
    doc = await authed("POST", "/v1/members/me/credential", {
      body: { holder_key: { kty: "OKP", crv: "Ed25519", x: b64urlEncode(state.key.publicRaw) } },
    });
    parsed = parseCredential(doc);
  }
  const changed = !state.credential || !sameBytes(state.credential.token, parsed.token);
  state.credential = parsed;
  await dbPut("credential", { doc, stored_at: new Date().toISOString() });
  if (!parsed.disclosures.has(state.showFor)) state.showFor = "";
  if (changed) state.qr.dirty = true;
}

// -- the member's screen ------------------------------------------------------------------------

function renderMember() {
  if (state.view !== "member") return;
  const me = state.profile?.me;
  const doc = state.credential?.doc;
  $("member-id").textContent = me?.member_id ?? doc?.member_id ?? t("common.none");
  $("member-union").textContent = me?.union ?? doc?.union ?? t("common.none");
  const status = me?.status ?? (doc ? "active" : null);
  $("member-status").textContent = status
    ? has(`mstatus.${status}`)
      ? t(`mstatus.${status}`)
      : status
    : t("common.none");
  $("member-status").dataset.status = status ?? "";
  $("member-since").textContent = me ? formatDay(me.since) : t("common.none");
  if (state.credential) {
    const { iat, exp } = state.credential.claims;
    $("credential-validity").textContent = t("card.validity-range", {
      from: formatTime(new Date(iat * 1000)),
      to: formatTime(new Date(exp * 1000)),
    });
  } else $("credential-validity").textContent = t("common.none");
  renderGroups();
  $("updated").textContent = state.profile
    ? t("card.updated", { time: formatTime(state.profile.fetched_at) })
    : "";
  renderShowFor();
  renderQrState();
  renderBenefits();
}

function currentGroups() {
  const today = new Date().toISOString().slice(0, 10);
  if (state.profile) {
    return state.profile.groups
      .filter((g) => !g.end || g.end >= today)
      .map((g) => ({ group: g.group, start: g.start }));
  }
  return [...(state.credential?.disclosures.keys() ?? [])].map((group) => ({ group, start: null }));
}

function renderGroups() {
  const groups = currentGroups();
  const list = $("member-groups");
  if (!groups.length) {
    list.replaceChildren(h("li", { class: "muted", text: t("card.groups-none") }));
    return;
  }
  list.replaceChildren(
    ...groups.map(({ group, start }) =>
      h(
        "li",
        { testid: `group-${group}` },
        h("span", { class: "group-name", text: groupLabel(group) }),
        start
          ? h("span", { class: "muted", text: t("card.group-since", { date: formatDay(start) }) })
          : null,
        SENSITIVE_GROUPS.includes(group)
          ? h("span", { class: "tag", testid: `group-${group}-private`, text: t("card.self-only") })
          : null,
      ),
    ),
  );
}

function renderShowFor() {
  const select = $("show-for");
  const groups = [...(state.credential?.disclosures.keys() ?? [])].sort(
    (a, b) => SENSITIVE_GROUPS.includes(a) - SENSITIVE_GROUPS.includes(b) || a.localeCompare(b),
  );
  select.replaceChildren(
    h("option", { value: "", text: t("qr.show-none") }),
    ...groups.map((g) =>
      h("option", {
        value: g,
        text: t(SENSITIVE_GROUPS.includes(g) ? "qr.show-sensitive" : "qr.show-group", {
          group: groupLabel(g),
        }),
      }),
    ),
  );
  select.value = groups.includes(state.showFor) ? state.showFor : "";
  show(select.closest(".field"), groups.length > 0);
  const shows = $("qr-shows");
  shows.classList.toggle("warn", SENSITIVE_GROUPS.includes(state.showFor));
  if (!state.showFor) shows.textContent = t("qr.shows-none");
  else {
    const key = SENSITIVE_GROUPS.includes(state.showFor) ? "qr.shows-sensitive" : "qr.shows-group";
    shows.textContent = t(key, { group: groupLabel(state.showFor) });
  }
  const program = $("qr-program");
  show(program, Boolean(state.program));
  program.classList.toggle("warn", Boolean(state.program?.missing || state.program?.unknown));
  if (!state.program) program.textContent = "";
  else {
    let key = "qr.for-program";
    if (state.program.missing) key = "qr.for-program-missing";
    else if (state.program.unknown) key = "qr.for-program-unknown";
    program.textContent = t(key, { program: state.program.name });
  }
}

// Why no QR code can be shown, or null when one can.
function qrMissingReason() {
  if (state.unsupported) return "qr.unsupported";
  const status = state.profile?.me.status;
  if (status === "pending") return "qr.pending";
  if (status && status !== "active") return "qr.not-active";
  if (state.otherDevice) return "qr.other-device";
  if (!state.credential) return state.hasSession ? "qr.fetching" : "qr.none";
  if (!credentialUsable()) return state.hasSession ? "qr.fetching" : "qr.other-key";
  if (credentialExpired()) return "qr.expired";
  return null;
}

function renderQrState() {
  const reason = qrMissingReason();
  show($("qr-box"), reason === null);
  show($("qr-missing"), reason !== null);
  const status = state.profile?.me.status ?? "";
  $("qr-missing").textContent = reason
    ? t(reason, { status: has(`mstatus.${status}`) ? t(`mstatus.${status}`) : status })
    : "";
  show($("relogin"), !state.hasSession);
  show($("take-over"), state.hasSession && reason === "qr.other-device");
  if (reason === null) renderCountdown();
}

function renderCountdown() {
  if (state.qr.time === null) return;
  const left = Math.max(0, Math.min(QR_PERIOD_S, QR_PERIOD_S - (nowSeconds() - state.qr.time)));
  $("qr-countdown").textContent = t("qr.countdown", { seconds: left });
  $("qr-progress").value = left;
}

function drawQr(text) {
  const qr = qrcode(0, "Q");
  qr.addData(text, "Alphanumeric");
  qr.make();
  const count = qr.getModuleCount();
  const total = count + 2 * QUIET_ZONE;
  const room = Math.min($("qr-box").clientWidth || 360, 640);
  const module = Math.max(MIN_MODULE_PX, Math.min(MAX_MODULE_PX, Math.floor(room / total)));
  const ratio = Math.max(1, Math.round(window.devicePixelRatio || 1));
  const canvas = $("qr");
  const side = total * module;
  canvas.width = side * ratio;
  canvas.height = side * ratio;
  canvas.style.width = `${side}px`; // CSSOM, not a style attribute: allowed by the CSP
  canvas.style.height = `${side}px`;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#ffffff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.fillStyle = "#000000";
  const cell = module * ratio;
  for (let row = 0; row < count; row += 1) {
    for (let col = 0; col < count; col += 1) {
      if (qr.isDark(row, col))
        ctx.fillRect((col + QUIET_ZONE) * cell, (row + QUIET_ZONE) * cell, cell, cell);
    }
  }
  canvas.dataset.version = String((count - 17) / 4);
  canvas.dataset.modulePx = String(module);
}

async function refreshQr() {
  if (state.qr.drawing) return;
  state.qr.drawing = true;
  try {
    const c = state.credential;
    const disclosures =
      state.showFor && c.disclosures.has(state.showFor) ? [c.disclosures.get(state.showFor)] : [];
    const time = nowSeconds();
    const data = await presentationData(c.token, state.key.privateKey, disclosures, time);
    drawQr(PREFIX + base45Encode(data));
    await rememberShown(data, time);
    state.qr.time = time;
    state.qr.dirty = false;
    $("qr").dataset.proofTime = String(time);
    $("qr").dataset.disclosed = state.showFor;
  } catch (e) {
    showError(e);
  } finally {
    state.qr.drawing = false;
  }
}

// -- the QR codes this device showed (docs/programs.md section 12, step 2) ---------------------
//
// A receipt's entry names the SHA-256 of the presentation the station scanned. The app keeps
// the digest of every presentation it drew, by UTC day of its proof time, for SHOWN_DAYS days
// (IndexedDB keys "shown:YYYY-MM-DD"), so that verifying a receipt can also tell whether the
// redemption was made with a code this device showed.

const SHOWN_DAYS = 90;
const shownKey = (seconds) => `shown:${new Date(seconds * 1000).toISOString().slice(0, 10)}`;

async function rememberShown(data, proofTime) {
  try {
    const digest = b64urlEncode(new Uint8Array(await crypto.subtle.digest("SHA-256", data)));
    const key = shownKey(proofTime);
    const list = (await dbGet(key)) ?? [];
    if (!list.includes(digest)) await dbPut(key, [...list, digest]);
  } catch {
    // Not remembering a code must not stop the QR: verification then says "not shown here".
  }
}

/** Whether this device showed the presentation of digest `digest` around time `at`. */
async function shownHere(digest, at) {
  const seconds = Date.parse(at) / 1000;
  for (const day of [seconds, seconds - 86_400]) {
    const list = await dbGet(shownKey(day));
    if (Array.isArray(list) && list.includes(digest)) return true;
  }
  return false;
}

async function pruneShown() {
  const oldest = shownKey(nowSeconds() - SHOWN_DAYS * 86_400);
  const all = await dbDo("readonly", (store) => store.getAllKeys());
  for (const key of all ?? []) {
    if (typeof key === "string" && key.startsWith("shown:") && key < oldest) await dbDelete(key);
  }
}

let lastCheck = 0;

async function tick() {
  if (state.view !== "member") return;
  const reason = qrMissingReason();
  if ((reason === null) !== !$("qr-box").hidden) renderQrState();
  if (reason === null) {
    const now = nowSeconds();
    const age = state.qr.time === null ? Infinity : now - state.qr.time;
    if (state.qr.dirty || age >= QR_PERIOD_S || age < 0) await refreshQr();
    renderCountdown();
  }
  if (Date.now() - lastCheck >= CHECK_EVERY_MS) {
    lastCheck = Date.now();
    if (!offline && (credentialNeedsRenewal() || Date.now() - state.lastSync > SYNC_EVERY_MS)) {
      sync();
    }
  }
}

function onShowFor() {
  state.showFor = $("show-for").value;
  state.program = null; // the member's own choice now
  state.qr.dirty = true;
  renderShowFor();
  tick();
}

// -- benefits: entitlements, redemptions and their receipts ------------------------------------

function currentMemberId() {
  return state.profile?.me.member_id ?? state.credential?.doc.member_id ?? null;
}

// The stored benefits if they are the current member's.
function currentBenefits() {
  const b = state.benefits;
  if (!b) return null;
  const member = currentMemberId();
  return member === null || b.member_id === member ? b : null;
}

async function syncBenefits(memberId) {
  const [entitlements, history] = await Promise.all([
    authed("GET", "/v1/members/me/entitlements"),
    authed("GET", `/v1/members/me/redemptions?limit=${HISTORY_LIMIT}`),
  ]);
  const known = state.benefits?.member_id === memberId ? (state.benefits.programs ?? {}) : {};
  const programs = {};
  for (const e of entitlements) {
    if (e.kind !== "targeted") programs[e.program] = { version: e.version, groups_any: [] };
    else if (known[e.program]?.version === e.version) programs[e.program] = known[e.program];
    else programs[e.program] = await programRule(e);
  }
  state.benefits = {
    member_id: memberId,
    entitlements,
    programs,
    history,
    fetched_at: new Date().toISOString(),
  };
  await dbPut("benefits", state.benefits);
}

// The groups of a targeted program's rule (of the entitlement's version), or null.
async function programRule(entitlement) {
  try {
    const doc = await authed("GET", `/v1/programs/${encodeURIComponent(entitlement.program)}`);
    const version = (doc?.versions ?? []).find((v) => v.version === entitlement.version);
    const groups = version?.rules?.eligibility?.groups_any;
    return Array.isArray(groups) ? { version: entitlement.version, groups_any: groups } : null;
  } catch (e) {
    if (e instanceof ApiError) return null; // unreadable: the member chooses the groups
    throw e;
  }
}

// -- the log's public key, pinned on first use --------------------------------------------------

async function loadLogKey(record) {
  state.logKeyRecord = record?.text ? record : null;
  state.logKey = null;
  if (!state.logKeyRecord) return;
  try {
    const parsed = await receipts.parseVerifierKey(record.text);
    state.logKey = { ...parsed, pinned_at: record.pinned_at };
  } catch (e) {
    console.warn("the pinned log key is unusable here", e); // kept: never replaced silently
  }
}

async function fetchLogKey() {
  let response;
  try {
    response = await fetch("/v1/log/public-key", { cache: "no-store", credentials: "omit" });
  } catch {
    setOffline(true);
    throw new NetworkError("offline");
  }
  setOffline(false);
  return response.ok ? response.text() : null;
}

// Pin the server's key if none is pinned; otherwise note whether it serves another one.
async function syncLogKey() {
  const text = await fetchLogKey();
  if (text === null) return;
  let offered;
  try {
    offered = await receipts.parseVerifierKey(text);
  } catch {
    return; // malformed: nothing to pin, nothing to compare
  }
  if (!state.logKeyRecord) await pinLogKey(offered);
  else state.logKeyOffered = offered.text === state.logKeyRecord.text ? null : offered;
}

async function pinLogKey(parsed) {
  const record = { text: parsed.text, pinned_at: new Date().toISOString() };
  await dbPut("log-key", record);
  state.logKeyRecord = record;
  state.logKey = { ...parsed, pinned_at: record.pinned_at };
  state.logKeyOffered = null;
  state.verifications.clear(); // they were against the previous key
}

async function onRepin() {
  if (!state.logKeyOffered) return;
  await pinLogKey(state.logKeyOffered);
  renderBenefits();
}

// -- rendering the benefits ---------------------------------------------------------------------

function formatFen(fen) {
  return new Intl.NumberFormat(lang, { style: "currency", currency: "CNY" }).format(fen / 100);
}

// The API's times are RFC 3339 UTC with microseconds: shown in China time.
function formatChinaTime(when) {
  const date = new Date(String(when ?? "").replace(/(\.\d{3})\d+/, "$1"));
  if (!when || Number.isNaN(date.getTime())) return String(when ?? t("common.none"));
  return new Intl.DateTimeFormat(lang, {
    timeZone: CHINA_TZ,
    year: "numeric",
    month: "2-digit",
    day: "2-digit",
    hour: "2-digit",
    minute: "2-digit",
    hourCycle: "h23",
  }).format(date);
}

function asOf(benefits) {
  if (!benefits) return t(state.hasSession && !offline ? "benefits.loading" : "benefits.none");
  const time = formatTime(benefits.fetched_at);
  return t(offline ? "benefits.as-of-offline" : "benefits.as-of", { time });
}

function whereText(where) {
  const parts = [
    ...(where?.station_kinds ?? []).map((k) => (has(`skind.${k}`) ? t(`skind.${k}`) : k)),
    ...(where?.stations ?? []),
  ];
  if (where?.subtree) parts.push(t("ent.where-subtree", { union: where.subtree }));
  return t("ent.where", {
    where: parts.length ? parts.join(t("common.separator")) : t("ent.where-any"),
  });
}

function renderBenefits() {
  renderEntitlements();
  renderHistory();
  renderLogKey();
}

function renderEntitlements() {
  const benefits = currentBenefits();
  $("entitlements-updated").textContent = asOf(benefits);
  const list = $("entitlement-list");
  const items = benefits?.entitlements ?? [];
  if (!items.length) {
    list.replaceChildren(...(benefits ? [h("li", { class: "muted", text: t("ent.none") })] : []));
    return;
  }
  const canShow = qrMissingReason() === null;
  list.replaceChildren(
    ...items.map((e) => {
      const per = has(`ent.per.${e.per}`) ? t(`ent.per.${e.per}`) : e.per;
      let renews = null;
      if (e.renews_at) renews = t("ent.renews", { time: formatChinaTime(e.renews_at) });
      else if (e.remaining === 0) renews = t("ent.used-up");
      return h(
        "li",
        { class: "benefit", testid: `entitlement-${e.program}`, "data-remaining": e.remaining },
        h(
          "div",
          { class: "benefit-head" },
          h("span", { class: "benefit-name", text: e.name }),
          h("span", {
            class: "benefit-value",
            text: e.unit_value ? t("ent.value", { value: formatFen(e.unit_value) }) : t("ent.free"),
          }),
        ),
        h("p", {
          class: e.remaining > 0 ? "benefit-quota" : "benefit-quota used",
          testid: `entitlement-${e.program}-remaining`,
          text: t("ent.remaining", { remaining: e.remaining, quota: e.quota, per }),
        }),
        renews ? h("p", { class: "hint", text: renews }) : null,
        e.not_stackable_with
          ? h("p", {
              class: "hint warn",
              testid: `entitlement-${e.program}-not-stackable`,
              text: t("ent.not-stackable", { program: e.not_stackable_with }),
            })
          : null,
        h("p", { class: "hint", text: whereText(e.where) }),
        h("p", { class: "hint", text: t("ent.until", { date: e.until }) }),
        h("button", {
          type: "button",
          class: "button wide",
          testid: `show-qr-${e.program}`,
          text: t("ent.show-qr"),
          "aria-label": t("ent.show-qr-for", { name: e.name }),
          disabled: !canShow || e.remaining <= 0 || Boolean(e.not_stackable_with),
          onclick: () => onShowQrFor(e),
        }),
      );
    }),
  );
}

function verificationText(v) {
  if (v.status === "busy") return t("receipt.checking");
  if (v.status === "ok") return t("receipt.ok", { size: v.size });
  if (v.status === "warn") return t("receipt.not-shown", { size: v.size });
  const code = has(`receipt.${v.code}`) ? v.code : "unexpected";
  return t("receipt.failed", { reason: t(`receipt.${code}`, v.params) });
}

function renderHistory() {
  const benefits = currentBenefits();
  $("history-updated").textContent = asOf(benefits);
  const list = $("history-list");
  const rows = benefits?.history ?? [];
  if (!rows.length) {
    list.replaceChildren(...(benefits ? [h("li", { class: "muted", text: t("hist.none") })] : []));
    return;
  }
  list.replaceChildren(
    ...rows.map((row) => {
      const id = row.redemption;
      let v = state.verifications.get(id);
      if (v && v.receipt !== (row.receipt ? receipts.receiptFileText(row.receipt) : null)) {
        v = null; // a newer receipt (a later checkpoint) since: verify it again
      }
      return h(
        "li",
        {
          class: row.reversed_at ? "redemption reversed" : "redemption",
          testid: `redemption-${id}`,
          "data-reversed": row.reversed_at ? "true" : "false",
        },
        h(
          "div",
          { class: "benefit-head" },
          h("span", { class: "benefit-name", text: row.program_name }),
          h("span", { class: "benefit-value", text: formatFen(row.value) }),
        ),
        h("p", { class: "hint", text: t("hist.time", { time: formatChinaTime(row.at) }) }),
        h("p", {
          class: "hint",
          text: t("hist.detail", { station: row.station, quantity: row.quantity }),
        }),
        row.reversed_at
          ? h("p", {
              class: "tag tag-bad",
              testid: `redemption-${id}-reversed`,
              text: t("hist.reversed", { time: formatChinaTime(row.reversed_at) }),
            })
          : null,
        row.receipt
          ? h(
              "div",
              { class: "row-actions" },
              h("button", {
                type: "button",
                class: "button",
                testid: `verify-${id}`,
                text: t("hist.verify"),
                disabled: v?.status === "busy",
                onclick: () => onVerify(id),
              }),
              h("button", {
                type: "button",
                class: "button",
                testid: `download-${id}`,
                text: t("hist.download"),
                onclick: () => onDownload(id),
              }),
            )
          : h("p", {
              class: "hint",
              testid: `redemption-${id}-no-receipt`,
              text: t("hist.no-receipt"),
            }),
        v
          ? h("p", {
              class: `verify-result ${v.status}`,
              testid: `verify-result-${id}`,
              role: "status",
              "data-status": v.status,
              text: verificationText(v),
            })
          : null,
      );
    }),
  );
}

function renderLogKey() {
  const key = state.logKey;
  $("log-key-name").textContent = key ? key.name : t("common.none");
  $("log-key-fingerprint").textContent = key ? key.fingerprint : t("logkey.none");
  $("log-key-pinned").textContent = key
    ? t("logkey.pinned", { time: formatTime(key.pinned_at) })
    : "";
  $("log-key-string").textContent = key ? key.text : "";
  const offered = state.logKeyOffered;
  show($("log-key-changed"), Boolean(offered));
  $("log-key-changed-text").textContent = offered
    ? t("logkey.changed", { fingerprint: offered.fingerprint })
    : "";
}

// -- the member's actions on benefits -----------------------------------------------------------

// Show the QR code for a program: disclose one group of its rule that the member has (any one
// of `groups_any` is enough; a non-sensitive one first), or none for a universal program.
function onShowQrFor(entitlement) {
  const rule = currentBenefits()?.programs?.[entitlement.program] ?? null;
  const needed = rule?.groups_any ?? [];
  const held = new Set(state.credential?.disclosures.keys() ?? []);
  const usable = needed
    .filter((g) => held.has(g))
    .sort(
      (a, b) => SENSITIVE_GROUPS.includes(a) - SENSITIVE_GROUPS.includes(b) || a.localeCompare(b),
    );
  state.showFor = usable[0] ?? "";
  state.program = {
    id: entitlement.program,
    name: entitlement.name,
    missing: needed.length > 0 && usable.length === 0,
    unknown: entitlement.kind === "targeted" && rule === null,
  };
  state.qr.dirty = true;
  renderShowFor();
  tick();
  const card = $("qr-card");
  card.scrollIntoView({ block: "start" });
  card.focus({ preventScroll: true });
}

async function onVerify(id) {
  const row = currentBenefits()?.history.find((r) => r.redemption === id);
  if (!row?.receipt) return;
  const receipt = receipts.receiptFileText(row.receipt);
  state.verifications.set(id, { status: "busy", receipt });
  renderHistory();
  let result;
  try {
    if (!state.logKeyRecord && !offline) await syncLogKey(); // first sight: pin it now
    if (!state.logKey) throw new receipts.ReceiptError("no-key");
    const verified = await receipts.verifyRedemptionReceipt(row.receipt, state.logKey, {
      memberId: currentMemberId(),
      redemption: row,
    });
    const shown = await shownHere(verified.entry.body.presentation, row.at);
    result = { status: shown ? "ok" : "warn", size: verified.size, receipt };
  } catch (e) {
    if (e instanceof receipts.ReceiptError) {
      result = { status: "bad", code: e.code, params: e.params, receipt };
    } else if (e instanceof NetworkError) {
      result = { status: "bad", code: "no-key", params: {}, receipt };
    } else {
      result = { status: "bad", code: "unexpected", params: { detail: String(e) }, receipt };
    }
  }
  state.verifications.set(id, result);
  renderHistory();
}

// The receipt as a file, for `unionledger verify-receipt FILE`.
function onDownload(id) {
  const row = currentBenefits()?.history.find((r) => r.redemption === id);
  if (!row?.receipt) return;
  const blob = new Blob([receipts.receiptFileText(row.receipt)], { type: "application/json" });
  const url = URL.createObjectURL(blob);
  const link = h("a", { href: url, download: `unionledger-receipt-${id}.json`, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

async function onRefresh() {
  const button = $("refresh");
  button.disabled = true;
  try {
    await sync({ force: true });
  } finally {
    button.disabled = false;
  }
}

// -- starting -----------------------------------------------------------------------------------

async function loadMessages() {
  try {
    const response = await fetch("/static/member-i18n.json", { credentials: "omit" });
    if (response.ok) messages = await response.json();
  } catch {
    // neither network nor cache: the keys show instead of the texts
  }
}

async function startApp() {
  if (!window.isSecureContext || !crypto?.subtle || !window.indexedDB) {
    state.unsupported = true;
  }
  if (!state.unsupported) {
    try {
      await loadStored();
    } catch (e) {
      state.unsupported = true;
      console.warn("storage unavailable", e);
    }
    pruneShown().catch(() => {}); // best effort: old digests only take space
  }
  if (state.unsupported) {
    showView("member");
    renderMember();
    return;
  }
  if (!state.credential && !state.profile && !state.hasSession) {
    startLogin();
    return;
  }
  showView("member");
  renderMember();
  await tick();
  await sync({ force: true });
}

function registerServiceWorker() {
  if (!("serviceWorker" in navigator)) return;
  navigator.serviceWorker.register("/sw.js", { scope: "/" }).catch(() => {
    // no offline copy this time: the page still works online
  });
}

async function main() {
  lang = pickLanguage();
  await loadMessages();
  applyStaticTranslations();
  renderOffline();
  $("lang-switch").addEventListener("click", () => setLanguage(lang === "zh-CN" ? "en" : "zh-CN"));
  $("join-form").addEventListener("submit", onJoin);
  $("phone-form").addEventListener("submit", onPhone);
  $("code-form").addEventListener("submit", onCode);
  $("resend-code").addEventListener("click", onResend);
  $("change-phone").addEventListener("click", () => {
    login.codeSent = false;
    clearMessages();
    renderLogin();
    $("login-phone").focus();
  });
  $("relogin").addEventListener("click", startLogin);
  $("take-over").addEventListener("click", () => sync({ force: true, takeOver: true }));
  $("logout").addEventListener("click", onLogout);
  $("show-for").addEventListener("change", onShowFor);
  $("refresh").addEventListener("click", onRefresh);
  $("log-key-repin").addEventListener("click", onRepin);
  window.addEventListener("online", () => {
    setOffline(false);
    sync({ force: true });
  });
  window.addEventListener("offline", () => setOffline(true));
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState !== "visible") return;
    tick();
    if (!offline) sync(); // back from the station: the quota left, the new redemption
  });
  registerServiceWorker();
  const join = location.pathname.match(/^\/join\/([^/]+)\/?$/);
  if (join) await startJoin(decodeURIComponent(join[1]));
  else await startApp();
  setInterval(tick, 1000);
  document.body.dataset.ready = "true";
}

main();
