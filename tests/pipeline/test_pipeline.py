"""The command pipeline in process: every branch of `pipeline.Pipeline` in milliseconds.

The subprocess suites (tests/protocol, tests/faults) prove the same promises
through real sockets; these prove the branches that a real process makes
hard to reach on purpose: a stale cache, a lost race, a seat left on another
node, a store that stops answering.
"""

from __future__ import annotations

import base64

import orjson

from settlement import ledger
from settlement.rooms import Session
from settlement.store import Unavailable

from .conftest import Cluster, Node, RecordingNodes, rid


async def seated_pair(node: Node, currency: str = "USD") -> tuple[str, Session, Session]:
    a = await node.socket()
    b = await node.socket()
    created = await node.call(a, "create", party="A", currency=currency)
    assert created["ok"], created
    joined = await node.call(b, "join", connection_id=created["connection_id"])
    assert joined["ok"] and joined["party"] == "B", joined
    return created["connection_id"], a, b


async def offer_moved_on_another_node(
    cluster: Cluster,
) -> tuple[Node, Node, str, Session, Session, Session]:
    """Node one caches the room at version 1; a socket of seat A on node two
    (no message queue between them) then moves the offer to version 2."""
    one, two = cluster.node(), cluster.node()
    cid, a, b = await seated_pair(one)
    await one.call(a, "propose", amount="5")
    a2 = await two.socket()
    resumed = await two.call(a2, "resume", connection_id=cid, token=one.token(a))
    assert resumed["ok"], resumed
    assert (await two.call(a2, "propose", amount="7"))["version"] == 2
    return one, two, cid, a, b, a2


async def test_the_path_of_one_propose_commits_then_tells(node: Node) -> None:
    cid, a, b = await seated_pair(node)
    before = node.store.data.commits
    ack = await node.call(a, "propose", amount="0012.5")
    assert ack["ok"] and ack["version"] == 1
    assert ack["state"]["offer"]["amount"] == "12.50"
    assert node.store.data.commits == before + 1
    # B heard of it, and only after the commit that made it durable.
    told = [m for m in node.pub.sent if m["event"] == "state" and b.sid in m["to"]]
    assert told[-1]["data"] == ack["state"]
    assert told[-1]["commits"] == before + 1
    room = await node.store.load_room(cid)
    assert room is not None and room.events[-1]["type"] == "proposed"


async def test_accept_settles_and_the_receipt_verifies(node: Node) -> None:
    cid, a, b = await seated_pair(node, "JPY")
    offer = await node.call(a, "propose", amount="1250")
    accepted = await node.call(b, "respond", decision="accept", version=offer["version"])
    assert accepted["ok"] and accepted["state"]["status"] == "settled"
    receipt = (await node.call(a, "receipt"))["receipt"]
    assert receipt["amount"] == "1250" and receipt["currency"] == "JPY"
    key = base64.b64decode(node.service.signer.public_key_b64)
    assert ledger.verify_receipt(receipt, {node.service.signer.key_id: key}) is None
    again = await node.call(b, "propose", amount="1")
    assert again["error"]["code"] == "wrong_party"
    assert (await node.call(a, "propose", amount="1"))["error"]["code"] == "settled"


async def test_a_repeat_returns_the_original_ack_and_changes_nothing(node: Node) -> None:
    cid, a, b = await seated_pair(node)
    key = rid()
    first = await node.call(a, "propose", amount="10", request_id=key)
    commits = node.store.data.commits
    await node.call(a, "propose", amount="11")  # the room moves on
    again = await node.call(a, "propose", amount="10", request_id=key)
    assert orjson.dumps(again) == orjson.dumps(first)
    assert node.store.data.commits == commits + 1  # only the other proposal
    mismatch = await node.call(a, "propose", amount="12", request_id=key)
    assert mismatch["error"]["code"] == "idempotency_mismatch"
    assert mismatch["state"]["offer"]["version"] == 2


