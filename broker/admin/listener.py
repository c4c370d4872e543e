"""The admin listener: its own sockets, TLS, per-address limits and connection cap, in
front of the endpoints of `broker.admin.api`."""

import logging
import ssl

import trio

from ..config.schema import Config
from ..connections.early import peer, refuse_early
from ..handshake import refusals
from ..handshake.admission import AddressLimits, address_key
from ..handshake.upgrade import Refusal
from ..version import SERVER_NAME
from . import http_server
from .api import AdminApi, Node
from .http_server import HttpLimits

log = logging.getLogger("broker.server")


def _http_limits(config: Config) -> HttpLimits:
    admin = config.admin
    return HttpLimits(admin.max_request_size, admin.request_timeout, admin.idle_timeout)


class AdminListener:
    """Serves ``node``'s admin endpoints on the listeners given to `serve`.

    It serves until cancelled, through the node's shutdown (health, metrics), so its
    owner cancels it once the last client left.
    """

    def __init__(self, node: Node, tls: ssl.SSLContext | None) -> None:
        self._node = node
        self._api = AdminApi(node)
        self._tls = tls
        self._addresses = AddressLimits(*node.config.limits.per_address)
        self._connections = 0

    def configure(self, config: Config, tls: ssl.SSLContext | None) -> None:
        """New limits and certificates, for the next admin connections."""
        self._tls = tls
        self._addresses.configure(*config.limits.per_address)

    async def serve(self, listeners: list[trio.SocketListener]) -> None:
        async with trio.open_nursery() as handlers:
            await trio.serve_listeners(self._handle_stream, listeners, handler_nursery=handlers)

    async def _handle_stream(self, stream: trio.SocketStream) -> None:
        config = self._node.config
        host, remote = peer(stream)
        client: trio.abc.Stream = stream
        if self._tls is not None:
            client = trio.SSLStream(stream, self._tls, server_side=True)
        address = address_key(host)
        reason = self._addresses.admit(address, trio.current_time())
        refused = None if reason is None else refusals.limit_refusal(reason)
        if refused is None and self._connections >= config.admin.max_connections:
            self._addresses.release(address)
            refused = Refusal(503, "too many admin connections", refusals.RETRY_AFTER)
        if refused is not None:
            await refuse_early(client, remote, refused, config.server.handshake_timeout)
            await trio.aclose_forcefully(client)
            return
        self._connections += 1
        try:
            await http_server.serve_connection(
                client, self._api.handle, _http_limits(config), remote, SERVER_NAME
            )
        except (trio.BrokenResourceError, trio.ClosedResourceError) as error:
            log.debug("admin connection from %s broke: %r", remote, error)
        except Exception:
            log.exception("internal error on the admin connection from %s", remote)
        finally:
            self._connections -= 1
            self._addresses.release(address)
            await trio.aclose_forcefully(client)
