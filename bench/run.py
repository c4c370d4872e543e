"""Fan-out benchmark: trio-broker against a naive trio-websocket broker and a Node `ws` broker.

Every scenario runs against each broker, interleaved (every other run in reverse
order), --runs times; the tables show medians. The broker runs pinned to CPU 0 and the
Node load generator to CPU 1 (when the machine has two), both on loopback. Results go
to bench/results/latest.{json,md} (partial.{json,md} for --quick, --only or --brokers
runs).

    python bench/run.py            # the full run (about 20 minutes on 2 cores)
    python bench/run.py --quick    # one run, shorter windows, for iterating
"""

import argparse
import collections
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VENV_BIN = Path(sys.executable).parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
TWO_CORES = (os.cpu_count() or 1) >= 2

TRIO_BROKER_CONFIG = """
[server]
host = "127.0.0.1"
port = 0
{server}
[limits]
max_connections = 20000
# Every load-generator connection comes from 127.0.0.1, and its one publisher is a trusted
# backend sending as fast as the broker takes it.
max_connections_per_ip = 0
handshake_rate_per_ip = 0
max_incoming_rate = 0
"""
# Variants of trio-broker: the same config plus these lines.
SCRAPED = "trio-broker, /metrics scraped 1/s"  # a scraper reads /metrics every second meanwhile
HISTORY = "trio-broker, history on every topic"
REDIS = "trio-broker, redis engine"  # one node, its publisher and subscribers through Redis
CROSS_NODE = "trio-broker, redis engine, 2 nodes"  # publisher on A, subscribers on A and B
WORKERS = "trio-broker, redis engine, workers = 2"  # one node, two processes on the port
# Both cores for the broker (the load generator shares CPU 1): one worker, then two.
ONE_WORKER_2CPU = "trio-broker, redis engine, workers = 1, CPUs 0-1"
TWO_WORKERS_2CPU = "trio-broker, redis engine, workers = 2, CPUs 0-1"
BOTH_CORES = {ONE_WORKER_2CPU, TWO_WORKERS_2CPU}
# Every subscribe and publish asks the application's backend (bench/peers/hooks_backend.js,
# not pinned: pinned beside the saturating load generator, it waited for the CPU) over HTTP.
HOOKS = "trio-broker, http_hooks on subscribe and publish"
HOOKS_SECTION = (
    '\n[[plugins]]\nuse = "http_hooks"\nsubscribe_url = "http://127.0.0.1:{backend}/subscribe"\n'
    'publish_url = "http://127.0.0.1:{backend}/publish"\ntimeout = 2.0\n'
)
# Every connect and subscribe of the storm becomes a webhook event, posted to the same backend.
WEBHOOKS = "trio-broker, webhooks on connect and subscribe"
# Each client of the storm: connect and subscribe, then (at the SIGTERM that ends the run,
# all at once) unsubscribe and disconnect, every one counted by the backend.
WEBHOOK_EVENTS = ("connect", "disconnect", "subscribe", "unsubscribe")
# The same with a queue that holds the SIGTERM's 20k events (the default holds 10k).
ROOMY_WEBHOOKS = "trio-broker, webhooks, max_queued = 40000"
WEBHOOKS_SECTION = (
    '\n[webhooks]\nurl = "http://127.0.0.1:{backend}/events"\nsecret_file = "{secret}"\n'
    f"events = {json.dumps(list(WEBHOOK_EVENTS))}\n"
)
# Clients that offer permessage-deflate (as browsers do), against brokers that decline it
# and brokers that compress: trio-broker once per publish, Node's ws once per subscriber.
COMPRESSED = "trio-broker, compression"
# The same without the speedups: zlib deflates instead of ISA-L.
COMPRESSED_ZLIB = "trio-broker, compression, zlib"
# The same broker, its clients speaking trio-broker.msgpack instead of JSON.
MSGPACK_CLIENTS = "trio-broker, msgpack clients"
# The same broker, its subscribers reading Server-Sent Events streams.
SSE_CLIENTS = "trio-broker, SSE subscribers"
LOADGEN_OPTIONS = {MSGPACK_CLIENTS: ["--msgpack", "1"], SSE_CLIENTS: ["--sse", "1"]}
NODE_DEFLATE = "node ws, perMessageDeflate"
SAMPLE = "trio-broker, sample config"  # etc/trio-broker.toml (acl, limits, topics) on port 0
# The bench config with the sample config's acl: what a plugin costs each publish.
SAMPLE_ACL = "trio-broker, the sample config's acl"
# Braces doubled: the variants go through str.format.
ACL_SECTION = (
    '\n[[plugins]]\nuse = "acl"\ndefault = "allow"\nrules = [\n'
    '  {{ role = "staff", subscribe = ["staff/#"], publish = ["staff/#"] }},\n'
    '  {{ action = "deny", subscribe = ["staff/#"], publish = ["staff/#"] }},\n]\n'
)
TLS = "trio-broker, wss://"  # a certificate made for the run (trustme)
NODE_TLS = "node ws, wss://"
TLS_BROKERS = {TLS, NODE_TLS}
TLS_SECTION = '\n[server.tls]\ncert_file = "{cert}"\nkey_file = "{key}"\n'
CLUSTER = '[cluster]\nengine = "redis"\nredis_url = "unix://{redis}"\n'
VARIANTS = {
    SCRAPED: "[admin]\nenabled = true\nport = 0\n",
    HISTORY: '[[topics]]\nfilter = "#"\nhistory_size = 100\n',
    REDIS: CLUSTER,
    CROSS_NODE: CLUSTER,
    WORKERS: CLUSTER,
    TLS: TLS_SECTION,
    HOOKS: HOOKS_SECTION,
    SAMPLE_ACL: ACL_SECTION,
    WEBHOOKS: WEBHOOKS_SECTION,
    MSGPACK_CLIENTS: "",
    SSE_CLIENTS: "",
    COMPRESSED: "",
    COMPRESSED_ZLIB: "",
    ROOMY_WEBHOOKS: WEBHOOKS_SECTION + "max_queued = 40000\n",
    ONE_WORKER_2CPU: CLUSTER,
    TWO_WORKERS_2CPU: CLUSTER,
}
SERVER_VARIANTS = {
    WORKERS: "workers = 2",
    TWO_WORKERS_2CPU: "workers = 2",
    COMPRESSED: "compression = true",
    COMPRESSED_ZLIB: "compression = true",
}
NODES = {CROSS_NODE: 2}
SCRAPE_INTERVAL = 1.0
# Brokers a scenario runs against, unless it names its own.
DEFAULT_BROKERS = ("trio-broker", "naive trio-websocket", "node ws")
TREE = "trio-broker, tree"  # --tree DIR: a checkout of trio-broker, in the same run

