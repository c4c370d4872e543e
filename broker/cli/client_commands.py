"""`trio-broker sub` and `trio-broker pub`: the client library on the command line."""

import argparse
import collections
import json
import os
import sys
from typing import Any

import trio

from ..client import (
    DEFAULT_URL,
    BrokerError,
    ClientError,
    HandshakeRefused,
    Membership,
    Message,
    PendingAck,
    RecoveryFailed,
    connect,
)
from ..wire import protocol

URL_ENV = "TRIO_BROKER_URL"
TOKEN_ENV = "TRIO_BROKER_TOKEN"
# Publishes sent before the oldest one's ack is awaited: acks are pipelined.
PUBLISH_WINDOW = 1000
STDIN_BATCH = 65_536
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


def add_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    sub = commands.add_parser(
        "sub",
        help="print the messages on topics matching FILTERs, one JSON line each",
        description="Print each message on topics matching the filters as one JSON line "
        '{"topic", "data", "pos"} on stdout. Reconnects with backoff and recovers what it '
        "missed from the last position, unless --no-reconnect. Exit 0 after --count "
        "messages, 1 when the broker refuses (the reason on stderr), 130 on Ctrl-C.",
    )
    _connection_options(sub)
    sub.add_argument("--count", type=int, metavar="N", help="exit after N messages")
    sub.add_argument("--since", metavar="POS", help="replay the retained messages after POS first")
    sub.add_argument("--no-reconnect", action="store_true", help="exit 1 when the connection drops")
    sub.add_argument("filters", nargs="+", metavar="FILTER", help="a topic or filter (+, #)")
    pub = commands.add_parser(
        "pub",
        help="publish DATA (JSON) to TOPIC, or each line of stdin",
        description="Publish DATA to TOPIC: JSON, or else sent as a string. Without DATA, "
        "or with -, each line of stdin is one publish (acks pipelined). Exit 0 once every "
        "publish was acked, 1 at the first error (its code and message on stderr).",
    )
    _connection_options(pub)
    pub.add_argument("topic", metavar="TOPIC")
    pub.add_argument("data", nargs="?", default="-", metavar="DATA")


def _connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=os.environ.get(URL_ENV, DEFAULT_URL),
        help=f"the broker (default: ${URL_ENV}, else {DEFAULT_URL})",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV),
        help=f"sent as Authorization: Bearer TOKEN (default: ${TOKEN_ENV})",
    )


def run(args: argparse.Namespace) -> int:
    try:
        return trio.run(_reporting, args)
    except* KeyboardInterrupt:  # Ctrl-C: however deep in the task groups it came
        pass
    return EXIT_INTERRUPTED


# What a command reports in one line (never a traceback): the broker's refusals and
# errors, a connection that could not be made or was lost, a timeout.
REPORTED = (ClientError, OSError, TimeoutError)


async def _reporting(args: argparse.Namespace) -> int:
    """Run the command; its failures as one line on stderr and exit status 1."""
    command = _subscribe if args.command == "sub" else _publish
    try:
        return await command(args)
    except REPORTED as error:
        return _report(args, error)
    except BaseExceptionGroup as group:
        # The client's tasks raise from inside task groups: the first failure explains.
        first = _first_reported(group)
        if first is None:
            raise
        return _report(args, first)


def _first_reported(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The first of ``group``'s failures if every one is to be reported (cancellations
    aside: they follow from the failure); None if one is something else."""
    found = None
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            inner = _first_reported(error)
            if inner is None:
                return None
            found = found or inner
        elif isinstance(error, REPORTED):
            found = found or error
        elif not isinstance(error, trio.Cancelled):
            return None
    return found


def _report(args: argparse.Namespace, error: BaseException) -> int:
    name = args.command
    if isinstance(error, HandshakeRefused):
        return _fail(f"{name}: {args.url}: {error}")
    if isinstance(error, BrokerError):
        return _fail(f"{name}: {error}")
    return _fail(f"{name}: {args.url}: {_describe(error)}")


def _fail(message: str) -> int:
    print(f"trio-broker {message}", file=sys.stderr)
    return EXIT_FAILED


def _describe(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "no answer in time"
    return str(error) or type(error).__name__


def as_data(text: str) -> Any:
    """JSON if it is, else the text as a string (a bare word)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


async def _subscribe(args: argparse.Namespace) -> int:
    if args.count is not None and args.count < 1:
        return _fail("sub: --count must be at least 1")
    async with connect(args.url, token=args.token, reconnect=not args.no_reconnect) as client:
        failed: list[BaseException] = []

        async def subscribe_all() -> None:
            try:
                for index, topic_filter in enumerate(args.filters):
                    since = args.since if index == 0 else None
                    await client.subscribe(topic_filter, since=since)
            except (ClientError, TimeoutError) as error:
                failed.append(error)
                nursery.cancel_scope.cancel()

        status = 0
        # Subscribing while printing: a replay (--since) comes before its ack.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(subscribe_all)
            status = await _print_messages(client.messages(), args.count)
            nursery.cancel_scope.cancel()
        if failed:
            raise failed[0]
        return status


async def _print_messages(events: Any, count: int | None) -> int:
    received = 0
    async for event in events:
        if isinstance(event, Message):
            data = protocol.data_fields(event.data)
            line = {"topic": event.topic, **data, "pos": event.pos, **event.meta}
            print(json.dumps(line, ensure_ascii=False), flush=True)
            received += 1
            if count is not None and received >= count:
                return 0
        elif isinstance(event, RecoveryFailed):
            print(
                f"trio-broker sub: {event.topic_filter!r}: messages were lost while "
                "reconnecting (the broker no longer has them all)",
                file=sys.stderr,
            )
        elif isinstance(event, Membership):
            continue
    return 0


async def _publish(args: argparse.Namespace) -> int:
    async with connect(args.url, token=args.token, reconnect=False) as client:
        if args.data != "-":
            await client.publish(args.topic, as_data(args.data))
            return 0
        pending: collections.deque[PendingAck] = collections.deque()
        while lines := await _stdin_lines():
            for line in lines:
                pending.append(await client.start_publish(args.topic, as_data(line)))
                if len(pending) >= PUBLISH_WINDOW:
                    await pending.popleft().result()
        while pending:
            await pending.popleft().result()
        return 0


async def _stdin_lines() -> list[str]:
    """The next batch of stdin's non-empty lines, [] at its end (read by a thread: pipes
    and files alike)."""
    while batch := await trio.to_thread.run_sync(sys.stdin.buffer.readlines, STDIN_BATCH):
        lines = [line.decode("utf-8", errors="replace").rstrip("\r\n") for line in batch]
        if lines := [line for line in lines if line]:
            return lines
    return []
