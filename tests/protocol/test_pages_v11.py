"""Browser pages, version 1.1, as seen on the wire: what a visitor's socket is sent,
and connection ids pasted with spaces."""

from __future__ import annotations

import aiohttp

from .bots import assert_ok


async def test_a_watcher_socket_gets_no_amount_reason_or_history(shared_server, bots):
    a, b = await bots.pair(shared_server)
    cid = a.connection_id
    watcher = await bots(shared_server, auth={"view": "html", "connection_id": cid})
    assert_ok(await a.propose("4321.09"))
    assert_ok(await b.respond("dispute", 1, reason="secret reason XYZZY"))
    assert_ok(await a.propose("4000"))
    ack = assert_ok(await b.respond("accept", 2))
    await watcher.wait_for("html", lambda h: h["seq"] == ack["state"]["seq"])
    assert len(watcher.htmls) >= 4
    for frag in watcher.htmls:
        html = frag["html"]
        for secret in ("4,321", "4321", "4,000", "XYZZY", "$", "version"):
            assert secret not in html, (secret, html)
    last = watcher.htmls[-1]["html"]
    assert "Both parties agreed" in last
    assert "The history is shown only to the two parties." in last


async def test_ids_with_spaces_join_resume_and_fetch_the_receipt(shared_server, bots):
    a = await bots(shared_server)
    cid = (await a.create("A"))["connection_id"]
    spaced = "  " + cid.replace("-", " ").lower() + "\t\n"
    b = await bots(shared_server)
    ack = await b.join(spaced)
    assert ack["connection_id"] == cid
    again = await bots(shared_server)
    resumed = await again.resume("\u00a0" + cid.replace("-", " \u00a0"), b.token)
    assert resumed["connection_id"] == cid
    assert_ok(await a.propose("5"))
    assert_ok(await b.respond("accept", 1))
    url = f"{shared_server.url}/api/connections/{cid.replace('-', '%20')}%20/receipt"
    headers = {"Authorization": f"Bearer {a.token}"}
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as resp:
        assert resp.status == 200
        assert (await resp.json())["connection_id"] == cid


async def test_a_malformed_id_is_still_not_found(shared_server, bots):
    x = await bots(shared_server)
    for raw in ("", "   ", "K7QF", "K7QF-3MZP-XW2D-XXXX", "K7QF 3MZP XWU2"):
        ack = await x.call("join", {"connection_id": raw, "request_id": "r" * 22})
        assert ack["ok"] is False and ack["error"]["code"] == "not_found", (raw, ack)


async def test_a_spaced_id_in_the_page_address_is_the_same_page(shared_server, bots):
    a = await bots(shared_server)
    cid = (await a.create("A"))["connection_id"]
    async with aiohttp.ClientSession() as http:
        url = f"{shared_server.url}/c/%20{cid.replace('-', '%20').lower()}"
        async with http.get(url, allow_redirects=False) as resp:
            assert resp.status == 200
            page = await resp.text()
    assert f'data-connection-id="{cid}"' in page  # the page and its links use the canonical id
    assert 'lang="en"' in page
