"""The README's browser quick start, run as written in Chromium against make run's config."""

import functools
import http.server
import json
import re
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from broker.config.schema import SAMPLE_API_KEY
from tests.browser.chromium import ALLOW_LOCAL_NETWORK, chromium
from tests.conftest import ROOT, doc_block
from tests.daemon_process import Daemon, make_run_config

pytestmark = pytest.mark.slow  # Chromium

SNIPPET = doc_block(ROOT / "README.md", "browser-quickstart", "js")
README_URL = "ws://127.0.0.1:8080/ws"
# Records what the snippet logs, as JSON, for the test to read back.
RECORD_CONSOLE = """() => {
  window.logged = [];
  const log = console.log;
  console.log = (...args) => { window.logged.push(JSON.stringify(args[0])); log(...args); };
}"""


def _expected_output() -> list[Any]:
    """The snippet's comments: JavaScript object literals with "…" for anything."""
    literals = [line[3:] for line in SNIPPET.splitlines() if line.startswith("// {")]
    assert literals, "the README snippet no longer says what it prints"
    return [json.loads(re.sub(r"([{,]\s*)(\w+):", r'\1"\2":', text)) for text in literals]


def _like(expected: Any, actual: Any) -> bool:
    if isinstance(expected, str) and "…" in expected:
        pattern = ".+".join(map(re.escape, expected.split("…")))
        return isinstance(actual, str) and re.fullmatch(pattern, actual) is not None
    if isinstance(expected, dict):
        return (
            isinstance(actual, dict)
            and expected.keys() == actual.keys()
            and all(_like(value, actual[key]) for key, value in expected.items())
        )
    return bool(expected == actual)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int]]:
    """A page of a "development server" on another port, and the same page as a file."""
    root = tmp_path_factory.mktemp("site")
    (root / "index.html").write_text("<!doctype html><title>my app</title>\n")
    (root / "favicon.ico").write_bytes(b"")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root / "index.html", server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def admin_publish(daemon: Daemon, topic: str, data: Any) -> int:
    """Publish through `make run`'s admin API (its sample key); the subscribers reached."""
    response = httpx.post(
        f"http://127.0.0.1:{daemon.admin_port}/api/publish",
        json={"topic": topic, "data": data},
        headers={"Authorization": f"Bearer {SAMPLE_API_KEY}"},
    )
    assert response.status_code == 200, response.text
    return int(response.json()["subscribers"])


def _start(config_text: str, tmp_path: Path) -> Daemon:
    config = tmp_path / "trio-broker.toml"
    config.write_text(config_text)
    daemon = Daemon(config)
    daemon.wait_listening()
    return daemon


def _stop(daemon: Daemon) -> None:
    daemon.send_signal(signal.SIGTERM)
    try:
        assert daemon.wait_exit() == 0
    finally:
        daemon.kill()
    assert not [line for line in daemon.log if "ERROR" in line or "Traceback" in line]


@pytest.fixture
def make_run_daemon(tmp_path: Path) -> Iterator[Daemon]:
    """`make run`'s config, on free ports."""
    daemon = Daemon(make_run_config(tmp_path))
    daemon.wait_listening()
    daemon.wait_admin_listening()
    yield daemon
    _stop(daemon)


def _run_snippet(page: Any, port: int) -> list[str]:
    """Run the README snippet on ``page``; what the console shows meanwhile."""
    assert README_URL in SNIPPET
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    page.evaluate(RECORD_CONSOLE)
    page.add_script_tag(content=SNIPPET.replace(README_URL, f"ws://127.0.0.1:{port}/ws"))
    return console


@pytest.mark.parametrize("where", ["blank tab", "file", "development server"])
def test_the_quick_start_works_as_written_on_make_runs_config(
    make_run_daemon: Daemon, site: tuple[Path, int], where: str
) -> None:
    page_file, site_port = site
    url = {
        "blank tab": "about:blank",
        "file": page_file.as_uri(),
        "development server": f"http://localhost:{site_port}/index.html",
    }[where]
    flags = [ALLOW_LOCAL_NETWORK] if where == "blank tab" else []
    expected = _expected_output()
    with chromium(*flags) as browser:
        page = browser.new_page()
        page.goto(url)
        console = _run_snippet(page, make_run_daemon.port)
        try:
            page.wait_for_function(f"window.logged.length >= {len(expected)}", timeout=10_000)
        except Exception as timeout:
            message = f"the snippet did not print its output; console: {console}"
            raise AssertionError(message) from timeout
        logged = [json.loads(text) for text in page.evaluate("window.logged")]
    assert len(logged) == len(expected), logged
    for want, got in zip(expected, logged, strict=True):
        assert _like(want, got), f"README says {want}, the browser printed {got}"


