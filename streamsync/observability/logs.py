"""Structured logs (one JSON object per line) with secrets and personal data redacted.

Redaction happens in the formatter, on the final text, so no call site can forget it:

* every secret value registered with :func:`register_secrets` (:func:`secret_values`
  collects the ``SecretStr`` fields of the configuration) is replaced wherever it appears,
  in the message, its arguments, extra fields and tracebacks; ``SecretStr`` objects print
  masked already;
* extra fields whose name says secret (``password``, ``token``, ``api_key``,
  ``authorization``, ...) are masked, and those that hold a customer's data
  (``email``, ``phone``, ``identifiers``, ``traits``, ``properties``, ...) are dropped to
  a marker;
* e-mail addresses and phone numbers are masked anywhere in the text, including a customer
  key that happens to be one: the customer key is the only personal datum a log line may
  carry, and only when it is an opaque id.
"""

from __future__ import annotations

import datetime
import logging
import re
import sys
import threading
from collections.abc import Iterable
from typing import Any, TextIO

import orjson
from opentelemetry import trace
from pydantic import BaseModel, SecretBytes, SecretStr

REDACTED = "**********"
PERSONAL = "<redacted>"

_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+")
# International (E.164-like) numbers with an explicit +, optionally grouped.
_PHONE = re.compile(r"(?<![\w+])\+\d[\d ().\-]{6,}\d")
_SECRET_KEY = re.compile(
    r"pass(word|wd)?|secret|token|api[_\-]?key|apikey|authorization|credential|cookie|"
    r"private[_\-]?key|moe[_\-]appkey",
    re.IGNORECASE,
)
_PERSONAL_KEYS = frozenset(
    {
        "email",
        "phone",
        "identifiers",
        "traits",
        "properties",
        "first_name",
        "last_name",
        "address",
        "ip",
        "payload",
        "body",
    }
)
# Attributes every LogRecord has; anything else was passed through ``extra=``.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}
# Secrets shorter than this are masked only where they stand alone (not inside a longer
# word or number): replaced everywhere they would mangle unrelated text, and never
# masking them printed them wherever a client echoed them.
_MIN_SECRET_LENGTH = 4
#: Around a short secret: no letter or digit, so "abc" is masked in "Bearer abc" and
#: "key=abc", but not inside "abcdef".
_ALONE = ("(?<![A-Za-z0-9])(?:", ")(?![A-Za-z0-9])")


class Redactor:
    """Masks registered secrets, e-mail addresses and phone numbers in text and values."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._secrets: tuple[str, ...] = ()
        self._short: frozenset[str] = frozenset()
        self._short_pattern: re.Pattern[str] | None = None
        self.add_secrets(secrets)

    def add_secrets(self, secrets: Iterable[str]) -> None:
        """Mask these from now on: anywhere in the text, or, for a secret shorter than
        four characters, wherever it stands alone (see :data:`_ALONE`)."""
        with self._lock:
            known = set(self._secrets)
            short = set(self._short)
            for secret in secrets:
                if len(secret) >= _MIN_SECRET_LENGTH:
                    known.add(secret)
                elif secret:
                    short.add(secret)
            # Longest first, so a secret containing another is masked whole.
            self._secrets = tuple(sorted(known, key=len, reverse=True))
            if short != self._short:
                self._short = frozenset(short)
                alternatives = "|".join(re.escape(s) for s in sorted(short, key=len, reverse=True))
                self._short_pattern = re.compile(_ALONE[0] + alternatives + _ALONE[1])

    def text(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        if self._short_pattern is not None:
            text = self._short_pattern.sub(REDACTED, text)
        if "@" in text:
            text = _EMAIL.sub("<email>", text)
        if "+" in text:
            text = _PHONE.sub("<phone>", text)
        return text

    def value(self, key: str | None, value: object) -> Any:
        """``value`` made safe to log as a JSON value (``key`` is its field name)."""
        if key is not None:
            if _SECRET_KEY.search(key):
                return REDACTED
            if key.lower() in _PERSONAL_KEYS:
                return PERSONAL
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, SecretStr | SecretBytes):
            return REDACTED
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {str(k): self.value(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.value(None, item) for item in value]
        if isinstance(value, BaseModel):
            return self.text(repr(value))
        return self.text(str(value))


#: The redactor the formatters use unless given another.
REDACTOR = Redactor()


def register_secrets(secrets: Iterable[str]) -> None:
    """Mask these values in every log line from now on (credentials read from the
    environment or mounted files, once they are read)."""
    REDACTOR.add_secrets(secrets)


def secret_values(model: BaseModel) -> list[str]:
    """The clear values of every ``SecretStr``/``SecretBytes`` field in ``model``, nested
    models, lists and dicts included, to pass to :func:`register_secrets`."""
    found: list[str] = []

    def walk(value: object) -> None:
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
        elif isinstance(value, SecretBytes):
            found.append(value.get_secret_value().decode("utf-8", "replace"))
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name))
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list | tuple | set | frozenset):
            for item in value:
                walk(item)

    walk(model)
    return found


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``message``, the extra
    fields, ``exception`` and the current ``trace_id``/``span_id`` when there is a span."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self._redactor = redactor if redactor is not None else REDACTOR

    def format(self, record: logging.LogRecord) -> str:
        redactor = self._redactor
        doc: dict[str, Any] = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": redactor.text(record.getMessage()),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_") and key not in doc:
                doc[key] = redactor.value(key, value)
        if record.exc_info:
            doc["exception"] = redactor.text(self.formatException(record.exc_info))
        elif record.exc_text:
            doc["exception"] = redactor.text(record.exc_text)
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            doc["trace_id"] = format(context.trace_id, "032x")
            doc["span_id"] = format(context.span_id, "016x")
        return orjson.dumps(doc, default=str).decode("utf-8")


class TextFormatter(logging.Formatter):
    """Human-readable lines for a terminal, redacted like the JSON form."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._redactor = redactor if redactor is not None else REDACTOR

    def format(self, record: logging.LogRecord) -> str:
        return self._redactor.text(super().format(record))


_HANDLER_MARK = "_streamsync_handler"


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record is emitted, not to the stream
    it was when the handler was made: a command run in-process (tests, an embedding
    program) that replaced ``sys.stderr`` and closed it leaves no handler writing to a
    closed stream behind."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def setup_logging(
    log_format: str = "json",
    level: str = "INFO",
    *,
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> logging.Handler:
    """Send the root logger's records to ``stream`` (stderr) in ``log_format``.

    Replaces a handler installed by an earlier call (not others'), so calling it twice
    does not print every line twice.
    """
    register_secrets(secrets)
    formatter: logging.Formatter = JsonFormatter() if log_format == "json" else TextFormatter()
    handler: logging.Handler = (
        logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    )
    handler.setFormatter(formatter)
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler
