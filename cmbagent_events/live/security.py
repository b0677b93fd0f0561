"""Who may read the viewer: loopback by default, a token for anything else.

- Binding to a non-loopback address without a token is refused (:func:`check_bind`); a token
  shorter than 16 characters is refused anywhere (a short one can be guessed).
- With a token, every page, API and WebSocket request must carry it: ``Authorization: Bearer``,
  ``?token=`` or the cookie the page sets after a tokened visit. Static assets hold no data and
  are served without it.
- Without a token (loopback only), the ``Host`` header must name a loopback host (stops DNS
  rebinding), and a cross-site ``Origin`` is refused (stops a web page in the user's browser from
  reading local runs through ``fetch`` or a WebSocket).
"""

from __future__ import annotations

import hmac
import ipaddress
from urllib.parse import urlsplit

from aiohttp import web

from ..errors import ServeError

TOKEN_COOKIE = "cmbagent_events_token"
MIN_TOKEN_CHARS = 16
# Sent with every response: the page loads only its own scripts and styles and talks only to this
# server (no inline script, no framing), browsers never guess a content type, and the token-bearing
# URL is never sent on as a referrer.
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; script-src 'self'; style-src 'self'; "
                                "style-src-attr 'unsafe-inline'; "
                                "img-src 'self' data:; "
                                "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse a non-loopback bind without a token (and an empty token anywhere)."""
    if token is not None and len(token.strip()) < MIN_TOKEN_CHARS:
        raise ServeError(f"--token must be at least {MIN_TOKEN_CHARS} characters (a short token can be guessed); "
                         "e.g. python -c 'import secrets; print(secrets.token_urlsafe(24))'")
    if not is_loopback(host) and not token:
        raise ServeError(
            f"refusing to serve on {host!r} without a token: anyone who can reach it could read every "
            "captured run. Pass --token SECRET (clients then open /?token=SECRET), or bind to 127.0.0.1."
        )


def _request_token(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.query.get("token") or request.cookies.get(TOKEN_COOKIE)


def _host_of(value: str) -> str:
    return (urlsplit(f"//{value}").hostname or "").lower()


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare`` hook: :data:`SECURITY_HEADERS` on every response, errors included."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


def make_middleware(token: str | None):
    """The aiohttp middleware enforcing the rules in the module doc."""

    @web.middleware
    async def guard(request: web.Request, handler):
        if request.path.startswith("/static/"):
            return await handler(request)
        if token is not None:
            given = _request_token(request)
            if given is None or not hmac.compare_digest(given.encode(), token.encode()):
                raise web.HTTPUnauthorized(text="missing or bad token: open /?token=YOUR_TOKEN\n")
        else:
            if not is_loopback(_host_of(request.host)):
                raise web.HTTPForbidden(text="this server answers loopback hosts only\n")
        origin = request.headers.get("Origin")
        if origin and urlsplit(origin).netloc.lower() != request.host.lower():  # "null" too
            raise web.HTTPForbidden(text="cross-origin requests are refused\n")
        if "\x00" in request.path or "\x00" in request.query_string or "%00" in request.raw_path:
            raise web.HTTPBadRequest(text="a NUL character in the request: no run, event or filter holds one\n")
        response = await handler(request)
        if token is not None and request.query.get("token") and not response.prepared:
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict")
        return response

    return guard
