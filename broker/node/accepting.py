"""The WebSocket listeners' accept loop: trio.serve_listeners' job, with less per connection.

serve_listeners takes one connection per trip through Trio's scheduler (SocketListener.accept
waits on the listening socket and checkpoints for each) and runs each connection in a
wrapper task that closes the stream again after the handler has (trio.aclose_forcefully: a
cancel scope and a raised Cancelled). Here each wake-up accepts what is waiting, up to
ACCEPT_BATCH connections, and the handler closes its own stream.
"""

import contextlib
import errno
import logging
import os
import socket
from collections.abc import Awaitable, Callable

import trio

log = logging.getLogger("broker.server")

# Connections taken per wake-up before the rest of the broker runs again.
ACCEPT_BATCH = 32
# Out of file descriptors or memory: said, and tried again shortly (as serve_listeners).
_CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
RETRY_SECONDS = 0.1
# A client that gave up before it was accepted (as SocketListener.accept).
_IGNORABLE_ERRNOS = {errno.ECONNABORTED, errno.EPERM, errno.EPROTO}

Handler = Callable[[trio.SocketStream], Awaitable[object]]


async def accept_connections(
    listeners: list[trio.SocketListener],
    handler: Handler,
    handler_nursery: trio.Nursery,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``handler`` in ``handler_nursery`` for every connection, until cancelled (which
    closes the listeners). The handler closes the stream it is given. Started once every
    file descriptor it holds is open."""
    with contextlib.ExitStack() as handles:
        # A second handle on each listening socket, to accept without a coroutine per try.
        accepting = []
        for listener in listeners:
            listening = handles.enter_context(
                socket.socket(fileno=os.dup(listener.socket.fileno()))
            )
            listening.setblocking(False)
            accepting.append((listener, listening))
        async with trio.open_nursery() as nursery:
            for listener, listening in accepting:
                nursery.start_soon(_serve_one, listener, listening, handler, handler_nursery)
            task_status.started()


async def _serve_one(
    listener: trio.SocketListener,
    listening: socket.socket,
    handler: Handler,
    handler_nursery: trio.Nursery,
) -> None:
    async with listener:
        while True:
            await trio.lowlevel.wait_readable(listener.socket)
            for _ in range(ACCEPT_BATCH):
                try:
                    connected, _ = listening.accept()
                except BlockingIOError:
                    break
                except OSError as error:
                    if error.errno in _IGNORABLE_ERRNOS:
                        continue
                    if error.errno not in _CAPACITY_ERRNOS:
                        raise
                    log.error(
                        "accept failed: %s (%s); trying again in %s s",
                        errno.errorcode[error.errno],
                        os.strerror(error.errno),
                        RETRY_SECONDS,
                    )
                    await trio.sleep(RETRY_SECONDS)
                    break
                stream = trio.SocketStream(trio.socket.from_stdlib_socket(connected))
                handler_nursery.start_soon(handler, stream)
