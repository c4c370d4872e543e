"""TCP proxies in front of a broker whose connections a test can cut, as a network would."""

import contextlib
import socket
import struct
import threading
from types import TracebackType
from typing import Self

import trio

BROKEN = (trio.BrokenResourceError, trio.ClosedResourceError)
RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 seconds: close() sends a reset


class LoopbackProxy:
    """Listens on 127.0.0.1 (a free port) for the block; `_forward` serves each connection."""

    def __init__(self) -> None:
        self.port = 0
        self._nursery_manager = trio.open_nursery()
        self._nursery: trio.Nursery | None = None

    async def __aenter__(self) -> Self:
        self._nursery = await self._nursery_manager.__aenter__()
        (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listener.socket.getsockname()[1]
        self._nursery.start_soon(trio.serve_listeners, self._forward, [listener])
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()
        return await self._nursery_manager.__aexit__(kind, error, traceback)

    async def _forward(self, client: trio.SocketStream) -> None:
        raise NotImplementedError


class CuttableProxy(LoopbackProxy):
    """Forwards each connection to ``target_port``.

    `cut` drops every connection open now (a reset, no close frame); new ones get through.
    """

    def __init__(self, target_port: int) -> None:
        super().__init__()
        self.target_port = target_port
        self.connections = 0  # accepted so far
        self._scopes: set[trio.CancelScope] = set()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def cut(self) -> None:
        for scope in self._scopes:
            scope.cancel()

    async def _forward(self, client: trio.SocketStream) -> None:
        self.connections += 1
        with trio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                server = await trio.open_tcp_stream("127.0.0.1", self.target_port)
                async with server, trio.open_nursery() as pair:

                    async def pipe(source: trio.SocketStream, sink: trio.SocketStream) -> None:
                        with contextlib.suppress(
                            trio.BrokenResourceError, trio.ClosedResourceError
                        ):
                            while data := await source.receive_some(65536):
                                await sink.send_all(data)
                        pair.cancel_scope.cancel()  # one side hung up: so does the other

                    pair.start_soon(pipe, client, server)
                    pair.start_soon(pipe, server, client)
            finally:
                self._scopes.discard(scope)
        # A reset, as a broken network or a killed peer would leave it.
        client.socket.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_LINGER, RESET)
        await trio.aclose_forcefully(client)


class ThreadedCuttableProxy:
    """The same for tests without a Trio loop (a browser driven synchronously): threads."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._closed = False
        self._refusals = 0
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def __enter__(self) -> "ThreadedCuttableProxy":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def cut(self) -> None:
        with self._lock:
            sockets, self._open = self._open, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET)
                # Wakes the thread blocked reading it (close alone would not, and nothing
                # would reach the peer until that read ended).
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def refuse_next(self, count: int) -> None:
        """Reset the next ``count`` connections at once, as if the broker were down."""
        with self._lock:
            self._refusals = count

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.cut()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                refused, self._refusals = self._refusals > 0, max(0, self._refusals - 1)
            if refused:
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET)
                client.close()
                continue
            server = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._open += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=_copy, args=(source, sink), daemon=True).start()


def _copy(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)
