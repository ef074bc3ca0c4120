"""The pure negotiation rules: examples for each rule, and properties over random sequences."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from settlement import ledger, negotiation
from settlement.negotiation import Join, Leave, Propose, Refusal, Respond, RoomState

NOW = "2026-11-25T10:00:00.000Z"


def start(party: str = "A", currency: str = "USD") -> tuple[RoomState, list[dict[str, Any]]]:
    body = negotiation.decide_create("K7QF-3MZP-XW2D", negotiation.Create(party, currency), NOW)  # type: ignore[arg-type]
    event = ledger.seal(body[0], ledger.GENESIS_HASH)
    return negotiation.apply(None, event), [event]


def step(state: RoomState, log: list[dict[str, Any]], actor: Any, command: Any) -> Any:
    """Decide; on success seal, apply and append (returning the new state), else the refusal."""
    result = negotiation.decide(state, actor, command, NOW)
    if isinstance(result, Refusal):
        return result
    for body in result:
        event = ledger.seal(body, state.last_hash)
        state = negotiation.apply(state, event)
        log.append(event)
    return state


def test_a_fresh_room_awaits_an_offer_with_the_creator_seated() -> None:
    state, log = start("B", "JPY")
    snap = state.snapshot({"B": True})
    assert snap["status"] == "awaiting_offer"
    assert snap["seq"] == 1
    assert snap["parties"] == {
        "A": {"seated": False, "online": False, "key_id": None},
        "B": {"seated": True, "online": True, "key_id": None},
    }
    assert snap["offer"] is None and snap["last_response"] is None and snap["settlement"] is None
    assert log[0]["type"] == "created" and log[0]["currency"] == "JPY"


def test_a_may_propose_before_b_joins_and_versions_rise() -> None:
    state, log = start()
    state = step(state, log, "A", Propose("10"))
    state = step(state, log, "A", Propose("11.5"))
    assert state.offer == {
        "amount": "11.50",
        "version": 2,
        "proposed_at": NOW,
        "hash": log[-1]["hash"],
    }
    assert state.status == "offer_pending"


def test_stale_answer_is_refused_and_changes_nothing() -> None:
    state, log = start()
    state = step(state, log, "B", Join(None))
    state = step(state, log, "A", Propose("100"))
    state = step(state, log, "A", Propose("90"))
    for version in (1, 3):
        refusal = step(state, log, "B", Respond("accept", version, None))
        assert refusal.code == "stale_offer"
        assert "90.00" in refusal.message
    assert state.status == "offer_pending" and len(log) == 4


def test_after_a_dispute_b_cannot_answer_until_a_new_version() -> None:
    state, log = start()
    state = step(state, log, "B", Join(None))
    state = step(state, log, "A", Propose("100"))
    state = step(state, log, "B", Respond("dispute", 1, "too high"))
    assert state.status == "disputed"
    assert state.last_response == {
        "decision": "dispute",
        "version": 1,
        "reason": "too high",
        "at": NOW,
    }
    assert step(state, log, "B", Respond("accept", 1, None)).code == "already_responded"
    state = step(state, log, "A", Propose("80"))
    state = step(state, log, "B", Respond("accept", 2, None))
    assert state.status == "settled"
    assert state.settlement == {
        "amount": "80.00",
        "currency": "USD",
        "version": 2,
        "settled_at": NOW,
        "receipt_id": log[-1]["hash"],
    }


def test_settled_is_final_and_checked_before_values() -> None:
    state, log = start()
    state = step(state, log, "B", Join(None))
    state = step(state, log, "A", Propose("100"))
    state = step(state, log, "B", Respond("accept", 1, None))
    assert step(state, log, "A", Propose("not money")).code == "settled"
    assert step(state, log, "B", Respond("dispute", 7, None)).code == "settled"
    state = step(state, log, "A", Leave())
    assert state.status == "settled" and state.seated["A"] is False


def test_wrong_party_and_no_offer() -> None:
    state, log = start()
    state = step(state, log, "B", Join(None))
    assert step(state, log, "B", Propose("1")).code == "wrong_party"
    assert step(state, log, "A", Respond("accept", 1, None)).code == "wrong_party"
    assert step(state, log, "B", Respond("accept", 1, None)).code == "no_offer"


def test_join_takes_the_free_seat_and_refuses_taken_or_full() -> None:
    state, log = start("A")
    assert step(state, log, None, Join("A")).code == "seat_taken"
    state = step(state, log, None, Join(None))
    assert log[-1]["party"] == "B"
    assert step(state, log, None, Join("B")).code == "room_full"
    assert step(state, log, None, Join(None)).code == "room_full"
    state = step(state, log, "A", Leave())
    state = step(state, log, None, Join(None))
    assert [e["type"] for e in log] == ["created", "joined", "left", "joined"]
    assert log[-1]["party"] == "A"


# -- properties -------------------------------------------------------------

amounts = st.one_of(
    st.decimals(min_value=0, max_value=10**6, places=2, allow_nan=False).map(str),
    st.sampled_from(["0", "-1", "1e3", "1.234", "abc", "", "5."]),
    st.integers(),
)
commands = st.one_of(
    st.tuples(st.just("A"), st.builds(Propose, amounts)),
    st.tuples(
        st.just("B"),
        st.builds(
            Respond,
            st.sampled_from(["accept", "dispute"]),
            st.integers(min_value=0, max_value=6),
            st.none(),
        ),
    ),
    st.tuples(st.sampled_from(["A", "B"]), st.just(Leave())),
    st.tuples(st.none(), st.builds(Join, st.sampled_from([None, "A", "B"]))),
    st.tuples(st.sampled_from(["A", "B"]), st.builds(Propose, amounts)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(commands, max_size=40))
def test_random_sequences_keep_every_promise(sequence: list[tuple[Any, Any]]) -> None:
    state, log = start()
    answered: dict[int, str] = {}  # version -> amount B was shown when answering
    for actor, command in sequence:
        if actor is not None and not state.seated[actor]:
            continue  # the shell refuses unseated sockets before the rules run
        before = state
        result = step(state, log, actor, command)
        if isinstance(result, Refusal):
            assert result.code and result.message
            assert len(log) == before.seq  # a refusal appends nothing
            continue
        state = result
        if isinstance(command, Respond):
            assert before.offer is not None and command.version == before.offer["version"]
            answered[command.version] = before.offer["amount"]
        if before.status == "settled":
            assert state.settlement == before.settlement  # final
    # seq has no gaps and the chain verifies
    assert [e["seq"] for e in log] == list(range(1, len(log) + 1))
    assert ledger.verify_chain(log) is None
    assert negotiation.fold(log) == state
    if state.settlement is not None:
        # never a settlement at an amount B did not answer
        assert answered[state.settlement["version"]] == state.settlement["amount"]
        receipt = ledger.build_receipt(log)
        assert ledger.verify_receipt(receipt) is None
