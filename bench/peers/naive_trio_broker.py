"""Baseline: the obvious Trio broker. trio-websocket with its defaults, one
``await ws.send_message()`` per subscriber, exact topics only, same protocol."""

import contextlib
import json
from collections import defaultdict

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

topics: defaultdict[str, set[WebSocketConnection]] = defaultdict(set)


async def handler(request: WebSocketRequest) -> None:
    ws = await request.accept()
    subscriptions: set[str] = set()
    try:
        await ws.send_message(json.dumps({"op": "welcome", "client_id": "x", "server": "naive"}))
        while True:
            m = json.loads(await ws.get_message())
            if m["op"] == "subscribe":
                topics[m["topic"]].add(ws)
                subscriptions.add(m["topic"])
            elif m["op"] == "publish":
                out = json.dumps({"op": "message", "topic": m["topic"], "data": m["data"]})
                for subscriber in list(topics.get(m["topic"], ())):
                    with contextlib.suppress(ConnectionClosed):
                        await subscriber.send_message(out)
            if "id" in m:
                await ws.send_message(
                    json.dumps({"op": "pong" if m["op"] == "ping" else "ack", "id": m["id"]})
                )
    except ConnectionClosed:
        pass
    finally:
        for topic in subscriptions:
            topics[topic].discard(ws)


async def main() -> None:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
        print(f"listening on 127.0.0.1:{server.port}", flush=True)


if __name__ == "__main__":
    trio.run(main)
