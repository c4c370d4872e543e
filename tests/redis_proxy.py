"""A TCP proxy in front of the test's redis-server that delays what Redis sends on pub/sub
connections, as a busy network or a busy node would: commands and their answers pass at
once, published messages reach the nodes ``delay`` seconds later (in order)."""

import contextlib
import math

import trio

from tests.tcp_proxy import BROKEN, LoopbackProxy

SUBSCRIBING = (b"SUBSCRIBE", b"PSUBSCRIBE")


class SlowPubSubProxy(LoopbackProxy):
    def __init__(self, socket_path: str, delay: float) -> None:
        super().__init__()
        self.socket_path = socket_path
        self.delay = delay

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    async def _forward(self, client: trio.SocketStream) -> None:
        subscribing = trio.Event()  # a pub/sub connection: what Redis sends is delayed
        send, receive = trio.open_memory_channel[tuple[float, bytes]](math.inf)
        server = await trio.open_unix_socket(self.socket_path)
        async with client, server, trio.open_nursery() as pair:

            async def upstream() -> None:
                tail = b""
                with contextlib.suppress(*BROKEN):
                    while data := await client.receive_some(65536):
                        if not subscribing.is_set():
                            seen = tail + data.upper()
                            if any(command in seen for command in SUBSCRIBING):
                                subscribing.set()
                            tail = seen[-16:]
                        await server.send_all(data)
                pair.cancel_scope.cancel()

            async def downstream() -> None:
                with contextlib.suppress(*BROKEN):
                    while data := await server.receive_some(65536):
                        due = trio.current_time() + (self.delay if subscribing.is_set() else 0)
                        send.send_nowait((due, data))
                pair.cancel_scope.cancel()

            async def deliver() -> None:
                with contextlib.suppress(*BROKEN):
                    async for due, data in receive:
                        await trio.sleep_until(due)
                        await client.send_all(data)

            pair.start_soon(upstream)
            pair.start_soon(downstream)
            pair.start_soon(deliver)
