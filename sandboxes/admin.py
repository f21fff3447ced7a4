"""The sandboxes' admin token: what every ``/sandbox/...`` route (test controls, an accountant's screens) needs.

Those routes are not part of the AMIS APIs (which keep their own logins) but they change the sandbox's
records and tokens, so each request must carry the sandbox's admin token, either

* ``Authorization: Bearer <token>`` (scripts, tests, the demo's users), or
* a ``token`` field of an HTML form (``application/x-www-form-urlencoded``): the sandbox's own page
  puts it in its buttons when the browser holds the page's cookie. A form field, not the cookie: a
  page of another local service is same-site (ports do not count) and could post with the cookie, but
  cannot read the page to learn the field.

The page is opened once with ``/?token=<token>``, the link the sandbox prints at start: the right token
is exchanged for an HttpOnly, SameSite=Strict cookie and the browser is sent to the same URL without it
(``exchange_page_token``), so the token stays out of the address bar, the history and the Referer.

Anything else answers 401 and changes nothing. The token is ``LIENTHONG_SANDBOX_ADMIN_TOKEN`` when set,
else a random one made at start (``new_admin_token``) and printed once on the console.
"""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import quote

from aiohttp import web
from aiohttp.typedefs import Handler

ADMIN_TOKEN = web.AppKey("sandbox_admin_token", str)
ADMIN_PATH = "/sandbox/"
FORM_TYPE = "application/x-www-form-urlencoded"


def new_admin_token() -> str:
    return secrets.token_urlsafe(24)


def page_link(url: str, token: str) -> str:
    """The link to a sandbox's page whose buttons act (``url`` without a trailing slash)."""
    return f"{url}/?token={quote(token, safe='')}"


def cookie_name(request: web.BaseRequest) -> str:
    """The page's cookie, one per port: cookies do not tell ports apart, and both sandboxes (and the
    operator's page) may run on one host with different tokens."""
    return f"lienthong_sandbox_{request.url.port or 0}"


def _matches(offered: str | None, token: str) -> bool:
    return offered is not None and hmac.compare_digest(offered.encode(), token.encode())


def page_token(request: web.Request) -> str | None:
    """The admin token the page's cookie holds (``exchange_page_token`` set it), when it is the right one."""
    offered = request.cookies.get(cookie_name(request))
    return offered if _matches(offered, request.app[ADMIN_TOKEN]) else None


def without_token(request: web.BaseRequest) -> str:
    """The request's path and query, ``token`` left out."""
    query = request.rel_url.query.copy()
    query.popall("token", None)
    return str(request.rel_url.with_query(query))


@web.middleware
async def exchange_page_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A GET carrying the right ``?token=``: the cookie instead, and the same URL without the token (303).
    A wrong one is left to the page, which says so."""
    if request.method == "GET" and _matches(request.query.get("token"), request.app[ADMIN_TOKEN]):
        answer = web.HTTPSeeOther(without_token(request))
        answer.set_cookie(cookie_name(request), request.app[ADMIN_TOKEN], httponly=True, samesite="Strict", path="/")
        return answer
    return await handler(request)


async def _offered_token(request: web.Request) -> str | None:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    if request.content_type == FORM_TYPE:
        value = (await request.post()).get("token")
        return value if isinstance(value, str) else None
    return None


def refused() -> web.Response:
    return web.json_response(
        {
            "error": "unauthorized",
            "message": "this is a sandbox control (not part of the AMIS API) and needs the sandbox's admin token: "
            "send 'Authorization: Bearer <token>' with LIENTHONG_SANDBOX_ADMIN_TOKEN, or the token the sandbox "
            "printed at start; on the sandbox's page, open the '/?token=...' link it printed",
        },
        status=401,
        headers={"WWW-Authenticate": 'Bearer realm="lienthong sandbox"'},
    )


@web.middleware
async def require_admin_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every request under ``/sandbox/`` carries the admin token, or is answered 401 before anything runs."""
    if request.path.startswith(ADMIN_PATH) and not _matches(await _offered_token(request), request.app[ADMIN_TOKEN]):
        return refused()
    return await handler(request)


def protect(app: web.Application, admin_token: str | None) -> str:
    """Guard ``app``'s ``/sandbox/`` routes with ``admin_token`` (a random one when None); the token."""
    token = admin_token if admin_token is not None else new_admin_token()
    if not token:
        raise ValueError("a sandbox's admin token cannot be empty")
    app[ADMIN_TOKEN] = token
    app.middlewares.append(exchange_page_token)
    app.middlewares.append(require_admin_token)
    return token
