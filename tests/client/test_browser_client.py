"""clients/js/trio-broker.js in Chromium against make run's config: requests, errors, events,
reconnection with recovery."""

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import jwt
import pytest

from broker.client import connect
from tests.browser.chromium import chromium
from tests.browser.test_browser import admin_publish, make_run_daemon  # noqa: F401 (fixture)
from tests.conftest import ROOT
from tests.daemon_process import Daemon, serving

pytestmark = pytest.mark.slow  # Chromium

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
    after: await client.historyAfter("chat/#", subscribed.pos, 1),
    binary: await (async () => {
      const arrived = next("message");
      await client.publish("chat/bin", new Uint8Array([0, 1, 255]));
      const delivered = await arrived;
      const kept = await client.history("chat/bin");
      return [delivered.data instanceof Uint8Array, Array.from(delivered.data),
              Array.from(kept[0].data)];
    })(),
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
        assert result["binary"] == [True, [0, 1, 255], [0, 1, 255]]
        after = result["after"]
        assert [m["data"] for m in after["messages"]] == [{"text": "hi"}]
        assert (after["recovered"], after["more"]) == (True, False)
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
        got = page.evaluate(
            "events.filter(([t, d]) => t === 'message' && d.topic !== 'chat/bin')"
            ".map(([t, d]) => d.data)"
        )
        assert got == [{"text": "hi"}, 0, 1, 2]
        assert page.evaluate("events.filter(([t]) => t === 'recoveryfailed').length") == 0
        assert page.evaluate("client.connected")
        page.evaluate("client.close()")


SECRET = "browser-test-secret-browser-test-secret"
TOKEN_LIFETIME = 3  # seconds: the client refreshes at three quarters of it

REFRESHING = """async ({ url, withGetToken }) => {
  const { Client } = await import("/trio-broker.js");
  const calls = { tokens: 0, failNext: 0 };
  const getToken = async () => {
    calls.tokens += 1;
    if (calls.failNext > 0) { calls.failNext -= 1; throw new Error("the backend said no"); }
    return await window.mintToken();
  };
  const options = withGetToken
    ? { getToken, backoff: [200, 1000] } : { token: await window.mintToken() };
  const client = new Client(url, options);
  const events = [];
  const detail = {
    close: (d) => d, refreshfailed: (d) => String(d), open: () => null, message: (d) => d.data,
  };
  for (const type of Object.keys(detail)) {
    client.addEventListener(type, (event) => events.push([type, detail[type](event.detail)]));
  }
  Object.assign(window, { client, events, calls });
  await client.open();
  await client.subscribe("news");
  return client.expiresAt;
}"""


@pytest.fixture
def jwt_daemon(tmp_path: Path) -> Iterator[Daemon]:
    secret = tmp_path / "jwt.secret"
    secret.write_text(SECRET)
    config = tmp_path / "jwt.toml"
    config.write_text(
        '[server]\nport = 0\nallowed_origins = ["http://127.0.0.1:*"]\n'
        f'[[plugins]]\nuse = "jwt_auth"\nsecret_file = "{secret}"\nalgorithms = ["HS256"]\n'
    )
    with serving(config) as daemon:
        yield daemon


def mint_token() -> str:
    claims = {"sub": "alice", "exp": int(time.time()) + TOKEN_LIFETIME}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def publish_news(daemon: Daemon, data: int) -> None:
    async def run() -> None:
        async with connect(daemon.url, token=mint_token()) as client:
            await client.publish("news", data)

    anyio.run(run, backend="trio")  # (Playwright holds an asyncio loop in this thread)


def messages(page: Any) -> list[Any]:
    return list(page.evaluate("events.filter(([t]) => t === 'message').map(([t, d]) => d)"))


