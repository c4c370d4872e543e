"""clients/js/trio-broker.js in Chromium against make run's config: requests, errors, events,
reconnection with recovery."""

import http.server
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser import chromium
from tests.conftest import ROOT
from tests.daemon_process import Daemon
from tests.test_browser import admin_publish, make_run_daemon  # noqa: F401 (fixture)

PAGE = "<!doctype html><title>client test</title>\n"


@pytest.fixture
def served() -> Iterator[int]:
    """clients/js over HTTP (ES modules do not load from file://), and a page beside it."""
    root = ROOT / "clients" / "js"

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self) -> None:
            if self.path == "/test.html":
                body = PAGE.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            super().do_GET()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


SCENARIO = """async (url) => {
  const { Client, BrokerError } = await import("/trio-broker.js");
  const client = new Client(url, { backoff: [1500, 3000] });
  const events = [];
  const next = (type) => new Promise((resolve) =>
    client.addEventListener(type, (event) => resolve(event.detail), { once: true }));
  for (const type of ["message", "join", "recoveryfailed"]) {
    client.addEventListener(type, (event) => events.push([type, event.detail]));
  }
  window.client = client;
  window.events = events;
  window.next = next;
  await client.open();
  const subscribed = await client.subscribe("chat/#");
  const joined = next("join");
  await client.subscribe("chat/lobby");
  await joined;
  const arrived = next("message");
  await client.publish("chat/lobby", { text: "hi" });
  const message = await arrived;
  let refused = null;
  try { await client.publish("$sys", 1); } catch (error) {
    refused = error instanceof BrokerError ? error.code : String(error);
  }
  return {
    clientId: client.clientId,
    subscribedPos: subscribed.pos,
    message,
    history: (await client.history("chat/lobby")).map((m) => m.data),
    presence: (await client.presence("chat/lobby")).map((c) => c.client_id),
    refused,
  };
}"""


def test_the_browser_client_does_every_request_and_recovers_after_a_drop(
    make_run_daemon: Daemon,  # noqa: F811 (fixture)
    served: int,
) -> None:
    with chromium() as browser:
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{served}/test.html")
        result = page.evaluate(SCENARIO, make_run_daemon.url)
        assert result["message"]["data"] == {"text": "hi"} and result["message"]["pos"]
        assert result["subscribedPos"] and result["refused"] == "forbidden"
        assert result["history"][-1] == {"text": "hi"}
        assert result["presence"] == [result["clientId"]]
        # The connection drops; what is published meanwhile comes after the reconnection.
        page.evaluate("client._ws.close(4000, 'test')")
        page.wait_for_function("!client.connected")
        for n in range(3):
            admin_publish(make_run_daemon, "chat/lobby", n)
        assert not page.evaluate("client.connected")  # still away: it waits 0.75 s at least
        page.wait_for_function(
            "events.filter(([type, d]) => type === 'message' && typeof d.data === 'number')"
            ".length === 3",
            timeout=10_000,
        )
        got = page.evaluate("events.filter(([t, d]) => t === 'message').map(([t, d]) => d.data)")
        assert got == [{"text": "hi"}, 0, 1, 2]
        assert page.evaluate("events.filter(([t]) => t === 'recoveryfailed').length") == 0
        assert page.evaluate("client.connected")
        page.evaluate("client.close()")
