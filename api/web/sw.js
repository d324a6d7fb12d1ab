// UnionLedger member app service worker: keeps the app shell (page, scripts, styles,
// translations, vendored modules, icons) so that the app reloads, keeps making QR codes and
// verifies receipts with the network off. Served at /sw.js so that its scope, "/", covers
// /app and /join/<code>.
//
// Network first (fresh code when online), the cached copy when the network fails or is slow.
// Only the shell is cached: API answers never are (the page keeps what it needs in IndexedDB:
// the credential, the membership, the benefits with their receipts, the pinned log key),
// and every other request of this origin (the admin console, the API) passes through untouched.

const CACHE = "unionledger-member-v2"; // bumped when the shell's files change
const APP = "/app"; // the one page: /join/<code> is the same document
const SHELL = [
  APP,
  "/static/member.js",
  "/static/receipt.js",
  "/static/member.css",
  "/static/member-i18n.json",
  "/static/member.webmanifest",
  "/static/member-icon.svg",
  "/static/member-icon-maskable.svg",
  "/static/vendor/cbor.js",
  "/static/vendor/base45.js",
  "/static/vendor/qrcode.js",
];
const NETWORK_TIMEOUT_MS = 4000; // then the cached copy (the network may hang rather than fail)

self.addEventListener("install", (event) => {
  event.waitUntil(
    caches
      .open(CACHE)
      .then((cache) => cache.addAll(SHELL.map((path) => new Request(path, { cache: "no-cache" }))))
      .then(() => self.skipWaiting()),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((names) => Promise.all(names.filter((n) => n !== CACHE).map((n) => caches.delete(n))))
      .then(() => self.clients.claim()),
  );
});

function shellKey(request) {
  const url = new URL(request.url);
  if (url.origin !== self.location.origin || request.method !== "GET") return null;
  if (url.pathname === APP || /^\/join\/[^/]+\/?$/.test(url.pathname)) return APP;
  return SHELL.includes(url.pathname) ? url.pathname : null;
}

async function networkFirst(request, key) {
  const cache = await caches.open(CACHE);
  const fromNetwork = fetch(request).then((response) => {
    if (response.ok) cache.put(key, response.clone());
    return response;
  });
  fromNetwork.catch(() => null); // handled below: no "uncaught" noise when the cache answers
  const timeout = new Promise((resolve) => {
    setTimeout(resolve, NETWORK_TIMEOUT_MS, null);
  });
  try {
    const response = await Promise.race([fromNetwork, timeout]);
    if (response) return response;
  } catch {
    // offline: the cached copy below
  }
  const cached = await cache.match(key);
  if (cached) return cached;
  return fromNetwork; // nothing cached yet: the network's answer, or its error
}

self.addEventListener("fetch", (event) => {
  const key = shellKey(event.request);
  if (key === null) return;
  event.respondWith(networkFirst(event.request, key));
});
