"""resume (event and connect-time auth), bad tokens, presence on reconnect."""

from __future__ import annotations

import asyncio

import pytest

from .bots import assert_error, assert_ok, assert_state_shape, rid

RESUME_ACK_KEYS = {"ok", "connection_id", "party", "state"}


async def test_resume_event_seats_socket_with_exact_ack(shared_server, bots):
    a = await bots(shared_server)
    created = await a.create("A")
    a2 = await bots(shared_server)
    ack = await a2.call(
        "resume", {"connection_id": created["connection_id"], "token": created["token"]}
    )
    assert_ok(ack, RESUME_ACK_KEYS)
    assert ack["connection_id"] == created["connection_id"]
    assert ack["party"] == "A"
    assert ack["state"]["seq"] == 1
    # seated: a seat-only command now works
    assert_ok(await a2.history())


async def test_resume_is_not_an_event_in_history(shared_server, bots):
    a = await bots(shared_server)
    created = await a.create("A")
    a2 = await bots(shared_server)
    await a2.resume(created["connection_id"], created["token"])
    events = await a2.all_events()
    assert [e["type"] for e in events] == ["created"]


async def test_resume_accepts_lower_case_id_without_hyphens(shared_server, bots):
    a = await bots(shared_server)
    created = await a.create("A")
    a2 = await bots(shared_server)
    ack = await a2.resume(created["connection_id"].replace("-", "").lower(), created["token"])
    assert ack["connection_id"] == created["connection_id"]


async def test_resume_wrong_token_is_bad_token_without_state(shared_server, bots):
    a = await bots(shared_server)
    created = await a.create("A")
    x = await bots(shared_server)
    assert_error(
        await x.call(
            "resume", {"connection_id": created["connection_id"], "token": created["token"] + "x"}
        ),
        "bad_token",
        seated=False,
    )
    # still unseated
    assert_error(await x.history(), "not_seated", seated=False)


async def test_resume_with_other_rooms_token_is_bad_token(shared_server, bots):
    a = await bots(shared_server)
    r1 = await a.create("A")
    b = await bots(shared_server)
    r2 = await b.create("A")
    x = await bots(shared_server)
    assert_error(
        await x.call("resume", {"connection_id": r1["connection_id"], "token": r2["token"]}),
        "bad_token",
        seated=False,
    )


@pytest.mark.parametrize("cid", ["", "nope", "0000-0000-0000", "x" * 100])
async def test_resume_unknown_room_is_not_found(shared_server, bots, cid):
    x = await bots(shared_server)
    assert_error(
        await x.call("resume", {"connection_id": cid, "token": "abc"}), "not_found", seated=False
    )


async def test_resume_missing_token_is_bad_request(shared_server, bots):
    a = await bots(shared_server)
    created = await a.create("A")
    x = await bots(shared_server)
    assert_error(
        await x.call("resume", {"connection_id": created["connection_id"]}),
        "bad_request",
        seated=False,
    )
    assert_error(
        await x.call("resume", {"connection_id": created["connection_id"], "token": 5}),
        "bad_request",
        seated=False,
    )


async def test_resume_while_seated_is_already_seated(shared_server, bots):
    a = await bots(shared_server)
    created = await a.create("A")
    assert_error(
        await a.call(
            "resume", {"connection_id": created["connection_id"], "token": created["token"]}
        ),
        "already_seated",
        seated=True,
    )


async def test_connect_auth_resumes_seat_and_gets_state(shared_server, bots):
    a, b = await bots.pair(shared_server)
    cid, token = a.connection_id, a.token
    await a.close()
    # B sees A go offline
    await b.wait_for("state", lambda s: s["parties"]["A"]["online"] is False)
    a2 = await bots(shared_server, auth={"connection_id": cid, "token": token})
    snap = await a2.wait_for("state", lambda s: s["parties"]["A"]["online"] is True)
    assert_state_shape(snap)
    assert snap["connection_id"] == cid
    assert snap["seq"] == 2
    assert a2.errors == []
    # seated as A: propose works
    assert_ok(await a2.propose("10"))
    await b.wait_for("state", lambda s: s["parties"]["A"]["online"] is True)


