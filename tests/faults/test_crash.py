"""Crash test: bots settle many rooms while a harness SIGKILLs and restarts the server.

Every bot keeps its own log of every command whose ack it received. At the end
the store (read directly from SQLite) must hold every acknowledged command
exactly once, nothing twice, intact hash chains, and a receipt per settled room
that `python -m settlement verify --key` accepts.

The kill schedule and the bots' amounts come from `random.Random(seed)`; set
`FAULT_SEED` to replay a run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from settlement import ledger
from settlement.client import SettlementClient
from tests.conftest import ROOT, ServerProcess

from .helpers import log_errors, read_store

RETRY_CODES = {"unavailable", "rate_limited"}
COMMAND_DEADLINE = 60.0  # a bot gives up on one command only after this long


@dataclass
class Entry:
    request_id: str | None
    event: str
    payload: dict[str, Any]
    ack: dict[str, Any]
    replayed_after_retry: bool = False


@dataclass
class Bot:
    """One seat of one room: a SettlementClient plus the log of acks it received."""

    name: str
    url: str
    client: SettlementClient = field(init=False)
    log: list[Entry] = field(default_factory=list)
    retries: int = 0
    reseated: int = 0
    inferred_leaves: int = 0
    anomalies: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Short per-try timeout and no background reconnect task: `call` reconnects
        # (with the seat in `auth`) itself, and this loop retries with the same id.
        self.client = SettlementClient(self.url, timeout=2.0, retries=2)
        self.client.sio.reconnection = False

    async def command(self, event: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Send until acknowledged, always with the same request_id; log the ack."""
        payload = dict(payload)
        if event not in ("history", "receipt", "resume"):
            payload.setdefault("request_id", uuid.uuid4().hex)
        deadline = time.monotonic() + COMMAND_DEADLINE
        tries = 0
        while True:
            tries += 1
            try:
                ack = await self.client.call(event, payload)
            except (TimeoutError, ConnectionError, ValueError, OSError) as exc:
                ack = None
                error = exc
            if ack is not None:
                code = None if ack.get("ok") else ack["error"]["code"]
                if code == "not_seated" and self.client.connection_id and event != "resume":
                    # the connect-time resume did not happen (yet): resume by hand
                    self.reseated += 1
                    resumed = await self._resume()
                    if resumed == "bad_token" and event == "leave" and tries > 1:
                        # A `leave` whose ack was lost in a crash: its token is revoked,
                        # so it was applied; a new socket cannot replay it (the key's
                        # scope is the old socket's last seat). The store check below
                        # still demands its idempotency row and its `left` event.
                        self.inferred_leaves += 1
                        self.log.append(
                            Entry(payload["request_id"], event, payload, {"ok": True}, True)
                        )
                        return {"ok": True}
                    continue
                if code not in RETRY_CODES:
                    self.log.append(
                        Entry(payload.get("request_id"), event, payload, ack, tries > 1)
                    )
                    return ack
                error = RuntimeError(code)
            self.retries += 1
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: {event} got no answer: {error!r}")
            await asyncio.sleep(0.1)
            if not self.client.sio.connected:
                with contextlib.suppress(Exception):
                    await self.client.sio.disconnect()

    async def _resume(self) -> str | None:
        """Resume by hand; the error code, or None when seated again."""
        assert self.client.connection_id and self.client.token
        try:
            ack = await self.client.sio.call(
                "resume",
                {"connection_id": self.client.connection_id, "token": self.client.token},
                namespace="/settlement",
                timeout=2,
            )
        except Exception:
            return "no_answer"
        return None if ack.get("ok") else str(ack["error"]["code"])

    def seat(self, ack: dict[str, Any]) -> None:
        self.client.connection_id = ack["connection_id"]
        self.client.party = ack["party"]
        self.client.token = ack["token"]

    def expect_ok(self, ack: dict[str, Any], what: str) -> bool:
        if not ack.get("ok"):
            self.anomalies.append(f"{self.name}: {what} refused: {ack.get('error')}")
            return False
        return True


@dataclass
class RoomRun:
    cid: str | None = None
    settled: bool = False
    receipt: dict[str, Any] | None = None
    amounts: list[str] = field(default_factory=list)


