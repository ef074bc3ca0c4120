"""Structured logs: one JSON object per line on stderr (structlog). Never a token."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog

_commands_enabled = True
_pending = bytearray()
_flush_scheduled = False
FLUSH_AFTER = 0.02  # seconds a command line may wait to share a write with others


def command_line(fields: dict[str, Any]) -> None:
    """The one-line-per-command record on stderr.

    It is the hottest log line by far, so it skips structlog's processor chain
    (same JSON shape: `event`, `level`, `timestamp` plus the fields) and lines
    written within 20 ms share one `write`. A crash can lose at most those
    20 ms of log lines, never a command (commands are in the store).
    """
    global _flush_scheduled
    if not _commands_enabled:
        return
    fields["event"] = "command"
    fields["level"] = "info"
    fields["timestamp"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    try:
        line = orjson.dumps(fields, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:  # a client's text with lone surrogates: log it escaped
        line = orjson.dumps(
            {k: _printable(v) for k, v in fields.items()}, option=orjson.OPT_APPEND_NEWLINE
        )
    _pending.extend(line)
    if len(_pending) > 65536:
        flush()
    elif not _flush_scheduled:
        try:
            asyncio.get_running_loop().call_later(FLUSH_AFTER, flush)
            _flush_scheduled = True
        except RuntimeError:  # no loop (tests, tools): write now
            flush()


def _printable(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def flush() -> None:
    global _flush_scheduled
    _flush_scheduled = False
    if not _pending:
        return
    data = bytes(_pending)
    _pending.clear()
    try:
        os.write(2, data)
    except OSError:
        pass


def configure(level: str = "INFO") -> None:
    global _commands_enabled
    _commands_enabled = logging.getLevelName(level) <= logging.INFO
    logging.basicConfig(stream=sys.stderr, level=level, format="%(message)s")
    logging.getLogger("asyncpg.pool").setLevel(logging.ERROR)  # reconnect chatter in outages
    for noisy in ("aiohttp.access", "engineio", "socketio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.BytesLoggerFactory(sys.stderr.buffer),
        cache_logger_on_first_use=True,
    )
