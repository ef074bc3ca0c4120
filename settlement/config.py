"""Settings from command-line flags and `SETTLEMENT_*` environment variables."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from . import webhooks


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
    webhook_urls: tuple[str, ...] = ()  # the operator's endpoints; none: no webhooks
    webhook_secret: str | None = None  # `whsec_...`; None: <key dir>/webhook.secret
    webhook_retry_base: float = 1.0  # seconds: the first wait after a failed attempt
    webhook_retry_for: float = 72 * 3600.0  # seconds from a message's first attempt
    # Seconds a node holds a message it is delivering: above the 10 s attempt, and
    # with the 1 s poll below the 30 s within which a dead node's work is taken over.
    webhook_lease: float = 20.0

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
    p.add_argument(
        "--webhook-url",
        action="append",
        default=None,
        help="an endpoint for webhooks (repeatable; SETTLEMENT_WEBHOOK_URL, space-separated)",
    )
    p.add_argument("--webhook-secret", default=env.get("SETTLEMENT_WEBHOOK_SECRET") or None)

    def number(flag: str, kind: type, default: float) -> None:
        """A numeric flag whose default comes from SETTLEMENT_<FLAG> or the Settings default."""
        variable = "SETTLEMENT_" + flag.removeprefix("--").replace("-", "_").upper()
        p.add_argument(flag, type=kind, default=kind(env.get(variable, default)))

    number("--guess-burst", int, d.guess_burst)
    number("--guess-rate", float, d.guess_rate)
    number("--db-pool-size", int, d.db_pool_size)
    number("--ping-interval", float, d.ping_interval)
    number("--ping-timeout", float, d.ping_timeout)
    number("--webhook-retry-base", float, d.webhook_retry_base)
    number("--webhook-retry-for", float, d.webhook_retry_for)
    p.add_argument(
        "--trust-proxy",
        action="store_true",
        default=env.get("SETTLEMENT_TRUST_PROXY", "") not in ("", "0", "false"),
    )
    a = p.parse_args(argv)
    if a.ping_interval <= 0 or a.ping_timeout <= 0:
        p.error("--ping-interval and --ping-timeout must be positive")
    urls = a.webhook_url if a.webhook_url is not None else env.get("SETTLEMENT_WEBHOOK_URL", "")
    urls = [u for item in ([urls] if isinstance(urls, str) else urls) for u in item.split()]
    try:
        for url in urls:
            webhooks.check_url(url)
        if a.webhook_secret is not None:
            webhooks.parse_secret(a.webhook_secret)
    except ValueError as exc:
        p.error(str(exc))
    if not a.webhook_retry_base > 0 or not a.webhook_retry_for >= 0:
        p.error("--webhook-retry-base must be positive and --webhook-retry-for not negative")
    lease = float(env.get("SETTLEMENT_WEBHOOK_LEASE", d.webhook_lease))
    if not 10 < lease <= 28:
        p.error("SETTLEMENT_WEBHOOK_LEASE must be above 10 (an attempt) and at most 28 seconds")
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
        webhook_urls=tuple(dict.fromkeys(urls)),  # an endpoint named twice gets one message
        webhook_secret=a.webhook_secret,
        webhook_retry_base=a.webhook_retry_base,
        webhook_retry_for=a.webhook_retry_for,
        webhook_lease=lease,
    )
