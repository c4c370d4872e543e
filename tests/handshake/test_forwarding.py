"""The client's address behind trusted proxies: the sans-IO rules."""

import ipaddress

import pytest

from broker.handshake.forwarding import TrustedProxies, client_address, parse_address

TRUSTED = TrustedProxies(["127.0.0.1", "10.0.0.0/8", "2001:db8:ffff::/48"])
PROXY = ipaddress.ip_address("10.1.2.3")


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("192.0.2.7", "192.0.2.7"),
        (" 192.0.2.7 ", "192.0.2.7"),
        ("192.0.2.7:4711", "192.0.2.7"),
        ("2001:db8::1", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ('"[2001:db8::1]:4711"', "2001:db8::1"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("fe80::1%eth0", "fe80::1"),
        ("unknown", None),
        ("_hidden", None),
        ("", None),
        ("999.1.1.1", None),
        ("evil.example", None),
    ],
)
def test_addresses_as_proxies_write_them(text: str, address: str | None) -> None:
    parsed = parse_address(text)
    assert (None if parsed is None else str(parsed)) == address


@pytest.mark.parametrize(
    ("header", "values", "client"),
    [
        # No header: the proxy itself is all there is to count.
        ("X-Forwarded-For", [], "10.1.2.3"),
        ("X-Forwarded-For", ["192.0.2.7"], "192.0.2.7"),
        # The client wrote the left part itself: only what trusted proxies appended counts.
        ("X-Forwarded-For", ["6.6.6.6, 192.0.2.7"], "192.0.2.7"),
        ("X-Forwarded-For", ["6.6.6.6, 192.0.2.7, 10.9.9.9"], "192.0.2.7"),
        ("X-Forwarded-For", ["6.6.6.6", "192.0.2.7, 10.9.9.9"], "192.0.2.7"),  # two lines
        ("X-Forwarded-For", ["10.8.8.8, 10.9.9.9"], "10.8.8.8"),  # all trusted: left-most
        ("X-Forwarded-For", ["192.0.2.7, unknown"], "10.1.2.3"),  # garbage: the proxy
        ("X-Forwarded-For", ["192.0.2.7, garbage, 10.9.9.9"], "10.9.9.9"),
        ("X-Forwarded-For", ["[2001:db8::7]:4711"], "2001:db8::7"),
        ("X-Forwarded-For", ["2001:db8::7, 2001:db8:ffff::1"], "2001:db8::7"),
        ("Forwarded", ["for=192.0.2.7;proto=https;by=10.1.2.3"], "192.0.2.7"),
        ("Forwarded", ['for=6.6.6.6, for="[2001:db8::7]:4711"'], "2001:db8::7"),
        ("Forwarded", ["For=192.0.2.7, for=10.9.9.9"], "192.0.2.7"),
        ("Forwarded", ["for=_hidden"], "10.1.2.3"),
        ("Forwarded", ["proto=https"], "10.1.2.3"),
    ],
)
def test_the_client_is_the_right_most_untrusted_hop(
    header: str, values: list[str], client: str
) -> None:
    assert str(client_address(PROXY, header, values, TRUSTED)) == client


def test_networks_must_be_written_as_meant() -> None:
    assert not TrustedProxies([])
    assert TRUSTED.trusts(ipaddress.ip_address("10.200.0.1"))
    assert not TRUSTED.trusts(ipaddress.ip_address("11.0.0.1"))
    assert not TRUSTED.trusts(None)
    with pytest.raises(ValueError, match="has host bits set"):
        TrustedProxies(["10.0.0.1/8"])
    with pytest.raises(ValueError):
        TrustedProxies(["proxy.internal"])
