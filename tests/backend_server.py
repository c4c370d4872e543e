"""An application's backend for the tests: a real HTTP/1.1 server (the standard library's,
keep-alive, one thread per connection) on 127.0.0.1, answering at each path what the
test says and recording every call."""

import json
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import attrs
import trio

# What a route answers: a status and a body (a dict is sent as JSON), HANG (no answer), or
# HOLD (200 {} once the test calls `Backend.let_go`).
Answer = tuple[int, bytes | dict[str, Any]]
Route = Callable[[Any], Answer]
HANG: Answer = (0, b"")
HOLD: Answer = (1, b"")
HANG_AT_MOST = 10.0  # seconds: a hung answer never outlives the test by more


@attrs.frozen
class Call:
    path: str
    headers: dict[str, str]  # names lower-cased
    body: Any  # the JSON sent
    connection: int  # which TCP connection carried it (keep-alive: the same one)
    raw: bytes  # the body as sent (what a signature signs)


class Backend:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.calls: list[Call] = []
        self.connections = 0
        self._released = threading.Event()
        self._let_go = threading.Event()
        self._lock = threading.Lock()
        self._called = threading.Condition(self._lock)
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

    def let_go(self) -> None:
        """Answer the calls held (HOLD) and those to come."""
        self._let_go.set()

    def calls_to(self, path: str) -> list[Call]:
        return [call for call in self.calls if call.path == path]

    async def wait_for_calls(self, path: str, count: int, timeout: float = 10.0) -> list[Call]:
        """The calls to ``path`` once there are ``count`` of them (AssertionError if they
        do not come within ``timeout`` seconds)."""

        def wait() -> bool:
            with self._called:
                return self._called.wait_for(lambda: len(self.calls_to(path)) >= count, timeout)

        assert await trio.to_thread.run_sync(wait), f"{len(self.calls_to(path))} calls to {path}"
        return self.calls_to(path)

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
                raw = self.rfile.read(length)
                body = json.loads(raw)
                headers = {name.lower(): value for name, value in self.headers.items()}
                with backend._called:
                    backend.calls.append(Call(self.path, headers, body, self.number, raw))
                    backend._called.notify_all()
                route = backend.routes.get(self.path)
                status, answer = route(body) if route else (404, b"no route")
                if (status, answer) == HANG:
                    backend._released.wait(HANG_AT_MOST)
                    self.close_connection = True
                    return
                if (status, answer) == HOLD:
                    backend._let_go.wait(HANG_AT_MOST)
                    status, answer = 200, {}
                data = json.dumps(answer).encode() if isinstance(answer, dict) else answer
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the test says what matters

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                # A client that gave up (a timeout under test) is no news; the rest is.
                if not isinstance(sys.exc_info()[1], ConnectionError):
                    super().handle_error(request, client_address)

        server = Server(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._released.set()
            self._let_go.set()
            server.shutdown()
            server.server_close()
            thread.join(HANG_AT_MOST)
