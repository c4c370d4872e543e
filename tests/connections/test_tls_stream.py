"""broker.tls_stream against trio.SSLStream as the client, over a socket pair."""

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trustme

from broker.config.schema import TlsConfig
from broker.connections.raw_socket import read_now, write_now
from broker.connections.tls_stream import TlsStream
from broker.node.tls import server_context
from tests.connections.test_tls import issue, trusting


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def context(ca: trustme.CA, tmp_path: Path) -> ssl.SSLContext:
    return server_context(TlsConfig(**issue(ca, tmp_path / "keys")))


Pair = tuple[TlsStream, trio.SSLStream[trio.SocketStream]]


async def handshaken(
    context: ssl.SSLContext, client_context: ssl.SSLContext, first: bytes = b"hello"
) -> Pair:
    """A server TlsStream and its client, once the client's ``first`` bytes came through."""
    server_socket, client_socket = trio.socket.socketpair()
    server = TlsStream(trio.SocketStream(server_socket), context)
    client = trio.SSLStream(
        trio.SocketStream(client_socket), client_context, server_hostname="127.0.0.1"
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.send_all, first)
        with trio.fail_after(5):
            assert await server.receive_some() == first
    return server, client


@pytest.fixture
async def pair(context: ssl.SSLContext, ca: trustme.CA) -> AsyncIterator[Pair]:
    server, client = await handshaken(context, trusting(ca))
    yield server, client
    await trio.aclose_forcefully(server)
    await trio.aclose_forcefully(client)


async def raw(server: TlsStream) -> bytes:
    """Everything the socket holds now, in one read (the socket pair holds it all)."""
    await trio.lowlevel.wait_readable(server.transport.socket)
    data = read_now(server.transport.socket, 1 << 20)
    assert data is not None
    return data


async def test_every_record_of_one_read_is_decrypted_at_once(pair: Pair) -> None:
    server, client = pair
    messages = [b"%03d" % n + b"x" * 97 for n in range(50)]
    for message in messages:  # one record each
        await client.send_all(message)
    assert server.decrypt(await raw(server)) == b"".join(messages)


async def test_records_cut_anywhere_come_out_whole_once_complete(pair: Pair) -> None:
    server, client = pair
    await client.send_all(b"a" * 40_000)  # more than one record (16 KiB each)
    await client.send_all(b"b" * 10)
    ciphertext = await raw(server)
    out = [
        server.decrypt(ciphertext[start : start + 997]) for start in range(0, len(ciphertext), 997)
    ]
    assert b"".join(out) == b"a" * 40_000 + b"b" * 10
    assert out[0] == b""  # a record's first bytes decrypt to nothing yet


async def test_encrypt_output_reaches_the_client(pair: Pair) -> None:
    server, client = pair
    data = bytes(range(256)) * 200  # three records, well within the socket pair's buffer
    ciphertext = server.encrypt(data)
    assert write_now(server.transport.socket, ciphertext) == len(ciphertext)
    received = b""
    with trio.fail_after(5):
        while len(received) < len(data):
            received += await client.receive_some()
    assert received == data
    assert server.encrypt(b"") == b""


async def test_close_notify_ends_the_stream_and_is_answered(pair: Pair) -> None:
    server, client = pair
    await client.send_all(b"last words")
    transports = []

    async def unwrap() -> None:
        # Sends close_notify, then waits for the server's (which `aclose` sends).
        transports.append((await client.unwrap())[0])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(unwrap)
        data = b""
        with trio.fail_after(5):
            while not server.peer_closed:
                data += server.decrypt(await raw(server))
        assert data == b"last words"
        assert server.decrypt(b"anything") == b""
        await server.aclose()
    await transports[0].aclose()


async def test_a_tampered_record_breaks_the_stream(pair: Pair) -> None:
    server, client = pair
    await client.send_all(b"x" * 100)
    ciphertext = bytearray(await raw(server))
    ciphertext[-5] ^= 1
    with pytest.raises(trio.BrokenResourceError, match="TLS error"):
        server.decrypt(bytes(ciphertext))


async def test_what_receive_some_did_not_return_is_taken_over(pair: Pair) -> None:
    server, client = pair
    await client.send_all(b"0123456789")
    assert await server.receive_some(4) == b"0123"
    assert server.take_buffered() == b"456789"
    assert server.take_buffered() == b""


async def test_a_client_that_does_not_trust_the_certificate_breaks_the_handshake(
    context: ssl.SSLContext,
) -> None:
    server_socket, client_socket = trio.socket.socketpair()
    server = TlsStream(trio.SocketStream(server_socket), context)
    client = trio.SSLStream(
        trio.SocketStream(client_socket), trusting(trustme.CA()), server_hostname="127.0.0.1"
    )
    async with trio.open_nursery() as nursery:

        async def client_side() -> None:
            with pytest.raises(trio.BrokenResourceError):
                await client.do_handshake()
            await trio.aclose_forcefully(client)

        nursery.start_soon(client_side)
        with trio.fail_after(5), pytest.raises(trio.BrokenResourceError, match="TLS handshake"):
            await server.receive_some()
    await trio.aclose_forcefully(server)


async def test_a_tls_1_2_client_is_served(context: ssl.SSLContext, ca: trustme.CA) -> None:
    client_context = trusting(ca)
    client_context.maximum_version = ssl.TLSVersion.TLSv1_2
    server, client = await handshaken(context, client_context)
    assert client.version() == "TLSv1.2"
    await server.send_all(b"reply")
    with trio.fail_after(5):
        assert await client.receive_some() == b"reply"
    await trio.aclose_forcefully(server)
    await trio.aclose_forcefully(client)


async def test_a_peer_gone_during_the_handshake_is_a_broken_stream(
    context: ssl.SSLContext,
) -> None:
    server_socket, client_socket = trio.socket.socketpair()
    server = TlsStream(trio.SocketStream(server_socket), context)
    client_socket.close()
    with pytest.raises(trio.BrokenResourceError, match="closed during the TLS handshake"):
        await server.receive_some()
    await trio.aclose_forcefully(server)


async def test_data_sent_with_the_clients_finished_message_is_not_left_behind(
    context: ssl.SSLContext, ca: trustme.CA
) -> None:
    # As Node's TLS client does: its Finished and its first record in one write. A client
    # of memory BIOs makes that sure.
    server_socket, client_socket = trio.socket.socketpair()
    server = TlsStream(trio.SocketStream(server_socket), context)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = trusting(ca).wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")

    async def client_side() -> None:
        while True:
            try:
                client.do_handshake()
            except ssl.SSLWantReadError:
                await client_socket.send(outgoing.read())
                incoming.write(await client_socket.recv(65536))
            else:
                break
        client.write(b"GET / HTTP/1.1\r\n\r\n")
        await client_socket.send(outgoing.read())  # Finished + the request

    async with trio.open_nursery() as nursery:
        nursery.start_soon(client_side)
        with trio.fail_after(5):
            assert await server.receive_some() == b"GET / HTTP/1.1\r\n\r\n"
    await trio.aclose_forcefully(server)
    client_socket.close()
