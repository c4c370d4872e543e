"""The demo chat ([admin] ui) in Chromium on make run's config: two pages chatting, history
on join, who is here, a page whose connection drops catching up, a third page refused the
staff room."""

import json
import math
import os
import subprocess
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from broker.client import Client, connect
from tests.browser.chromium import chromium
from tests.browser.test_browser import make_run_daemon  # noqa: F401 (fixture)
from tests.client.test_client_cli import position_now
from tests.daemon_process import Daemon, cli
from tests.tcp_proxy import ThreadedCuttableProxy

pytestmark = pytest.mark.slow  # Chromium

SCREENSHOTS = os.environ.get("TRIO_BROKER_SCREENSHOTS")


def open_chat(browser: Any, admin_port: int, name: str, page: Any = None) -> Any:
    page = page or browser.new_page()
    page.add_init_script(f"sessionStorage.setItem('name', {name!r})")
    page.goto(f"http://127.0.0.1:{admin_port}/ui/chat.html")
    page.wait_for_selector("#text:not([disabled])")
    return page


def say(page: Any, text: str) -> None:
    page.fill("#text", text)
    page.press("#text", "Enter")


def shown(page: Any) -> list[str]:
    return list(
        page.eval_on_selector_all("#messages li.message", "items => items.map(i => i.textContent)")
    )


def test_two_pages_chat_and_one_catches_up_after_its_connection_drops(
    make_run_daemon: Daemon,  # noqa: F811 (fixture)
) -> None:
    admin = make_run_daemon.admin_port
    index = httpx.get(f"http://127.0.0.1:{admin}/ui/")
    assert index.status_code == 200 and "chat.html" in index.text
    make_run_daemon.wait_for(rf"demo chat: http://127\.0\.0\.1:{admin}/ui/chat\.html")
    since = position_now(make_run_daemon)
    with chromium() as browser, ThreadedCuttableProxy(make_run_daemon.port) as proxy:
        alice = open_chat(browser, admin, "alice")
        say(alice, "hello before bob came")
        alice.wait_for_function("document.querySelectorAll('#messages li.message').length === 1")
        # Bob's page reaches the broker through a proxy whose connections the test cuts.
        bob = browser.new_page()
        bob.route(
            "**/ui/config.json",
            lambda route: route.fulfill(json={"websocket": proxy.url}),
        )
        bob = open_chat(browser, admin, "bob", page=bob)
        # History on join, and who is here.
        bob.wait_for_function("document.querySelectorAll('#messages li.message').length === 1")
        assert shown(bob) == ["alicehello before bob came"]
        bob.wait_for_function("document.querySelectorAll('#members li').length === 2")
        alice.wait_for_function(
            "[...document.querySelectorAll('#members li')].some(li => li.textContent === 'bob')"
        )
        say(bob, "hi alice")
        alice.wait_for_function("document.querySelectorAll('#messages li.message').length === 2")
        assert shown(alice)[-1] == "bobhi alice"
        # Bob's TCP connection is cut (a reset, as a network failure would leave it); what
        # alice says meanwhile reaches him once he is back.
        # Its first two attempts to reconnect fail too (the browser client gave up after one).
        proxy.refuse_next(2)
        proxy.cut()
        bob.wait_for_function("document.querySelector('#status').textContent !== 'connected'")
        say(alice, "while you were away")
        bob.wait_for_function(
            "document.querySelector('#status').textContent === 'connected'", timeout=15_000
        )
        bob.wait_for_function("document.querySelectorAll('#messages li.message').length === 3")
        assert shown(bob)[-1] == "alicewhile you were away"
        # A third page asks for the staff room, which make run's acl keeps for the role
        # "staff": refused, it stays out (it can neither write there nor read), and may
        # still join the lobby.
        carol = browser.new_page()
        carol.add_init_script("sessionStorage.setItem('name', 'carol')")
        carol.goto(f"http://127.0.0.1:{admin}/ui/chat.html?room=staff/lounge")
        carol.wait_for_function("document.querySelector('#error').textContent !== ''")
        assert carol.text_content("#error") == (
            "cannot join staff/lounge: forbidden: not allowed to subscribe to 'staff/lounge'"
        )
        assert carol.is_disabled("#text") and shown(carol) == []
        carol.fill("#room", "lobby")
        carol.click("#join")
        carol.wait_for_function("document.querySelectorAll('#messages li.message').length === 3")
        assert carol.text_content("#error") == ""
        if SCREENSHOTS:  # the README's pictures: TRIO_BROKER_SCREENSHOTS=docs/images
            alice.set_viewport_size({"width": 900, "height": 420})
            alice.screenshot(path=str(Path(SCREENSHOTS) / "chat.png"))
    # And a terminal sees the same conversation (README: trio-broker sub 'chat/#').
    printed = subprocess.run(
        [*cli(), "sub", "--count", "6", "--since", since, "chat/#"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "TRIO_BROKER_URL": make_run_daemon.url},
    )
    texts = [json.loads(line)["data"].get("text") for line in printed.stdout.splitlines()]
    assert [t for t in texts if t] == ["hello before bob came", "hi alice", "while you were away"]


