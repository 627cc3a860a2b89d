"""HTTP/1.1 with kept-alive connections per destination, from the standard library.

The sink sends a few requests at once (``batching.max_in_flight``, to distinct
customers), each from a thread of its own that waits for the answer with the GIL
released; every request takes an idle connection or opens one, so there are about as
many connections as requests in flight. Every network failure - refused or dropped
connection, timeout, a malformed response - becomes
:class:`~streamsync.destinations.errors.RetriableError`, and that connection is closed
(the next request opens another).
"""

from __future__ import annotations

import http.client
import ssl
import threading
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
        #: kept-alive connections not in use (safe to share between threads: see send)
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def _connection(self) -> http.client.HTTPConnection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        if self.https:
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout_s,
                context=ssl.create_default_context(),
            )  # fmt: skip
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def send(self, request: Request) -> Response:
        """One request, within ``timeout_s`` in all: the socket's timeout bounds each
        read only, so a server trickling its answer a byte at a time would otherwise
        hold the destination (and a SIGTERM) for as long as it likes. Safe to call from
        several threads at once: each call has a connection to itself."""
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
            conn.close()
            raise RetriableError(f"{type(exc).__name__}: {exc}") from None
        if raw.will_close:
            conn.close()
        else:
            with self._lock:
                self._idle.append(conn)
        return Response(raw.status, headers, body, time.monotonic() - started)
