"""The ``console:`` section of the configuration file: where the console listens, who may
sign in, and which running processes it reads.

The console shows personal data (customer ids, e-mail addresses, phone numbers), so it is
never open by default: it binds loopback unless ``host`` says otherwise, and a section
without any way to sign in is refused rather than served open. Secrets are named, never
held (``{env: VARIABLE}`` or ``{file: PATH}``, as everywhere in the configuration).

Kept free of imports from the rest of streamsync except the credentials model, so
``streamsync.config`` can embed it without an import cycle.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from streamsync.credentials import Credentials

#: The console's port by default (next to the admin port's 9464).
DEFAULT_CONSOLE_PORT = 8470

Role = Literal["viewer", "operator"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConsoleUser(_Model):
    """One person or client with a static secret: a bearer token (``token``), a password
    for HTTP basic auth (``password``, with ``name`` as the user name), or both."""

    name: str = Field(min_length=1, max_length=200, pattern=r"^[^:\s]+$")
    role: Role = "viewer"
    token: Credentials | None = None
    password: Credentials | None = None

    @model_validator(mode="after")
    def _a_secret(self) -> ConsoleUser:
        if self.token is None and self.password is None:
            raise ValueError(f"user {self.name}: give token: or password: (a Secret)")
        return self


class ProxyAuth(_Model):
    """Sign-in done by a reverse proxy in front of the console (oauth2-proxy, an OIDC
    ingress): it verifies the person and passes their name in ``user_header``. The
    header is believed only from ``trusted_proxies`` (addresses or networks); from
    anywhere else it is ignored, since any client can send a header."""

    user_header: str = Field(default="X-Forwarded-User", min_length=1)
    trusted_proxies: list[str] = Field(min_length=1)
    operators: list[str] = Field(default_factory=list)
    #: Role of a verified user not listed in ``operators``; ``none`` lets only the
    #: listed ``viewers`` and ``operators`` in.
    default_role: Literal["viewer", "none"] = "viewer"
    viewers: list[str] = Field(default_factory=list)

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, values: list[str]) -> list[str]:
        for value in values:
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError:
                raise ValueError(
                    f"trusted_proxies: {value!r} is not an address or network"
                ) from None
        return values

    def networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(v, strict=False) for v in self.trusted_proxies]


class AuthConfig(_Model):
    users: list[ConsoleUser] = Field(default_factory=list)
    proxy: ProxyAuth | None = None
    #: Mark the session cookie ``Secure``: set it when the console is reached over HTTPS
    #: (behind an ingress); a plain-HTTP loopback run needs it off.
    secure_cookies: bool = False
    session_hours: float = Field(default=12.0, gt=0, le=24 * 7)
    #: The key session cookies are signed with (HMAC-SHA256), from a Secret: every
    #: replica given the same key accepts the others' sign-ins. Without it one process
    #: makes a random key at start, so its sign-ins end with a restart and are refused
    #: by any other replica (docs/console.md).
    session_key: Credentials | None = None

    @model_validator(mode="after")
    def _someone(self) -> AuthConfig:
        if not self.users and self.proxy is None:
            raise ValueError(
                "the console needs a way to sign in: auth.users (token or password "
                "from a Secret) or auth.proxy (a verified user header)"
            )
        names = [u.name for u in self.users]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"users listed twice: {', '.join(repeated)}")
        return self


class ProcessEndpoint(_Model):
    """A running evaluate or deliver process's admin port (``/healthz``, ``/readyz``,
    ``/metrics``), e.g. ``http://streamsync-evaluate:9464``."""

    name: str = Field(min_length=1)
    role: Literal["evaluate", "deliver"]
    url: str = Field(min_length=1)
    #: For a deliver process: the destination it delivers to.
    destination: str | None = None

    @model_validator(mode="after")
    def _url(self) -> ProcessEndpoint:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"process {self.name}: url must start with http:// or https://")
        if self.role == "deliver" and self.destination is None:
            raise ValueError(f"process {self.name}: a deliver process names its destination")
        return self


class SwingAlert(_Model):
    """The Helm chart's ``StreamsyncAudienceSizeSwing`` alert, drawn on the size plots: an
    audience whose size changed by more than ``percent`` against its size 24 hours
    earlier, when that was at least ``min_members``, for 30 minutes. The defaults are the
    chart's (``prometheusRule.audienceSwingPercent`` and ``audienceSwingMinMembers``),
    which the chart's console passes in, so the plot shows the rule that pages."""

    percent: float = Field(default=50.0, gt=0, allow_inf_nan=False)
    min_members: int = Field(default=100, ge=0)


class ConsoleConfig(_Model):
    """The web console (``streamsync console --config FILE``)."""

    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=DEFAULT_CONSOLE_PORT, ge=0, le=65535)
    auth: AuthConfig
    #: Audience files to show; default ``evaluate.audiences``. Relative to the file.
    audiences: Path | None = None
    processes: list[ProcessEndpoint] = Field(default_factory=list)
    #: Days of size history the console's store keeps (hour and day resolution); at
    #: least the week the audiences page counts changes over.
    history_days: int = Field(default=90, ge=7, le=400)
    #: How long one read of the membership table or one explain may take.
    read_timeout_s: float = Field(default=60.0, gt=0, le=3600)
    #: How long one preview of a change may read (the input topics are read whole, as
    #: ``streamsync audiences diff`` reads them).
    preview_timeout_s: float = Field(default=600.0, gt=0, le=24 * 3600)
    #: Members shown on an audience's page.
    member_sample: int = Field(default=50, ge=1, le=1000)
    #: The size-swing alert's rule, shown on the size plots.
    swing_alert: SwingAlert = Field(default_factory=SwingAlert)
