"""Signed, expiring session cookies: a sign-in that any console replica accepts.

A browser that signed in on ``/login`` carries who it is in its cookie rather than a
handle to a table in one process, so the console can run as several replicas behind one
Service with no sticky sessions and no shared store. The cookie is
``<payload>.<signature>``: the payload is base64url JSON of the user, the role, the
expiry (Unix seconds, wall clock, so every replica agrees) and a random session id (the
CSRF token is bound to it); the signature is HMAC-SHA256 of the payload under the
session key, compared in constant time. A replica with the same key accepts the cookie,
one with another key refuses it, and so does every replica once it has expired or when
a byte of it was changed.

What it does not do: there is no server-side list of sessions, so signing out clears the
cookie in that browser but cannot revoke a copy of it. A stolen cookie stays valid until
it expires (``auth.session_hours``) unless the session key is rotated, which signs every
browser out.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass

import orjson

from streamsync.console.config import Role

#: The shortest session key accepted (characters of the Secret): a key that can be
#: guessed lets anyone forge a cookie for any user and role.
MIN_KEY_LENGTH = 32
_ROLES: frozenset[str] = frozenset({"viewer", "operator"})


@dataclass(frozen=True, slots=True)
class SessionClaims:
    """What a valid cookie says."""

    user: str
    role: Role
    #: Unix seconds after which the cookie is refused
    expires: float
    #: random per sign-in: what the session's CSRF token is bound to
    session: str


def derive_key(key: bytes, purpose: str) -> bytes:
    """A key for one use of the session key (cookies, CSRF tokens), so a value signed
    for one purpose is never accepted as the other."""
    return hmac.new(key, b"streamsync console\x00" + purpose.encode(), hashlib.sha256).digest()


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    """Issues and checks session cookies under one key (see the module docstring)."""

    def __init__(self, key: bytes) -> None:
        self._key = derive_key(key, "session cookie")

    def _sign(self, payload: str) -> str:
        digest = hmac.new(self._key, payload.encode("ascii"), hashlib.sha256).digest()
        return _b64encode(digest)

    def issue(self, user: str, role: Role, expires: float) -> tuple[str, SessionClaims]:
        """A cookie value for ``user`` in ``role`` until ``expires`` (Unix seconds)."""
        claims = SessionClaims(user, role, float(int(expires)), secrets.token_urlsafe(18))
        data = {"u": claims.user, "r": claims.role, "exp": int(claims.expires),
                "sid": claims.session}  # fmt: skip
        payload = _b64encode(orjson.dumps(data))
        return f"{payload}.{self._sign(payload)}", claims

    def verify(self, cookie: str, now: float) -> SessionClaims | None:
        """The claims of a cookie signed under this key and not expired at ``now``;
        ``None`` for anything else (never an exception: a cookie is user input)."""
        payload, sep, signature = cookie.partition(".")
        if not sep or not payload or not signature:
            return None
        try:
            expected = self._sign(payload)
        except UnicodeEncodeError:
            return None
        if not hmac.compare_digest(signature.encode("utf-8", "replace"), expected.encode()):
            return None
        try:
            data = orjson.loads(_b64decode(payload))
        except (binascii.Error, ValueError, orjson.JSONDecodeError):
            return None
        if not isinstance(data, dict):
            return None
        user, role = data.get("u"), data.get("r")
        expires, session = data.get("exp"), data.get("sid")
        if not (isinstance(user, str) and user and isinstance(session, str) and session):
            return None
        if role not in _ROLES or not isinstance(expires, int) or isinstance(expires, bool):
            return None
        if expires <= now:
            return None
        held: Role = "operator" if role == "operator" else "viewer"
        return SessionClaims(user, held, float(expires), session)