async def settle_rooms(
    url: str, pair: int, rooms: int, rng: random.Random, stop_at: float, think: float
) -> tuple[Bot, Bot, list[RoomRun]]:
    """One pair of bots: A creates, B joins, A proposes, B disputes a few times then accepts."""
    a, b = Bot(f"A{pair}", url), Bot(f"B{pair}", url)
    runs: list[RoomRun] = []
    await a.client.connect()
    await b.client.connect()
    try:
        for room_no in range(rooms):
            if time.monotonic() > stop_at:
                break
            run = RoomRun()
            runs.append(run)
            currency = rng.choice(["USD", "EUR", "JPY", "KWD"])
            created = await a.command("create", {"party": "A", "currency": currency})
            if not a.expect_ok(created, "create"):
                break
            a.seat(created)
            run.cid = created["connection_id"]
            joined = await b.command("join", {"connection_id": run.cid})
            if not b.expect_ok(joined, "join"):
                break
            b.seat(joined)
            rounds = rng.randint(1, 4)
            decimals = {"JPY": 0, "KWD": 3}.get(currency, 2)
            for k in range(rounds):
                # unique per room: a double-applied proposal would show its amount twice
                amount = f"{1000 * (k + 1) + rng.randrange(1000)}"
                if decimals:
                    amount += "." + "".join(rng.choice("0123456789") for _ in range(decimals))
                await asyncio.sleep(rng.uniform(0, think))
                proposed = await a.command("propose", {"amount": amount})
                if not a.expect_ok(proposed, "propose"):
                    break
                run.amounts.append(amount)
                version = proposed["version"]
                if version != k + 1:
                    a.anomalies.append(f"{run.cid}: proposal {k + 1} got version {version}")
                if k + 1 < rounds:
                    reason = rng.choice([None, "too high", "nope ✋", ""])
                    payload: dict[str, Any] = {"decision": "dispute", "version": version}
                    if reason is not None:
                        payload["reason"] = reason
                    b.expect_ok(await b.command("respond", payload), "dispute")
                else:
                    accepted = await b.command(
                        "respond", {"decision": "accept", "version": version}
                    )
                    run.settled = b.expect_ok(accepted, "accept")
            if run.settled:
                receipt = await a.command("receipt", {})
                if a.expect_ok(receipt, "receipt"):
                    run.receipt = receipt["receipt"]
            # both leave so the next room starts from an unseated socket
            for bot in (a, b):
                bot.expect_ok(await bot.command("leave", {}), "leave")
                bot.client.connection_id = bot.client.party = bot.client.token = None
            del room_no
    finally:
        for bot in (a, b):
            with contextlib.suppress(Exception):
                await bot.client.close()
    return a, b, runs


async def kill_loop(
    srv: ServerProcess, rng: random.Random, kills: int, first: float, gap: tuple[float, float]
) -> int:
    """SIGKILL the server at random moments and start it again on the same port and file."""
    done = 0
    await asyncio.sleep(first * rng.random() + 0.5)
    for _ in range(kills):
        await asyncio.to_thread(srv.kill)
        done += 1
        await asyncio.sleep(rng.uniform(0.0, 0.4))
        await asyncio.to_thread(srv.start)
        await asyncio.sleep(rng.uniform(*gap))
    return done


