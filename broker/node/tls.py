"""The listeners' TLS contexts, from ``[server.tls]`` and ``[admin.tls]``."""

import ssl

from ..config.schema import ConfigError, TlsConfig


def server_context(
    tls: TlsConfig, source: str = "<config>", key: str = "server.tls"
) -> ssl.SSLContext:
    """A context for wss://; ConfigError if the files cannot be used."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # A renegotiation would make a write wait for a read (see broker.tls_stream).
    context.options |= ssl.OP_NO_RENEGOTIATION
    # WebSocket handshakes are HTTP/1.1; saying so keeps clients that offer h2 from picking it.
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            source,
            [f"{key}: cannot use {tls.cert_file!r} and {tls.key_file!r}: {exc}"],
        ) from None
    return context
