// UnionLedger station app: the page a phone or tablet at the counter shows. It talks only to the
// local station process (`unionledger station serve`, api/station_app.py) on 127.0.0.1, which
// verifies presentations with the station's cached lists, redeems online (or offline into its
// queue when the server cannot be reached) and syncs the queue: the same functions as the
// `unionledger station` command line.
//
// Input: a handheld scanner "types" the QR text into the scanner field and presses Enter; where
// the browser has BarcodeDetector, the camera can scan too. The verdict is large, green or red,
// with the reason in plain words and the quota left. Every text is put in the page with
// textContent, never as HTML; the page runs under a Content-Security-Policy without inline code.
//
// Below it, this station's recent redemptions, with a reverse button while the server allows the
// station to reverse (within the reversal window; after it only an official may, in the admin
// console). The page holds no key: the local process answers for the station.

const LANGS = ["zh-CN", "en"];
const LANG_KEY = "unionledger.station.lang";
const PROGRAM_KEY = "unionledger.station.program";
const STATUS_EVERY_MS = 3000;

const $ = (id) => document.getElementById(id);

let messages = {};
let lang = "zh-CN";
let scanned = null; // the text of the presentation last verified valid
let verdict = { state: "idle" }; // kept so that a language switch can say it again
let lastStatus = null;
let lastSync = null;
let localDown = false; // the local station process does not answer (the page came from the cache)
// This station's recent redemptions: `supported` false when the local process has no
// /api/redemptions (an older one); `notice` what the last reversal came to.
const recent = { supported: null, items: [], next: null, loaded: false, error: null, notice: null };
const pastWindow = new Set(); // redemptions the server said this station may no longer reverse
let confirming = null; // the redemption whose reversal is being confirmed

function t(key, values = {}) {
  const text = messages[lang]?.[key] ?? messages["zh-CN"]?.[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (m, name) => (name in values ? String(values[name]) : m));
}

function has(key) {
  return key in (messages[lang] ?? {});
}

function reasonWords(code, message) {
  const key = `reason.${code}`;
  if (has(key)) return t(key);
  return `${t("reason.other", { code })} ${message ?? ""}`.trim();
}

