"""``unionledger station serve``: the station app's small local process (docs/station.md,
"Station app").

A phone or tablet at the counter opens ``http://127.0.0.1:PORT/``: the page (``api/web/
station.html`` and its files) and a tiny JSON API backed by the functions of
:mod:`api.station_cli` on one station directory, so the verification and the offline queue are
exactly the command line's:

- ``GET /api/status``: the queue, the cache's staleness, the programs (for the picker), and
  ``online`` (whether this process can reach the server now);
- ``POST /api/verify`` ``{text}``: the verdict, offline, with the cached lists;
- ``POST /api/redeem`` ``{text, program, quantity, mode}`` (``auto``, ``online``, ``offline``);
- ``POST /api/sync``: upload the pending records;
- ``GET /api/redemptions[?before=ID]``: the station's own redemptions, newest first (the
  server's ``GET /v1/redemptions`` under the station's login: ``{items, next}``);
- ``POST /api/reverse`` ``{redemption, reason}``: reverse one (within the reversal window).

The standard library's :class:`http.server.ThreadingHTTPServer`, bound to 127.0.0.1 only; one
lock serialises the operations (one queue, one device). Only a fixed table of files is served,
with the same strict Content-Security-Policy as the main API's pages. Every answer is JSON;
a refusal is an answer (HTTP 200, ``valid``/``redeemed`` false), a broken request 400, an
unprovisioned directory or a damaged key 500 with ``{"error": ...}``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import urllib.parse
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from api import station_cli
from api.routes_web import CONTENT_TYPES, SECURITY_HEADERS
from verifier.errors import StationQueueError

__all__ = ["FILES", "StationApp", "make_server", "serve"]

WEB_DIR = Path(__file__).resolve().parent / "web"
# The page's files, by the path they are served at (nothing else of the disk is reachable).
FILES = {
    "/": "station.html",
    "/station.html": "station.html",
    "/station.js": "station.js",
    "/station.css": "station.css",
    "/station-i18n.json": "station-i18n.json",
    "/station-sw.js": "station-sw.js",  # at the root: its scope is the whole app
    "/favicon.svg": "favicon.svg",
}
MAX_BODY = 64 * 1024
PROBE_TIMEOUT = 2.0  # seconds: is the server reachable?


class StationApp:
    """The operations on one station directory, one at a time."""

    def __init__(self, directory: str, timeout: float = 10.0) -> None:
        self.directory = directory
        self.timeout = timeout
        self.lock = threading.Lock()
        self.session = station_cli.Session(directory, timeout)  # one login, kept

    def _on_server(self, call: Callable[[station_cli.Server], dict[str, Any]]) -> dict[str, Any]:
        with self.lock:
            try:
                return self.session.call(call)
            except station_cli.Unreachable as e:
                return {
                    "exit": station_cli.EXIT_UNREACHABLE,
                    "code": "server-unreachable",
                    "message": str(e),
                }

    def redemptions(self, before: int | None) -> dict[str, Any]:
        return self._on_server(lambda server: station_cli.list_redemptions(server, before=before))

    def reverse(self, body: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(body) - {"redemption", "reason"})
        if unknown:
            raise BadRequest(f"{unknown[0]}: not a member of this request")
        redemption = body.get("redemption")
        reason = body.get("reason")
        if not isinstance(redemption, int) or isinstance(redemption, bool) or redemption < 0:
            raise BadRequest("redemption: the redemption's number")
        if reason is not None and (not isinstance(reason, str) or len(reason) > 200):
            raise BadRequest("reason: at most 200 characters, or absent")
        reason = reason.strip() or None if reason else None
        result = self._on_server(
            lambda server: station_cli.reverse_redemption(server, redemption, reason)
        )
        result.setdefault("reversed", False)
        return result

    def online(self) -> bool:
        state = station_cli.StationDir(self.directory).state()
        server = station_cli.Server(state["server"], min(self.timeout, PROBE_TIMEOUT))
        try:
            return server.request("GET", "/healthz").ok
        except station_cli.Unreachable:
            return False

    def status(self) -> dict[str, Any]:
        with self.lock:
            doc = station_cli.status_doc(self.directory)
        doc["online"] = self.online()
        return doc

    def verify(self, body: dict[str, Any]) -> dict[str, Any]:
        text = _text(body)
        program = body.get("program")
        if program is not None and (not isinstance(program, str) or not program):
            raise BadRequest("program: a program id, or absent")
        with self.lock:
            return station_cli.verify_text(self.directory, text, program=program)

    def redeem(self, body: dict[str, Any]) -> dict[str, Any]:
        text = _text(body)
        program = body.get("program")
        quantity = body.get("quantity", 1)
        mode = body.get("mode", "auto")
        if not isinstance(program, str) or not program:
            raise BadRequest("program: required")
        if not isinstance(quantity, int) or isinstance(quantity, bool):
            raise BadRequest("quantity: an integer")
        if mode not in ("auto", "online", "offline"):
            raise BadRequest("mode: auto, online or offline")
        with self.lock:
            try:
                result = station_cli.redeem_text(
                    self.directory,
                    text,
                    program=program,
                    quantity=quantity,
                    mode=mode,
                    timeout=self.timeout,
                    session=self.session,
                )
            except station_cli.Unreachable as e:
                return {
                    "redeemed": False,
                    "exit": station_cli.EXIT_UNREACHABLE,
                    "mode": "online",
                    "code": "server-unreachable",
                    "message": str(e),
                }
        with self.lock:
            result["pending"] = station_cli.status_doc(self.directory)["pending"]
        return result

    def sync(self) -> dict[str, Any]:
        with self.lock:
            try:
                return station_cli.sync_dir(self.directory, timeout=self.timeout)
            except station_cli.Unreachable as e:
                pending = station_cli.status_doc(self.directory)["pending"]
                return {
                    "exit": station_cli.EXIT_UNREACHABLE,
                    "error": "server-unreachable",
                    "message": str(e),
                    "pending": pending,
                }


class BadRequest(Exception):
    pass


def _text(body: dict[str, Any]) -> str:
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        raise BadRequest("text: the scanned QR text is required")
    return text.strip()


class Handler(BaseHTTPRequestHandler):
    server_version = "UnionLedgerStation/1"
    app: StationApp  # set by make_server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the counter has no console to read

    def _send(self, status: int, payload: bytes, content_type: str) -> None:
        self.send_response(status)
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _json(self, status: int, doc: object) -> None:
        payload = json.dumps(doc, ensure_ascii=False).encode()
        self._send(status, payload, "application/json")

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        if path == "/api/status":
            self._call(self.app.status)
            return
        if path == "/api/redemptions":
            before = urllib.parse.parse_qs(query).get("before", [None])[-1]
            if before is not None and not before.isdigit():
                self._json(HTTPStatus.BAD_REQUEST, {"error": "before: a redemption's number"})
                return
            self._call(lambda: self.app.redemptions(None if before is None else int(before)))
            return
        name = FILES.get(path)
        file = WEB_DIR / name if name else None
        if file is None or not file.is_file():
            self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})
            return
        self._send(HTTPStatus.OK, file.read_bytes(), CONTENT_TYPES[file.suffix])

    do_HEAD = do_GET

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        routes: dict[str, Callable[[dict[str, Any]], object]] = {
            "/api/verify": self.app.verify,
            "/api/redeem": self.app.redeem,
            "/api/sync": lambda _body: self.app.sync(),
            "/api/reverse": self.app.reverse,
        }
        operation = routes.get(path)
        if operation is None:
            self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 <= length <= MAX_BODY:
                raise BadRequest("the body is too large")
            raw = self.rfile.read(length) if length else b"{}"
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise BadRequest("the body is not a JSON object")
        except (ValueError, BadRequest) as e:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(e)})
            return
        self._call(lambda: operation(body))

    def _call(self, operation: Callable[[], object]) -> None:
        try:
            doc = operation()
        except BadRequest as e:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(e)})
        except station_cli.CommandError as e:
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": str(e), "exit": e.exit_code})
        except StationQueueError as e:
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": e.diagnostics()})
        except sqlite3.Error as e:
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"the queue: {e}"})
        else:
            self._json(HTTPStatus.OK, doc)


def make_server(app: StationApp, port: int = 0) -> ThreadingHTTPServer:
    """The HTTP server on 127.0.0.1 (``port`` 0: any free port; see ``server_address``)."""
    handler = type("BoundHandler", (Handler,), {"app": app})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    return server


def serve(directory: str, port: int, timeout: float) -> int:
    app = StationApp(directory, timeout)
    station_cli.StationDir(directory).state()  # provisioned, or exit 2 now
    server = make_server(app, port)
    host, bound = server.server_address[:2]
    print(f"station app on http://{host!s}:{bound} (directory {directory})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return station_cli.EXIT_OK
