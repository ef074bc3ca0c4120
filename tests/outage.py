"""What the HTTP routes that read the store answer while the store is down, and after.

Shared by the PostgreSQL outage test (tests/cluster) and the SQLite lock tests
(tests/faults/test_store_outage_http.py): a page is a 503 HTML page that reloads
itself (`<meta http-equiv="refresh">`, no script), an `/api/` route a 503 JSON
error; both carry `Retry-After`; each such answer is one `http_unavailable` log
line without a traceback and one count in `settlement_http_unavailable_total`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import aiohttp

REFRESH = re.compile(r'<meta http-equiv="refresh" content="(\d+)">')
PAGE_ROUTE = "/c/{connection_id}"
RECEIPT_ROUTE = "/api/connections/{connection_id}/receipt"


@dataclass
class Answer:
    path: str
    status: int
    headers: dict[str, str]
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


async def get(
    http: aiohttp.ClientSession, base: str, path: str, token: str | None = None
) -> Answer:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.get(base + path, headers=headers, allow_redirects=False) as r:
        return Answer(path, r.status, dict(r.headers), await r.text())


def page(cid: str) -> str:
    return f"/c/{cid}"


def receipt(cid: str) -> str:
    return f"/api/connections/{cid}/receipt"


def retry_after(answer: Answer) -> int:
    value = answer.headers.get("Retry-After", "")
    assert value.isdigit() and 1 <= int(value) <= 60, (answer.path, answer.headers)
    return int(value)


def assert_unavailable_page(answer: Answer) -> None:
    """503, Retry-After, the site's look, and a page that retries by itself."""
    assert answer.status == 503, (answer.path, answer.status, answer.text[:500])
    seconds = retry_after(answer)
    assert answer.headers["Content-Type"].startswith("text/html"), answer.headers
    assert answer.headers.get("Cache-Control") == "no-store"
    assert "script-src 'self'" in answer.headers["Content-Security-Policy"]
    found = REFRESH.search(answer.text)
    assert found is not None and int(found.group(1)) == seconds, answer.text
    assert "<script" not in answer.text  # nothing to run: the browser reloads it
    assert "<h1>Briefly unavailable</h1>" in answer.text
    assert "tries again by itself" in answer.text
    assert 'href="/static/app.css"' in answer.text and 'class="brand"' in answer.text
    assert "Traceback" not in answer.text and "Unavailable" not in answer.text


def assert_unavailable_json(answer: Answer) -> None:
    assert answer.status == 503, (answer.path, answer.status, answer.text[:500])
    retry_after(answer)
    assert answer.headers["Content-Type"].startswith("application/json"), answer.headers
    body = answer.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == "unavailable"
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


def outage_lines(log: str) -> list[dict[str, Any]]:
    """The server's `http_unavailable` records (one JSON object per line)."""
    out = []
    for line in log.splitlines():
        if '"http_unavailable"' in line:
            record = json.loads(line)
            if record.get("event") == "http_unavailable":
                out.append(record)
    return out


async def unavailable_counts(http: aiohttp.ClientSession, base: str) -> dict[str, float]:
    """`settlement_http_unavailable_total` by route, from /metrics (every store route
    is there from the start, at 0)."""
    async with http.get(base + "/metrics") as r:
        assert r.status == 200
        text = await r.text()
    counts = {}
    for line in text.splitlines():
        m = re.match(r'settlement_http_unavailable_total\{route="([^"]+)"\} (\S+)$', line)
        if m:
            counts[m.group(1)] = float(m.group(2))
    assert {PAGE_ROUTE, RECEIPT_ROUTE} <= set(counts), text
    return counts
