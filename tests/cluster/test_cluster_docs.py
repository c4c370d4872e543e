"""The README's cluster on one machine: its node configs and its client, as written."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from tests.conftest import ROOT, doc_block
from tests.daemon_process import Daemon
from tests.redis_server import RedisServer

pytestmark = pytest.mark.slow  # redis-server, subprocesses

README = ROOT / "README.md"


def node_configs(directory: Path, redis: RedisServer) -> list[Path]:
    """The README's three configs, on free ports and the test's Redis."""
    script = doc_block(README, "cluster-nodes", "sh")
    template = re.search(r"<<EOF\n(.*?)\nEOF", script, re.DOTALL)
    assert template, "no config template in the cluster-nodes block"
    paths = []
    for n in (1, 2, 3):
        text = template.group(1).replace("$n", str(n))
        assert f"port = 809{n}" in text and 'redis_url = "redis://127.0.0.1:6379/0"' in text
        text = text.replace(f"port = 809{n}", "port = 0")
        text = text.replace("redis://127.0.0.1:6379/0", redis.url)
        path = directory / f"node{n}.toml"
        path.write_text(text)
        paths.append(path)
    return paths


async def test_the_readme_cluster_runs_and_its_client_prints_what_it_says(
    redis: RedisServer, tmp_path: Path
) -> None:
    daemons = [Daemon(path) for path in node_configs(tmp_path, redis)]
    try:
        ports = [daemon.wait_listening() for daemon in daemons]
        client = doc_block(README, "cluster-client", "python")
        expected = re.findall(r"print\(.*\)  # (.*)", client)
        for n, port in zip((1, 2, 3), ports, strict=True):
            client = client.replace(f"127.0.0.1:809{n}", f"127.0.0.1:{port}")
        result = await trio.to_thread.run_sync(
            lambda: subprocess.run(
                [sys.executable, "-c", client], capture_output=True, text=True, timeout=30
            )
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.split("\n")[:-1] == expected == ["hi", "missed", "True"]
    finally:
        for daemon in daemons:
            daemon.kill()
