"""Web pages served by the API itself: the admin console (``GET /admin``), the auditor console
(``GET /auditor``), the member app
(``GET /app``, and ``GET /join/<join code>``, the address a union's join QR holds), the member
app's service worker (``GET /sw.js``, at the root so that its scope covers both), and their
static files (``GET /static/<name>``, third-party modules at ``GET /static/vendor/<name>``).

The files live in ``api/web/`` and ``api/web/vendor/`` and ship with the package. Only the
files found there at import time are served (a fixed table: no path from the request ever
reaches the file system), each with its content type, ``X-Content-Type-Options: nosniff`` and a
strict Content-Security-Policy: everything from this origin only, no inline script or style, no
framing. The pages need no network beyond this server: no CDN, no web fonts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Response
from fastapi import Path as PathParam

from api.problems import Problem

router = APIRouter(tags=["web"])

WEB_DIR = Path(__file__).resolve().parent / "web"
VENDOR_DIR = WEB_DIR / "vendor"
MEMBER_APP = "member.html"
SERVICE_WORKER = "sw.js"

CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "font-src 'self'",
        "worker-src 'self'",  # the member app's service worker
        "manifest-src 'self'",  # and its web app manifest
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # The page and its scripts change with each release: revalidate instead of caching blindly.
    "Cache-Control": "no-cache",
}
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".webmanifest": "application/manifest+json",
}


def _static_files(
    folder: Path = WEB_DIR, suffixes: Iterable[str] = CONTENT_TYPES
) -> dict[str, Path]:
    """The servable files of ``folder`` by name (top level only, known types only)."""
    if not folder.is_dir():
        return {}
    wanted = set(suffixes)
    return {
        p.name: p
        for p in folder.iterdir()
        if p.is_file() and p.suffix in wanted and not p.name.startswith(".")
    }


STATIC_FILES = _static_files()
# Third-party ES modules (built from npm by web-src/, see vendor/README.md): scripts only,
# not their licence texts or notes.
VENDOR_FILES = _static_files(VENDOR_DIR, (".js",))


def _file_response(
    name: str, table: Mapping[str, Path] = STATIC_FILES, headers: Mapping[str, str] | None = None
) -> Response:
    path = table.get(name)
    if path is None:
        raise Problem("not-found", f"no static file {name!r}")
    return Response(
        path.read_bytes(),
        media_type=CONTENT_TYPES[path.suffix],
        headers={**SECURITY_HEADERS, **(headers or {})},
    )


@router.get(
    "/admin",
    summary="The admin console for union officials (a web page)",
    response_class=Response,
    responses={200: {"content": {"text/html": {}}}},
)
def admin_page() -> Response:
    return _file_response("admin.html")


@router.get(
    "/auditor",
    summary="The auditor console: checkpoints, statistics, statements, settlement (a web page)",
    response_class=Response,
    responses={200: {"content": {"text/html": {}}}},
)
def auditor_page() -> Response:
    return _file_response("auditor.html")


@router.get(
    "/static/{name}",
    summary="A static file of the web pages (scripts, styles, translations)",
    response_class=Response,
)
def static_file(name: Annotated[str, PathParam(max_length=64)]) -> Response:
    return _file_response(name)


@router.get(
    "/static/vendor/{name}",
    summary="A third-party module of the member app (vendored from npm)",
    response_class=Response,
)
def vendor_file(name: Annotated[str, PathParam(max_length=64)]) -> Response:
    return _file_response(name, VENDOR_FILES)


@router.get(
    "/app",
    summary="The member app: log in, see your membership, show your QR code (a web page, PWA)",
    response_class=Response,
    responses={200: {"content": {"text/html": {}}}},
)
def member_app() -> Response:
    return _file_response(MEMBER_APP)


@router.get(
    "/join/{join_code}",
    summary="The member app's join page: the address a union's join QR code holds",
    response_class=Response,
    responses={200: {"content": {"text/html": {}}}},
)
def join_page(join_code: Annotated[str, PathParam(max_length=32)]) -> Response:
    # The page reads the code from its own address and asks GET /v1/join/{code}: an unknown
    # code is the page's to explain, in the member's language.
    del join_code
    return _file_response(MEMBER_APP)


@router.get(
    "/sw.js",
    summary="The member app's service worker (at the root: its scope covers /app and /join/)",
    response_class=Response,
)
def service_worker() -> Response:
    return _file_response(SERVICE_WORKER, headers={"Service-Worker-Allowed": "/"})
