"""Web pages served by the API itself: the admin console (``GET /admin``) and its static files
(``GET /static/<name>``).

The files live in ``api/web/`` and ship with the package. Only the files found there at import
time are served (a fixed table: no path from the request ever reaches the file system), each
with its content type, ``X-Content-Type-Options: nosniff`` and a strict Content-Security-Policy:
everything from this origin only, no inline script or style, no framing. The page needs no
network beyond this server: no CDN, no web fonts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Response
from fastapi import Path as PathParam

from api.problems import Problem

router = APIRouter(tags=["web"])

WEB_DIR = Path(__file__).resolve().parent / "web"

CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "font-src 'self'",
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


def _static_files() -> dict[str, Path]:
    """The servable files of ``api/web`` by name (top level only, known types only)."""
    if not WEB_DIR.is_dir():
        return {}
    return {
        p.name: p
        for p in WEB_DIR.iterdir()
        if p.is_file() and p.suffix in CONTENT_TYPES and not p.name.startswith(".")
    }


STATIC_FILES = _static_files()


def _file_response(name: str) -> Response:
    path = STATIC_FILES.get(name)
    if path is None:
        raise Problem("not-found", f"no static file {name!r}")
    return Response(
        path.read_bytes(), media_type=CONTENT_TYPES[path.suffix], headers=SECURITY_HEADERS
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
    "/static/{name}",
    summary="A static file of the web pages (scripts, styles, translations)",
    response_class=Response,
)
def static_file(name: Annotated[str, PathParam(max_length=64)]) -> Response:
    return _file_response(name)
