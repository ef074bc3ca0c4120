"""`python -m settlement webhooks [--database URL] [--redeliver CONNECTION_ID]` and
`python -m settlement webhook-secret [--key-dir DIR]`.

`webhooks` lists every message that waits or was abandoned, one line each;
`--redeliver` queues every message of a connection again (every endpoint, in
seq order, a new retry window): a running server takes them up within its
poll interval (1 s). `webhook-secret` prints the secret the server signs
with, making it first if there is none yet (as the server would on start).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import logs, webhooks
from .config import Settings
from .ids import normalise_connection_id
from .store import Unavailable, WebhookRow, open_store

EXIT_OK, EXIT_UNKNOWN, EXIT_ERROR = 0, 1, 2


def _database(given: str | None) -> str:
    return given or os.environ.get("SETTLEMENT_DATABASE_URL") or Settings().database_url


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def line(row: WebhookRow) -> str:
    """One message: connection, seq, state, attempts, next attempt, id, endpoint, last error."""
    if row.state == "waiting" and row.next_attempt is None:
        due = "after-earlier"  # waits for the message before it in its queue
    else:
        due = _when(row.next_attempt)
    text = (
        f"{row.connection_id} seq={row.seq} {row.state} attempts={row.attempts} next={due} "
        f"id={webhooks.message_id(row.connection_id, row.seq)} endpoint={row.endpoint}"
    )
    return text + (f" error={row.last_error!r}" if row.last_error else "")


async def _webhooks(database: str, redeliver: str | None) -> int:
    store = open_store(database, pool_size=2)
    await store.open()
    try:
        if redeliver is None:
            rows = await store.webhooks.pending()
            for row in rows:
                print(line(row))
            waiting = sum(r.state == "waiting" for r in rows)
            print(f"{waiting} waiting, {len(rows) - waiting} abandoned", file=sys.stderr)
            return EXIT_OK
        cid = normalise_connection_id(redeliver)
        count = None if cid is None else await store.webhooks.redeliver(cid, time.time())
        if count is None:
            print(f"error: no connection has the id {redeliver!r}", file=sys.stderr)
            return EXIT_UNKNOWN
        print(f"{cid}: {count} messages queued again")
        return EXIT_OK
    finally:
        await store.close()


def run_webhooks(database: str | None, redeliver: str | None) -> int:
    logs.configure("WARNING")  # stdout holds the listing only
    try:
        return asyncio.run(_webhooks(_database(database), redeliver))
    except (Unavailable, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR


def run_webhook_secret(key_dir: str | None, database: str | None) -> int:
    given = key_dir or os.environ.get("SETTLEMENT_KEY_DIR")
    folder = Settings(database_url=_database(database), key_dir=given).keys_path()
    try:
        print(webhooks.load_or_create_secret(Path(folder)))
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def add_parsers(commands: Any) -> None:
    """Add the two subcommands to `python -m settlement`'s subparsers (`add_subparsers()`)."""
    listing = commands.add_parser(
        "webhooks", help="list webhook messages waiting or abandoned; --redeliver one connection"
    )
    listing.add_argument("--database", help="database URL (default: as the server's)")
    listing.add_argument(
        "--redeliver", metavar="CONNECTION_ID", help="queue every message of this connection again"
    )
    secret = commands.add_parser("webhook-secret", help="print the webhook signing secret")
    secret.add_argument("--key-dir", help="the server's key directory")
    secret.add_argument("--database", help="database URL (the key directory sits beside it)")
