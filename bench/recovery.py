"""Recovery benchmark: replaying N missed messages to a reconnecting client.

Against a baseline in the same run: the same N messages reaching the same kind of
client live. The daemon runs from its CLI with history on ``chat/#``, pinned to CPU 0;
this script (the clients) on CPU 1. Loopback only; bounded runs.

    python bench/recovery.py                  # 1000 messages, 20 runs
    python bench/recovery.py --messages 10000 --runs 5
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from websockets.sync.client import ClientConnection, connect

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import TRIO_BROKER_CONFIG, TWO_CORES, Broker, broker_commands

CONFIG = TRIO_BROKER_CONFIG + '[[topics]]\nfilter = "chat/#"\nhistory_size = 100000\n'


def request(ws: ClientConnection, message: dict[str, object]) -> dict[str, object]:
    ws.send(json.dumps(message))
    while True:
        reply = json.loads(ws.recv(timeout=30))
        if reply.get("op") != "message":
            return reply  # type: ignore[no-any-return]


def publish_all(publisher: ClientConnection, topic: str, count: int) -> None:
    for n in range(count - 1):
        publisher.send(json.dumps({"op": "publish", "topic": topic, "data": n}))
    request(publisher, {"op": "publish", "topic": topic, "data": count - 1, "id": "last"})


def one_run(url: str, run: int, count: int) -> tuple[float, float]:
    topic = f"chat/run-{run}"
    with connect(url) as publisher, connect(url) as away, connect(url) as back:
        for ws in (publisher, away, back):
            ws.recv(timeout=10)  # welcome
        position = request(away, {"op": "subscribe", "topic": topic, "id": 1})["pos"]
        away.close()
        publish_all(publisher, topic, count)
        # Replay: from the subscribe to its ack, every missed message before it.
        started = time.perf_counter()
        back.send(json.dumps({"op": "subscribe", "topic": topic, "id": 2, "since": position}))
        replayed = 0
        while (message := json.loads(back.recv(timeout=30)))["op"] == "message":
            replayed += 1
        replay = time.perf_counter() - started
        assert message["recovered"] is True and replayed == count, (message, replayed)
        # Baseline: the same number of messages, live, to the same client.
        started = time.perf_counter()
        publish_all(publisher, topic, count)
        for _ in range(count):
            back.recv(timeout=30)
        live = time.perf_counter() - started
    return replay, live


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    if TWO_CORES:
        os.sched_setaffinity(0, {1})
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "recovery.toml"
        config.write_text(CONFIG)
        broker = Broker(broker_commands({"trio-broker": config})["trio-broker"])
        try:
            url = f"ws://127.0.0.1:{broker.port}/ws"
            runs = [one_run(url, run, args.messages) for run in range(args.runs)]
        finally:
            broker.stop()
    replay = statistics.median(r for r, _ in runs) * 1000
    live = statistics.median(lv for _, lv in runs) * 1000
    result = {"messages": args.messages, "runs": args.runs, "replay_ms": replay, "live_ms": live}
    print(json.dumps(result))
    print(
        f"{args.messages} missed messages: replayed in {replay:.1f} ms (median of {args.runs}); "
        f"the same number live: {live:.1f} ms (publish included)"
    )
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "recovery.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
