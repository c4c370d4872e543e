"""wss:// on ssl.SSLObject and memory BIOs over a plain socket, instead of trio.SSLStream.

trio.SSLStream returns one TLS record per ``receive_some`` and encrypts each
``send_all`` on its own, through a task waiting on the socket. A broker connection
wants the opposite: every record of one socket read decrypted at once (a publisher's
frames, all handled before the reader yields), and the broker's flusher writing
everything pending for a subscriber as one record, without a task (`broker.connections.outbox`).
So the TLS state is in view here: `encrypt` and `decrypt` are plain functions on
bytes, and the connection reads and writes the socket (`transport`) itself. The TLS
handshake, the HTTP upgrade and refusals use the stream as any trio Stream.

Renegotiation is refused by the context (`broker.node.tls`): with it, a write could need a
read first, which these plain functions cannot wait for.
"""

import contextlib
import ssl

import trio

from .raw_socket import receive_some, write_now

RECEIVE_SIZE = 65_536


class TlsStream(trio.abc.Stream):
    """The server side of a TLS session on ``transport``; the handshake runs on first use."""

    def __init__(self, transport: trio.SocketStream, context: ssl.SSLContext) -> None:
        self.transport = transport
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._handshaken = False
        self._plaintext = b""  # decrypted by `receive_some`, not asked for yet
        self.peer_closed = False  # its close_notify came

    @property
    def has_output(self) -> bool:
        """The TLS layer has bytes of its own to send (a key update's answer, tickets)."""
        return self._outgoing.pending > 0

    def decrypt(self, data: bytes) -> bytes:
        """The plaintext of every complete record received so far (b"" if none is yet).

        After the peer's close_notify, `peer_closed` is set and the rest is ignored.
        """
        self._incoming.write(data)
        if self.peer_closed:
            return b""
        pieces = []
        read = self._tls.read
        try:
            while chunk := read(RECEIVE_SIZE):
                pieces.append(chunk)
            # Python's SSLObject says b"" for the peer's close_notify.
            self.peer_closed = True
        except ssl.SSLWantReadError:
            pass  # the rest of a record is still on its way
        except ssl.SSLZeroReturnError:  # its close_notify
            self.peer_closed = True
        except ssl.SSLError as error:
            raise trio.BrokenResourceError(f"TLS error: {error}") from error
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def encrypt(self, data: bytes) -> bytes:
        """The bytes to send for ``data``: what the TLS layer had pending, then its records."""
        if data:
            try:
                self._tls.write(data)
            except ssl.SSLError as error:
                raise trio.BrokenResourceError(f"TLS error: {error}") from error
        return self._outgoing.read()

    def take_buffered(self) -> bytes:
        """Plaintext that `receive_some` decrypted but did not return: the connection's
        first bytes once it reads the socket itself."""
        data, self._plaintext = self._plaintext, b""
        return data

    async def _handshake(self) -> None:
        while True:
            try:
                self._tls.do_handshake()
            except ssl.SSLWantReadError:
                await self._send_output()
                data = await receive_some(self.transport, RECEIVE_SIZE)
                if not data:
                    raise trio.BrokenResourceError("closed during the TLS handshake") from None
                self._incoming.write(data)
            except ssl.SSLError as error:
                # The alert explaining the failure, if the peer still takes it.
                with contextlib.suppress(trio.BrokenResourceError):
                    await self._send_output()
                raise trio.BrokenResourceError(f"TLS handshake failed: {error}") from error
            else:
                self._handshaken = True
                # A client may send its first records with its last handshake message.
                self._plaintext = self.decrypt(b"")
                await self._send_output()
                return

    async def _send_output(self) -> None:
        data = self._outgoing.read()
        if data:
            await self.transport.send_all(data)

    # trio.abc.Stream, for the handshakes and refusals.

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if not self._handshaken:
            await self._handshake()
        if self._plaintext:
            await trio.lowlevel.checkpoint()
        while not self._plaintext and not self.peer_closed:
            data = await receive_some(self.transport, RECEIVE_SIZE)
            if not data:
                break  # without close_notify, as browsers often do: an end all the same
            self._plaintext = self.decrypt(data)
            await self._send_output()
        size = len(self._plaintext) if max_bytes is None else max_bytes
        data, self._plaintext = self._plaintext[:size], self._plaintext[size:]
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if not self._handshaken:
            await self._handshake()
        await self.transport.send_all(self.encrypt(bytes(data)))

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        if self._handshaken:
            # A close_notify if the socket takes it now; nobody waits for the peer's.
            with contextlib.suppress(ssl.SSLError):
                self._tls.unwrap()
            write_now(self.transport.socket, self._outgoing.read())
        await self.transport.aclose()
