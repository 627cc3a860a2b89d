"""The console's aiohttp application: routes, sign-in, CSRF, roles and security headers.

Each request goes through one middleware in this order, so no handler can forget a
check: static files, ``/login`` and the console's own ``/healthz`` aside, a request
without a principal is answered 401; one that is not GET or HEAD needs its CSRF token
(and an ``Origin``, when the browser sends one, of this console) or is answered 403; an
operator's action asked by a viewer is answered 403. Every response, errors and static
files included, carries the security headers (:data:`SECURITY_HEADERS`): a CSP that
allows scripts and styles from the console alone and no framing, no sniffing, no
referrer, and ``no-store`` on pages, which hold personal data.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web

from streamsync.console import pages
from streamsync.console.auth import (
    CSRF_FIELD,
    CSRF_HEADER,
    LOGIN_COOKIE,
    SESSION_COOKIE,
    Authenticator,
    Principal,
)
from streamsync.console.pages import PRINCIPAL, STATE_KEY, STATIC, ConsoleState, render

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}
#: Paths answered without a principal.
PUBLIC_PREFIXES = ("/static/",)
PUBLIC_PATHS = frozenset({"/login", "/healthz", "/favicon.ico"})
SAFE_METHODS = frozenset({"GET", "HEAD"})
AUTH_KEY = web.AppKey("console_auth", Authenticator)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Handlers only an operator may call.
OPERATOR_HANDLERS: frozenset[Handler] = frozenset({pages.control_action, pages.rebuild_store})


def build_app(state: ConsoleState, auth: Authenticator) -> web.Application:
    app = web.Application(middlewares=[_errors, _guard], client_max_size=64 * 1024)
    app[STATE_KEY] = state
    app[AUTH_KEY] = auth
    app.on_response_prepare.append(_headers)
    app.router.add_get("/", _home)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/favicon.ico", _no_icon)
    app.router.add_get("/login", _login_form)
    app.router.add_post("/login", _login)
    app.router.add_post("/logout", _logout)
    app.router.add_get("/audiences", pages.audiences_page)
    app.router.add_get("/audiences/{name}", pages.audience_page)
    app.router.add_get("/audiences/{name}/sizes.json", pages.sizes_json)
    app.router.add_get("/customers", pages.customer_page)
    app.router.add_get("/destinations", pages.destinations_page)
    app.router.add_post(
        "/destinations/{name}/{action:pause|resume|detach|resync|rollout}", pages.control_action
    )
    app.router.add_get("/preview", pages.preview_page)
    app.router.add_post("/preview", pages.preview_post)
    app.router.add_get("/health", pages.health_page)
    app.router.add_get("/dead-letters", pages.dead_letters_page)
    app.router.add_post("/store/rebuild", pages.rebuild_store)
    app.router.add_static("/static/", STATIC, show_index=False, follow_symlinks=False)
    return app


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if not request.path.startswith("/static/"):
        response.headers["Cache-Control"] = "no-store"


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """HTTP errors as a page of the console (their text escaped like everything else)."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or request.path.startswith("/static/"):
            raise
        if not _wants_html(request):
            raise
        titles = {401: "Sign in required", 403: "Not allowed", 404: "Not found"}
        response = render(
            request,
            "error.html",
            status=exc.status,
            title=titles.get(exc.status, exc.reason),
            message=exc.text or exc.reason,
            code=exc.status,
            next=request.path_qs,
        )
        for name in ("WWW-Authenticate",):
            if name in exc.headers:
                response.headers[name] = exc.headers[name]
        return response


