"""The HTTP transport bounds a whole request, not each read; a control file that is not
UTF-8 or nests too deep is ignored with a line, never a traceback."""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path

import pytest

from streamsync.destinations.client import Request
from streamsync.destinations.control import ControlFile
from streamsync.destinations.errors import RetriableError
from streamsync.destinations.transport import HttpTransport


def _trickling_server(stop: threading.Event) -> int:
    """A server answering every request with a body sent one byte every 50 ms (for
    at most 20 s, then the rest at once): each read returns long before the socket's
    timeout, the whole answer does not."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            body = b"x" * 400
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 400\r\n\r\n")
            for i in range(len(body)):
                if stop.is_set():
                    break
                try:
                    conn.sendall(body[i : i + 1])
                except OSError:
                    return  # the client gave up: what the test wants
                time.sleep(0.05)
        listener.close()

    threading.Thread(target=serve, daemon=True).start()
    return port


def test_a_trickled_response_is_a_retriable_timeout_of_the_whole_request() -> None:
    stop = threading.Event()
    port = _trickling_server(stop)
    transport = HttpTransport(f"http://127.0.0.1:{port}", timeout_s=1.0)
    try:
        with pytest.raises(RetriableError, match="TimeoutError"):
            transport.send(Request("POST", "/users/track", b"{}", {}, []))
    finally:
        stop.set()
        transport.close()


@pytest.mark.parametrize("content", [b"\xff\xfe paused: true", b"[" * 100_000 + b"]" * 100_000])
def test_a_control_file_that_cannot_be_read_is_ignored_with_one_line(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "control.yaml"
    path.write_bytes(content)
    control = ControlFile(path, check_every_s=0)
    with caplog.at_level(logging.WARNING):
        state = control.poll()
    assert not state.paused
    assert any("control file" in r.getMessage() and "ignored" in r.getMessage()
               for r in caplog.records)  # fmt: skip


@pytest.mark.parametrize("kind", ["braze", "moengage"])
@pytest.mark.parametrize("errors", [5, "five", {"index": 0}])
def test_a_2xx_whose_errors_is_not_a_list_refuses_nothing(kind: str, errors: object) -> None:
    """The documented ``errors`` is a list of objects naming an index; a count or a
    string names no object: nothing is taken as refused, and nothing raises."""
    import orjson

    from streamsync.destinations.braze import BrazeClient
    from streamsync.destinations.client import Response
    from streamsync.destinations.moengage import MoEngageClient

    client = object.__new__(BrazeClient if kind == "braze" else MoEngageClient)
    body = orjson.dumps({"message": "success", "status": "success", "errors": errors})
    request = Request("POST", "/x", b"{}", {}, [], meta={"attributes": [], "elements": []})
    assert client.interpret(request, Response(201, {}, body, 0.01)) == []
