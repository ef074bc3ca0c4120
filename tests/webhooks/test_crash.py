"""The crash loop of tests/faults/test_crash.py with webhooks on: bots settle rooms while
the server is SIGKILLed and restarted; afterwards every stored event has reached the
receiver, none is missing, none is extra, and no webhook-id came with two bodies."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

from tests.conftest import ServerProcess
from tests.faults.helpers import read_store
from tests.faults.test_crash import SEED, kill_loop, settle_rooms

from .receiver import Receiver, secret
from .test_delivery import webhook_args


async def test_sigkill_under_load_loses_no_webhook_and_changes_no_body(tmp_path: Path) -> None:
    key = secret()
    rng = random.Random(SEED + 7)
    async with Receiver(key) as receiver:
        srv = ServerProcess(
            tmp_path,
            {"SETTLEMENT_WEBHOOK_LEASE": "11"},
            extra_args=["--rate", "2000", "--burst", "2000", *webhook_args(receiver.url, key=key)],
        )
        await asyncio.to_thread(srv.start)
        try:
            stop_at = time.monotonic() + 7
            killer = asyncio.create_task(
                kill_loop(srv, random.Random(rng.random()), 3, 1.0, (0.5, 1.5))
            )
            results = await asyncio.gather(
                *(
                    settle_rooms(srv.url, i, 1000, random.Random(rng.random()), stop_at, 0.05)
                    for i in range(4)
                )
            )
            assert await killer == 3
            dump = read_store(srv.db_path)  # every stored event (WAL readers see all commits)
            expected = {
                f"evt_{cid.replace('-', '')}_{event['seq']}": event
                for cid, events in dump.events.items()
                for event in events
            }
            # A message in flight at a kill is taken up again once its lease (11 s) ran out.
            await receiver.until(lambda: expected.keys() <= receiver.unique().keys(), timeout=30)
        finally:
            await asyncio.to_thread(srv.stop)
    rooms = [run for _, _, runs in results for run in runs]
    assert sum(run.settled for run in rooms) >= 4
    assert receiver.rejected == []
    unique = receiver.unique()
    assert set(unique) == set(expected), "a message for an event that is not stored"
    assert all(len(bodies) == 1 for bodies in receiver.bodies_by_id().values())
    for msg_id, delivery in unique.items():
        assert delivery.message["data"]["event"] == expected[msg_id]
    # In order per connection: a message's first arrival comes after its predecessor's.
    order: dict[str, list[int]] = {}
    for msg_id in unique:  # dicts keep first-arrival order
        _, compact, seq = msg_id.split("_")
        order.setdefault(compact, []).append(int(seq))
    assert all(seqs == sorted(seqs) for seqs in order.values())
    print(
        "webhook crash run:",
        {
            "events": len(expected),
            "deliveries": len(receiver.received),
            "duplicates": len(receiver.received) - len(unique),
            "rooms": len(rooms),
        },
    )
