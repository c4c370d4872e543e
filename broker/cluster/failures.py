"""What a broken, unreachable or refusing Redis looks like through coredis (on anyio's
streams), and how a request that needed it fails: ``unavailable``."""

import anyio
import trio
from coredis.exceptions import RedisError

from ..wire.protocol import ErrorCode, ProtocolError

FAILURES = (
    RedisError,
    OSError,
    TimeoutError,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
)


def unavailable(reason: str) -> ProtocolError:
    return ProtocolError(ErrorCode.UNAVAILABLE, f"the cluster's Redis is unavailable ({reason})")


def describe(error: BaseException) -> str:
    if isinstance(error, BaseExceptionGroup):
        return "; ".join(describe(inner) for inner in error.exceptions)
    return str(error) or type(error).__name__


def is_read_only(error: BaseException) -> bool:
    """A write refused by a replica: the Redis we know as the master is one no more."""
    return isinstance(error, RedisError) and str(error).startswith("READONLY")
