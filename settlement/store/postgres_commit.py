"""PostgreSQL's commit in one round trip (migration 4, numbered rooms since 5): a
server-side function.

`settlement_commit(...)` takes one or more `Commit`s as parallel arrays and
writes each the way the statements of schema 1-3 did, in order: the
conditional room update (`UPDATE rooms ... WHERE seq = base_seq`; a new room
`INSERT ... ON CONFLICT DO NOTHING`), then its events, webhook messages,
seats and idempotency record. It returns one boolean per commit: false when
the room had moved on (or, for a new room, already existed), and then
nothing of that commit was written. It runs as one statement, so as one
implicit transaction with `synchronous_commit = on`: acknowledged only after
PostgreSQL has flushed it.

A unique violation (a taken event key, a used request_id) aborts the whole
statement: for one commit that is `Conflict`, for several the store writes
them again one call each, so that only the loser fails (as SQLite's group
commit does).

Each statement in a PL/pgSQL function takes a new snapshot under READ
COMMITTED, so the outbox's "is the message before me still waiting?" runs
after the room's row lock is held, as it did in its own statement before.
"""

from __future__ import annotations

from typing import Any

import orjson

from .base import Commit, outbox_heads

MIGRATION = """
CREATE FUNCTION settlement_commit(
    c_cid text[], c_base bigint[], c_last bigint[], c_status text[], c_currency text[],
    c_events int[], e_cid text[], e_seq bigint[], e_type text[], e_body text[],
    c_seats int[], s_party text[], s_hash text[],
    k_scope text[], k_request text[], k_cid text[], k_fp text[], k_ack text[], k_nonce text[],
    c_outbox int[], o_cid text[], o_seq bigint[], o_endpoint text[], o_body text[],
    o_created float8[], o_head boolean[]
) RETURNS boolean[] LANGUAGE plpgsql AS $fn$
DECLARE
    written boolean[] := '{}';
    pe int := 1;  -- the first event, seat and message of the commit at hand
    ps int := 1;
    po int := 1;
    ne int;
    ns int;
    nm int;
BEGIN
    FOR i IN 1 .. coalesce(cardinality(c_cid), 0) LOOP
        ne := c_events[i];
        ns := c_seats[i];
        nm := c_outbox[i];
        IF c_base[i] = 0 THEN
            INSERT INTO rooms (connection_id, currency, status, seq)
            VALUES (c_cid[i], c_currency[i], c_status[i], c_last[i])
            ON CONFLICT (connection_id) DO NOTHING;
        ELSE
            UPDATE rooms SET seq = c_last[i], status = c_status[i]
            WHERE connection_id = c_cid[i] AND seq = c_base[i];
        END IF;
        written := written || FOUND;
        IF FOUND THEN
            IF ne > 0 THEN
                INSERT INTO events (connection_id, seq, type, body)
                SELECT * FROM unnest(e_cid[pe:pe + ne - 1], e_seq[pe:pe + ne - 1],
                    e_type[pe:pe + ne - 1], e_body[pe:pe + ne - 1]);
            END IF;
            IF nm > 0 THEN
                INSERT INTO webhooks (connection_id, seq, endpoint, body, created, next_attempt)
                SELECT m.cid, m.seq, m.endpoint, m.body, m.created,
                    CASE WHEN m.head AND coalesce((
                        SELECT p.state FROM webhooks AS p
                        WHERE p.connection_id = m.cid AND p.endpoint = m.endpoint
                            AND p.seq < m.seq
                        ORDER BY p.seq DESC LIMIT 1), '') <> 'waiting' THEN m.created END
                FROM unnest(o_cid[po:po + nm - 1], o_seq[po:po + nm - 1],
                    o_endpoint[po:po + nm - 1], o_body[po:po + nm - 1],
                    o_created[po:po + nm - 1], o_head[po:po + nm - 1])
                    AS m(cid, seq, endpoint, body, created, head);
            END IF;
            IF ns > 0 THEN
                INSERT INTO seats (connection_id, party, token_hash)
                SELECT c_cid[i], x.party, x.hash
                FROM unnest(s_party[ps:ps + ns - 1], s_hash[ps:ps + ns - 1]) AS x(party, hash)
                ON CONFLICT (connection_id, party) DO UPDATE SET token_hash = excluded.token_hash;
            END IF;
            IF k_scope[i] IS NOT NULL THEN
                INSERT INTO idempotency
                    (scope, request_id, connection_id, fingerprint, ack, token_nonce)
                VALUES (k_scope[i], k_request[i], k_cid[i], k_fp[i], k_ack[i], k_nonce[i]);
            END IF;
        END IF;
        pe := pe + ne;
        ps := ps + ns;
        po := po + nm;
    END LOOP;
    RETURN written;
END
$fn$;
"""

