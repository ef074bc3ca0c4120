"""SQLite's schema: the tables, their history (migrations), and the one statement
that writes a group-commit batch (a JSON payload into a temporary view whose
INSTEAD OF trigger inserts every row)."""

from __future__ import annotations

import sqlite3
from typing import Any

import orjson
import structlog

from .base import CREATE_SCOPE, Commit, outbox_heads
from .sqlite_outbox import INBOX_OUTBOX

log = structlog.get_logger("settlement.store")

# 2: no index on idempotency (connection_id): a room's records are read by
# their scopes, a prefix of the primary key (one page less written per command).
# 3: events and idempotency are rowid tables with a UNIQUE key instead of
# WITHOUT ROWID tables: their rows (an event's JSON, an ack's JSON) are large,
# and keyed by room they went into the middle of the table, splitting pages;
# now a row is appended and only its small key goes into the middle (the store
# alone: 69 -> 46 us per command).
# 4: every room has a number in order of creation (`rooms.room`), and the keys
# of events, seats and idempotency records start with it instead of the
# connection id. Connection ids are random (60 bits), so keyed by them the
# rooms being negotiated right now had their index entries on as many pages as
# there were rooms, and every batch wrote one page per command and index; keyed
# by number they sit together at the end of each index. Half the bytes written
# per command (WAL and checkpoints: 23 -> 12 KB at 2,900 commands/s), and with
# them the fsync and checkpoint stalls that set the p99 latency.
# 5: the webhook outbox (`webhooks`, sqlite_outbox.py), written with the events.
# Older files are migrated once on start (`_migrate`, then the new table).
SCHEMA_VERSION = 5
META = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
TABLES = """
CREATE TABLE IF NOT EXISTS rooms{v} (
    room INTEGER PRIMARY KEY,
    connection_id TEXT NOT NULL UNIQUE,
    currency TEXT NOT NULL,
    status TEXT NOT NULL,
    seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS events{v} (
    room INTEGER NOT NULL,
    connection_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    body TEXT NOT NULL,
    UNIQUE (room, seq)
);
CREATE TABLE IF NOT EXISTS seats{v} (
    room INTEGER NOT NULL,
    connection_id TEXT NOT NULL,
    party TEXT NOT NULL,
    token_hash TEXT,
    PRIMARY KEY (room, party)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS idempotency{v} (
    room INTEGER NOT NULL,
    scope TEXT NOT NULL,
    request_id TEXT NOT NULL,
    connection_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    ack TEXT NOT NULL,
    token_nonce TEXT,
    UNIQUE (room, scope, request_id)
);
"""
# The scope of a seat or a join names its room, so (room, scope, request_id) is
# unique where (scope, request_id) is; `create` records share one scope and
# are found, and kept unique, by their request_id alone.
INDEXES = f"""
CREATE INDEX IF NOT EXISTS rooms_open ON rooms (status) WHERE status != 'settled';
CREATE UNIQUE INDEX IF NOT EXISTS idempotency_create ON idempotency (request_id)
    WHERE scope = '{CREATE_SCOPE}';
DROP INDEX IF EXISTS idempotency_room;
"""
# What a file before schema 4 holds, copied into the tables of today.
MIGRATE_TO_4 = """
INSERT INTO rooms_v4 (connection_id, currency, status, seq)
    SELECT connection_id, currency, status, seq FROM rooms ORDER BY rowid;
INSERT INTO events_v4 (room, connection_id, seq, type, body)
    SELECT r.room, e.connection_id, e.seq, e.type, e.body
    FROM events AS e LEFT JOIN rooms_v4 AS r USING (connection_id) ORDER BY r.room, e.seq;
INSERT INTO seats_v4 (room, connection_id, party, token_hash)
    SELECT r.room, s.connection_id, s.party, s.token_hash
    FROM seats AS s LEFT JOIN rooms_v4 AS r USING (connection_id);
INSERT INTO idempotency_v4
    (room, scope, request_id, connection_id, fingerprint, ack, token_nonce)
    SELECT r.room, i.scope, i.request_id, i.connection_id, i.fingerprint, i.ack, i.token_nonce
    FROM idempotency AS i LEFT JOIN rooms_v4 AS r USING (connection_id) ORDER BY r.room;
"""
MIGRATED = ("rooms", "events", "seats", "idempotency")