async def test_a_replayed_create_seats_a_new_socket_with_the_same_token(node: Node) -> None:
    first_socket = await node.socket()
    key = rid()
    created = await node.call(first_socket, "create", party="A", request_id=key)
    other = await node.socket()
    again = await node.call(other, "create", party="A", request_id=key)
    assert again == created
    assert other.seat == (created["connection_id"], "A")
    assert len(node.store.rooms) == 1
    # A refused create (already seated) still answers a repeat with its ack.
    repeat = await node.call(other, "create", party="A", request_id=key)
    assert repeat == created


async def test_a_commit_on_a_stale_cache_conflicts_and_is_decided_again(
    cluster: Cluster,
) -> None:
    one, two = cluster.node(), cluster.node()
    a = await one.socket()
    created = await one.call(a, "create", party="A")
    cid = created["connection_id"]
    await one.call(a, "propose", amount="5")  # node one caches the room at seq 2
    b = await two.socket()
    assert (await two.call(b, "join", connection_id=cid))["ok"]  # seq 3, unknown to node one
    ack = await one.call(a, "propose", amount="6")
    assert ack["ok"] and ack["version"] == 2, ack
    room = await one.store.load_room(cid)
    assert room is not None and [e["seq"] for e in room.events] == [1, 2, 3, 4]
    assert ack["state"]["parties"]["B"]["seated"] is True  # decided on fresh state


async def test_a_refusal_on_a_stale_cache_is_checked_again_on_fresh_state(
    cluster: Cluster,
) -> None:
    one, two, cid, a, b, a2 = await offer_moved_on_another_node(cluster)
    # Node one's cache still says version 1: answering 2 is only stale there.
    accepted = await one.call(b, "respond", decision="accept", version=2)
    assert accepted["ok"] and accepted["state"]["settlement"]["amount"] == "7.00", accepted


async def test_a_request_committed_by_another_node_is_replayed_not_refused(
    cluster: Cluster,
) -> None:
    one, two, cid, a, b, a2 = await offer_moved_on_another_node(cluster)
    b2 = await two.socket()
    assert (await two.call(b2, "resume", connection_id=cid, token=one.token(b)))["ok"]
    key = rid()
    there = await two.call(b2, "respond", decision="accept", version=2, request_id=key)
    assert there["state"]["settlement"]["amount"] == "7.00"
    assert there["ok"]
    # The same answer, retried through node one whose cache is at version 1.
    here = await one.call(b, "respond", decision="accept", version=2, request_id=key)
    assert orjson.dumps(here) == orjson.dumps(there)
    room = await one.store.load_room(cid)
    assert room is not None and [e["type"] for e in room.events].count("accepted") == 1


async def test_a_seat_left_on_another_node_unseats_this_nodes_socket(cluster: Cluster) -> None:
    one, two = cluster.node(), cluster.node()
    cid, a, b = await seated_pair(one)
    a2 = await two.socket()
    assert (await two.call(a2, "resume", connection_id=cid, token=one.token(a)))["ok"]
    assert await two.call(a2, "leave") == {"ok": True}
    refused = await one.call(a, "propose", amount="5")
    assert refused["error"] == {"code": "not_seated", "message": "This seat was left; join again."}
    assert a.seat is None
    assert "state" not in refused  # no longer seated


async def test_the_reconciler_unseats_a_seat_left_elsewhere_and_tells_it(
    cluster: Cluster,
) -> None:
    one, two = cluster.node(), cluster.node()
    cid, a, b = await seated_pair(one)
    a2 = await two.socket()
    assert (await two.call(a2, "resume", connection_id=cid, token=one.token(a)))["ok"]
    await two.call(a2, "leave")
    await one.service.unseat(cid, "A")  # what the bus delivers to node one
    assert a.seat is None
    last = one.pub.received(a.sid)[-1]
    assert last["parties"]["A"]["seated"] is False


async def test_a_cluster_hears_of_every_commit_and_every_leave() -> None:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        node = Cluster(Path(tmp)).node(RecordingNodes)
        cid, a, b = await seated_pair(node)
        await node.call(a, "propose", amount="1")
        await node.call(b, "leave")
        published = node.service.nodes.published  # type: ignore[attr-defined]
        assert [m["t"] for m in published] == ["changed", "changed", "changed", "unseat"]
        assert [m.get("seq") for m in published[:3]] == [2, 3, 4]
        assert published[3] == {"t": "unseat", "cid": cid, "party": "B"}