# 5: every room has a number (`rooms.room`, in order of creation), and the keys
# of events, seats and idempotency records start with it instead of the random
# connection id, as in SQLite's schema 4: the live rooms' index entries sit
# together at the end of each index instead of one page per room, so a
# checkpoint is followed by few full-page images (bench/README.md: with 300,000
# rooms of history, 4.7-5.0 -> 1.7 KB of WAL per commit, 2.4x the commits/s).
# Existing rows are numbered in the table's order and copied in place; an
# event, seat or record of no room stops the migration with nothing changed.
MIGRATION_5 = """
ALTER TABLE rooms ADD COLUMN room BIGINT GENERATED BY DEFAULT AS IDENTITY,
    ADD CONSTRAINT rooms_room_key UNIQUE (room);
ALTER TABLE events ADD COLUMN room BIGINT;
UPDATE events SET room = r.room FROM rooms AS r WHERE r.connection_id = events.connection_id;
ALTER TABLE events ALTER COLUMN room SET NOT NULL,
    DROP CONSTRAINT events_pkey, ADD PRIMARY KEY (room, seq);
ALTER TABLE seats ADD COLUMN room BIGINT;
UPDATE seats SET room = r.room FROM rooms AS r WHERE r.connection_id = seats.connection_id;
ALTER TABLE seats ALTER COLUMN room SET NOT NULL,
    DROP CONSTRAINT seats_pkey, ADD PRIMARY KEY (room, party);
ALTER TABLE idempotency ADD COLUMN room BIGINT;
UPDATE idempotency SET room = r.room FROM rooms AS r
    WHERE r.connection_id = idempotency.connection_id;
ALTER TABLE idempotency ALTER COLUMN room SET NOT NULL,
    DROP CONSTRAINT idempotency_pkey, ADD PRIMARY KEY (room, scope, request_id);
-- The scope of a seat or a join names its room, so (room, scope, request_id) is
-- unique where (scope, request_id) was; `create` records share one scope.
CREATE UNIQUE INDEX idempotency_create ON idempotency (request_id) WHERE scope = 'server';
DROP INDEX idempotency_room;
CREATE OR REPLACE FUNCTION settlement_commit(
    c_cid text[], c_base bigint[], c_last bigint[], c_status text[], c_currency text[],
    c_events int[], e_cid text[], e_seq bigint[], e_type text[], e_body text[],
    c_seats int[], s_party text[], s_hash text[],
    k_scope text[], k_request text[], k_cid text[], k_fp text[], k_ack text[], k_nonce text[],
    c_outbox int[], o_cid text[], o_seq bigint[], o_endpoint text[], o_body text[],
    o_created float8[], o_head boolean[]
) RETURNS boolean[] LANGUAGE plpgsql AS $fn$
DECLARE
    written boolean[] := '{}';
    pe int := 1;  -- the first event, seat and message of the commit at hand
    ps int := 1;
    po int := 1;
    ne int;
    ns int;
    nm int;
    r bigint;  -- the room's number
BEGIN
    FOR i IN 1 .. coalesce(cardinality(c_cid), 0) LOOP
        ne := c_events[i];
        ns := c_seats[i];
        nm := c_outbox[i];
        IF c_base[i] = 0 THEN
            INSERT INTO rooms (connection_id, currency, status, seq)
            VALUES (c_cid[i], c_currency[i], c_status[i], c_last[i])
            ON CONFLICT (connection_id) DO NOTHING RETURNING room INTO r;
        ELSE
            UPDATE rooms SET seq = c_last[i], status = c_status[i]
            WHERE connection_id = c_cid[i] AND seq = c_base[i] RETURNING room INTO r;
        END IF;
        written := written || FOUND;
        IF FOUND THEN
            IF ne > 0 THEN
                INSERT INTO events (room, connection_id, seq, type, body)
                SELECT r, * FROM unnest(e_cid[pe:pe + ne - 1], e_seq[pe:pe + ne - 1],
                    e_type[pe:pe + ne - 1], e_body[pe:pe + ne - 1]);
            END IF;
            IF nm > 0 THEN
                INSERT INTO webhooks (connection_id, seq, endpoint, body, created, next_attempt)
                SELECT m.cid, m.seq, m.endpoint, m.body, m.created,
                    CASE WHEN m.head AND coalesce((
                        SELECT p.state FROM webhooks AS p
                        WHERE p.connection_id = m.cid AND p.endpoint = m.endpoint
                            AND p.seq < m.seq
                        ORDER BY p.seq DESC LIMIT 1), '') <> 'waiting' THEN m.created END
                FROM unnest(o_cid[po:po + nm - 1], o_seq[po:po + nm - 1],
                    o_endpoint[po:po + nm - 1], o_body[po:po + nm - 1],
                    o_created[po:po + nm - 1], o_head[po:po + nm - 1])
                    AS m(cid, seq, endpoint, body, created, head);
            END IF;
            IF ns > 0 THEN
                INSERT INTO seats (room, connection_id, party, token_hash)
                SELECT r, c_cid[i], x.party, x.hash
                FROM unnest(s_party[ps:ps + ns - 1], s_hash[ps:ps + ns - 1]) AS x(party, hash)
                ON CONFLICT (room, party) DO UPDATE SET token_hash = excluded.token_hash;
            END IF;
            IF k_scope[i] IS NOT NULL THEN
                INSERT INTO idempotency
                    (room, scope, request_id, connection_id, fingerprint, ack, token_nonce)
                VALUES (r, k_scope[i], k_request[i], k_cid[i], k_fp[i], k_ack[i], k_nonce[i]);
            END IF;
        END IF;
        pe := pe + ne;
        ps := ps + ns;
        po := po + nm;
    END LOOP;
    RETURN written;
END
$fn$;
"""