async def run_python(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        cwd=str(ROOT),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


BATCH_VERIFY = """
import sys
from settlement.__main__ import main
keys, files = sys.argv[1], sys.argv[2:]
failed = 0
for f in files:
    code = main(["verify", f, "--key", keys])
    print("EXIT", code, f, flush=True)
    failed += code != 0
sys.exit(1 if failed else 0)
"""


async def verify_receipts(
    folder: Path, settled: list[RoomRun], keys: Path, *, cli_sample: int
) -> list[str]:
    """Every saved receipt through the `verify` command's entry point (one interpreter for
    all of them), and a sample through `python -m settlement verify` as separate processes."""
    faults: list[str] = []
    paths = []
    for i, run in enumerate(settled):
        path = folder / f"receipt-{i}.json"
        path.write_text(json.dumps(run.receipt, ensure_ascii=False))
        paths.append(path)
    if paths:
        code, out = await run_python("-c", BATCH_VERIFY, str(keys), *map(str, paths))
        ok_lines = [line for line in out.splitlines() if line.startswith("EXIT 0 ")]
        if code != 0 or len(ok_lines) != len(paths) or out.count("signature valid") != len(paths):
            faults.append(f"batch verify exited {code}: {out[-2000:]}")
    sample = random.Random(len(paths)).sample(paths, min(cli_sample, len(paths)))
    sem = asyncio.Semaphore(2)

    async def one(path: Path) -> None:
        async with sem:
            code, out = await run_python(
                "-m", "settlement", "verify", str(path), "--key", str(keys)
            )
        if code != 0 or "signature valid" not in out:
            faults.append(f"{path.name}: verify exited {code}: {out.strip()}")

    await asyncio.gather(*(one(p) for p in sample))
    return faults


def check_against_store(
    srv: ServerProcess, bots: list[Bot], runs: list[RoomRun]
) -> tuple[list[str], Counter[str]]:
    """Every acked command in the store exactly once; nothing twice; chains intact."""
    anomalies: list[str] = []
    dump = read_store(srv.db_path)
    acked: Counter[str] = Counter()
    per_room: dict[str, Counter[str]] = {}
    amounts: dict[str, list[str]] = {}
    seat_rows: dict[str, list[dict[str, Any]]] = {}
    for (scope_, request_id), row in dump.idempotency.items():
        if scope_.startswith("seat:"):
            seat_rows.setdefault(request_id, []).append(row)
    for bot in bots:
        anomalies.extend(bot.anomalies)
        for entry in bot.log:
            acked[entry.event] += 1
            if not entry.ack.get("ok") or entry.event in ("history", "receipt", "resume"):
                continue
            if entry.event == "create":
                cid = entry.ack["connection_id"]
                scope = "server"
            elif entry.event == "join":
                cid = entry.ack["connection_id"]
                scope = f"conn:{cid}"
            else:
                cid = entry.ack["state"]["connection_id"] if "state" in entry.ack else None
                scope = None
            if scope is None:
                rows = seat_rows.get(str(entry.request_id), [])
            else:
                row = dump.idempotency.get((scope, str(entry.request_id)))
                rows = [row] if row else []
            if len(rows) != 1:
                anomalies.append(f"{entry.event} {entry.request_id}: {len(rows)} idempotency rows")
                continue
            stored_ack = dict(rows[0]["ack"])
            received = {k: v for k, v in entry.ack.items() if k != "token"}
            stored_ack.pop("token", None)
            if stored_ack != received:
                anomalies.append(f"{entry.event} {entry.request_id}: stored ack differs")
            cid = cid or rows[0]["connection_id"]
            per_room.setdefault(cid, Counter())[
                entry.event + ":" + str(entry.payload.get("decision", ""))
            ] += 1
            if entry.event == "propose":
                amounts.setdefault(cid, []).append(entry.ack["state"]["offer"]["amount"])
    for cid, counts in per_room.items():
        events = dump.events.get(cid, [])
        fault = ledger.verify_chain(events)
        if fault:
            anomalies.append(f"{cid}: chain: {fault}")
        types = Counter(e["type"] for e in events)
        expected = {
            "created": counts["create:"],
            "joined": counts["join:"],
            "proposed": counts["propose:"],
            "disputed": counts["respond:dispute"],
            "accepted": counts["respond:accept"],
            "left": counts["leave:"],
        }
        for kind, n in expected.items():
            if types[kind] != n:
                anomalies.append(f"{cid}: {types[kind]} {kind} events for {n} acked commands")
        stored_amounts = [e["amount"] for e in events if e["type"] == "proposed"]
        if sorted(stored_amounts) != sorted(amounts.get(cid, [])):
            anomalies.append(f"{cid}: proposals {stored_amounts} != acked {amounts.get(cid)}")
        if len(set(stored_amounts)) != len(stored_amounts):
            anomalies.append(f"{cid}: a proposal was applied twice")
        versions = [e["version"] for e in events if e["type"] == "proposed"]
        if versions != list(range(1, len(versions) + 1)):
            anomalies.append(f"{cid}: versions {versions}")
    # rooms nobody acked must not exist (a create is acked or retried to its ack)
    for cid in dump.rooms:
        if cid not in per_room:
            anomalies.append(f"{cid}: a room no bot was told about")
    for run in runs:
        if run.settled:
            if run.cid is None or dump.rooms.get(run.cid, ("", "", 0))[1] != "settled":
                anomalies.append(f"{run.cid}: settled by ack, not in the store")
            elif run.receipt is None:
                anomalies.append(f"{run.cid}: no receipt")
            else:
                events = dump.events[run.cid]
                accepted = [e for e in events if e["type"] == "accepted"]
                if run.receipt["receipt_id"] != accepted[0]["hash"]:
                    anomalies.append(f"{run.cid}: receipt_id is not the accepted event's hash")
                if run.receipt["events"] != events[: len(run.receipt["events"])]:
                    anomalies.append(f"{run.cid}: receipt events differ from the store")
    return anomalies, acked


async def crash_run(
    tmp_path: Path,
    *,
    seed: int,
    pairs: int,
    rooms: int,
    kills: int,
    budget: float,
    cli_sample: int,
    think: float,
) -> dict[str, Any]:
    srv = ServerProcess(tmp_path, extra_args=["--rate", "2000", "--burst", "2000"])
    srv.start()
    rng = random.Random(seed)
    bot_rngs = [random.Random(rng.random()) for _ in range(pairs)]
    stop_at = time.monotonic() + budget
    try:
        killer = asyncio.create_task(
            kill_loop(srv, random.Random(rng.random()), kills, 2.0, (1.0, 3.0))
        )
        results = await asyncio.gather(
            *(settle_rooms(srv.url, i, rooms, bot_rngs[i], stop_at, think) for i in range(pairs))
        )
        kills_done = await killer
        async with aiohttp.ClientSession() as http, http.get(srv.url + "/api/keys") as r:
            keys_doc = await r.json()
    finally:
        srv.stop()
    bots = [bot for a, b, _ in results for bot in (a, b)]
    runs = [run for _, _, rs in results for run in rs]
    anomalies, acked = check_against_store(srv, bots, runs)
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps(keys_doc))
    settled = [run for run in runs if run.settled and run.receipt is not None]
    anomalies.extend(await verify_receipts(tmp_path, settled, keys, cli_sample=cli_sample))
    errors = log_errors(srv.log())
    anomalies.extend(f"server log: {line[:200]}" for line in errors[:20])
    figures = {
        "seed": seed,
        "commands_acked": sum(acked.values()),
        "acked_by_event": dict(acked),
        "rooms": len(runs),
        "rooms_settled": len(settled),
        "receipts_verified": len(settled),
        "receipts_verified_by_separate_cli_process": min(cli_sample, len(settled)),
        "kills_survived": kills_done,
        "retries": sum(bot.retries for bot in bots),
        "replays_after_retry": sum(e.replayed_after_retry for bot in bots for e in bot.log),
        "manual_resumes": sum(bot.reseated for bot in bots),
        "leaves_inferred_after_lost_ack": sum(bot.inferred_leaves for bot in bots),
        "anomalies": len(anomalies),
    }
    print("crash run:", json.dumps(figures))
    for line in anomalies[:50]:
        print("ANOMALY", line)
    return figures


SEED = int(os.environ.get("FAULT_SEED", "20261125"))


async def test_crash_quick(tmp_path: Path) -> None:
    figures = await crash_run(
        tmp_path, seed=SEED, pairs=6, rooms=1000, kills=4, budget=16, cli_sample=8, think=0.05
    )
    assert figures["kills_survived"] == 4
    assert figures["rooms_settled"] >= 6
    assert figures["replays_after_retry"] >= 1 or figures["retries"] >= 1
    assert figures["anomalies"] == 0


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_crash_long(tmp_path: Path) -> None:
    figures = await crash_run(
        tmp_path,
        seed=SEED + 1,
        pairs=24,
        rooms=100_000,
        kills=40,
        budget=170,
        cli_sample=40,
        think=0.05,
    )
    assert figures["kills_survived"] == 40
    assert figures["rooms_settled"] >= 100
    assert figures["anomalies"] == 0
