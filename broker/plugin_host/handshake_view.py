"""The upgrade request as an authenticate hook sees it (`broker.plugin.HandshakeRequest`)."""

from urllib.parse import parse_qs, urlsplit

from ..handshake.upgrade import UpgradeRequest
from ..plugin import HandshakeRequest


def plugin_view(request: UpgradeRequest, remote: str, client_id: str) -> HandshakeRequest:
    """The upgrade request as plugins see it, with the id the client gets if accepted."""
    target = urlsplit(request.target)
    query = {key: tuple(values) for key, values in parse_qs(target.query).items()}
    headers = [("host", request.host)]
    headers += [
        (bytes(name).decode("latin-1").lower(), bytes(value).decode("latin-1"))
        for name, value in request.extra_headers
    ]
    return HandshakeRequest(target.path, query, tuple(headers), remote, client_id)