CALL = (
    "SELECT settlement_commit($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, "
    "$14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26)"
)


def last_seq(change: Commit) -> int:
    return int(change.events[-1]["seq"]) if change.events else change.base_seq


def arguments(changes: list[Commit]) -> list[list[Any]]:
    """The function's 26 arrays for `changes`, in their order."""
    args: list[list[Any]] = [[] for _ in range(26)]
    (
        cid,
        base,
        last,
        status,
        currency,
        n_events,
        e_cid,
        e_seq,
        e_type,
        e_body,
        n_seats,
        s_party,
        s_hash,
        k_scope,
        k_request,
        k_cid,
        k_fp,
        k_ack,
        k_nonce,
        n_outbox,
        o_cid,
        o_seq,
        o_endpoint,
        o_body,
        o_created,
        o_head,
    ) = args
    for change in changes:
        cid.append(change.connection_id)
        base.append(change.base_seq)
        last.append(last_seq(change))
        status.append(change.status)
        currency.append(change.currency)
        n_events.append(len(change.events))
        for e in change.events:
            e_cid.append(e["connection_id"])
            e_seq.append(e["seq"])
            e_type.append(e["type"])
            e_body.append(orjson.dumps(e).decode())
        n_seats.append(len(change.seats))
        for party, token_hash in change.seats.items():
            s_party.append(party)
            s_hash.append(token_hash)
        rec = change.idempotency
        for column, value in zip(
            (k_scope, k_request, k_cid, k_fp, k_ack, k_nonce),
            rec.row() if rec is not None else (None,) * 6,
            strict=True,
        ):
            column.append(value)
        rows = change.outbox
        n_outbox.append(len(rows))
        for row, head in zip(rows, outbox_heads(rows), strict=True):
            o_cid.append(row.connection_id)
            o_seq.append(row.seq)
            o_endpoint.append(row.endpoint)
            o_body.append(row.body)
            o_created.append(row.created)
            o_head.append(head)
    return args
