"""An application's backend for the tests: a real HTTP/1.1 server (the standard library's,
keep-alive, one thread per connection) on 127.0.0.1, answering at each path what the
test says and recording every call."""

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import attrs

# What a route answers: a status and a body (a dict is sent as JSON), or HANG.
Answer = tuple[int, bytes | dict[str, Any]]
Route = Callable[[Any], Answer]
HANG: Answer = (0, b"")
HANG_AT_MOST = 10.0  # seconds: a hung answer never outlives the test by more


@attrs.frozen
class Call:
    path: str
    headers: dict[str, str]  # names lower-cased
    body: Any  # the JSON sent
    connection: int  # which TCP connection carried it (keep-alive: the same one)


class Backend:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.calls: list[Call] = []
        self.connections = 0
        self._released = threading.Event()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def answer(self, path: str, *answers: Answer) -> None:
        """Answer calls to ``path`` with ``answers`` in turn, the last one for ever."""
        remaining = list(answers)

        def route(body: Any) -> Answer:
            return remaining.pop(0) if len(remaining) > 1 else remaining[0]

        self.routes[path] = route

    def calls_to(self, path: str) -> list[Call]:
        return [call for call in self.calls if call.path == path]

    @contextmanager
    def running(self) -> Iterator["Backend"]:
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body leave in two writes: without this, Nagle holds the body
            # until the client's delayed ACK (40 ms a call).
            disable_nagle_algorithm = True

            def setup(self) -> None:
                super().setup()
                with backend._lock:
                    backend.connections += 1
                    self.number = backend.connections

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                headers = {name.lower(): value for name, value in self.headers.items()}
                backend.calls.append(Call(self.path, headers, body, self.number))
                route = backend.routes.get(self.path)
                status, answer = route(body) if route else (404, b"no route")
                if (status, answer) == HANG:
                    backend._released.wait(HANG_AT_MOST)
                    self.close_connection = True
                    return
                data = json.dumps(answer).encode() if isinstance(answer, dict) else answer
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the test says what matters

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._released.set()
            server.shutdown()
            server.server_close()
            thread.join(HANG_AT_MOST)
