"""No one let in: secrets stay secret, rooms stay apart, guessing is slow, forgeries fail."""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from settlement import ledger
from settlement.client import SettlementClient
from tests.conftest import ROOT, ServerProcess

from .helpers import NS, WireSocket, http_session, log_errors, read_store, rid

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
XSS = "<script>alert(1)</script><img src=x onerror=alert(2)>"


def random_id(rng: random.Random) -> str:
    raw = "".join(rng.choice(CROCKFORD) for _ in range(12))
    return f"{raw[:4]}-{raw[4:8]}-{raw[8:]}"


async def settled_room(
    url: str, reason: str = "too high", *, sign: bool = True
) -> tuple[SettlementClient, SettlementClient]:
    a = await SettlementClient(url, sign=sign).connect()
    b = await SettlementClient(url, sign=sign).connect()
    created = await a.create("A")
    await b.join(created["connection_id"])
    await a.propose("100.50")
    await b.dispute(1, reason)
    await a.propose("90")
    await b.accept(2)
    return a, b


async def get(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> tuple[int, str, Any]:
    async with http.get(url, headers=headers or {}, allow_redirects=False) as r:
        return r.status, await r.text(), r.headers


# -- tokens ---------------------------------------------------------------------


async def test_seat_tokens_never_appear_in_logs_urls_pages_events_or_receipts(
    server: ServerProcess,
) -> None:
    a, b = await settled_room(server.url)
    cid, tokens = a.connection_id, [a.token, b.token]
    assert cid and all(t and len(t) >= 22 for t in tokens)
    seen: list[str] = []
    async with http_session() as http:
        # an html-view tab of A, resumed at connect
        tab = await WireSocket.open(
            http, server.url, {"view": "html", "connection_id": cid, "token": a.token}
        )
        await tab.wait_event(lambda e: e[0] == "html")
        for path in (f"/c/{cid}", f"/c/{cid.lower()}", "/", "/metrics", "/api/keys"):
            status, body, headers = await get(http, server.url + path)
            assert status == 200, path
            seen += [body, json.dumps(dict(headers))]
        status, body, headers = await get(
            http,
            f"{server.url}/api/connections/{cid}/receipt",
            {"Authorization": f"Bearer {a.token}"},
        )
        assert status == 200
        seen += [body, json.dumps(dict(headers))]
        history = await b.history()
        receipt = await b.receipt()
        seen += [json.dumps(history), json.dumps(receipt), json.dumps(tab.events)]
        seen += [json.dumps(c.states) for c in (a, b)]
        await tab.close()
    # the replayed tokens in create/join acks are the only place a token goes
    for c in (a, b):
        await c.close()
    await asyncio.sleep(0.2)
    seen.append(server.log())
    seen.append(server.dump_store().decode("latin-1"))
    everything = "\n".join(seen)
    assert cid in everything  # the search itself works
    for token in tokens:
        assert token is not None
        assert token not in everything
        assert token.removeprefix("st_") not in everything


# -- rooms stay apart -------------------------------------------------------------


async def test_a_socket_of_room_x_cannot_read_or_change_room_y(server: ServerProcess) -> None:
    ay = await SettlementClient(server.url).connect()
    by = await SettlementClient(server.url).connect()
    y = (await ay.create("A"))["connection_id"]
    await by.join(y)
    shared_rid = rid()
    await ay.call("propose", {"amount": "10", "request_id": shared_rid})
    y_before = await by.history()
    y_seq = by.last_state["seq"] if by.last_state else 0
    acks: list[Any] = []
    async with http_session() as http:
        x_sock = await WireSocket.open(http, server.url)
        created = await x_sock.call("create", {"party": "A", "request_id": rid()})
        x, x_token = created["connection_id"], created["token"]
        attempts: list[tuple[str, Any]] = [
            ("propose", {"amount": "7", "connection_id": y}),
            ("propose", {"amount": "7", "room": y}),
            ("respond", {"decision": "accept", "version": 1, "connection_id": y}),
            ("history", {"connection_id": y}),
            ("history", {"after_seq": 0, "connection_id": y}),
            ("receipt", {"connection_id": y}),
            ("leave", {"connection_id": y}),
            ("join", {"connection_id": y}),
            ("join", {"connection_id": y, "party": "B"}),
            ("join", {"connection_id": y.lower().replace("-", ""), "party": "A"}),
            ("resume", {"connection_id": y, "token": x_token}),
            ("create", {"party": "B", "connection_id": y}),
            ("propose", [{"amount": "7"}, {"connection_id": y}]),
            ("respond", {"decision": "dispute", "version": 1, "reason": y}),
        ]
        for event, payload in attempts:
            if isinstance(payload, list):
                ack = await x_sock.call(event, *payload)
            else:
                ack = await x_sock.call(event, payload)
            assert ack["ok"] is False, (event, payload, ack)
            acks.append(ack)
        # the same request_id that Y's A used: X gets its own answer, never Y's ack
        mine = await x_sock.call("propose", {"amount": "10", "request_id": shared_rid})
        assert mine["ok"] is True and mine["state"]["connection_id"] == x
        acks.append(mine)
        # an unseated socket with X's token cannot enter Y either
        stranger = await WireSocket.open(http, server.url)
        for event, payload in [
            ("resume", {"connection_id": y, "token": x_token}),
            ("join", {"connection_id": y}),
            ("join", {"connection_id": y, "party": "A"}),
            ("history", {}),
            ("receipt", {}),
        ]:
            ack = await stranger.call(event, payload)
            assert ack["ok"] is False, (event, ack)
            assert ack["error"]["code"] in ("bad_token", "room_full", "seat_taken", "not_seated")
            acks.append(ack)
        status, body, _ = await get(
            http,
            f"{server.url}/api/connections/{y}/receipt",
            {"Authorization": f"Bearer {x_token}"},
        )
        assert status == 401
        await x_sock.close()
        await stranger.close()
    await asyncio.sleep(0.3)
    # nothing about Y came back, and Y did not change
    assert y not in json.dumps(acks)
    assert await by.history() == y_before
    assert by.last_state is not None and by.last_state["seq"] == y_seq
    assert all(s["connection_id"] == y for c in (ay, by) for s in c.states)
    assert read_store(server.db_path).rooms[y][2] == y_seq
    for c in (ay, by):
        await c.close()


# -- guessing is slow --------------------------------------------------------------


async def test_connection_ids_are_not_enumerable_faster_than_the_limit(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path, extra_args=["--guess-burst", "5", "--guess-rate", "1"])
    srv.start()
    rng = random.Random(7)
    try:
        async with http_session() as http:
            owner = await WireSocket.open(http, srv.url)
            real = (await owner.call("create", {"party": "A", "request_id": rid()}))[
                "connection_id"
            ]
            t0 = time.monotonic()
            # five failures, each from a new socket of the same address
            for _ in range(5):
                s = await WireSocket.open(http, srv.url)
                ack = await s.call("join", {"connection_id": random_id(rng)})
                assert ack["error"]["code"] == "not_found", ack
                await s.close()
            # the sixth guess, on yet another socket, is refused
            s = await WireSocket.open(http, srv.url)
            ack = await s.call("join", {"connection_id": random_id(rng)})
            assert time.monotonic() - t0 < 1.0, "too slow to test a 1/s refill"
            assert ack["error"]["code"] == "rate_limited", ack
            await s.close()

            # hammer: many sockets, joins, resumes, connect-time resumes and both HTTP routes
            answers: dict[str, int] = {}

            def note(kind: str) -> None:
                answers[kind] = answers.get(kind, 0) + 1

            async def guesser(n: int) -> None:
                sock = await WireSocket.open(http, srv.url)
                for i in range(12):
                    if i % 2:
                        ack = await sock.call(
                            "resume", {"connection_id": real, "token": "st_" + "x" * 43}
                        )
                    else:
                        ack = await sock.call("join", {"connection_id": random_id(rng)})
                    note(ack["error"]["code"])
                    status, _, _ = await get(http, f"{srv.url}/c/{random_id(rng)}")
                    note(f"page {status}")
                    status, _, _ = await get(
                        http,
                        f"{srv.url}/api/connections/{random_id(rng)}/receipt",
                        {"Authorization": "Bearer st_guess"},
                    )
                    note(f"receipt {status}")
                    await asyncio.sleep(0.05)
                await sock.close()
                tab = await WireSocket.open(
                    http, srv.url, {"connection_id": real, "token": f"st_{n:043d}"}
                )
                name, err = await tab.wait_event(lambda e: e[0] == "error")
                note(f"connect {err['code']}")
                await tab.close()

            h0 = time.monotonic()
            await asyncio.gather(*(guesser(n) for n in range(8)))
            elapsed = time.monotonic() - h0
            print("guess answers:", answers, f"in {elapsed:.1f}s")
            answered = sum(
                n
                for kind, n in answers.items()
                if kind
                in (
                    "not_found",
                    "bad_token",
                    "page 404",
                    "receipt 404",
                    "connect not_found",
                    "connect bad_token",
                )
            )
            # at most the refill (1/s) plus one token of slack got a real answer
            assert answered <= elapsed * 1.0 + 2, answers
            assert answers.get("rate_limited", 0) > 50
            assert answers.get("page 429", 0) > 50 and answers.get("receipt 429", 0) > 50
            assert answers.get("connect rate_limited", 0) >= 6
            # even the right id is refused while the budget is spent
            status, _, _ = await get(http, f"{srv.url}/c/{real}")
            late = await WireSocket.open(http, srv.url)
            ack = await late.call("join", {"connection_id": real, "request_id": rid()})
            assert (status, ack["error"]["code"]) == (429, "rate_limited")
            # ...and it recovers after a wait
            await asyncio.sleep(2.2)
            ack = await late.call("join", {"connection_id": real, "request_id": rid()})
            assert ack["ok"] is True, ack
            status, _, _ = await get(http, f"{srv.url}/c/{real}")
            assert status == 200
            for sock in (owner, late):
                await sock.close()
    finally:
        srv.stop()
    assert log_errors(srv.log()) == []


# -- forged life-cycle events --------------------------------------------------------


async def test_forged_reserved_events_in_raw_frames_are_refused(server: ServerProcess) -> None:
    b = await SettlementClient(server.url).connect()
    async with http_session() as http:
        a = await WireSocket.open(http, server.url)
        created = await a.call("create", {"party": "A", "request_id": rid()})
        cid = created["connection_id"]
        await b.join(cid)
        await b.wait_for_state(
            lambda s: s["parties"]["A"]["online"] and s["parties"]["B"]["online"]
        )
        forged = [
            '["disconnect"]',
            '["disconnect", "transport close"]',
            json.dumps(
                ["connect", {"REMOTE_ADDR": "6.6.6.6"}, {"connection_id": cid, "token": "x"}]
            ),
            '["connect_error", {"message": "x"}]',
            '["disconnecting"]',
            '["message", "hi"]',
            '["newListener", "state"]',
            '["*", "propose", {"amount": "1"}]',
        ]
        for body in forged:
            ack = await a.call_raw(body)
            assert ack["ok"] is False and ack["error"]["code"] == "bad_request", (body, ack)
        # without an ack id: no answer is possible, and still no effect
        for body in forged[:3]:
            await a.send_raw(f"42{NS}," + body)
        await asyncio.sleep(0.3)
        assert not any(s["parties"]["A"]["online"] is False for s in b.states)
        assert b.last_state is not None and b.last_state["parties"]["A"]["online"] is True
        ack = await a.call("propose", {"amount": "5", "request_id": rid()})
        assert ack["ok"] is True and ack["version"] == 1
        # a real disconnect does flip presence (the check above can fail)
        await a.close()
        await b.wait_for_state(lambda s: s["parties"]["A"]["online"] is False)
    await b.close()
    log = server.log()
    assert log.count("reserved_event_refused") >= len(forged)
    assert log_errors(log) == []


# -- headers -----------------------------------------------------------------------


async def test_security_headers_on_every_page_and_api_route(server: ServerProcess) -> None:
    a, b = await settled_room(server.url)
    cid = a.connection_id
    static = sorted(p.name for p in (ROOT / "static").iterdir() if p.is_file())
    assert static
    routes = [
        ("GET", "/", 200),
        (
            "GET",
            f"/c/{cid}",
            200,
        ),
        ("GET", "/c/0000-0000-0000", 404),
        ("GET", "/c/<script>", 404),
        ("GET", "/no/such/page", 404),
        ("GET", "/api/keys", 200),
        ("GET", "/healthz", 200),
        ("GET", "/metrics", 200),
        ("GET", f"/api/connections/{cid}/receipt", 401),
        ("GET", "/api/connections/0000-0000-0000/receipt", 404),
        ("POST", "/healthz", 405),
        ("GET", "/static/no-such-file.js", 404),
        *[("GET", f"/static/{name}", 200) for name in static],
        ("GET", "/socket.io/?EIO=4&transport=polling", 200),
    ]
    missing = []
    async with http_session() as http:
        for method, path, expected in routes:
            async with http.request(method, server.url + path, allow_redirects=False) as r:
                await r.read()
                assert r.status == expected, (path, r.status)
                h = r.headers
                csp = h.get("Content-Security-Policy", "")
                problems = [
                    name
                    for name, ok in [
                        ("csp", "frame-ancestors 'none'" in csp and "script-src 'self'" in csp),
                        ("csp-inline", "unsafe-inline" not in csp and "unsafe-eval" not in csp),
                        ("nosniff", h.get("X-Content-Type-Options") == "nosniff"),
                        ("referrer", h.get("Referrer-Policy") == "no-referrer"),
                        ("frame", h.get("X-Frame-Options") == "DENY"),
                    ]
                    if not ok
                ]
                if problems:
                    missing.append((method, path, problems))
    for c in (a, b):
        await c.close()
    assert missing == []


# -- the receipt route ---------------------------------------------------------------


async def test_receipt_api_refuses_missing_wrong_and_revoked_tokens(server: ServerProcess) -> None:
    a, b = await settled_room(server.url)
    cid, token_a, token_b = a.connection_id, a.token, b.token
    other = await SettlementClient(server.url).connect()
    other_token = (await other.create("A"))["token"]
    url = f"{server.url}/api/connections/{cid}/receipt"
    async with http_session() as http:
        status, body, headers = await get(http, url, {"Authorization": f"Bearer {token_b}"})
        assert status == 200 and json.loads(body)["connection_id"] == cid
        assert headers.get("Cache-Control") == "no-store"
        await b.leave()  # revokes B's token
        cases = {
            "missing": None,
            "empty": "",
            "bare token": str(token_a),
            "basic scheme": f"Basic {token_a}",
            "wrong": "Bearer st_" + "A" * 43,
            "other room's": f"Bearer {other_token}",
            "revoked": f"Bearer {token_b}",
            "truncated": f"Bearer {str(token_a)[:-1]}",
        }
        for name, header in cases.items():
            status, body, headers = await get(
                http, url, {"Authorization": header} if header is not None else None
            )
            assert status == 401, (name, status)
            assert headers.get("WWW-Authenticate", "").startswith("Bearer"), name
            assert json.loads(body)["error"]["code"] == "bad_token"
            assert "events" not in body
        status, body, _ = await get(
            http, url.replace(cid, cid.lower()), {"Authorization": f"Bearer {token_a}"}
        )
        assert status == 200 and json.loads(body)["receipt_id"]
        status, _, _ = await get(
            http,
            f"{server.url}/api/connections/0000-0000-0000/receipt",
            {"Authorization": f"Bearer {token_a}"},
        )
        assert status == 404
    for c in (a, b, other):
        await c.close()


# -- the signature ---------------------------------------------------------------------


async def run_verify(path: Path, key: Path | None) -> tuple[int, str]:
    args = [sys.executable, "-m", "settlement", "verify", str(path)]
    if key is not None:
        args += ["--key", str(key)]
    proc = await asyncio.create_subprocess_exec(
        *args, cwd=str(ROOT), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def test_receipt_rechained_with_an_edited_amount_fails_only_the_signature(
    server: ServerProcess, tmp_path: Path
) -> None:
    # Unsigned parties (protocol 1.0): only the server's signature can catch this;
    # with party signatures (1.1) `verify` refuses it even without --key
    # (tests/protocol/test_consent.py).
    a, b = await settled_room(server.url, sign=False)
    receipt = await a.receipt()
    async with http_session() as http, http.get(server.url + "/api/keys") as r:
        keys = tmp_path / "keys.json"
        keys.write_text(await r.text())
    for c in (a, b):
        await c.close()
    original = tmp_path / "receipt.json"
    original.write_text(json.dumps(receipt))
    # forge: 90.00 becomes 9.00 in the offer, the acceptance and the summary, re-chained
    forged = json.loads(json.dumps(receipt))
    events, prev = [], ledger.GENESIS_HASH if hasattr(ledger, "GENESIS_HASH") else "0" * 64
    for event in forged["events"]:
        body = {k: v for k, v in event.items() if k not in ("hash", "prev_hash")}
        if body.get("amount") == "90.00":
            body["amount"] = "9.00"
        sealed = ledger.seal(body, prev)
        prev = sealed["hash"]
        events.append(sealed)
    forged.update(events=events, amount="9.00", receipt_id=prev)
    assert forged["amount"] != receipt["amount"]
    assert ledger.verify_chain(forged["events"]) is None
    assert ledger.verify_receipt(forged) is None  # a consistent chain...
    path = tmp_path / "forged.json"
    path.write_text(json.dumps(forged))
    code, out = await run_verify(original, keys)
    assert code == 0 and "signature valid" in out, out
    code, out = await run_verify(path, None)
    assert code == 0, out  # without a key only the chain is checked
    code, out = await run_verify(path, keys)
    assert code == 1 and "signature" in out.lower(), out  # ...but not the server's


# -- escaping ---------------------------------------------------------------------------


async def test_html_fragments_and_page_escape_a_hostile_reason(server: ServerProcess) -> None:
    b = await SettlementClient(server.url).connect()
    async with http_session() as http:
        tab = await WireSocket.open(http, server.url, {"view": "html"})
        created = await tab.call("create", {"party": "A", "request_id": rid()})
        cid = created["connection_id"]
        await b.join(cid)
        assert (await tab.call("propose", {"amount": "12", "request_id": rid()}))["ok"]
        await b.dispute(1, XSS)
        _, fragment = await tab.wait_event(
            lambda e: e[0] == "html" and "alert(1)" in e[1]["html"], timeout=5
        )
        html = fragment["html"]
        status, page, _ = await get(http, f"{server.url}/c/{cid}")
        await tab.close()
    await b.close()
    assert status == 200
    # The page is rendered for a reader without a seat, who is shown no reason at
    # all (pages 1.1); the party's fragments carry it, escaped.
    assert "alert(1)" not in page and "alert(2)" not in page
    for text in (html,):
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
        assert "<script>alert" not in text
        assert "<img src=x" not in text
        assert "onerror=alert(2)>" not in text
