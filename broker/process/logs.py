"""Logging to stderr as text or JSON lines; no timestamps under journald, which adds its own."""

import json
import logging
import os
import sys
from typing import Any

from .control import WorkerRole

_STANDARD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({})))


class JsonFormatter(logging.Formatter):
    def __init__(self, *, timestamps: bool) -> None:
        super().__init__()
        self.timestamps = timestamps

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {}
        if self.timestamps:
            entry["time"] = self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z")
        entry["level"] = record.levelname.lower()
        entry["logger"] = record.name
        entry["message"] = record.getMessage()
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRIBUTES and key not in entry:
                entry[key] = value
        return json.dumps(entry, default=str)


def under_journald() -> bool:
    return bool(os.environ.get("JOURNAL_STREAM"))


class _WorkerTag(logging.Filter):
    """Tells a worker's lines apart (``[server] workers``): JSON lines get ``"worker": N``."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.index
        return True


def configure_logging(level: str, format: str) -> None:
    """(Re)configure the root logger; safe to call again on reload."""
    timestamps = not under_journald()
    worker = WorkerRole.from_environment()
    formatter: logging.Formatter
    if format == "json":
        formatter = JsonFormatter(timestamps=timestamps)
    else:
        tag = "" if worker is None else f"worker {worker.index} "
        pattern = f"%(levelname)s {tag}%(name)s: %(message)s"
        formatter = logging.Formatter(("%(asctime)s " if timestamps else "") + pattern)
    root = logging.getLogger()
    handler = next((h for h in root.handlers if getattr(h, "_trio_broker", False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler._trio_broker = True  # type: ignore[attr-defined]
        if worker is not None:
            handler.addFilter(_WorkerTag(worker.index))
        root.addHandler(handler)
    handler.setFormatter(formatter)
    root.setLevel(level.upper())
    # coredis logs every failed connection attempt with a traceback; broker.redis says
    # once what is wrong and when it is right again.
    logging.getLogger("coredis").setLevel(logging.DEBUG if level == "debug" else logging.CRITICAL)
    # httpx logs each request at INFO (http_hooks' calls, webhooks' POSTs): thousands a
    # second, which the broker's own lines already sum up (failures, once per burst).
    for chatty in ("httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(logging.DEBUG if level == "debug" else logging.WARNING)
