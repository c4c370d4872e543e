"""permessage-deflate with the other clients the issue names: Node's `ws` (with
perMessageDeflate) and Chromium (which offers it by default)."""

import json
import os
import shutil
from pathlib import Path

import pytest
import trio

from tests.conftest import ROOT, StartBroker, require_service, url

NODE_MODULES = ROOT / "bench" / "node_modules"


def require_node_ws() -> None:
    require_service(
        "node with the ws package",
        shutil.which("node") is not None and (NODE_MODULES / "ws").is_dir(),
        "apt-get install nodejs npm, then make bench/node_modules/.package-lock.json",
    )


@pytest.mark.slow  # a Node process
async def test_node_ws_with_per_message_deflate_sends_and_gets_compressed_messages(
    start_broker: StartBroker,
) -> None:
    require_node_ws()
    broker = await start_broker(server={"compression": True})
    text = " ".join(f"word{n % 40}" for n in range(1000))  # about 6 KB, compressible
    with trio.fail_after(20):
        done = await trio.run_process(
            ["node", str(ROOT / "tests" / "peers" / "ws_deflate_client.js"), url(broker), text],
            capture_stdout=True,
            env={**os.environ, "NODE_PATH": str(NODE_MODULES)},
        )
    result = json.loads(done.stdout)
    assert result["extensions"] == "permessage-deflate"
    assert result["params"] == {
        "server_no_context_takeover": True,
        "client_no_context_takeover": True,
    }
    assert result["data"] == text  # ws compressed it, the broker inflated it, and back
    # The handshake, the welcome, the ack and the delivery: the delivery came compressed.
    assert result["bytesRead"] < len(text) // 2, result["bytesRead"]


CHROMIUM_EXCHANGE = """async ([url, text]) => {
  const ws = new WebSocket(url);
  const queue = [], waiting = [];
  ws.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (waiting.length) waiting.shift()(message); else queue.push(message);
  };
  const next = () => queue.length ? Promise.resolve(queue.shift())
                                  : new Promise((resolve) => waiting.push(resolve));
  await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = reject; });
  await next();  // the welcome
  ws.send(JSON.stringify({op: "subscribe", topic: "chat", id: 1}));
  await next();
  ws.send(JSON.stringify({op: "publish", topic: "chat", data: text, id: 2}));
  const got = [await next(), await next()];
  const delivery = got.find((m) => m.op === "message");
  ws.close();
  return {extensions: ws.extensions, intact: delivery.data === text};
}"""


@pytest.mark.slow  # Chromium
def test_chromium_offers_deflate_by_default_and_gets_it(tmp_path: Path) -> None:
    from tests.browser.chromium import ALLOW_LOCAL_NETWORK, chromium
    from tests.browser.test_browser import _start, _stop

    config = '[server]\nport = 0\nallowed_origins = ["null"]\ncompression = true\n'
    daemon = _start(config, tmp_path)
    text = " ".join(f"word{n % 40}" for n in range(5000))
    try:
        with chromium(ALLOW_LOCAL_NETWORK) as browser:
            page = browser.new_page()
            page.goto("about:blank")
            result = page.evaluate(CHROMIUM_EXCHANGE, [f"ws://127.0.0.1:{daemon.port}/ws", text])
    finally:
        _stop(daemon)
    assert result == {
        "extensions": "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        "intact": True,
    }