async def test_leave_unseats_every_socket_of_the_seat_and_tells_each_once(node: Node) -> None:
    cid, a, b = await seated_pair(node)
    b2 = await node.socket()
    assert (await node.call(b2, "resume", connection_id=cid, token=node.token(b)))["ok"]
    mark = len(node.pub.sent)
    assert await node.call(b, "leave") == {"ok": True}
    assert b.seat is None and b2.seat is None
    for s in (b, b2):
        own = [m for m in node.pub.sent[mark:] if m["room"] == s.sid]
        assert len(own) == 1 and own[0]["data"]["parties"]["B"]["seated"] is False
    assert (await node.call(b2, "history"))["error"]["code"] == "not_seated"


async def test_a_store_outage_answers_unavailable_then_the_retry_applies_once(
    node: Node,
) -> None:
    cid, a, b = await seated_pair(node)
    key = rid()
    node.store.down = True
    down = await node.call(a, "propose", amount="3", request_id=key)
    assert down["error"]["code"] == "unavailable"
    assert down["state"]["offer"] is None  # the cached room: nothing changed
    node.store.down = False
    up = await node.call(a, "propose", amount="3", request_id=key)
    again = await node.call(a, "propose", amount="3", request_id=key)
    assert up["ok"] and up == again
    room = await node.store.load_room(cid)
    assert room is not None and [e["type"] for e in room.events].count("proposed") == 1


async def test_an_unexpected_failure_is_an_error_ack_not_an_exception(node: Node) -> None:
    cid, a, b = await seated_pair(node)

    async def broken(*_: object) -> None:
        raise RuntimeError("a bug")

    node.store.commit = broken  # type: ignore[method-assign]
    ack = await node.call(a, "propose", amount="3")
    assert ack["error"]["code"] == "unavailable"
    assert "retry with the same request_id" in ack["error"]["message"]
    assert ack["state"]["seq"] == 2


async def test_the_order_of_checks_holds_in_process(node: Node) -> None:
    s = await node.socket()
    assert (await node.call(s, "propose", amount=1))["error"]["code"] == "not_seated"
    assert (await node.call(s, "propose", amount="1", x=1))["error"]["code"] == "bad_request"
    assert (await node.call(s, "nope"))["error"]["code"] == "bad_request"
    cid, a, b = await seated_pair(node)
    assert (await node.call(a, "join", connection_id=cid))["error"]["code"] == "already_seated"
    assert (await node.call(b, "propose", amount="x"))["error"]["code"] == "wrong_party"
    assert (await node.call(a, "propose", amount="1.001"))["error"]["code"] == "invalid_amount"
    no_offer = await node.call(b, "respond", decision="accept", version=1)
    assert no_offer["error"]["code"] == "no_offer" and no_offer["state"]["seq"] == 2
    bad = await node.call(await node.socket(), "create", party="A", currency="XAU")
    assert bad["error"]["code"] == "invalid_currency"


async def test_a_store_outage_at_connect_is_an_error_event(node: Node) -> None:
    cid, a, b = await seated_pair(node)
    node.store.down = True
    s = await node.socket(auth={"connection_id": cid, "token": node.token(a)})
    assert s.seat is None
    assert node.pub.received(s.sid, "error")[-1]["code"] == "unavailable"
    node.store.down = False
    s2 = await node.socket(auth={"connection_id": cid, "token": node.token(a)})
    assert s2.seat == (cid, "A")


async def test_reads_raise_unavailable_for_the_http_side(node: Node) -> None:
    cid, a, b = await seated_pair(node)
    node.store.down = True
    try:
        await node.service.http_receipt(cid, "token")
    except Unavailable:
        pass
    else:
        raise AssertionError("the receipt route must hear that the store is down")
    node.store.down = False
    status, body = await node.service.http_receipt(cid, "token")
    assert status == 401 and body["error"]["code"] == "bad_token"