async def test_connect_auth_accepts_lower_case_id(shared_server, bots):
    a = await bots(shared_server)
    created = await a.create("A")
    a2 = await bots(
        shared_server,
        auth={"connection_id": created["connection_id"].lower(), "token": created["token"]},
    )
    assert_ok(await a2.history())
    assert a2.errors == []


async def test_connect_auth_wrong_token_gives_bad_token_error_event_and_stays_connected(
    shared_server, bots
):
    a = await bots(shared_server)
    created = await a.create("A")
    x = await bots(
        shared_server, auth={"connection_id": created["connection_id"], "token": "wrong"}
    )
    err = await x.wait_for("error", lambda e: True)
    assert err["code"] == "bad_token"
    assert set(err) == {"code", "message"} and err["message"]
    assert x.connected
    assert_error(await x.history(), "not_seated", seated=False)
    # unseated, so it can create a room of its own
    ack = await x.create("B")
    assert ack["connection_id"] != created["connection_id"]


async def test_connect_auth_token_without_connection_id_is_not_found_error_event(
    shared_server, bots
):
    x = await bots(shared_server, auth={"token": "whatever-token-value"})
    err = await x.wait_for("error", lambda e: True)
    assert err["code"] == "not_found"
    assert x.connected
    assert_error(await x.history(), "not_seated", seated=False)
    assert_ok(await x.call("create", {"party": "A", "request_id": rid()}))


async def test_connect_auth_unknown_connection_id_is_not_found_error_event(shared_server, bots):
    x = await bots(shared_server, auth={"connection_id": "0000-0000-0000", "token": "t"})
    err = await x.wait_for("error", lambda e: True)
    assert err["code"] == "not_found"
    assert x.connected


async def test_connect_with_view_json_only_gets_no_error(shared_server, bots):
    x = await bots(shared_server, auth={"view": "json"})
    await x.settle(0.2)
    assert x.errors == []
    assert_ok(await x.call("create", {"party": "A", "request_id": rid()}))
    await x.wait_state_seq(1)


async def test_html_view_gets_html_events_not_state_and_same_acks(shared_server, bots):
    x = await bots(shared_server, auth={"view": "html"})
    ack = await x.create("A")
    assert "state" in ack and ack["state"]["seq"] == 1  # acks are the same in both views
    frag = await x.wait_for("html", lambda h: True)
    assert set(frag) == {"seq", "html"}, frag
    assert isinstance(frag["seq"], int) and frag["seq"] == 1
    assert "hx-swap-oob" in frag["html"] and "id=" in frag["html"]
    b = await bots(shared_server)
    await b.join(ack["connection_id"])
    await x.wait_for("html", lambda h: h["seq"] == 2)
    await x.settle(0.2)
    assert x.states == []


async def test_html_view_escapes_dispute_reason(shared_server, bots):
    a = await bots(shared_server, auth={"view": "html"})
    cid = (await a.create("A"))["connection_id"]
    b = await bots(shared_server)
    await b.join(cid)
    assert_ok(await a.propose("5"))
    evil = "<script>alert(1)</script>"
    ack = assert_ok(await b.respond("dispute", 1, reason=evil))
    assert ack["state"]["last_response"]["reason"] == evil  # stored as given
    frag = await a.wait_for("html", lambda h: h["seq"] == ack["state"]["seq"])
    assert evil not in frag["html"]