def test_the_browser_client_renews_its_token_before_it_expires_and_after_a_4001(
    jwt_daemon: Daemon, served: int
) -> None:
    with chromium() as browser:
        page = browser.new_page()
        page.expose_function("mintToken", mint_token)
        page.goto(f"http://127.0.0.1:{served}/test.html")
        expires_at = page.evaluate(REFRESHING, {"url": jwt_daemon.url, "withGetToken": True})
        assert expires_at is not None and expires_at <= time.time() + TOKEN_LIFETIME
        # Two refreshes on the open connection: it outlives two tokens, never closed.
        page.wait_for_function("calls.tokens >= 3", timeout=3 * TOKEN_LIFETIME * 1000)
        assert page.evaluate("client.expiresAt") > expires_at
        publish_news(jwt_daemon, 1)
        page.wait_for_function("events.some(([t, d]) => t === 'message' && d === 1)")
        assert page.evaluate("events.filter(([t]) => t !== 'message')") == [["open", None]]
        # The backend fails once: the token expires, the broker closes with 4001, and the
        # client comes back with a new token, subscribed again.
        page.evaluate("calls.failNext = 1")
        page.wait_for_function(
            "events.filter(([t]) => t === 'open').length === 2",
            timeout=2 * TOKEN_LIFETIME * 1000,
        )
        kinds = page.evaluate("events.filter(([t]) => t !== 'message').slice(1)")
        assert kinds[0] == ["refreshfailed", "Error: the backend said no"]
        assert kinds[1][0] == "close" and kinds[1][1]["code"] == 4001
        assert kinds[1][1]["reconnecting"] is True
        assert kinds[2][0] == "open"
        page.wait_for_function("client.connected")
        page.evaluate("client.ping()")  # answered after the subscribe sent on the welcome
        publish_news(jwt_daemon, 2)
        page.wait_for_function("events.some(([t, d]) => t === 'message' && d === 2)")
        assert messages(page) == [1, 2]
        page.evaluate("client.close()")

        # Without getToken, an expired token ends the connection for good.
        page = browser.new_page()
        page.expose_function("mintToken", mint_token)
        page.goto(f"http://127.0.0.1:{served}/test.html")
        page.evaluate(REFRESHING, {"url": jwt_daemon.url, "withGetToken": False})
        page.wait_for_function(
            "events.some(([t]) => t === 'close')", timeout=2 * TOKEN_LIFETIME * 1000
        )
        closed = page.evaluate("events.find(([t]) => t === 'close')[1]")
        assert closed["code"] == 4001 and closed["reconnecting"] is False


SERVER_SIDE = """async ({ url }) => {
  const { Client } = await import("/trio-broker.js");
  const client = new Client(url, { backoff: [50, 200] });
  const events = [];
  for (const type of ["message", "subscribed", "unsubscribed", "close", "open"]) {
    client.addEventListener(type, (event) => events.push([type, event.detail]));
  }
  Object.assign(window, { client, events });
  await client.open();
  return client.clientId;
}"""
ADMIN_KEY = "browser-test-admin-key-1234"


@pytest.fixture
def control_daemon(tmp_path: Path) -> Iterator[Daemon]:
    secret = tmp_path / "jwt.secret"
    secret.write_text(SECRET)
    config = tmp_path / "control.toml"
    config.write_text(
        '[server]\nport = 0\nallowed_origins = ["http://127.0.0.1:*"]\n'
        f'[admin]\nenabled = true\nport = 0\napi_keys = [{{ key = "{ADMIN_KEY}", '
        'user = "backend", roles = ["admin"] }]\n'
        '[[topics]]\nfilter = "inbox"\nhistory_size = 10\n'
        f'[[plugins]]\nuse = "jwt_auth"\nsecret_file = "{secret}"\nalgorithms = ["HS256"]\n'
    )
    with serving(config, admin=True) as daemon:
        yield daemon


