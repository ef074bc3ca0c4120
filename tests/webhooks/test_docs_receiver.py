"""The five-line receiver of docs/operations.md, run as written (its port and secret file
aside), receives and verifies a real server's webhooks."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
from pathlib import Path

from settlement.client import SettlementClient
from tests.conftest import ROOT, ServerProcess, free_port

from .receiver import secret
from .test_delivery import running, webhook_args


def documented_receiver() -> str:
    text = (ROOT / "docs" / "operations.md").read_text()
    found = re.search(r"A complete receiver in five lines.*?```python\n(.*?)```", text, re.S)
    assert found is not None
    return found.group(1)


async def test_the_documented_receiver_verifies_real_deliveries(tmp_path: Path) -> None:
    code = documented_receiver()
    assert len([line for line in code.splitlines() if not line.startswith("#")]) == 5
    port = free_port()
    key = secret()
    (tmp_path / "webhook.secret").write_text(key + "\n")
    script = tmp_path / "receiver.py"
    script.write_text(code.replace("port=9000", f"port={port}"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-u", str(script), cwd=tmp_path, stdout=asyncio.subprocess.PIPE
    )
    try:
        srv = ServerProcess(
            tmp_path, extra_args=webhook_args(f"http://127.0.0.1:{port}/settlement", key=key)
        )
        async with running(srv):
            async with SettlementClient(srv.url) as a:
                await a.create("A")
                await a.propose("10")
            assert proc.stdout is not None
            lines = []
            while len(lines) < 2:
                line = await asyncio.wait_for(proc.stdout.readline(), 15)
                if line.startswith(b"{"):
                    lines.append(line.decode())
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        await proc.wait()
    assert "'type': 'connection.created'" in lines[0]
    assert "'type': 'connection.proposed'" in lines[1]
