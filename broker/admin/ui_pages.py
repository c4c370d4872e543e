"""The demo pages the admin listener serves with ``[admin] ui = true`` (broker/ui/).

Plain files, no build step: the chat demo, the browser client module it imports (and the
MessagePack module that one loads for ``encoding: "msgpack"``), and
``/ui/config.json``, which tells a page where the WebSocket endpoint is.
"""

from importlib.resources import files

from .http_server import HttpResponse

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
}
PAGES = ("index.html", "chat.html", "dashboard.html", "trio-broker.js", "msgpack.mjs")


def page(name: str) -> HttpResponse | None:
    """One of PAGES (``""`` is the index), or None."""
    name = name or "index.html"
    if name not in PAGES:
        return None
    body = files("broker").joinpath("ui", name).read_bytes()
    content_type = CONTENT_TYPES[name[name.rindex(".") :]]
    return HttpResponse(200, body, content_type, (("Cache-Control", "no-cache"),))


def websocket_url(host_header: str | None, port: int, path: str, tls: bool) -> str:
    """The endpoint as a page served from ``host_header`` reaches it: the same host name,
    the WebSocket listener's port."""
    host = host_header or "127.0.0.1"
    if host.startswith("[") and "]" in host:
        host = host[: host.index("]") + 1]  # [::1]:8081
    elif host.count(":") == 1:
        host = host.split(":")[0]
    return f"{'wss' if tls else 'ws'}://{host}:{port}{path}"
