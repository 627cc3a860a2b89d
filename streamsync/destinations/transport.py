"""HTTP/1.1 with a kept-alive connection per destination, from the standard library.

Delivery sends one request at a time per destination (that is what keeps each customer's
changes in order), so a connection pool or an async client would add nothing. Every
network failure - refused or dropped connection, timeout, a malformed response - becomes
:class:`~streamsync.destinations.errors.RetriableError`, and the connection is reopened
on the next request.
"""

from __future__ import annotations

import http.client
import ssl
import time
from urllib.parse import urlsplit

from streamsync.destinations.client import Request, Response
from streamsync.destinations.errors import RetriableError


class HttpTransport:
    def __init__(self, base_url: str, timeout_s: float) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url}")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.https else 80)
        self.prefix = parts.path.rstrip("/")
        self.timeout_s = timeout_s
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self.https:
                self._conn = http.client.HTTPSConnection(
                    self.host, self.port, timeout=self.timeout_s,
                    context=ssl.create_default_context(),
                )  # fmt: skip
            else:
                self._conn = http.client.HTTPConnection(
                    self.host, self.port, timeout=self.timeout_s
                )
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def send(self, request: Request) -> Response:
        """One request, within ``timeout_s`` in all: the socket's timeout bounds each
        read only, so a server trickling its answer a byte at a time would otherwise
        hold the destination (and a SIGTERM) for as long as it likes."""
        started = time.monotonic()
        deadline = started + self.timeout_s
        conn = self._connection()
        if conn.sock is not None:  # a kept-alive connection: its last read set less
            conn.sock.settimeout(self.timeout_s)
        try:
            conn.request(request.method, self.prefix + request.path, request.body, request.headers)
            raw = conn.getresponse()
            chunks: list[bytes] = []
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no whole response within {self.timeout_s:g}s")
                if conn.sock is not None:
                    conn.sock.settimeout(remaining)
                chunk = raw.read1(65536)
                if not chunk:
                    raw.read()  # at its end: marks the response done, for keep-alive
                    break
                chunks.append(chunk)
            body = b"".join(chunks)
            headers = {k.lower(): v for k, v in raw.getheaders()}
        except (OSError, http.client.HTTPException) as exc:  # TimeoutError is an OSError
            self.close()
            raise RetriableError(f"{type(exc).__name__}: {exc}") from None
        if raw.will_close:
            self.close()
        return Response(raw.status, headers, body, time.monotonic() - started)
