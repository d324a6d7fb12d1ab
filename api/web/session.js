// UnionLedger consoles (admin and auditor): the signed-in session and the API client, shared by
// both pages as a plain ES module (no build step, no third-party code).
//
// - Tokens live in this module's memory only (never localStorage, sessionStorage or cookies):
//   reloading the page signs the user out. The access token is refreshed before it expires;
//   refreshes are serialised because the server revokes a session whose old refresh token is
//   presented twice.
// - Errors are RFC 9457 problems (application/problem+json), thrown as ApiError.

const REFRESH_MARGIN_S = 60; // refresh this long before the access token expires

export class ApiError extends Error {
  constructor(problem) {
    super(problem.title || `HTTP ${problem.status}`);
    this.problem = problem;
  }
}

// An answer for a session that has ended meanwhile: dropped without a word.
export function staleError() {
  return new ApiError({ type: "/problems/stale", status: 0, stale: true });
}

// The signed-in parts of a console page: shown (true) or the login form (false).
export function showSignedIn(signedIn) {
  for (const id of ["console", "whoami", "logout"]) document.getElementById(id).hidden = !signedIn;
  document.getElementById("login").hidden = signedIn;
}

// One page's session. What differs between the pages:
// - accept: the Accept header of its requests;
// - onEnd(messageKey): the page's part of ending a session (after the tokens are forgotten);
// - minRefreshFraction: refresh no sooner than this part of the token's lifetime;
// - offlineRetryMs: when a background refresh finds the server unreachable, try again this soon
//   (null: wait for the next request).
export function createSession({ accept, onEnd, minRefreshFraction = 0, offlineRetryMs = null }) {
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
    const delay = Math.max(lifetime - REFRESH_MARGIN_S, lifetime * minRefreshFraction, 5) * 1000;
    session.timer = setTimeout(refreshInBackground, delay);
  }

  async function refreshInBackground() {
    const outcome = await refreshTokens();
    if (offlineRetryMs !== null && outcome === "offline" && signedIn()) {
      clearTimeout(session.timer);
      session.timer = setTimeout(refreshInBackground, offlineRetryMs); // the LAN is down
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
          end("auth.session-ended");
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

  // One request; `raw` gives the Response itself (exports), else the parsed JSON.
  async function api(method, path, { body, auth = true, retry = true, raw = false } = {}) {
    const generation = session.generation;
    if (auth && signedIn() && Date.now() > session.expiresAt - 30_000) {
      await refreshTokens(); // a sleeping laptop or a throttled tab may have missed the timer
    }
    const headers = { Accept: accept };
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
      if (outcome === "ok") return api(method, path, { body, auth, raw, retry: false });
      if (outcome === "refused") throw staleError(); // the session has ended and said so
    }
    if (response.ok && raw) return response;
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
        end("auth.session-ended");
        throw staleError();
      }
      throw new ApiError(problem);
    }
    return data;
  }

  // Log in and start the session; the answer is the user (GET /v1/auth/me), for the page to
  // accept (session.me) or refuse (logout).
  async function signIn(username, password, totp) {
    const tokens = await api("POST", "/v1/auth/login", {
      auth: false,
      body: { username, password, totp: totp || null },
    });
    session.generation += 1;
    setTokens(tokens);
    session.username = username;
    return api("GET", "/v1/auth/me");
  }

  async function logout() {
    const access = session.access;
    end(null);
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
  }

  // Forget the session, then the page shows the login form (with a message key, if given).
  function end(messageKey) {
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
    onEnd(messageKey);
  }

  return { session, signedIn, api, signIn, logout, end };
}
