"""Starting the server: command-line flags and SETTLEMENT_* environment (PROTOCOL.md "Transport")."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

import aiohttp

from .bots import Bot

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _run_until_healthy(args: list[str], env: dict[str, str], cwd: Path, port: int):
    full_env = dict(os.environ)
    for key in list(full_env):
        if key.startswith("SETTLEMENT_"):
            del full_env[key]
    full_env.update(env)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "app.py"),
        *args,
        cwd=str(cwd),
        env=full_env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            if proc.returncode is not None:
                break
            try:
                async with http.get(url + "/healthz") as resp:
                    if resp.status == 200:
                        return proc, url
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    proc.kill()
    await proc.wait()
    raise AssertionError(f"server with {args} {env} never became healthy")


async def _stop(proc) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def _create_room(url: str) -> None:
    bot = Bot(url)
    await bot.connect()
    try:
        await bot.create("A")
    finally:
        await bot.close()


async def test_environment_variables_configure_host_port_and_database(tmp_path):
    port = _free_port()
    db = tmp_path / "env.db"
    proc, url = await _run_until_healthy(
        [],
        {
            "SETTLEMENT_HOST": "127.0.0.1",
            "SETTLEMENT_PORT": str(port),
            "SETTLEMENT_DATABASE_URL": f"sqlite:///{db}",
        },
        tmp_path,
        port,
    )
    try:
        await _create_room(url)
        assert db.exists() and db.stat().st_size > 0
    finally:
        await _stop(proc)


async def test_relative_sqlite_url_is_relative_to_working_directory(tmp_path):
    port = _free_port()
    (tmp_path / "rel").mkdir()
    proc, url = await _run_until_healthy(
        ["--host", "127.0.0.1", "--port", str(port), "--database", "sqlite:///rel/here.db"],
        {},
        tmp_path,
        port,
    )
    try:
        await _create_room(url)
        assert (tmp_path / "rel" / "here.db").exists()
    finally:
        await _stop(proc)


async def test_default_database_is_settlement_db_in_working_directory(tmp_path):
    port = _free_port()
    proc, url = await _run_until_healthy(["--port", str(port)], {}, tmp_path, port)
    try:
        await _create_room(url)
        assert (tmp_path / "settlement.db").exists()
    finally:
        await _stop(proc)
