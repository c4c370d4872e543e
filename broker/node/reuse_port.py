"""One TCP port for several worker processes (SO_REUSEPORT, Linux 3.9+).

Each worker listens on a socket of its own bound to the same address; the kernel
spreads new connections over the listening ones. The supervisor holds the port with
sockets bound but not listening (they take no connections), so that port 0 is
resolved once for every worker and the port stays theirs while one restarts.
"""

import socket

import trio

BACKLOG = 0xFFFF  # as trio.open_tcp_listeners: the kernel caps it at somaxconn


def _bound_socket(family: int, address: tuple[object, ...]) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


Infos = list[tuple[int, int, int, str, tuple[object, ...]]]


def _addresses(infos: Infos) -> list[tuple[int, tuple[object, ...]]]:
    unique = []
    for family, _, _, _, address in infos:
        if (family, address) not in unique:
            unique.append((family, address))
    return unique


def reserve_port(host: str, port: int) -> list[socket.socket]:
    """Bind (not listen) every address of ``host`` on ``port``; port 0 picks one free
    port for all of them. OSError if it is taken by a process not sharing it."""
    sockets: list[socket.socket] = []
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, address in _addresses(infos):  # type: ignore[arg-type]
            if port == 0 and sockets:
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sockets.append(_bound_socket(family, address))
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


async def reuse_port_listeners(host: str, port: int) -> list[trio.SocketListener]:
    listeners: list[trio.SocketListener] = []
    infos = await trio.socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    try:
        for family, address in _addresses(infos):  # type: ignore[arg-type]
            sock = _bound_socket(family, address)
            sock.listen(BACKLOG)
            listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
    except BaseException:
        for listener in listeners:
            await listener.aclose()
        raise
    return listeners
