"""Plain HTTP routes (PROTOCOL.md "HTTP")."""

from __future__ import annotations

import aiohttp


async def _get(url: str) -> tuple[int, str, bytes]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.read()


async def test_healthz_is_exactly_status_ok(shared_server):
    import json

    status, ctype, body = await _get(shared_server.url + "/healthz")
    assert status == 200
    assert json.loads(body) == {"status": "ok"}


async def test_unknown_negotiation_page_is_404(shared_server):
    status, ctype, body = await _get(shared_server.url + "/c/0000-0000-0000")
    assert status == 404
    status, _, _ = await _get(shared_server.url + "/c/nope")
    assert status == 404


async def test_existing_negotiation_page_is_200_in_any_case(shared_server, bots):
    a = await bots(shared_server)
    cid = (await a.create("A"))["connection_id"]
    for given in (cid, cid.lower()):
        status, ctype, body = await _get(f"{shared_server.url}/c/{given}")
        assert status == 200, given
        assert "text/html" in ctype
        assert cid in body.decode()


async def test_landing_page_is_html(shared_server):
    status, ctype, body = await _get(shared_server.url + "/")
    assert status == 200
    assert "text/html" in ctype
    assert "Create connection" in body.decode()


async def test_metrics_is_prometheus_text(shared_server, bots):
    a, b = await bots.pair(shared_server)
    await a.propose("10")
    await b.respond("accept", 1)
    status, ctype, body = await _get(shared_server.url + "/metrics")
    assert status == 200
    assert ctype.startswith("text/plain"), ctype
    text = body.decode()
    assert "# TYPE" in text and "# HELP" in text
    types = {line.split()[3] for line in text.splitlines() if line.startswith("# TYPE")}
    assert "histogram" in types, types
    assert "counter" in types, types
    assert "gauge" in types, types
    assert 'le="' in text
    samples = [line for line in text.splitlines() if line and not line.startswith("#")]
    # commands by event and outcome
    assert any("propose" in line and "{" in line for line in samples), samples[:20]
