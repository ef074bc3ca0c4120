"""The signature checks' worker thread (consent.Verifier): right answers, off the loop."""

from __future__ import annotations

import asyncio
import threading

import pytest

from settlement import consent

CID = "K7QF-3MZP-XW2D"


def statement(version: int, amount: str = "12.50") -> dict[str, object]:
    return consent.propose_statement(CID, "EUR", amount, version)


async def test_many_concurrent_checks_each_get_their_own_answer() -> None:
    key, other = consent.PartyKey(), consent.PartyKey()
    verifier = consent.Verifier()
    checks = []
    expected = []
    for version in range(1, 201):
        st = statement(version)
        if version % 3 == 0:
            sig, want = other.sign(st), False  # another seat's signature
        elif version % 3 == 1:
            sig, want = key.sign(statement(version, "12.51")), False  # another amount
        else:
            sig, want = key.sign(st), True
        checks.append(verifier.verifies(key.public_key, sig, st))
        expected.append(want)
    assert await asyncio.gather(*checks) == expected


async def test_checks_run_on_the_worker_thread_not_the_loop() -> None:
    key = consent.PartyKey()
    seen: list[str] = []

    class Watching(consent.Verifier):
        def _run(self) -> None:
            seen.append(threading.current_thread().name)
            super()._run()

    verifier = Watching()
    st = statement(1)
    assert await verifier.verifies(key.public_key, key.sign(st), st)
    assert seen == ["signature-checks"]
    assert threading.current_thread().name != "signature-checks"


def test_two_event_loops_share_one_verifier() -> None:
    key = consent.PartyKey()
    verifier = consent.Verifier()
    results: dict[int, list[bool]] = {}

    def loop_thread(n: int) -> None:
        async def run() -> list[bool]:
            sts = [statement(v) for v in range(1, 51)]
            return await asyncio.gather(
                *(verifier.verifies(key.public_key, key.sign(st), st) for st in sts)
            )

        results[n] = asyncio.run(run())

    threads = [threading.Thread(target=loop_thread, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == {0: [True] * 50, 1: [True] * 50}


async def test_a_cancelled_check_leaves_the_thread_answering_the_next() -> None:
    key = consent.PartyKey()
    verifier = consent.Verifier()
    st = statement(1)
    first = asyncio.ensure_future(verifier.verifies(key.public_key, key.sign(st), st))
    await asyncio.sleep(0)
    first.cancel()
    assert await verifier.verifies(key.public_key, key.sign(st), st) is True


async def test_a_fault_in_a_check_fails_that_command_instead_of_passing_it() -> None:
    key = consent.PartyKey()
    verifier = consent.Verifier()
    bad: dict[str, object] = {"amount": object()}  # not JSON: canonical_json raises
    with pytest.raises(TypeError):
        await verifier.verifies(key.public_key, key.sign(statement(1)), bad)
    st = statement(2)
    assert await verifier.verifies(key.public_key, key.sign(st), st) is True
