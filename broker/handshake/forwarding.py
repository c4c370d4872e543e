"""The client's address behind trusted reverse proxies (no I/O here).

A proxy appends the address it received a connection from to ``X-Forwarded-For``
(or to ``Forwarded``, RFC 7239), so the header lists hops left to right, each
written by the proxy after it. Only the hops that trusted proxies wrote can be
believed: walking from the broker's peer to the left, the first address that is
not a trusted proxy is the client. Whatever stands further left came from the
client itself, which can write anything there.
"""

import ipaddress
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
HEADERS = ("X-Forwarded-For", "Forwarded")


def parse_address(text: str) -> IPAddress | None:
    """An address as sockets and proxies write it: bare, ``[v6]`` or with a port; else None."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]  # IPv4 with a port
    try:
        address = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class TrustedProxies:
    """Addresses and networks (``10.0.0.0/8``) whose forwarding headers are believed."""

    def __init__(self, entries: Iterable[str]) -> None:
        """Raises ValueError for an entry that is not an address or network."""
        self._networks = tuple(ipaddress.ip_network(entry) for entry in entries)

    def __bool__(self) -> bool:
        return bool(self._networks)

    def trusts(self, address: IPAddress | None) -> bool:
        return address is not None and any(address in network for network in self._networks)


def _hops(header: str, values: Iterable[str]) -> list[str]:
    """The addresses a header lists, left to right, as written (not yet parsed)."""
    elements = [element for value in values for element in value.split(",")]
    if header == "X-Forwarded-For":
        return elements
    hops = []
    for element in elements:
        for pair in element.split(";"):
            name, _, value = pair.strip().partition("=")
            if name.lower() == "for":
                hops.append(value)
                break
        else:
            hops.append("")  # a hop that did not say whom it was for: not an address
    return hops


def client_address(
    peer: IPAddress, header: str, values: Iterable[str], trusted: TrustedProxies
) -> IPAddress:
    """The right-most address in ``header`` that ``trusted`` does not cover.

    ``peer`` (the broker's peer, a trusted proxy) counts when the header is missing
    or every hop is trusted; so does the last trusted hop before a hop that is not an
    address (``unknown``, an obfuscated name, garbage).
    """
    client = peer
    for hop in reversed(_hops(header, values)):
        if not trusted.trusts(client):
            break
        address = parse_address(hop)
        if address is None:
            break
        client = address
    return client
