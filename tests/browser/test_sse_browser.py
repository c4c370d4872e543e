"""Server-Sent Events in Chromium: an EventSource on a page of another origin (CORS), with
a token in the query, that catches up by itself after the broker cuts its stream (the
browser sends Last-Event-ID, the broker recovers from it)."""

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from tests.browser.chromium import chromium
from tests.daemon_process import Daemon, serving

pytestmark = pytest.mark.slow  # Chromium, a daemon

SECRET = "sse-browser-test-secret-sse-browser-test"
ADMIN_KEY = "sse-browser-test-admin-key-12345"


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    secret = tmp_path / "jwt.secret"
    secret.write_text(SECRET)
    config = tmp_path / "sse.toml"
    config.write_text(
        '[server]\nport = 0\nallowed_origins = ["http://127.0.0.1:*"]\n'
        f'[admin]\nenabled = true\nport = 0\napi_keys = [{{ key = "{ADMIN_KEY}", '
        'user = "backend", roles = ["admin"] }]\n'
        '[[topics]]\nfilter = "feed/#"\nhistory_size = 100\n'
        f'[[plugins]]\nuse = "jwt_auth"\nsecret_file = "{secret}"\nalgorithms = ["HS256"]\n'
    )
    with serving(config, admin=True) as running:
        yield running


@pytest.fixture
def page_origin(tmp_path: Path) -> Iterator[int]:
    """An empty page on another port than the broker's: another origin."""
    (tmp_path / "page.html").write_text("<!doctype html><title>feed</title>\n")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def admin(daemon: Daemon, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(
        f"http://127.0.0.1:{daemon.admin_port}{path}",
        json=body,
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


OPEN = """(url) => {
  window.events = [];
  window.opened = 0;
  const source = new EventSource(url);
  source.onopen = () => { window.opened += 1; };
  for (const type of ["message", "recovery"]) {
    source.addEventListener(type, (event) =>
      window.events.push([type, JSON.parse(event.data), event.lastEventId]));
  }
  window.source = source;
}"""


def test_an_event_source_reads_the_stream_and_catches_up_after_a_cut(
    daemon: Daemon, page_origin: int
) -> None:
    token = jwt.encode({"sub": "erin"}, SECRET, algorithm="HS256")
    url = f"ws://127.0.0.1:{daemon.port}".replace("ws://", "http://")
    with chromium() as browser:
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{page_origin}/page.html")
        page.evaluate(OPEN, f"{url}/sse?topic=feed/%23&token={token}")
        page.wait_for_function("window.opened === 1")
        for n in range(2):
            assert admin(daemon, "/api/publish", {"topic": "feed/a", "data": n}) == {
                "subscribers": 1
            }
        page.wait_for_function("window.events.length === 2")
        # The backend cuts the stream; meanwhile a message is published, which the
        # browser's reconnection (Last-Event-ID) recovers.
        assert admin(daemon, "/api/disconnect", {"user": "erin", "reconnect": True}) == {
            "disconnected": 1
        }
        page.wait_for_function("window.source.readyState === EventSource.CONNECTING")
        admin(daemon, "/api/publish", {"topic": "feed/a", "data": 2})
        page.wait_for_function("window.opened === 2", timeout=15_000)
        page.wait_for_function("window.events.length === 3")
        events = page.evaluate("window.events")
        page.evaluate("window.source.close()")
    assert [(kind, data["data"]) for kind, data, _ in events] == [
        ("message", 0),
        ("message", 1),
        ("message", 2),
    ]
    assert all(data["topic"] == "feed/a" and last_id for _, data, last_id in events)