def _wants_html(request: web.Request) -> bool:
    return not request.path.endswith(".json")


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in PUBLIC_PATHS or request.path.startswith(PUBLIC_PREFIXES):
        return await handler(request)
    auth = request.app[AUTH_KEY]
    principal = auth.authenticate(request.headers, request.cookies, request.remote)
    if principal is None:
        raise web.HTTPUnauthorized(text="Sign in to see this page.", headers=_challenge(auth))
    request[PRINCIPAL] = principal
    if request.method not in SAFE_METHODS:
        if not _same_origin(request):
            raise web.HTTPForbidden(text="This request came from another site.")
        given = request.headers.get(CSRF_HEADER)
        if given is None and request.content_type in (
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ):
            form = await request.post()
            value = form.get(CSRF_FIELD)
            given = value if isinstance(value, str) else None
        if not auth.check_csrf(principal, given):
            raise web.HTTPForbidden(
                text="The form's security token is missing or out of date: reload the page "
                "and try again."
            )
    route_handler = getattr(request.match_info, "handler", None)
    if route_handler in OPERATOR_HANDLERS and not principal.is_operator:
        raise web.HTTPForbidden(text="Only an operator can do this.")
    return await handler(request)


def _challenge(auth: Authenticator) -> dict[str, str]:
    if auth.basic_enabled:
        return {"WWW-Authenticate": 'Basic realm="streamsync console", charset="UTF-8"'}
    return {"WWW-Authenticate": 'Bearer realm="streamsync console"'}


def _same_origin(request: web.Request) -> bool:
    """An ``Origin`` header, when present, names this console (a browser sends one with
    every cross-site POST; scripts may send none), and ``Sec-Fetch-Site``, when present,
    says the request came from this console's own page.

    Under ``Referrer-Policy: no-referrer`` a browser submits the console's own forms with
    ``Origin: null``, which names no site: then ``Sec-Fetch-Site`` (sent by every current
    browser, and not settable by a page) and the CSRF token decide."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site != "same-origin":
        return False
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        return True
    return urlsplit(origin).netloc == request.host


async def _home(_request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/audiences")


async def _no_icon(_request: web.Request) -> web.Response:
    """Browsers ask for it on every first visit; an empty answer, not a 401 or 404."""
    return web.Response(status=204)


async def _healthz(_request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def _next(value: object) -> str:
    """Where to go after signing in: a path of this console only (never another site)."""
    text = value if isinstance(value, str) else ""
    if not text.startswith("/") or text.startswith("//") or "\\" in text:
        return "/audiences"
    return text


async def _login_form(
    request: web.Request, *, message: str = "", status: int = 200
) -> web.Response:
    auth = request.app[AUTH_KEY]
    token = secrets.token_urlsafe(24)
    response = render(
        request,
        "login.html",
        status=status,
        title="Sign in",
        message=message,
        login_csrf=token,
        next=_next(request.query.get("next", "/audiences")),
        proxy=auth.config.proxy is not None,
    )
    response.set_cookie(
        LOGIN_COOKIE,
        token,
        path="/login",
        httponly=True,
        samesite="Strict",
        secure=auth.config.secure_cookies,
        max_age=1800,
    )
    return response


async def _login(request: web.Request) -> web.StreamResponse:
    auth = request.app[AUTH_KEY]
    form = await request.post()
    given = form.get(CSRF_FIELD)
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not (isinstance(given, str) and expected and hmac.compare_digest(given, expected)):
        raise web.HTTPForbidden(text="The sign-in form is out of date: reload it.")
    name, secret = form.get("name", ""), form.get("secret", "")
    principal: Principal | None = None
    if isinstance(name, str) and isinstance(secret, str) and secret:
        principal = auth.sign_in(name.strip(), secret)
    if principal is None:
        return await _login_form(request, message="That did not sign you in.", status=401)
    session = auth.open_session(principal)
    response = web.HTTPSeeOther(_next(form.get("next")))
    response.set_cookie(
        SESSION_COOKIE,
        session,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=auth.config.secure_cookies,
        max_age=int(auth.config.session_hours * 3600),
    )
    response.del_cookie(LOGIN_COOKIE, path="/login")
    raise response


async def _logout(request: web.Request) -> web.StreamResponse:
    # The cookie holds the whole session: clearing it here is all signing out can do (a
    # copy of it stays valid until it expires; docs/console.md).
    response = web.HTTPSeeOther("/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    raise response
