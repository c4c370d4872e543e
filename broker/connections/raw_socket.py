"""Reads and writes on a plain TCP socket without trio.SocketStream's layers.

SocketStream wraps every call in context managers and coroutine frames; on the paths run
for every connection (the handshake, each read of an idle connection) that is most of
the cost, and an idle connection would hold those frames while it waits.
"""

import os

import trio


def read_now(socket: trio.socket.SocketType, size: int) -> bytes | None:
    """Up to ``size`` bytes the socket holds (b"" at EOF), or None if it has none yet.

    A function, not a coroutine: the caller waits (`trio.lowlevel.wait_readable`) after
    it returned, with no exception or traceback kept alive meanwhile.
    """
    try:
        return os.read(socket.fileno(), size)  # a closed socket's fileno() is -1: EBADF
    except BlockingIOError:
        return None
    except OSError as error:
        raise trio.BrokenResourceError(f"receive failed: {error}") from error


def write_now(socket: trio.socket.SocketType, data: bytes) -> int:
    """Write what the socket takes of ``data`` without waiting: the number of bytes, 0 if
    it is full or broken (a later write that waits finds out which)."""
    # Asked each time: a closed socket says -1, and its old number may be reused.
    fd = socket.fileno()
    try:
        return os.write(fd, data) if fd >= 0 and data else 0
    except OSError:
        return 0


async def receive_some(stream: trio.abc.ReceiveStream, size: int) -> bytes:
    """``stream.receive_some(size)``, directly on the socket of a plain SocketStream."""
    if not isinstance(stream, trio.SocketStream):
        return bytes(await stream.receive_some(size))
    await trio.lowlevel.checkpoint_if_cancelled()
    while (data := read_now(stream.socket, size)) is None:
        await trio.lowlevel.wait_readable(stream.socket)
    await trio.lowlevel.cancel_shielded_checkpoint()
    return data


async def send_all_soon(stream: trio.abc.SendStream, data: bytes, timeout: float) -> None:
    """Send ``data``: without waiting where the socket takes it all (a new connection's
    first bytes nearly always fit), else within ``timeout`` seconds."""
    if isinstance(stream, trio.SocketStream):
        # A broken socket writes nothing here; `send_all` below raises for it.
        data = data[write_now(stream.socket, data) :]
    if data:
        with trio.move_on_after(timeout):
            await stream.send_all(data)
            return
        # A peer that takes nothing is gone for the connection's purposes: logged as such.
        raise trio.BrokenResourceError(f"no room for {len(data)} bytes in {timeout} s")
