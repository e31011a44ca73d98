"""The web app at /app: the built assets of spa/ with client-side routing (index.html for unknown paths)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from litestar import Response, get
from litestar.enums import MediaType
from litestar.params import PathParameter
from litestar.response import File

from pulse.settings import Settings
from pulse.web.deps import SettingsDep
from pulse.web.query_params import ANY_QUERY_PARAMS

# Vite names files under assets/ by their content hash: they never change, so browsers may keep them.
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
APP_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
           "font-src 'self' data:; connect-src {connect}; object-src 'none'; frame-ancestors 'none'; base-uri 'self'; "
           "form-action 'self'")
MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
               ".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
               ".svg": "image/svg+xml", ".json": "application/json", ".png": "image/png", ".ico": "image/x-icon",
               ".woff2": "font/woff2", ".txt": "text/plain; charset=utf-8", ".map": "application/json"}
NOT_BUILT = ("The Pulse web app is not built: {dist} has no index.html.\n"
             "Build it with scripts/spa.sh (npm ci and npm run build in spa/), or point PULSE_SPA_DIST at a built "
             "copy.\n")


def app_csp(settings: Settings) -> str:
    """The app's Content-Security-Policy: it talks to Pulse, and with SSO also to the provider (discovery, tokens)."""
    connect = "'self'"
    issuer = settings.web_oidc_issuer if settings.web_oidc_client_id else None
    if issuer:
        parts = urlsplit(issuer)
        connect += f" {parts.scheme}://{parts.netloc}"
    return APP_CSP.format(connect=connect)


# The app's pages keep their state in the query string (/app/devices?site_id=plant-a): it is the app's, not ours.
_FREE_QUERY = {ANY_QUERY_PARAMS: True}


def spa_dist(settings: Settings) -> Path:
    """Where the built app is: PULSE_SPA_DIST, else spa/dist next to the pulse package in the source tree."""
    if settings.spa_dist:
        return Path(settings.spa_dist).resolve()
    return Path(__file__).resolve().parents[3] / "spa" / "dist"


def _file(settings: Settings, path: Path, cache: str) -> File:
    return File(path=path, media_type=MEDIA_TYPES.get(path.suffix, "application/octet-stream"),
                content_disposition_type="inline",
                headers={"content-security-policy": app_csp(settings), "cache-control": cache})


def _text(settings: Settings, status: int, text: str) -> Response[str]:
    return Response(text, status_code=status, media_type=MediaType.TEXT,
                    headers={"content-security-policy": app_csp(settings), "cache-control": "no-store"})


def resolve(dist: Path, path: str) -> Path | None:
    """The file under `dist` that `path` names, or None (missing, a directory, or outside `dist`)."""
    rel = path.lstrip("/")
    if not rel or "\x00" in rel:
        return None
    candidate = (dist / rel).resolve()
    if not candidate.is_relative_to(dist) or not candidate.is_file():
        return None
    return candidate


def _serve(settings: Settings, path: str) -> Response[str] | File:
    dist = spa_dist(settings)
    index = dist / "index.html"
    if not index.is_file():
        return _text(settings, 503, NOT_BUILT.format(dist=dist))
    found = resolve(dist, path)
    rel = path.lstrip("/")
    if found is not None:
        return _file(settings, found, IMMUTABLE if rel.startswith("assets/") else REVALIDATE)
    if rel.startswith("assets/") or Path(rel).suffix in MEDIA_TYPES.keys() - {".html"}:
        # a stale chunk must fail, not get HTML
        return _text(settings, 404, f"no such file in the web app: /app/{rel}\n")
    return _file(settings, index, REVALIDATE)


@get("/app", include_in_schema=False, sync_to_thread=False, opt=_FREE_QUERY)
def serve_app_root(settings: SettingsDep) -> Response[str] | File:
    """The app's start page."""
    return _serve(settings, "")


@get("/app/{path:path}", include_in_schema=False, sync_to_thread=False, opt=_FREE_QUERY)
def serve_app(settings: SettingsDep, path: Annotated[str, PathParameter()]) -> Response[str] | File:
    """A built file as is; index.html for every other page of the app, so the browser's router takes over."""
    return _serve(settings, path)


ROUTES = [serve_app_root, serve_app]