def test_the_dashboards_numbers_move_when_messages_flow(
    make_run_daemon: Daemon,  # noqa: F811 (fixture)
) -> None:
    admin = make_run_daemon.admin_port
    make_run_daemon.wait_for(rf"dashboard: http://127\.0\.0\.1:{admin}/ui/dashboard\.html")
    with chromium() as browser:
        dashboard = browser.new_page()
        dashboard.goto(f"http://127.0.0.1:{admin}/ui/dashboard.html")
        dashboard.wait_for_function("document.querySelector('#connections').textContent === '0'")
        chat = open_chat(browser, admin, "carol")
        dashboard.wait_for_function("document.querySelector('#connections').textContent === '1'")
        dashboard.wait_for_function(
            "document.querySelector('#busiest').textContent.includes('chat/lobby')"
        )
        # Rates are the change between two polls, a second apart: the next poll sees these.
        for n in range(40):
            say(chat, f"message {n}")
        dashboard.wait_for_function(
            "Number(document.querySelector('#delivered-rate').textContent.replace(/,/g, '')) > 0",
            timeout=10_000,
        )
        # The cluster's nodes (one here) and a chart that says its scale.
        texts = "cells => cells.map(c => c.textContent)"
        cells = dashboard.eval_on_selector_all("#nodes td", texts)
        assert len(cells) == 4 and cells[1] == "1", cells
        label = dashboard.get_attribute("#chart", "aria-label") or ""
        assert "per second over the last 5 minutes, on a scale of 0 to " in label, label
        assert int(label.rsplit(" to ", 1)[1].split()[0].replace(",", "")) > 0, label
        if SCREENSHOTS:
            busy_minutes(make_run_daemon, 150.0)  # so that the chart shows some history
            dashboard.set_viewport_size({"width": 900, "height": 800})
            dashboard.screenshot(path=str(Path(SCREENSHOTS) / "dashboard.png"))


def busy_minutes(daemon: Daemon, seconds: float) -> None:
    """Traffic for the dashboard's screenshot: 20 listeners in five rooms, and publishes at
    a rate that rises and falls."""

    async def listen(client: Client) -> None:
        async for _ in client.messages():
            pass

    async def run() -> None:
        async with AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(connect(daemon.url)) for _ in range(21)]
            publisher, listeners = clients[0], clients[1:]
            async with anyio.create_task_group() as group:
                for n, client in enumerate(listeners):
                    await client.subscribe("chat/#" if n % 4 == 0 else f"chat/room{n % 5}")
                    group.start_soon(listen, client)
                start = time.monotonic()
                while (elapsed := time.monotonic() - start) < seconds:
                    per_tick = int(20 + 15 * math.sin(elapsed / 15))  # ten ticks a second
                    acks = [
                        await publisher.start_publish(f"chat/room{n % 5}", {"text": str(n)})
                        for n in range(per_tick)
                    ]
                    for ack in acks:
                        await ack.result()
                    await anyio.sleep(0.1)
                group.cancel_scope.cancel()

    anyio.run(run, backend="trio")  # (Playwright holds an asyncio loop in this thread)
