"""How a connection's frames reach its socket: the flusher's direct writes, and the
writer task for what a full socket makes wait (see `broker.connections.outbox`)."""

import logging

import trio

from ..wire.close_codes import CloseCode
from .outbox import chunks
from .raw_socket import write_now
from .state import ConnectionState

log = logging.getLogger("broker.connection")


class Writing(ConnectionState):
    __slots__ = ()

    def _request_flush(self) -> None:
        assert self._flusher is not None
        self._flusher.schedule(self)

    def _start_writer(self) -> None:
        # Before `run` opens its scope, `run` starts the writer itself.
        if self._scope is not None:
            self._spawn_writer()

    def _spawn_writer(self) -> None:
        self._writer_stopped = trio.Event()
        self._writers.start_soon(self._writer)

    async def _writer(self) -> None:
        """The writer task: `_write_loop` within the connection's deadline; if the socket
        breaks, the reader is cancelled too (the connection is over)."""
        assert self._writer_stopped is not None
        try:
            with trio.CancelScope(deadline=self._deadline) as self._writer_scope:
                await self._write_loop()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as error:
            log.debug("client %s (%s): write failed: %r", self.client_id, self.remote, error)
            self._cancel_reader()
        except Exception:
            log.exception("client %s (%s): error writing", self.client_id, self.remote)
            self._cancel_reader()
        finally:
            self._writer_scope = None
            self._writer_stopped.set()

    def _cancel_reader(self) -> None:
        if self._scope is not None:
            self._scope.cancel()

    async def _stop_writer(self) -> None:
        """Cancel a running writer and wait until it ended: the socket closes after."""
        if self._writer_scope is not None:
            self._writer_scope.cancel()
        if self._writer_stopped is not None:
            with trio.CancelScope(shield=True):
                await self._writer_stopped.wait()

    def flush(self) -> None:
        """Write what is pending without waiting (called by the broker's flusher)."""
        taken = self.outbox.take_for_direct_write()
        if taken is None:
            return
        data, count, nbytes = taken
        assert self._socket is not None
        if self._tls is not None:
            try:
                data = self._tls.encrypt(data)
            except trio.BrokenResourceError as error:
                log.debug("client %s (%s): %s", self.client_id, self.remote, error)
                self.close(CloseCode.INTERNAL_ERROR, "TLS failure", deadline=trio.current_time())
                return
        # Would block, or broken: the writer task finds out which.
        written = write_now(self._socket, data)
        # Not progress for the heartbeat: a socket with room takes a write whether or not
        # anyone is still at the other end. The writer's writes, which wait until the
        # peer drains a full socket, are.
        if written == len(data):
            self.outbox.sent(count, nbytes)
        else:
            self.outbox.direct_write_stalled(data[written:], count, nbytes)

    async def _write_loop(self) -> None:
        # Under TLS, the writer writes the socket below it, as the flusher does: ``head``
        # (the rest of a direct write) is already encrypted.
        send = self.stream.send_all if self._tls is None else self._tls.transport.send_all
        encrypt = self._tls.encrypt if self._tls is not None else bytes
        while True:
            batch = self.outbox.take_batch()
            if batch is None:
                return
            if batch.head:
                await send(batch.head)
                self.outbox.sent(batch.head_count, batch.head_bytes)
                self._last_progress = trio.current_time()
            if batch.control:
                # An empty control frame only asks that the TLS layer's own output be sent.
                control = encrypt(b"".join(batch.control))
                if control:
                    await send(control)
            for chunk, count in chunks(batch.data):
                await send(encrypt(chunk))
                self.outbox.sent(count, len(chunk))
                self._last_progress = trio.current_time()
            if batch.final is not None:
                await send(encrypt(batch.final))
            if batch.last:
                assert self._writer_done is not None
                self._writer_done.set()
                if self.wire_format.stream is not None and self._scope is not None:
                    # An event stream's end is all written: no closing handshake follows.
                    self._scope.cancel()
                return