# A batch of commits goes in as one row of six JSON arrays (new rooms, moved
# rooms, events, seats, idempotency records, webhook messages), each a list of
# rows; the trigger
# writes them all, giving each row its room's number.
# Any row that breaks a rule (a room whose seq is no longer the one the decision
# was made on, a taken (room, seq), a used request_id) aborts the whole statement.
INBOX = """
CREATE TEMP VIEW IF NOT EXISTS inbox AS
  SELECT NULL AS new_rooms, NULL AS moves, NULL AS events, NULL AS seats, NULL AS keys,
    NULL AS outbox;
CREATE TEMP TRIGGER IF NOT EXISTS inbox_write INSTEAD OF INSERT ON inbox BEGIN
  SELECT RAISE(ABORT, 'a room moved on') FROM json_each(NEW.moves) AS m
    WHERE NOT EXISTS (
      SELECT 1 FROM rooms WHERE connection_id = m.value->>0 AND seq = m.value->>1);
  INSERT INTO rooms (connection_id, currency, status, seq)
    SELECT value->>0, value->>1, value->>2, value->>3 FROM json_each(NEW.new_rooms);
  UPDATE rooms SET seq = m.seq, status = m.status FROM (
    SELECT value->>0 AS cid, value->>2 AS seq, value->>3 AS status
    FROM json_each(NEW.moves)) AS m
    WHERE rooms.connection_id = m.cid;
  INSERT INTO events (room, connection_id, seq, type, body)
    SELECT (SELECT room FROM rooms WHERE connection_id = value->>0),
      value->>0, value->>1, value->>2, value->>3 FROM json_each(NEW.events);
  INSERT INTO seats (room, connection_id, party, token_hash)
    SELECT (SELECT room FROM rooms WHERE connection_id = value->>0),
      value->>0, value->>1, value->>2 FROM json_each(NEW.seats) WHERE true
    ON CONFLICT (room, party) DO UPDATE SET token_hash = excluded.token_hash;
  INSERT INTO idempotency
    (room, scope, request_id, connection_id, fingerprint, ack, token_nonce)
    SELECT (SELECT room FROM rooms WHERE connection_id = value->>2),
      value->>0, value->>1, value->>2, value->>3, value->>4, value->>5
    FROM json_each(NEW.keys);
{outbox}END;
""".replace("{outbox}", INBOX_OUTBOX)
INBOX_INSERT = (
    "INSERT INTO temp.inbox (new_rooms, moves, events, seats, keys, outbox) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)


def inbox_payload(batch: list[Commit]) -> tuple[str, str, str, str, str, str]:
    new_rooms: list[tuple[Any, ...]] = []
    moves: list[tuple[Any, ...]] = []
    events: list[tuple[Any, ...]] = []
    seats: list[tuple[Any, ...]] = []
    keys: list[tuple[Any, ...]] = []
    messages = [row for change in batch for row in change.outbox]
    for change in batch:
        cid = change.connection_id
        last_seq = change.events[-1]["seq"] if change.events else change.base_seq
        if not 0 <= change.base_seq <= last_seq < 2**63:  # SQLite's INTEGER is 64-bit
            raise OverflowError(f"{cid}: seq {last_seq} out of range")
        if change.base_seq == 0:
            new_rooms.append((cid, change.currency, change.status, last_seq))
        else:
            moves.append((cid, change.base_seq, last_seq, change.status))
        for e in change.events:
            events.append((e["connection_id"], e["seq"], e["type"], orjson.dumps(e).decode()))
        for party, token_hash in change.seats.items():
            seats.append((cid, party, token_hash))
        if change.idempotency is not None:
            keys.append(change.idempotency.row())
    outbox = [
        (m.connection_id, m.seq, m.endpoint, m.body, m.created, head)
        for m, head in zip(messages, outbox_heads(messages), strict=True)
    ]
    # Six parameters, not one array: each json_each parses only its own rows.
    return (
        orjson.dumps(new_rooms).decode(),
        orjson.dumps(moves).decode(),
        orjson.dumps(events).decode(),
        orjson.dumps(seats).decode(),
        orjson.dumps(keys).decode(),
        orjson.dumps(outbox).decode(),
    )


def migrate_to_4(conn: sqlite3.Connection) -> None:
    """Schema 4: copy a file of schema 1-3 (no room numbers) into the tables of
    today, rows and all, in one transaction; a row that cannot be placed (an
    event, seat or record of no known room) stops it with nothing changed."""
    conn.execute("BEGIN IMMEDIATE")  # one process migrates; another then sees it done
    try:
        numbered = conn.execute(
            "SELECT 1 FROM pragma_table_info('rooms') WHERE name = 'room'"
        ).fetchone()
        if numbered is None:
            before = {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in MIGRATED}
            for statement in (TABLES.format(v="_v4") + MIGRATE_TO_4).split(";"):
                if statement.strip():
                    try:
                        conn.execute(statement)
                    except sqlite3.IntegrityError as exc:
                        raise RuntimeError(
                            f"cannot migrate to schema 4: a row names no room ({exc}); "
                            "nothing was changed"
                        ) from exc
            for table in MIGRATED:
                after = conn.execute(f"SELECT COUNT(*) FROM {table}_v4").fetchone()[0]
                if after != before[table]:  # pragma: no cover - INSERT ... SELECT copies all
                    raise RuntimeError(f"migrating {table}: {before[table]} rows, {after} copied")
                conn.execute(f"DROP TABLE {table}")
                conn.execute(f"ALTER TABLE {table}_v4 RENAME TO {table}")
            log.info("schema_migrated", schema=4, **before)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
