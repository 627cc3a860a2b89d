"""Who is asking, what they may do, and CSRF.

Three ways in, each only when configured (``console.auth``):

* **bearer token**: ``Authorization: Bearer <token>``, a user's ``token`` Secret - for
  scripts; a browser signs in once with it on ``/login`` and gets a session cookie;
* **basic auth**: ``Authorization: Basic``, a user's ``name`` and ``password`` Secret -
  the browser asks for them itself;
* **a verified user header** from a reverse proxy that did the OIDC sign-in: believed
  only from the ``trusted_proxies`` addresses (anyone can send a header), the role from
  the ``operators`` / ``viewers`` lists.

Secrets are read once at start (:meth:`Credentials.read`, which registers them with the
log redactor) and compared in constant time; no page ever renders one.

A sign-in on ``/login`` is kept in a signed, expiring cookie
(:mod:`streamsync.console.session_cookie`) rather than in this process, so any replica
with the same ``auth.session_key`` accepts it. A cookie is believed only while its user
is still configured with the role it names: removing a user or changing their role in
the configuration ends their sessions at the next restart of each replica.

Two roles: a ``viewer`` reads every page; an ``operator`` may also act. CSRF: every
request that is not GET or HEAD needs the token of the signed-in principal (form field
``csrf_token`` or header ``X-CSRF-Token``), an HMAC of who they are and their session id
under a key derived from the session key - it cannot be guessed from another site, a
page of the console carries it in its forms, and every replica computes the same one.
Basic auth and proxy headers are sent by the browser on their own, which is what makes
this necessary for them as much as for the cookie.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from streamsync.console.config import AuthConfig, Role
from streamsync.console.session_cookie import MIN_KEY_LENGTH, SessionSigner, derive_key
from streamsync.credentials import CredentialsError

SESSION_COOKIE = "streamsync_console"
#: Double-submit cookie of the sign-in form (there is no session to bind it to yet).
LOGIN_COOKIE = "streamsync_console_login"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"


class SessionKeyError(CredentialsError):
    """The configured session key is too short to sign with (reported like any other
    unusable credential: the command stops before it serves anything)."""


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: Role
    #: token, basic, proxy or session (a token sign-in on /login)
    method: str
    session: str = ""

    @property
    def is_operator(self) -> bool:
        return self.role == "operator"


@dataclass(frozen=True, slots=True)
class _Secret:
    name: str
    role: Role
    value: bytes


class Authenticator:
    def __init__(
        self,
        config: AuthConfig,
        env: Mapping[str, str] | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._clock = clock
        self._tokens: list[_Secret] = []
        self._passwords: dict[str, _Secret] = {}
        for user in config.users:
            if user.token is not None:
                value = user.token.read(env).get_secret_value().encode()
                self._tokens.append(_Secret(user.name, user.role, value))
            if user.password is not None:
                value = user.password.read(env).get_secret_value().encode()
                self._passwords[user.name] = _Secret(user.name, user.role, value)
        self._proxy_networks = config.proxy.networks() if config.proxy else []
        #: who may hold a session: the users with a token or password, and their role
        self._roles: dict[str, Role] = {s.name: s.role for s in self._tokens}
        self._roles.update({s.name: s.role for s in self._passwords.values()})
        if config.session_key is not None:
            key = config.session_key.read(env).get_secret_value()
            if len(key) < MIN_KEY_LENGTH:
                raise SessionKeyError(
                    f"console.auth.session_key ({config.session_key.describe()}) has "
                    f"{len(key)} characters; give at least {MIN_KEY_LENGTH} "
                    "(e.g. openssl rand -hex 32)"
                )
            raw = key.encode()
            self.shared_key = True
        else:
            raw = secrets.token_bytes(32)
            self.shared_key = False
        self._signer = SessionSigner(raw)
        self._csrf_key = derive_key(raw, "csrf token")

    @property
    def basic_enabled(self) -> bool:
        return bool(self._passwords)

    @property
    def token_enabled(self) -> bool:
        return bool(self._tokens)

    # Who is asking.

    def authenticate(
        self, headers: Mapping[str, str], cookies: Mapping[str, str], remote: str | None
    ) -> Principal | None:
        """The principal of a request, or ``None`` (answered 401)."""
        proxied = self._from_proxy(headers, remote)
        if proxied is not None:
            return proxied
        header = headers.get("Authorization", "")
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() == "bearer" and credentials:
            return self.check_token(credentials.strip())
        if scheme.lower() == "basic" and credentials:
            return self._check_basic(credentials.strip())
        session = cookies.get(SESSION_COOKIE)
        if session:
            return self._session(session)
        return None

    def check_token(self, token: str) -> Principal | None:
        given = token.encode()
        found = None
        for secret in self._tokens:  # every one compared: the time says nothing
            if hmac.compare_digest(given, secret.value):
                found = secret
        return None if found is None else Principal(found.name, found.role, "token")

    def _check_basic(self, encoded: str) -> Principal | None:
        try:
            decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        name, sep, password = decoded.partition(":")
        secret = self._passwords.get(name)
        if not sep or secret is None:
            hmac.compare_digest(password.encode(), b"-" * 16)  # same work either way
            return None
        if not hmac.compare_digest(password.encode(), secret.value):
            return None
        return Principal(secret.name, secret.role, "basic")

    def _from_proxy(self, headers: Mapping[str, str], remote: str | None) -> Principal | None:
        proxy = self.config.proxy
        if proxy is None or remote is None:
            return None
        user = headers.get(proxy.user_header, "").strip()
        if not user or not self.trusted(remote):
            return None
        if user in proxy.operators:
            return Principal(user, "operator", "proxy")
        if user in proxy.viewers or proxy.default_role == "viewer":
            return Principal(user, "viewer", "proxy")
        return None

    def trusted(self, remote: str) -> bool:
        try:
            address = ipaddress.ip_address(remote)
        except ValueError:
            return False
        return any(address in network for network in self._proxy_networks)

    # Sessions (a token or password given once on /login).

    def open_session(self, principal: Principal) -> str:
        """The signed cookie value of a sign-in by ``principal``, valid for
        ``auth.session_hours``."""
        expires = self._clock() + self.config.session_hours * 3600
        cookie, _ = self._signer.issue(principal.name, principal.role, expires)
        return cookie

    def _session(self, cookie: str) -> Principal | None:
        claims = self._signer.verify(cookie, self._clock())
        if claims is None or self._roles.get(claims.user) != claims.role:
            return None
        return Principal(claims.user, claims.role, "session", claims.session)

    def sign_in(self, name: str, secret: str) -> Principal | None:
        """The principal a sign-in form names: a token alone, or a name and password."""
        if not name:
            return self.check_token(secret)
        encoded = base64.b64encode(f"{name}:{secret}".encode()).decode()
        return self._check_basic(encoded)

    # CSRF.

    def csrf_token(self, principal: Principal) -> str:
        message = f"{principal.method}\x00{principal.name}\x00{principal.session}".encode()
        return hmac.new(self._csrf_key, message, hashlib.sha256).hexdigest()

    def check_csrf(self, principal: Principal, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(
            (given or "").encode(), self.csrf_token(principal).encode()
        )
