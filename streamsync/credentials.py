"""Secrets the configuration file names but never holds.

A destination's API key and the Kafka SASL password (``kafka.sasl_password_from``) are
written as ``{env: VARIABLE}`` or ``{file: PATH}``: the file can then live in a ConfigMap
and the secret in a Kubernetes Secret, an environment variable or a mounted file. The
value is read when it is needed (:meth:`Credentials.read`), and from then on every log
line masks it (:func:`streamsync.observability.logs.register_secrets`), so a client
library echoing its settings cannot leak it. Errors name the source, never the value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

M = TypeVar("M", bound=BaseModel)


class CredentialsError(ValueError):
    """The configured credential source is missing or empty (the message names the
    source, never the value)."""


class Credentials(BaseModel):
    """Where the secret comes from: exactly one of an environment variable or a file
    (a Kubernetes secret mounted as a file, for instance). Leading and trailing whitespace,
    the trailing newline of a file included, is dropped."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    env: str | None = Field(default=None, min_length=1)
    file: Path | None = None

    @model_validator(mode="after")
    def _one(self) -> Credentials:
        if (self.env is None) == (self.file is None):
            raise ValueError("credentials need exactly one of env: VARIABLE or file: PATH")
        return self

    def describe(self) -> str:
        return f"environment variable {self.env}" if self.env else f"file {self.file}"

    def read(self, env: Mapping[str, str] | None = None) -> SecretStr:
        """The secret, or :class:`CredentialsError` naming the source. ``env`` replaces
        ``os.environ``. The value is registered with the log redactor before it is
        returned."""
        if self.env is not None:
            value = (os.environ if env is None else env).get(self.env, "").strip()
        else:
            assert self.file is not None
            try:
                value = self.file.read_text("utf-8").strip()
            except OSError as exc:
                raise CredentialsError(
                    f"cannot read credentials {self.describe()} ({exc.strerror})"
                ) from None
            except UnicodeDecodeError:
                raise CredentialsError(f"credentials {self.describe()} is not UTF-8 text") from None
        if not value:
            raise CredentialsError(f"credentials {self.describe()} is unset or empty")
        # Here, not at module level: the configuration loads without the logging stack.
        from streamsync.observability.logs import register_secrets

        register_secrets([value])
        return SecretStr(value)

    def resolved(self, base_dir: Path) -> Credentials:
        """A relative ``file`` made relative to ``base_dir`` (the configuration file's
        directory), so the secret read does not depend on the working directory."""
        if self.file is None or self.file.is_absolute():
            return self
        return self.model_copy(update={"file": (base_dir / self.file).resolve()})


def resolve_credential_files(model: M, base_dir: Path) -> M:
    """``model`` with every :class:`Credentials` in it, however deeply nested (models,
    dicts, lists), :meth:`~Credentials.resolved` against ``base_dir``: one rule for every
    place the configuration names a secret file."""
    resolved: M = _resolve(model, base_dir)
    return resolved


def _resolve(value: Any, base_dir: Path) -> Any:
    if isinstance(value, Credentials):
        return value.resolved(base_dir)
    if isinstance(value, BaseModel):
        update = {}
        for name in type(value).model_fields:
            item = getattr(value, name)
            new = _resolve(item, base_dir)
            if new is not item:
                update[name] = new
        return value.model_copy(update=update) if update else value
    if isinstance(value, dict):
        items = {key: _resolve(item, base_dir) for key, item in value.items()}
        changed = any(items[key] is not item for key, item in value.items())
        return items if changed else value
    if isinstance(value, list | tuple):
        new_items = [_resolve(item, base_dir) for item in value]
        if any(new is not old for new, old in zip(new_items, value, strict=True)):
            return type(value)(new_items)
        return value
    return value
