"""Soak test: many connections with subscribe/publish/unsubscribe churn and reconnects.

Starts the daemon (`trio-broker serve`) on 127.0.0.1 and, for a fixed duration, runs:

- readers: subscribed to the steady topics for the whole run, reading everything;
- publishers: publishing numbered messages to the steady topics at a fixed rate;
- churners: connecting, subscribing and unsubscribing at random, publishing to churn topics,
  closing (normally or abruptly) and reconnecting, over and over.

It then checks that every reader got every steady message exactly once and in order, that
the broker's RSS after the churn stays within a bound of what it was before it, and that
every file descriptor the connections took is given back.

    python bench/soak.py                                  # 2,000 connections, 60 s
    python bench/soak.py --connections 300 --duration 5   # what tests/node/test_soak.py runs

Results go to bench/results/soak.json.
"""

import argparse
import json
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
from websockets.exceptions import InvalidState

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import rss_bytes  # noqa: E402
from tests.daemon_process import Daemon  # noqa: E402
from tests.wsclient import Closed, WsClient  # noqa: E402

CONFIG = """
[server]
host = "127.0.0.1"
port = 0
heartbeat_interval = 5.0
[limits]
max_connections = 20000
# All the load comes from 127.0.0.1.
max_connections_per_ip = 0
handshake_rate_per_ip = 0

# History, presence and join/leave on (protocol v1.1): their memory must stay bounded too.
[[topics]]
filter = "churn/#"
history_size = 50
history_ttl = 2.0
presence = true
join_leave = true

[[topics]]
filter = "steady/#"
history_size = 1000
"""
STEADY_TOPICS = ["steady/a", "steady/b", "steady/c"]
# CPython keeps memory it once used (pymalloc arenas), so RSS after the churn stays near its
# peak: what would show a leak is growth once the churn is in full swing. The bound: RSS at
# the end of the churn at most this times RSS a third of the way through it.
RSS_GROWTH_BOUND = 1.25


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Soak:
    def __init__(self, url: str, connections: int, duration: float, seed: int) -> None:
        self.url = url
        self.duration = duration
        self.rng = random.Random(seed)
        self.readers = max(1, connections // 20)
        self.publishers = len(STEADY_TOPICS)
        self.churners = connections - self.readers - self.publishers
        self.sent: dict[str, int] = {}
        self.last_position: str | None = None  # a position churners recover from
        self.received: list[dict[str, list[int]]] = []
        self.churn_cycles = 0
        self.churn_errors: list[str] = []
        self.stop_publishing = trio.Event()
        self.stop_churn = trio.Event()

    async def connect(self) -> WsClient:
        client = await WsClient.connect(self.url, timeout=30)
        assert (await client.recv())["op"] == "welcome"
        return client

    async def reader(self, client: WsClient, received: dict[str, list[int]], done: int) -> None:
        """Read until every publisher's last message arrived; record the sequence numbers."""
        finished: set[str] = set()
        while len(finished) < done:
            message = await client.recv(timeout=60)
            if message.get("op") != "message":
                continue
            data = message["data"]
            if data == "end":
                finished.add(message["topic"])
                continue
            received.setdefault(message["topic"], []).append(data)

    async def publisher(self, client: WsClient, topic: str, rate: float) -> None:
        sent = 0
        next_at = trio.current_time()
        while not self.stop_publishing.is_set():
            await client.send({"op": "publish", "topic": topic, "data": sent})
            sent += 1
            next_at += 1 / rate
            await trio.sleep_until(next_at)
        await client.send({"op": "publish", "topic": topic, "data": "end"})
        self.sent[topic] = sent

    async def churner(self, index: int) -> None:
        rng = random.Random(self.rng.random())
        while not self.stop_churn.is_set():
            try:
                client = await self.connect()
            except (OSError, trio.BrokenResourceError, Closed) as error:
                self.churn_errors.append(f"connect: {error!r}")
                continue
            try:
                for _ in range(rng.randrange(1, 10)):
                    topic = f"churn/{rng.randrange(50)}"
                    action = rng.random()
                    if action < 0.3:
                        await client.send({"op": "subscribe", "topic": topic, "id": 1})
                    elif action < 0.4:
                        since = self.last_position or "none"
                        request = {"op": "subscribe", "topic": "churn/#", "id": 2, "since": since}
                        await client.send(request)
                    elif action < 0.55:
                        await client.send({"op": "unsubscribe", "topic": topic})
                    elif action < 0.8:
                        await client.send({"op": "publish", "topic": topic, "data": index})
                    elif action < 0.85:
                        await client.send({"op": "history", "topic": "churn/+", "limit": 20})
                    elif action < 0.9:
                        await client.send({"op": "presence", "topic": topic})
                    else:
                        await client.send({"op": "subscribe", "topic": "steady/#"})
                    with trio.move_on_after(rng.random() * 0.2):
                        while True:
                            message = await client.recv()
                            self.last_position = message.get("pos", self.last_position)
                if rng.random() < 0.5:
                    await client.aclose()
            except (
                trio.BrokenResourceError,
                trio.ClosedResourceError,
                Closed,
                InvalidState,
            ) as error:
                # InvalidState: sending on a connection the broker is closing (a churner that
                # reads too little of a long replay is a slow consumer).
                self.churn_errors.append(f"session: {error!r}")
            finally:
                await trio.aclose_forcefully(client.stream)  # abrupt when not closed above
            self.churn_cycles += 1
            await trio.sleep(rng.random() * 0.5)  # a pause between visits, as real clients take

    async def run(self, on_idle_baseline: Any) -> None:
        readers = [await self.connect() for _ in range(self.readers)]
        for client in readers:
            for topic in STEADY_TOPICS:
                await client.request({"op": "subscribe", "topic": topic, "id": 0}, timeout=30)
        publishers = [await self.connect() for _ in range(self.publishers)]
        on_idle_baseline()
        self.received = [{} for _ in readers]
        async with trio.open_nursery() as nursery:
            for client, received in zip(readers, self.received, strict=True):
                nursery.start_soon(self.reader, client, received, len(STEADY_TOPICS))
            for client, topic in zip(publishers, STEADY_TOPICS, strict=True):
                nursery.start_soon(self.publisher, client, topic, 200.0)
            async with trio.open_nursery() as churn:
                for index in range(self.churners):
                    churn.start_soon(self.churner, index)
                await trio.sleep(self.duration)
                self.stop_churn.set()
            self.stop_publishing.set()
        for client in readers + publishers:
            await client.aclose()

    def lost_or_reordered(self) -> int:
        wrong = 0
        for received in self.received:
            for topic, count in self.sent.items():
                if received.get(topic, []) != list(range(count)):
                    wrong += 1
        return wrong


async def soak(connections: int, duration: float, seed: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "soak.toml"
        config.write_text(CONFIG)
        daemon = Daemon(config)
        try:
            daemon.wait_listening()
            pid = daemon.process.pid
            fds_before = open_fds(pid)
            rss_start = rss_bytes(pid)
            test = Soak(daemon.url, connections, duration, seed)
            baseline: dict[str, int] = {}

            def idle_baseline() -> None:
                baseline["rss"] = rss_bytes(pid)

            samples: list[tuple[float, int]] = []

            async def sample_rss() -> None:
                while True:
                    samples.append((time.monotonic() - started, rss_bytes(pid)))
                    await trio.sleep(0.2)

            started = time.monotonic()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sample_rss)
                await test.run(idle_baseline)
                nursery.cancel_scope.cancel()
            # Everything is closed now; the broker's side follows within its close_timeout.
            # (Polled: another process's descriptors have no event to wait for.)
            with trio.move_on_after(10):
                while open_fds(pid) > fds_before:  # noqa: ASYNC110
                    await trio.sleep(0.1)
            churn_end = started + duration
            third = min(samples, key=lambda s: abs(s[0] - duration / 3))[1]
            at_end = [rss for at, rss in samples if at <= churn_end - started][-1]
            report = {
                "connections": connections,
                "duration_s": duration,
                "wall_s": round(time.monotonic() - started, 1),
                "seed": seed,
                "readers": test.readers,
                "churners": test.churners,
                "churn_cycles": test.churn_cycles,
                "churn_errors": len(test.churn_errors),
                "churn_error_kinds": sorted({e.split("(")[0] for e in test.churn_errors}),
                "steady_messages_sent": sum(test.sent.values()),
                "steady_deliveries_checked": sum(
                    len(v) for received in test.received for v in received.values()
                ),
                "readers_with_lost_or_reordered": test.lost_or_reordered(),
                "rss_start_mib": round(rss_start / 2**20, 1),
                "rss_before_churn_mib": round(baseline["rss"] / 2**20, 1),
                "rss_third_of_churn_mib": round(third / 2**20, 1),
                "rss_end_of_churn_mib": round(at_end / 2**20, 1),
                "rss_peak_mib": round(max(rss for _, rss in samples) / 2**20, 1),
                "rss_after_close_mib": round(rss_bytes(pid) / 2**20, 1),
                "fds_before": fds_before,
                "fds_after": open_fds(pid),
            }
            report["rss_bound_mib"] = round(report["rss_third_of_churn_mib"] * RSS_GROWTH_BOUND, 1)
            daemon.send_signal(signal.SIGTERM)
            report["exit_code"] = daemon.wait_exit()
            errors = [line for line in daemon.log if " ERROR " in line or "Traceback" in line]
            report["log_errors"] = len(errors)
            report["first_log_errors"] = errors[:3]
            return report
        finally:
            daemon.kill()


def check(report: dict[str, Any]) -> list[str]:
    """What the soak found wrong (empty when it passed)."""
    problems = []
    if report["readers_with_lost_or_reordered"]:
        problems.append("a reader lost, duplicated or reordered steady messages")
    if report["rss_end_of_churn_mib"] > report["rss_bound_mib"]:
        problems.append("RSS kept growing during the churn")
    if report["fds_after"] != report["fds_before"]:
        problems.append("file descriptors leaked")
    if report["exit_code"] != 0:
        problems.append("the daemon did not exit 0")
    if report["log_errors"]:
        problems.append("the daemon logged errors")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    report = trio.run(soak, args.connections, args.duration, args.seed)
    report["problems"] = check(report)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "soak.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    sys.exit(1 if report["problems"] else 0)


if __name__ == "__main__":
    main()