def test_an_empty_config_refuses_other_pages_and_the_log_says_why(
    tmp_path: Path, site: tuple[Path, int]
) -> None:
    daemon = _start("[server]\nport = 0\n", tmp_path)
    try:
        with chromium() as browser:
            page = browser.new_page()
            page.goto(f"http://localhost:{site[1]}/index.html")
            with page.expect_console_message(
                lambda message: "Unexpected response code: 403" in message.text, timeout=10_000
            ):
                _run_snippet(page, daemon.port)
            refused = daemon.wait_for(r"refused .*: 403 (.*)").group(1)
    finally:
        _stop(daemon)
    assert refused == (
        f"origin 'http://localhost:{site[1]}' is not allowed by [server] allowed_origins "
        f"(empty: same host as the request's Host '127.0.0.1:{daemon.port}' only); "
        "add it there if that page is yours"
    )


CHAT = doc_block(ROOT / "README.md", "chat-example", "js")


def test_the_chat_example_catches_up_after_a_reconnect(
    make_run_daemon: Daemon, site: tuple[Path, int]
) -> None:
    def publish(n: int) -> int:
        return admin_publish(make_run_daemon, "chat/lobby", n)

    assert README_URL in CHAT
    with chromium() as browser:
        page = browser.new_page()
        page.goto(f"http://localhost:{site[1]}/index.html")
        lines: list[str] = []
        page.on("console", lambda message: lines.append(message.text))

        def shown(n: int) -> Any:
            return page.expect_console_message(lambda m: m.text == f"chat: {n}", timeout=10_000)

        # Its own join event says that the subscription is in place.
        with page.expect_console_message(lambda m: m.text.startswith("join ")):
            page.add_script_tag(content=CHAT.replace(README_URL, make_run_daemon.url))
        with shown(1):
            assert publish(1) == 1
        page.evaluate("ws.close()")
        page.wait_for_function("ws.readyState === WebSocket.CLOSED")
        with shown(3):  # it reconnects by itself, half a second later at the earliest
            assert [publish(2), publish(3)] == [0, 0]  # away: nobody gets them live
        with shown(4):
            assert publish(4) == 1
    chat = [line for line in lines if line.startswith(("chat:", "missed"))]
    assert chat == ["chat: 1", "chat: 2", "chat: 3", "chat: 4"]


# A page's traffic over wss://: many small messages, one of many TLS records, both ways.
WSS_EXCHANGE = """async (url) => {
  const open = () => new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    const queue = [], waiting = [];
    ws.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (waiting.length) waiting.shift()(message); else queue.push(message);
    };
    ws.next = () => queue.length ? Promise.resolve(queue.shift())
                                 : new Promise((r) => waiting.push(r));
    ws.onopen = () => resolve(ws);
    ws.onerror = () => reject(new Error("cannot connect to " + url));
  });
  const subscriber = await open(), publisher = await open();
  await subscriber.next(); await publisher.next();  // the welcomes
  subscriber.send(JSON.stringify({op: "subscribe", topic: "t", id: 1}));
  const ack = await subscriber.next();
  const big = "y".repeat(300000);
  for (let n = 0; n < 500; n++) {
    publisher.send(JSON.stringify({op: "publish", topic: "t", data: n}));
  }
  publisher.send(JSON.stringify({op: "publish", topic: "t", data: big, id: 2}));
  const received = [];
  for (let n = 0; n < 500; n++) received.push((await subscriber.next()).data);
  const last = (await subscriber.next()).data;
  return {ack, received, bigIntact: last === big, publisherAck: await publisher.next()};
}"""


def test_a_browser_over_wss(tmp_path: Path) -> None:
    import trustme

    from tests.connections.test_tls import issue

    keys = issue(trustme.CA(), tmp_path / "keys")
    daemon = _start(
        '[server]\nport = 0\nallowed_origins = ["null"]\n'
        f'[server.tls]\ncert_file = "{keys["cert_file"]}"\nkey_file = "{keys["key_file"]}"\n'
        "[limits]\nmax_message_size = 1048576\n",
        tmp_path,
    )
    try:
        # The certificate is the test's own: the browser is told not to check it.
        with chromium(ALLOW_LOCAL_NETWORK, "--ignore-certificate-errors") as browser:
            page = browser.new_page()
            page.goto("about:blank")
            result = page.evaluate(WSS_EXCHANGE, f"wss://127.0.0.1:{daemon.port}/ws")
    finally:
        _stop(daemon)
    assert result["ack"] == {"op": "ack", "id": 1}
    assert result["received"] == list(range(500))
    assert result["bigIntact"]
    assert result["publisherAck"] == {"op": "ack", "id": 2}
