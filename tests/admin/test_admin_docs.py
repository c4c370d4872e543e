"""The README's curl commands for the admin listener, run against make run's config."""

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.conftest import ROOT, doc_block
from tests.daemon_process import Daemon, make_run_config, serving
from tests.wsclient import WsClient

BLOCK = doc_block(ROOT / "README.md", "admin-curl", "sh")


def _commands() -> list[tuple[str, str | None]]:
    """Each command (continuation lines joined) and what the README says it prints."""
    text = BLOCK.replace("\\\n", " ")
    found: list[tuple[str, str | None]] = []
    for line in text.splitlines():
        command, _, comment = line.partition("  # ")
        if line.startswith("# ") and found and found[-1][1] is None:
            found[-1] = (found[-1][0], line[2:])
        elif command.strip():
            found.append((command.strip(), comment.strip() or None))
    return found


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    with serving(make_run_config(tmp_path), admin=True) as daemon:
        yield daemon


async def test_the_readme_curl_commands_answer_as_shown(daemon: Daemon) -> None:
    assert shutil.which("curl"), "curl is needed to run the README's commands"
    # The Quick start's browser, subscribed to chat/#.
    subscriber = await WsClient.connect(daemon.url)
    try:
        await subscriber.recv()
        await subscriber.request({"op": "subscribe", "topic": "chat/#", "id": 1})
        shell = ""
        for command, shown in _commands():
            command = command.replace("127.0.0.1:8081", f"127.0.0.1:{daemon.admin_port}")
            if not command.startswith("curl "):
                shell += command + "\n"  # KEY=...
                continue
            with trio.fail_after(10):
                result = await trio.run_process(
                    ["bash", "-c", f"{shell}{command} -s -w '\\n%{{http_code}}'"],
                    capture_stdout=True,
                )
            body, _, status = result.stdout.decode().rpartition("\n")
            assert status == "200", (command, body)
            if shown is None:
                continue
            # What the README shows, up to a "..." or a remark in brackets, the broker said.
            if shown.startswith("... "):
                assert shown[4:].split(" ...")[0] in body, (command, body, shown)
            else:
                expected = re.split(r"\.\.\.| \(", shown)[0]
                assert body.startswith(expected), (command, body, shown)
        assert (await subscriber.recv())["data"] == {"text": "hello from the backend"}
    finally:
        await subscriber.aclose()
