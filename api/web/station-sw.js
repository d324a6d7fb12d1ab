// UnionLedger station app service worker: keeps the page's files so that the page reloads while
// the local station process (`unionledger station serve`) restarts. Network first, the cached
// copy when the local process does not answer. The JSON API (/api/...) is never cached.

const CACHE = "unionledger-station-v1";
const SHELL = ["/", "/station.js", "/station.css", "/station-i18n.json", "/favicon.svg"];

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

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (url.origin !== self.location.origin || event.request.method !== "GET") return;
  const key = url.pathname === "/station.html" ? "/" : url.pathname;
  if (!SHELL.includes(key)) return;
  event.respondWith(
    caches.open(CACHE).then((cache) =>
      fetch(event.request)
        .then((response) => {
          if (response.ok) cache.put(key, response.clone());
          return response;
        })
        .catch(() => cache.match(key).then((cached) => cached ?? Response.error())),
    ),
  );
});