// -- the local process ------------------------------------------------------------------------

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: body === undefined ? {} : { "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
  });
  const doc = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(doc.error ?? `HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return doc;
}

// An element with its text, class, test id and attributes, and its children.
function el(tag, { text, cls, testid, ...attrs } = {}, ...children) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (testid) node.dataset.testid = testid;
  if (text !== undefined) node.textContent = text;
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null && value !== false) {
      node.setAttribute(name, value === true ? "" : String(value));
    }
  }
  node.append(...children.filter(Boolean));
  return node;
}

function formatTime(iso) {
  const when = new Date(iso);
  if (!iso || Number.isNaN(when.getTime())) return iso ?? "";
  const options = { month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit" };
  return new Intl.DateTimeFormat(lang, options).format(when);
}

function formatYuan(fen) {
  return new Intl.NumberFormat(lang, { style: "currency", currency: "CNY" }).format(fen / 100);
}

// -- rendering --------------------------------------------------------------------------------

function applyLanguage() {
  document.documentElement.lang = lang;
  document.title = t("app.title");
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  $("lang-switch").setAttribute("lang", LANGS.find((l) => l !== lang));
  renderPrograms();
  renderStatus();
  renderVerdict();
  renderSync();
  renderRecent();
}

function renderPrograms() {
  const select = $("program");
  const chosen = select.value || localStorage.getItem(PROGRAM_KEY) || "";
  select.replaceChildren();
  for (const p of lastStatus?.programs ?? []) {
    const option = document.createElement("option");
    option.value = p.program;
    option.textContent = t(p.offline ? "program.offline" : "program.online", {
      name: p.name,
      program: p.program,
    });
    select.append(option);
  }
  if ([...select.options].some((o) => o.value === chosen)) select.value = chosen;
}

function renderStatus() {
  const net = $("net");
  const state = localDown
    ? "offline"
    : lastStatus === null
      ? "unknown"
      : lastStatus.online
        ? "online"
        : "offline";
  net.dataset.state = state;
  net.textContent = t(`net.${state}`);
  if (lastStatus === null) return;
  $("station-id").textContent = lastStatus.station;
  $("pending").textContent = String(lastStatus.pending);
  $("last-sync").textContent = lastStatus.last_sync ?? t("queue.never");
  $("cache-state").textContent = t(lastStatus.stale ? "cache.stale" : "cache.fresh");
  $("cache-state").className = lastStatus.stale ? "bad" : "muted";
}

function renderVerdict() {
  const v = verdict;
  const box = $("verdict");
  box.dataset.state = v.state;
  const word = {
    idle: "verdict.idle",
    checking: "verdict.checking",
    valid: "verdict.valid",
    refused: "verdict.refused",
    redeemed: "verdict.redeemed",
    queued: "verdict.queued",
  }[v.state];
  $("verdict-word").textContent = t(word);
  $("verdict-reason").textContent =
    v.state === "refused" ? reasonWords(v.code, v.message) : v.member ? t("verdict.member", v) : "";
  const detail = [];
  if (v.remaining !== undefined && v.remaining !== null) {
    // online: the quota left on the ledger; offline (valid, queued): what this device may
    // still hand out to the member today under the offline limits
    detail.push(t(v.state === "redeemed" ? "verdict.remaining" : "verdict.remaining-offline", v));
  }
  if (v.state === "queued") detail.push(t("verdict.queued-detail", v));
  if (v.state === "redeemed" && v.redemption) detail.push(t("verdict.online-detail", v));
  if (v.state === "error") detail.push(t("error.local", v));
  $("verdict-detail").textContent = detail.join(" · ");
  $("redeem").hidden = v.state !== "valid";
}

function renderSync() {
  const out = $("sync-result");
  if (lastSync === null) {
    out.textContent = "";
  } else if (lastSync.error) {
    out.textContent = t("queue.sync-failed", { message: reasonWords(lastSync.error, "") });
  } else {
    out.textContent = t("queue.synced", { sent: lastSync.sent, ...lastSync.counts });
  }
}

function show(next) {
  verdict = next;
  renderVerdict();
}

// -- actions ----------------------------------------------------------------------------------

async function refreshStatus() {
  try {
    lastStatus = await api("GET", "/api/status");
    localDown = false;
    if (!$("program").options.length) renderPrograms();
  } catch {
    localDown = true;
  }
  renderStatus();
}

async function check(text) {
  text = text.trim();
  if (!text) return;
  scanned = null;
  show({ state: "checking" });
  try {
    const program = $("program").value || undefined;
    const r = await api("POST", "/api/verify", { text, program });
    if (r.valid) {
      scanned = text;
      show({ state: "valid", member: r.member, remaining: r.remaining });
    } else {
      show({ state: "refused", code: r.code, message: r.message });
    }
  } catch (e) {
    show({ state: "refused", code: "local-error", message: String(e.message ?? e) });
  }
}

async function redeem() {
  if (scanned === null) return;
  const text = scanned;
  scanned = null;
  $("redeem").disabled = true;
  try {
    const program = $("program").value;
    const r = await api("POST", "/api/redeem", { text, program, quantity: 1, mode: "auto" });
    if (r.redeemed) {
      if (r.mode === "online" && recent.supported !== false) loadRecent();
      show({
        state: r.mode === "online" ? "redeemed" : "queued",
        member: r.member,
        remaining: r.remaining,
        redemption: r.redemption,
        seq: r.seq,
      });
    } else {
      show({ state: "refused", code: r.code, message: r.message });
    }
  } catch (e) {
    show({ state: "refused", code: "local-error", message: String(e.message ?? e) });
  } finally {
    $("redeem").disabled = false;
    $("scan-input").focus();
    await refreshStatus();
  }
}

async function sync() {
  $("sync").disabled = true;
  try {
    lastSync = await api("POST", "/api/sync");
  } catch (e) {
    lastSync = { error: "local-error", message: String(e.message ?? e) };
  } finally {
    $("sync").disabled = false;
  }
  renderSync();
  await refreshStatus();
}

// -- this station's recent redemptions, and reversing one ---------------------------------------
//
// The local process answers GET /api/redemptions[?before=id] (this station's own, newest first:
// the server's GET /v1/redemptions under the station's login, `{items, next}`) and
// POST /api/reverse {redemption, reason} (`{reversed: true, ...}`, or a refusal with `code` and
// `message`, as for a redemption). A local process without them (404) is said plainly.

async function loadRecent({ more = false } = {}) {
  const query = more && recent.next !== null ? `?before=${encodeURIComponent(recent.next)}` : "";
  try {
    const doc = await api("GET", `/api/redemptions${query}`);
    recent.supported = true;
    if (Array.isArray(doc.items)) {
      recent.items = more ? [...recent.items, ...doc.items] : doc.items;
      recent.next = doc.next ?? null;
      recent.loaded = true;
      recent.error = null;
    } else {
      recent.error = { code: doc.code ?? "local-error", message: doc.message ?? "" };
    }
  } catch (e) {
    if (e.status === 404) recent.supported = false;
    else recent.error = { code: "local-error", message: String(e.message ?? e) };
  }
  renderRecent();
}

function amountText(r) {
  if (!r.value) return t("recent.amount-free", { quantity: r.quantity });
  return t("recent.amount", { quantity: r.quantity, value: formatYuan(r.value) });
}

function recentItem(r, reason) {
  const id = r.redemption;
  const reversed = Boolean(r.reversed_at);
  let action = null;
  if (reversed) {
    action = el("p", {
      cls: "recent-state reversed",
      testid: `recent-state-${id}`,
      text: t("recent.reversed", { time: formatTime(r.reversed_at) }),
    });
  } else if (pastWindow.has(id) || r.can_reverse === false) {
    action = el("p", {
      cls: "recent-state bad",
      testid: `recent-state-${id}`,
      text: t("recent.past-window"),
    });
  } else if (confirming === id) {
    const input = el("input", {
      id: "recent-reason",
      testid: "recent-reason",
      type: "text",
      maxlength: 200,
      autocomplete: "off",
    });
    input.value = reason;
    action = el(
      "div",
      { cls: "confirm-box", testid: `recent-confirm-box-${id}`, role: "group" },
      el("p", { cls: "confirm-text", text: t("recent.confirm", { id }) }),
      el(
        "label",
        { cls: "field" },
        el("span", { text: t("recent.reason") }),
        input,
      ),
      el(
        "div",
        { cls: "recent-actions" },
        el("button", {
          type: "button",
          cls: "button",
          testid: "recent-cancel",
          text: t("recent.cancel"),
        }),
        el("button", {
          type: "button",
          cls: "button danger",
          testid: "recent-confirm",
          text: t("recent.confirm-ok"),
        }),
      ),
    );
    action.querySelector("[data-testid=recent-cancel]").addEventListener("click", () => {
      confirming = null;
      renderRecent();
    });
    const ok = action.querySelector("[data-testid=recent-confirm]");
    ok.addEventListener("click", () => reverseRedemption(id, ok));
  } else {
    const button = el("button", {
      type: "button",
      cls: "button danger",
      testid: `recent-reverse-${id}`,
      "aria-label": t("recent.reverse-row", { id }),
      text: t("recent.reverse"),
    });
    button.addEventListener("click", () => {
      confirming = id;
      recent.notice = null;
      renderRecent();
      $("recent-reason")?.focus();
    });
    action = el("div", { cls: "recent-actions" }, button);
  }
  return el(
    "li",
    {
      cls: reversed ? "recent-item reversed" : "recent-item",
      testid: `recent-${id}`,
      "data-reversed": reversed ? "true" : "false",
    },
    el("p", { cls: "recent-head" },
      el("span", { cls: "recent-time", text: formatTime(r.at) }),
      el("span", { cls: "recent-program", text: r.program_name })),
    el("p", {
      cls: "recent-facts muted",
      text: t("recent.facts", { member: r.member_id, amount: amountText(r), id }),
    }),
    action,
  );
}

function renderRecent() {
  const list = $("recent-list");
  const line = $("recent-state");
  const reason = $("recent-reason")?.value ?? "";
  $("recent-refresh").hidden = recent.supported === false;
  if (recent.supported === false) {
    line.textContent = t("recent.unsupported");
    line.className = "bad";
    list.replaceChildren();
    $("recent-more").hidden = true;
    return;
  }
  let text = "";
  let bad = false;
  if (recent.notice) {
    const n = recent.notice;
    text = t(n.key, { id: n.id, reason: n.code ? reasonWords(n.code, n.message) : "" });
    bad = Boolean(n.bad);
  } else if (recent.error) {
    const why = reasonWords(recent.error.code, recent.error.message);
    text = t("recent.failed", { message: why });
    bad = true;
  } else if (recent.loaded && !recent.items.length) {
    text = t("recent.none");
  }
  line.textContent = text;
  line.className = bad ? "bad" : "muted";
  list.replaceChildren(...recent.items.map((r) => recentItem(r, reason)));
  $("recent-more").hidden = recent.next === null;
}

async function reverseRedemption(id, button) {
  const reason = ($("recent-reason")?.value ?? "").trim() || null;
  button.disabled = true;
  let notice;
  try {
    const r = await api("POST", "/api/reverse", { redemption: id, reason });
    if (r.reversed) {
      notice = { key: "recent.done", id };
    } else {
      if (r.code === "reversal-window-closed") pastWindow.add(id);
      notice = { key: "recent.refused", id, bad: true, code: r.code, message: r.message };
    }
  } catch (e) {
    const message = String(e.message ?? e);
    notice = { key: "recent.refused", id, bad: true, code: "local-error", message };
  }
  confirming = null;
  recent.notice = notice;
  await loadRecent(); // the rows as the server has them now
}

// -- the camera (only where the browser has BarcodeDetector) ------------------------------------

let cameraStream = null;

async function toggleCamera() {
  const video = $("camera");
  if (cameraStream) {
    for (const track of cameraStream.getTracks()) track.stop();
    cameraStream = null;
    video.hidden = true;
    $("camera-button").textContent = t("scan.camera");
    return;
  }
  const detector = new window.BarcodeDetector({ formats: ["qr_code"] });
  cameraStream = await navigator.mediaDevices.getUserMedia({
    video: { facingMode: "environment" },
  });
  video.srcObject = cameraStream;
  video.hidden = false;
  $("camera-button").textContent = t("scan.camera-stop");
  await video.play();
  let last = "";
  const tick = async () => {
    if (!cameraStream) return;
    try {
      const codes = await detector.detect(video);
      const text = codes[0]?.rawValue ?? "";
      if (text && text !== last) {
        last = text;
        await check(text);
      }
    } catch {
      // a frame that cannot be read: the next one
    }
    setTimeout(tick, 250);
  };
  tick();
}

// -- start --------------------------------------------------------------------------------------

async function start() {
  const response = await fetch("/station-i18n.json");
  messages = await response.json();
  const saved = localStorage.getItem(LANG_KEY);
  lang = LANGS.includes(saved) ? saved : "zh-CN";
  applyLanguage();

  $("lang-switch").addEventListener("click", () => {
    lang = lang === "zh-CN" ? "en" : "zh-CN";
    localStorage.setItem(LANG_KEY, lang);
    applyLanguage();
  });
  $("program").addEventListener("change", () => {
    localStorage.setItem(PROGRAM_KEY, $("program").value);
    if (verdict.state !== "valid") show({ state: "idle" });
  });
  $("scan-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("scan-input");
    const text = input.value;
    input.value = "";
    check(text);
  });
  $("redeem").addEventListener("click", redeem);
  $("sync").addEventListener("click", sync);
  $("recent-refresh").addEventListener("click", () => {
    recent.notice = null;
    loadRecent();
  });
  $("recent-more").addEventListener("click", () => loadRecent({ more: true }));
  if ("BarcodeDetector" in window && navigator.mediaDevices?.getUserMedia) {
    $("camera-button").hidden = false;
    $("camera-button").addEventListener("click", () => {
      toggleCamera().catch((e) => show({ state: "refused", code: "camera", message: String(e) }));
    });
  }

  await refreshStatus();
  renderPrograms();
  loadRecent(); // in the background: the counter can scan meanwhile
  setInterval(refreshStatus, STATUS_EVERY_MS);
  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register("/station-sw.js").catch(() => null);
  }
  document.body.dataset.ready = "true";
  $("scan-input").focus();
}

start();