SCENARIOS: list[dict[str, Any]] = [
    {"name": "saturation, S=100", "mode": "saturate", "subscribers": 100},
    {
        # 1 KiB of chat-like text per message; every client offers permessage-deflate.
        "name": "saturation, S=100, 1 KiB chat, deflate offered",
        "mode": "saturate",
        "subscribers": 100,
        "payload": 1024,
        "chat": 1,
        "deflate": 1,
        "brokers": ("trio-broker", COMPRESSED, COMPRESSED_ZLIB, "node ws", NODE_DEFLATE),
    },
    {
        # MessagePack against JSON: 1 KiB of chat-like text as data, subscribers counting.
        "name": "saturation, S=100, 1 KiB chat, msgpack against JSON",
        "mode": "saturate",
        "subscribers": 100,
        "payload": 1024,
        "chat": 1,
        "counting": 1,
        "brokers": ("trio-broker", MSGPACK_CLIENTS),
    },
    {
        # Fan-out to event streams against WebSockets: the same broker and load.
        "name": "saturation, S=100, 1 KiB chat, SSE against WebSocket",
        "mode": "saturate",
        "subscribers": 100,
        "payload": 1024,
        "chat": 1,
        "counting": 1,
        "brokers": ("trio-broker", SSE_CLIENTS),
    },
    {
        # The same at a rate every broker but Node's compressing one sustains: what
        # compression costs in CPU, neither side saturated.
        "name": "20k deliveries/s, S=100, 1 KiB chat, deflate offered",
        "mode": "rate",
        "rate": 20000,
        "subscribers": 100,
        "payload": 1024,
        "chat": 1,
        "deflate": 1,
        "brokers": ("trio-broker", COMPRESSED, COMPRESSED_ZLIB, "node ws", NODE_DEFLATE),
    },
    {"name": "saturation, S=1000", "mode": "saturate", "subscribers": 1000},
    {"name": "20k deliveries/s, S=100", "mode": "rate", "subscribers": 100, "rate": 20000},
    {"name": "20k deliveries/s, S=1000", "mode": "rate", "subscribers": 1000, "rate": 20000},
    {"name": "saturation, S=100, 1 KiB", "mode": "saturate", "subscribers": 100, "payload": 1024},
    {
        "name": "saturation, S=100, 16 KiB",
        "mode": "saturate",
        "subscribers": 100,
        "payload": 16384,
        "inflight": 2000,
    },
    {
        "name": "10k topics, 1 subscriber each",
        "mode": "saturate",
        "subscribers": 10000,
        "topics": 10000,
    },
    {
        # What a plugin (the sample config's acl) costs each publish.
        "name": "10k topics, 1 subscriber each, acl",
        "mode": "saturate",
        "subscribers": 10000,
        "topics": 10000,
        "brokers": ("trio-broker", SAMPLE_ACL),
    },
    # TLS: the same fan-out over wss://, against plain ws:// in the same run.
    {
        "name": "wss saturation, S=100",
        "mode": "saturate",
        "subscribers": 100,
        "brokers": ("trio-broker", TLS, NODE_TLS),
    },
    {
        "name": "wss saturation, S=1000",
        "mode": "saturate",
        "subscribers": 1000,
        "brokers": ("trio-broker", TLS, NODE_TLS),
    },
    {
        # A chat room: 1,000 members, each publishing in turn, everyone hears everything.
        "name": "chat room, 1000 members all publishing",
        "mode": "saturate",
        "subscribers": 1000,
        "members-publish": 1,
        "brokers": ("trio-broker", "node ws"),
    },
    {
        # The cost of asking the backend: one HTTP call per publish (and subscribe).
        "name": "saturation, S=100, http_hooks",
        "mode": "saturate",
        "subscribers": 100,
        "brokers": ("trio-broker", HOOKS),
    },
    {
        # Its latency when the backend keeps up: 200 publishes/s, each asking it.
        "name": "20k deliveries/s, S=100, http_hooks",
        "mode": "rate",
        "subscribers": 100,
        "rate": 20000,
        "brokers": ("trio-broker", HOOKS),
    },
    {"name": "idle, 10k connections", "mode": "idle", "subscribers": 10000},
    {
        # Near the machine's limit of 20,000 open files per process.
        "name": "idle, 19k connections",
        "mode": "idle",
        "subscribers": 19000,
        "brokers": ("trio-broker", "node ws"),
    },
    {
        # Everyone reconnects at once (after a deploy): connect, welcome, subscribe, ack.
        "name": "reconnect storm, 10k clients",
        "mode": "storm",
        "subscribers": 10000,
        "inflight": 500,
        "addresses": 200,
        "brokers": (SAMPLE, "node ws"),
    },
    {
        # The cost of webhooks in a storm: 20k events (connect, subscribe) to post.
        "name": "reconnect storm, 10k clients, webhooks",
        "mode": "storm",
        "subscribers": 10000,
        "inflight": 500,
        "addresses": 200,
        "brokers": ("trio-broker", WEBHOOKS, ROOMY_WEBHOOKS),
    },
    {
        # Counting must cost nothing on the hot path: the same broker, admin off and on.
        "name": "saturation, S=100, metrics",
        "mode": "saturate",
        "subscribers": 100,
        "brokers": ("trio-broker", SCRAPED),
    },
    {
        # Every publish gets a position and is retained (and old ones dropped).
        "name": "saturation, S=100, history",
        "mode": "saturate",
        "subscribers": 100,
        "brokers": ("trio-broker", HISTORY),
    },
    {
        "name": "10k topics, 1 subscriber each, history",
        "mode": "saturate",
        "subscribers": 10000,
        "topics": 10000,
        "brokers": ("trio-broker", HISTORY),
    },
    {
        # Scaling with workers: the broker may use both cores (the load generator shares
        # CPU 1; its CPU share is in the table).
        "name": "saturation, S=1000, workers on 2 cores",
        "mode": "saturate",
        "subscribers": 1000,
        "brokers": (ONE_WORKER_2CPU, TWO_WORKERS_2CPU),
    },
    # The cluster: the same load through Redis; CPU is that of every broker process.
    {
        "name": "saturation, S=100, cluster",
        "mode": "saturate",
        "subscribers": 100,
        "brokers": ("trio-broker", REDIS, CROSS_NODE, WORKERS),
    },
    {
        "name": "saturation, S=1000, cluster",
        "mode": "saturate",
        "subscribers": 1000,
        "brokers": ("trio-broker", REDIS, CROSS_NODE, WORKERS),
    },
]
CLUSTER_BROKERS = {REDIS, CROSS_NODE, WORKERS, *BOTH_CORES}


