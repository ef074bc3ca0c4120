"""Settings from command-line flags and `SETTLEMENT_*` environment variables."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    database_url: str = "sqlite:///settlement.db"
    redis_url: str | None = None
    max_amount: Decimal = Decimal("1000000000000")
    rate_per_second: float = 20.0
    rate_burst: int = 40
    max_frame_bytes: int = 64 * 1024
    key_dir: str | None = None  # where the signing key and token secret live
    guess_burst: int = 100  # failed joins/resumes per client address, then...
    guess_rate: float = 20.0  # ...this many a second
    trust_proxy: bool = False  # take the client address from X-Forwarded-For
    db_pool_size: int = 10  # PostgreSQL connections per node
    log_level: str = "INFO"
    ping_interval: float = 25.0  # Engine.IO heartbeat; a peer silent for
    ping_timeout: float = 20.0  # interval + timeout is dropped

    def keys_path(self) -> Path:
        """Beside the SQLite file by default: `<db>.keys/`."""
        if self.key_dir:
            return Path(self.key_dir)
        if self.database_url.startswith("sqlite:///"):
            return Path(self.database_url.removeprefix("sqlite:///") + ".keys")
        return Path("settlement.keys")


def parse(argv: list[str] | None = None, env: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ) if env is None else env
    d = Settings()
    p = argparse.ArgumentParser(prog="app.py", description="Run the settlement server.")
    p.add_argument("--host", default=env.get("SETTLEMENT_HOST", d.host))
    p.add_argument("--port", type=int, default=int(env.get("SETTLEMENT_PORT", d.port)))
    p.add_argument("--database", default=env.get("SETTLEMENT_DATABASE_URL", d.database_url))
    p.add_argument("--redis", default=env.get("SETTLEMENT_REDIS_URL") or None)
    p.add_argument("--max-amount", default=env.get("SETTLEMENT_MAX_AMOUNT", str(d.max_amount)))
    p.add_argument(
        "--rate", type=float, default=float(env.get("SETTLEMENT_RATE", d.rate_per_second))
    )
    p.add_argument("--burst", type=int, default=int(env.get("SETTLEMENT_BURST", d.rate_burst)))
    p.add_argument("--key-dir", default=env.get("SETTLEMENT_KEY_DIR") or None)
    p.add_argument("--log-level", default=env.get("SETTLEMENT_LOG_LEVEL", d.log_level))

    def number(flag: str, kind: type, default: float) -> None:
        """A numeric flag whose default comes from SETTLEMENT_<FLAG> or the Settings default."""
        variable = "SETTLEMENT_" + flag.removeprefix("--").replace("-", "_").upper()
        p.add_argument(flag, type=kind, default=kind(env.get(variable, default)))

    number("--guess-burst", int, d.guess_burst)
    number("--guess-rate", float, d.guess_rate)
    number("--db-pool-size", int, d.db_pool_size)
    number("--ping-interval", float, d.ping_interval)
    number("--ping-timeout", float, d.ping_timeout)
    p.add_argument(
        "--trust-proxy",
        action="store_true",
        default=env.get("SETTLEMENT_TRUST_PROXY", "") not in ("", "0", "false"),
    )
    a = p.parse_args(argv)
    if a.ping_interval <= 0 or a.ping_timeout <= 0:
        p.error("--ping-interval and --ping-timeout must be positive")
    return Settings(
        host=a.host,
        port=a.port,
        database_url=a.database,
        redis_url=a.redis,
        max_amount=Decimal(a.max_amount),
        rate_per_second=a.rate,
        rate_burst=a.burst,
        key_dir=a.key_dir,
        log_level=a.log_level.upper(),
        guess_burst=a.guess_burst,
        guess_rate=a.guess_rate,
        trust_proxy=a.trust_proxy,
        db_pool_size=a.db_pool_size,
        ping_interval=a.ping_interval,
        ping_timeout=a.ping_timeout,
    )