def control(daemon: Daemon, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(
        f"http://127.0.0.1:{daemon.admin_port}{path}",
        json=body,
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def test_the_browser_client_follows_server_side_subscriptions_and_disconnects(
    control_daemon: Daemon, served: int
) -> None:
    token = jwt.encode({"sub": "erin", "channels": ["news"]}, SECRET, algorithm="HS256")
    with chromium() as browser:
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{served}/test.html")
        page.evaluate(SERVER_SIDE, {"url": f"{control_daemon.url}?token={token}"})
        page.wait_for_function("events.some(([t, d]) => t === 'subscribed' && d.topic === 'news')")
        assert control(control_daemon, "/api/subscribe", {"user": "erin", "topic": "inbox"}) == {
            "subscribed": 1
        }
        page.wait_for_function("events.some(([t, d]) => t === 'subscribed' && d.topic === 'inbox')")
        # 4002: it comes back; the server makes "news" again, the client "inbox" itself.
        disconnected = control(
            control_daemon, "/api/disconnect", {"user": "erin", "reconnect": True}
        )
        assert disconnected == {"disconnected": 1}
        page.wait_for_function("events.filter(([t]) => t === 'open').length === 2")
        for topic in ("news", "inbox"):
            publish_as_backend(control_daemon, topic)
        page.wait_for_function("events.filter(([t]) => t === 'message').length === 2")
        got = page.evaluate("events.filter(([t]) => t === 'message').map(([t, d]) => d.topic)")
        assert sorted(got) == ["inbox", "news"]
        # 4003: it stays away.
        control(control_daemon, "/api/disconnect", {"user": "erin", "reason": "banned"})
        page.wait_for_function("events.filter(([t]) => t === 'close').length === 2")
        last_close = page.evaluate("events.filter(([t]) => t === 'close').at(-1)[1]")
        assert last_close == {"code": 4003, "reason": "banned", "reconnecting": False}


def publish_as_backend(daemon: Daemon, topic: str) -> None:
    token = jwt.encode({"sub": "backend"}, SECRET, algorithm="HS256")

    async def run() -> None:
        async with connect(daemon.url, token=token) as client:
            await client.publish(topic, topic)

    anyio.run(run, backend="trio")  # (Playwright holds an asyncio loop in this thread)


MSGPACK_SCENARIO = """async (url) => {
  const { Client } = await import("/trio-broker.js");
  const packed = new Client(url, { encoding: "msgpack" });
  const plain = new Client(url);
  const next = (client) => new Promise((resolve) =>
    client.addEventListener("message", (event) => resolve(event.detail), { once: true }));
  await packed.open();
  await plain.open();
  await packed.subscribe("chat/#");
  await plain.subscribe("chat/#");
  const got = [];
  for (const data of [{ text: "hé", n: [1, 2.5, null] }, new Uint8Array([0, 1, 255])]) {
    const arrivals = [next(packed), next(plain)];
    await packed.publish("chat/mp", data);
    got.push(await Promise.all(arrivals));
  }
  const history = (await packed.history("chat/mp")).map((m) => m.data);
  let refused = null;
  try { new Client(url, { encoding: "xml" }); } catch (error) { refused = error.message; }
  const protocol = packed._ws.protocol;
  packed.close();
  plain.close();
  return {
    protocol,
    json: got[0].map((m) => m.data),
    bytes: got[1].map((m) => [m.data instanceof Uint8Array, Array.from(m.data)]),
    history: [history.at(-2), Array.from(history.at(-1))],
    refused,
  };
}"""


def test_the_browser_client_speaks_messagepack_beside_a_json_one(
    make_run_daemon: Daemon,  # noqa: F811 (fixture)
    served: int,
) -> None:
    with chromium() as browser:
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{served}/test.html")
        result = page.evaluate(MSGPACK_SCENARIO, make_run_daemon.url)
    assert result["protocol"] == "trio-broker.msgpack"
    assert result["json"] == [{"text": "hé", "n": [1, 2.5, None]}] * 2
    assert result["bytes"] == [[True, [0, 1, 255]]] * 2
    assert result["history"] == [{"text": "hé", "n": [1, 2.5, None]}, [0, 1, 255]]
    assert result["refused"] == 'encoding must be "json" or "msgpack", not "xml"'