def broker_commands(configs: dict[str, Path]) -> dict[str, list[str]]:
    serve = [str(VENV_BIN / "trio-broker"), "serve", "--config"]
    node = ["node", str(BENCH / "peers" / "node_ws_broker.js")]
    return {
        **{name: [*serve, str(path)] for name, path in configs.items()},
        "naive trio-websocket": [sys.executable, str(BENCH / "peers" / "naive_trio_broker.py")],
        "node ws": node,
        NODE_TLS: node,
        NODE_DEFLATE: node,
    }


def tree_name(tree: str) -> str:
    return f"{TREE} {tree}"


def tree_command(tree: Path, config: Path) -> list[str]:
    """`trio-broker serve` of a checkout, on this venv's Python and packages."""
    run = (
        f"import runpy, sys; sys.path.insert(0, {str(tree.resolve())!r}); "
        "runpy.run_module('broker', run_name='__main__')"
    )
    return [sys.executable, "-c", run, "serve", "--config", str(config)]


def brokers_of(scenario: dict[str, Any], trees: list[str]) -> tuple[str, ...]:
    names = tuple(scenario.get("brokers", DEFAULT_BROKERS))
    return (*names, *map(tree_name, trees)) if "trio-broker" in names else names


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (the load generator does not check it)."""
    import trustme

    issued = trustme.CA().issue_cert("127.0.0.1")
    cert, key = directory / "cert.pem", directory / "key.pem"
    issued.private_key_and_cert_chain_pem.write_to_path(str(key))
    issued.cert_chain_pems[0].write_to_path(str(cert))
    return cert, key


def pinned(command: list[str], cpu: int | str) -> list[str]:
    return ["taskset", "-c", str(cpu), *command] if TWO_CORES else command


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE


def with_children(pid: int) -> list[int]:
    """The process and its children (a supervisor's workers, forked by any of its threads)."""
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # the thread ended meanwhile
            children += (task / "children").read_text().split()
    return [pid, *map(int, children)]


class RedisServer:
    """A private redis-server on a unix socket, on the load generator's CPU."""

    def __init__(self, directory: Path) -> None:
        self.socket = directory / "redis.sock"
        self.process = subprocess.Popen(
            pinned(
                [
                    *("redis-server", "--port", "0", "--unixsocket", str(self.socket)),
                    *("--save", "", "--appendonly", "no", "--dir", str(directory)),
                ],
                1,
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if "ready to accept connections" in line.lower():
                break
        else:
            raise RuntimeError("redis-server did not start")
        self.process.stdout.close()

    def cpu_seconds(self) -> float:
        """Its own count (INFO cpu, microseconds), finer than /proc's clock ticks."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(self.socket))
            sock.sendall(b"INFO cpu\r\n")
            reply = b""
            while b"used_cpu_user:" not in reply or not reply.endswith(b"\r\n\r\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                reply += chunk
        fields = dict(line.split(":", 1) for line in reply.decode().splitlines() if ":" in line)
        return float(fields["used_cpu_sys"]) + float(fields["used_cpu_user"])

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


def backend_events(port: int) -> int:
    """The webhook events bench/peers/hooks_backend.js was posted so far."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/calls", timeout=5) as response:
        return int(json.load(response)["events"])


class Scraper(threading.Thread):
    """GET /metrics every SCRAPE_INTERVAL seconds, as Prometheus would, until stopped."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.stopped = threading.Event()
        self.scrapes = 0

    def run(self) -> None:
        while not self.stopped.wait(SCRAPE_INTERVAL):
            with urllib.request.urlopen(self.url, timeout=5) as response:
                assert b"trio_broker_deliveries_total" in response.read()
            self.scrapes += 1


class Broker:
    def __init__(
        self,
        command: list[str],
        *,
        scraped: bool = False,
        tls: bool = False,
        env: dict[str, str] | None = None,
        cpus: int | str = 0,
    ) -> None:
        self.process = subprocess.Popen(
            pinned(command, cpus),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
        self.scheme = "wss" if tls else "ws"
        assert self.process.stdout is not None
        deadline = time.monotonic() + 20
        for line in self.process.stdout:
            found = re.search(r"(?<!admin )listening on 127\.0\.0\.1:(\d+)", line)
            if found:
                self.port = int(found.group(1))
                break
            if time.monotonic() > deadline:
                break
        else:
            raise RuntimeError(f"broker did not start: {command}")
        self.pid = self.process.pid
        self.scraper = None
        if scraped:
            # A few lines after the WebSocket listener's (the speedups' line among them).
            for line in itertools.islice(self.process.stdout, 10):
                if admin := re.search(r"admin listening on 127\.0\.0\.1:(\d+)", line):
                    self.scraper = Scraper(int(admin.group(1)))
                    break
            else:
                raise RuntimeError(f"no admin listener: {command}")
            self.scraper.start()
        # Read on: a broker whose log fills the pipe would wait for it, and measure that.
        self.last_lines: collections.deque[str] = collections.deque(maxlen=20)
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.last_lines.append(line)

    def stop(self) -> None:
        if self.scraper is not None:
            self.scraper.stopped.set()
            self.scraper.join()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def run_load(
    brokers: list["Broker"],
    scenario: dict[str, Any],
    duration: float,
    redis: RedisServer | None,
    extra: list[str] | None = None,
) -> dict[str, Any]:
    """Subscribers spread over ``brokers``, the publisher on the first; ``extra``: more
    load generator options (the broker's own, `LOADGEN_OPTIONS`)."""
    options = {k: v for k, v in scenario.items() if k not in ("name", "brokers")}
    options.setdefault("duration", duration)
    urls = [f"{broker.scheme}://127.0.0.1:{broker.port}/ws" for broker in brokers]
    command = ["node", str(BENCH / "loadgen" / "loadgen.js"), "--url", ",".join(urls)]
    for key, value in options.items():
        command += [f"--{key}", str(value)]
    command += extra or []
    idle = scenario["mode"] == "idle"
    pids = [pid for broker in brokers for pid in with_children(broker.pid)]

    def cpu(processes: list[int]) -> float:
        return sum(map(cpu_seconds, processes))

    def redis_cpu() -> float:
        return 0.0 if redis is None else redis.cpu_seconds()

    rss_before = sum(map(rss_bytes, pids))
    loadgen = subprocess.Popen(
        pinned(command, 1), stdout=subprocess.PIPE, text=True, stdin=subprocess.PIPE
    )
    assert loadgen.stdout is not None and loadgen.stdin is not None
    result: dict[str, Any] = {}
    started = cpu_start = redis_start = loadgen_start = 0.0
    for line in loadgen.stdout:
        message = json.loads(line)
        if message.get("event") == "start":
            started, cpu_start, redis_start = time.monotonic(), cpu(pids), redis_cpu()
            loadgen_start = cpu_seconds(loadgen.pid)
        elif message.get("event") == "end":
            window = time.monotonic() - started
            result["cpu_seconds"] = cpu(pids) - cpu_start
            result["broker_cpu_percent"] = 100 * result["cpu_seconds"] / window
            loadgen_cpu = cpu_seconds(loadgen.pid) - loadgen_start
            result["loadgen_cpu_percent"] = 100 * loadgen_cpu / window
            result["window"] = window
            if redis is not None:
                result["redis_cpu_seconds"] = redis_cpu() - redis_start
        elif message.get("event") == "ready":
            time.sleep(1)  # let the broker settle
            result["rss_per_connection_kib"] = (
                (sum(map(rss_bytes, pids)) - rss_before) / message["connections"] / 1024
            )
            loadgen.stdin.close()
        elif "result" in message:
            result.update(message["result"])
        elif "error" in message:
            raise RuntimeError(f"load generator: {message['error']}")
    measured = "rss_per_connection_kib" if idle else "window"  # idle rows have no window
    if loadgen.wait(60) != 0 or measured not in result:
        # A load generator that died (npm ci not run, a crash) measured nothing: say so.
        raise RuntimeError(f"load generator exited {loadgen.returncode} without a result")
    if result.get("storm_seconds"):
        result["cpu_us_per_connection"] = 1e6 * result["cpu_seconds"] / result["connections"]
    if not idle and result.get("deliveries_per_s"):
        delivered = result["deliveries_per_s"] * result["window"]
        result["cpu_us_per_delivery"] = 1e6 * result["cpu_seconds"] / delivered
        result["deliveries_per_cpu_s"] = delivered / result["cpu_seconds"]
        if "redis_cpu_seconds" in result:
            messages = delivered / scenario["subscribers"] * scenario.get("topics", 1)
            result["redis_cpu_us_per_message"] = 1e6 * result["redis_cpu_seconds"] / messages
    return result


METRICS = [
    ("deliveries_per_s", "deliveries/s", "{:,.0f}"),
    ("p50_us", "p50 µs", "{:,.0f}"),
    ("p99_us", "p99 µs", "{:,.0f}"),
    ("max_us", "max µs", "{:,.0f}"),
    ("broker_cpu_percent", "broker CPU %", "{:.0f}"),
    ("loadgen_cpu_percent", "load generator CPU %", "{:.0f}"),
    ("cpu_us_per_delivery", "CPU µs/delivery", "{:.2f}"),
    ("deliveries_per_cpu_s", "deliveries/CPU-s", "{:,.0f}"),
    ("redis_cpu_us_per_message", "Redis CPU µs/message", "{:.1f}"),
    ("wire_bytes_per_delivery", "wire bytes/delivery", "{:,.0f}"),
    ("lost", "lost", "{:.0f}"),
    ("reordered", "reordered", "{:.0f}"),
    ("rss_per_connection_kib", "RSS KiB/conn", "{:.1f}"),
    ("storm_seconds", "all subscribed, s", "{:.2f}"),
    ("cpu_us_per_connection", "broker CPU µs/client", "{:.0f}"),
    ("webhook_events_received", "webhook events received", "{:,.0f}"),
    ("webhook_events_missing", "webhook events missing", "{:,.0f}"),
]


def medians(runs: list[dict[str, Any]]) -> dict[str, float]:
    keys = {key for run in runs for key in run}
    return {key: statistics.median(run[key] for run in runs if key in run) for key in keys}


def markdown(results: dict[str, dict[str, dict[str, float]]], runs: int) -> str:
    lines = [f"Medians of {runs} interleaved run(s); broker on CPU 0, load generator on CPU 1.", ""]
    for scenario, by_broker in results.items():
        metrics = [m for m in METRICS if any(m[0] in r for r in by_broker.values())]
        lines += [
            f"### {scenario}",
            "",
            "| broker | " + " | ".join(label for _, label, _ in metrics) + " |",
            "| --- |" + " --- |" * len(metrics),
        ]
        for broker, values in by_broker.items():
            cells = [fmt.format(values[key]) if key in values else "" for key, _, fmt in metrics]
            lines.append(f"| {broker} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--quick", action="store_true", help="1 run of 2 s windows")
    parser.add_argument("--only", help="scenarios whose name contains this")
    parser.add_argument("--brokers", help="broker names, separated by semicolons")
    parser.add_argument(
        "--exact", action="store_true", help="--only names scenarios exactly, separated by ;"
    )
    parser.add_argument(
        "--tree",
        action="append",
        default=[],
        metavar="DIR",
        help="a checkout of trio-broker (a git worktree of an older commit, say), run as "
        "'trio-broker, tree DIR' wherever trio-broker runs, launched as every --tree is: "
        "give this one and an older one for before and after in one run",
    )
    args = parser.parse_args()
    if args.quick:
        args.runs, args.duration = 1, 2.0
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as cleanup:
        configs = {}
        redis_socket = Path(tmp) / "redis.sock"
        cert, key = make_certificate(Path(tmp))
        node_tls = {"TLS_CERT": str(cert), "TLS_KEY": str(key)}
        envs = {
            NODE_TLS: node_tls,
            NODE_DEFLATE: {"PER_MESSAGE_DEFLATE": "1"},
            COMPRESSED_ZLIB: {"TRIO_BROKER_NO_SPEEDUPS": "1"},
        }
        backend = subprocess.Popen(
            ["node", str(BENCH / "peers" / "hooks_backend.js")],  # wherever a CPU is free
            stdout=subprocess.PIPE,
            text=True,
        )
        cleanup.callback(backend.wait)
        cleanup.callback(backend.kill)
        assert backend.stdout is not None
        backend_port = json.loads(backend.stdout.readline())["port"]
        secret = Path(tmp) / "webhook-secret"
        secret.write_text("bench-webhook-secret\n")
        for index, (name, extra) in enumerate({"trio-broker": "", **VARIANTS}.items()):
            configs[name] = Path(tmp) / f"bench-{index}.toml"
            text = TRIO_BROKER_CONFIG.format(server=SERVER_VARIANTS.get(name, "")) + extra
            configs[name].write_text(
                text.format(
                    redis=redis_socket, cert=cert, key=key, backend=backend_port, secret=secret
                )
            )
        configs[SAMPLE] = Path(tmp) / "sample.toml"
        sample = (ROOT / "etc" / "trio-broker.toml").read_text()
        configs[SAMPLE].write_text(re.sub(r"(?m)^port = 808[01]$", "port = 0", sample))
        commands = broker_commands(configs)
        for tree in args.tree:
            commands[tree_name(tree)] = tree_command(Path(tree), configs["trio-broker"])
        if args.brokers:
            commands = {k: v for k, v in commands.items() if k in args.brokers.split(";")}
        if args.exact and args.only:
            scenarios = [s for s in SCENARIOS if s["name"] in args.only.split(";")]
        else:
            scenarios = [s for s in SCENARIOS if not args.only or args.only in s["name"]]
        wanted = {b for s in scenarios for b in brokers_of(s, args.tree)}
        redis = None
        if wanted & CLUSTER_BROKERS & commands.keys():
            if shutil.which("redis-server") is None:
                print("no redis-server: no cluster rows (apt-get install redis-server)")
                commands = {k: v for k, v in commands.items() if k not in CLUSTER_BROKERS}
            else:
                redis = RedisServer(Path(tmp))
        raw: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for run in range(args.runs):
            for scenario in scenarios:
                # Every other run in reverse, so that no broker always goes first.
                order = list(commands.items())[:: -1 if run % 2 else 1]
                for name, command in order:
                    if name not in brokers_of(scenario, args.tree):
                        continue
                    brokers = [
                        Broker(
                            command,
                            scraped=name == SCRAPED,
                            tls=name in TLS_BROKERS,
                            env=envs.get(name),
                            cpus="0-1" if name in BOTH_CORES else 0,
                        )
                        for _ in range(NODES.get(name, 1))
                    ]
                    events_before = backend_events(backend_port)
                    try:
                        cluster = redis if name in CLUSTER_BROKERS else None
                        extra = LOADGEN_OPTIONS.get(name)
                        outcome = run_load(brokers, scenario, args.duration, cluster, extra)
                    finally:
                        for broker in brokers:
                            broker.stop()
                    if name in (WEBHOOKS, ROOMY_WEBHOOKS):
                        # After the stop: what the shutdown's drain sent counts too.
                        received = backend_events(backend_port) - events_before
                        expected = len(WEBHOOK_EVENTS) * outcome["connections"]
                        outcome["webhook_events_received"] = received
                        outcome["webhook_events_missing"] = expected - received
                    if brokers[0].scraper is not None:
                        outcome["scrapes"] = brokers[0].scraper.scrapes
                    raw.setdefault(scenario["name"], {}).setdefault(name, []).append(outcome)
                    print(
                        f"run {run + 1}, {scenario['name']}, {name}: "
                        + json.dumps({k: round(v, 2) for k, v in outcome.items()}),
                        flush=True,
                    )
        if redis is not None:
            redis.stop()
    results = {s: {b: medians(r) for b, r in by_broker.items()} for s, by_broker in raw.items()}
    out = BENCH / "results"
    out.mkdir(exist_ok=True)
    # Only a full run replaces the published results; a partial one goes beside them.
    name = "latest" if not (args.quick or args.only or args.brokers) else "partial"
    (out / f"{name}.json").write_text(json.dumps({"runs": raw, "medians": results}, indent=1))
    table = markdown(results, args.runs)
    (out / f"{name}.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