async def test_presence_offline_and_back_online_with_equal_seq(shared_server, bots):
    a, b = await bots.pair(shared_server)
    await a.wait_state_seq(2)
    start = len(a.states)
    cid, token = b.connection_id, b.token
    await b.close()
    off = await a.wait_for("state", lambda s: s["parties"]["B"]["online"] is False, start=start)
    assert off["seq"] == 2  # presence does not raise seq
    assert off["parties"]["B"]["seated"] is True  # a dropped link is not a leave
    start = len(a.states)
    b2 = await bots(shared_server)
    await b2.resume(cid, token)
    on = await a.wait_for("state", lambda s: s["parties"]["B"]["online"] is True, start=start)
    assert on["seq"] == 2
    events = await a.all_events()
    assert [e["type"] for e in events] == ["created", "joined"]  # presence is not an event


async def test_several_sockets_on_one_seat_all_receive_updates(shared_server, bots):
    a, b = await bots.pair(shared_server)
    a2 = await bots(shared_server)
    await a2.resume(a.connection_id, a.token)
    b2 = await bots(shared_server, auth={"connection_id": b.connection_id, "token": b.token})
    assert_ok(await b2.history())  # seated by its connect-time auth
    ack = assert_ok(await a2.propose("7.5"))
    seq = ack["state"]["seq"]
    snaps = await asyncio.gather(*(x.wait_state_seq(seq) for x in (a, a2, b, b2)))
    for s in snaps:
        assert s["offer"]["amount"] == "7.50"
        assert s == ack["state"]


async def test_seat_stays_online_while_another_socket_holds_it(shared_server, bots):
    a, b = await bots.pair(shared_server)
    a2 = await bots(shared_server)
    await a2.resume(a.connection_id, a.token)
    await a2.close()
    await asyncio.sleep(0.3)
    assert_ok(await a.propose("1"))
    snap = await b.wait_state_seq(3)
    assert snap["parties"]["A"] == {"seated": True, "online": True, "key_id": None}


async def test_old_socket_disconnect_after_leave_does_not_touch_new_holder(shared_server, bots):
    a, b = await bots.pair(shared_server)
    assert await a.call("leave", {}) == {"ok": True}
    x = await bots(shared_server)
    await x.join(a.connection_id, "A")
    await b.wait_state_seq(4)
    start = len(b.states)
    await a.close()  # the former A socket drops its link
    await asyncio.sleep(0.4)
    for s in b.states[start:]:
        assert s["parties"]["A"] == {"seated": True, "online": True, "key_id": None}, s
    ack = assert_ok(await x.propose("2"))
    assert ack["state"]["parties"]["A"] == {"seated": True, "online": True, "key_id": None}


async def test_html_fragments_are_elements_with_id_and_oob_swap(shared_server, bots):
    from html.parser import HTMLParser

    class TopLevel(HTMLParser):
        VOID = {"br", "hr", "img", "input", "meta", "link", "area", "base", "col", "source", "wbr"}

        def __init__(self) -> None:
            super().__init__()
            self.depth = 0
            self.top: list[dict[str, str | None]] = []
            self.stray_text = ""

        def handle_starttag(self, tag, attrs):
            if self.depth == 0:
                self.top.append(dict(attrs))
            if tag not in self.VOID:
                self.depth += 1

        def handle_startendtag(self, tag, attrs):
            if self.depth == 0:
                self.top.append(dict(attrs))

        def handle_endtag(self, tag):
            if tag not in self.VOID:
                self.depth -= 1

        def handle_data(self, data):
            if self.depth == 0:
                self.stray_text += data.strip()

    x = await bots(shared_server, auth={"view": "html"})
    ack = await x.create("A")
    b = await bots(shared_server)
    await b.join(ack["connection_id"])
    assert_ok(await x.propose("12"))
    await x.wait_for("html", lambda h: h["seq"] == 3)
    for frag in x.htmls:
        p = TopLevel()
        p.feed(frag["html"])
        assert p.top, frag
        assert p.stray_text == "", frag
        for attrs in p.top:
            assert attrs.get("id"), attrs
            assert "hx-swap-oob" in attrs, attrs
