"""A small async client for bots, tests and the benchmark (python-socketio `AsyncClient`).

One method per command. Each mutating call gets a fresh `request_id` and is
retried with the *same* id when its ack is lost (timeout or dropped link), so
a retry can never apply a command twice. The client remembers its seat and
reconnects with it in `auth`, as the protocol's connect-time resume allows.

It signs by default (protocol 1.1): each seat it takes carries its Ed25519
public key, and every `propose` and `respond` carries the party's signature
of the statement. Pass `key=` (an `Ed25519PrivateKey`), or `key_file=` (a PEM
file, made with mode 0600 if missing) to keep a key; `sign=False` for a
version-1 client.
"""

from __future__ import annotations

import asyncio
import base64
import os
import uuid
from pathlib import Path
from typing import Any

import socketio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from . import consent, money

NAMESPACE = "/settlement"
STALE_PROPOSE_RETRIES = 64  # other tabs of the seat proposing at the same time


class CommandError(Exception):
    """An error ack: `code` and `message` as the server sent them, plus `state` if any."""

    def __init__(self, ack: dict[str, Any]) -> None:
        error = ack.get("error") or {}
        super().__init__(f"{error.get('code')}: {error.get('message')}")
        self.code: str = error.get("code", "")
        self.message: str = error.get("message", "")
        self.state: dict[str, Any] | None = ack.get("state")
        self.ack = ack


class SettlementClient:
    def __init__(
        self,
        url: str,
        *,
        view: str = "json",
        timeout: float = 5.0,
        retries: int = 3,
        transports: list[str] | None = None,
        sign: bool = True,
        key: Ed25519PrivateKey | None = None,
        key_file: str | Path | None = None,
    ) -> None:
        self.url = url
        self.view = view
        self.timeout = timeout
        self.retries = retries
        self.transports = transports or ["websocket"]
        self.sio = socketio.AsyncClient(reconnection=True, reconnection_delay=0.2)
        self.connection_id: str | None = None
        self.party: str | None = None
        self.token: str | None = None
        self.states: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.last_state: dict[str, Any] | None = None
        self._changed = asyncio.Condition()
        self.sio.on("state", self._on_state, namespace=NAMESPACE)
        self.sio.on("error", self._on_error, namespace=NAMESPACE)
        self.key: Ed25519PrivateKey | None = None
        if key_file is not None:
            self.key = load_or_make_key(Path(key_file))
        elif key is not None:
            self.key = key
        elif sign:
            self.key = Ed25519PrivateKey.generate()

    # -- signing (protocol 1.1) -------------------------------------------------

    @property
    def public_key(self) -> str | None:
        """Standard base64 of the raw 32-byte public key, or None when not signing."""
        if self.key is None:
            return None
        raw = self.key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return base64.b64encode(raw).decode("ascii")

    @property
    def key_id(self) -> str | None:
        return consent.key_id(self.public_key)

    def new_key(self) -> None:
        """A fresh key for the next seat (e.g. to re-join after `leave` with a new key)."""
        self.key = Ed25519PrivateKey.generate()

    def sign_statement(self, statement: dict[str, Any]) -> str:
        assert self.key is not None
        return base64.b64encode(self.key.sign(consent.statement_bytes(statement))).decode("ascii")

    def _seat_fields(self) -> dict[str, Any]:
        key = self.public_key
        return {"public_key": key} if key is not None else {}

    # -- connection -----------------------------------------------------------

    def _auth(self) -> dict[str, Any]:
        auth: dict[str, Any] = {"view": self.view}
        if self.connection_id and self.token:
            auth.update(connection_id=self.connection_id, token=self.token)
        return auth

    async def connect(self) -> SettlementClient:
        await self.sio.connect(
            self.url,
            namespaces=[NAMESPACE],
            transports=self.transports,
            auth=self._auth,
            wait_timeout=self.timeout,
        )
        return self

    async def close(self) -> None:
        await self.sio.disconnect()

    async def __aenter__(self) -> SettlementClient:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _on_state(self, state: dict[str, Any]) -> None:
        self.states.append(state)
        if self.last_state is None or state["seq"] >= self.last_state["seq"]:
            self.last_state = state
        async with self._changed:
            self._changed.notify_all()

    async def _on_error(self, error: dict[str, Any]) -> None:
        self.errors.append(error)

    async def wait_for_state(self, predicate: Any, timeout: float = 5.0) -> dict[str, Any]:  # noqa: ASYNC109
        """Wait until a received snapshot satisfies `predicate(state)`."""

        async def check() -> dict[str, Any]:
            async with self._changed:
                while True:
                    for state in reversed(self.states):
                        if predicate(state):
                            return state
                    await self._changed.wait()

        return await asyncio.wait_for(check(), timeout)

    # -- commands -------------------------------------------------------------

    async def call(self, event: str, payload: Any = None) -> dict[str, Any]:
        """Send a command and return its ack (ok or not), retrying a lost ack with the same id."""
        if payload is None:
            payload = {}
        if isinstance(payload, dict) and event not in ("history", "receipt", "resume"):
            payload = {**payload}
            payload.setdefault("request_id", uuid.uuid4().hex)
        last: Exception | None = None
        for _ in range(self.retries + 1):
            try:
                if not self.sio.connected:
                    await self.connect()
                ack: dict[str, Any] = await self.sio.call(
                    event, payload, namespace=NAMESPACE, timeout=self.timeout
                )
                return ack
            except (
                socketio.exceptions.TimeoutError,
                socketio.exceptions.BadNamespaceError,
                socketio.exceptions.ConnectionError,
            ) as exc:
                last = exc
                await asyncio.sleep(0.2)
        raise ConnectionError(f"{event}: no ack after {self.retries + 1} tries") from last

    async def _ok(self, event: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        ack = await self.call(event, payload)
        if not ack.get("ok"):
            raise CommandError(ack)
        return ack

    def _seated(self, ack: dict[str, Any]) -> dict[str, Any]:
        self.connection_id = ack["connection_id"]
        self.party = ack["party"]
        self.token = ack.get("token", self.token)
        if "state" in ack:
            self._note_state(ack["state"])
        return ack

    def _note_state(self, state: dict[str, Any]) -> None:
        if self.last_state is None or state["seq"] >= self.last_state["seq"]:
            self.last_state = state

    async def create(self, party: str = "A", currency: str | None = None) -> dict[str, Any]:
        payload: dict[str, Any] = {"party": party, **self._seat_fields()}
        if currency is not None:
            payload["currency"] = currency
        return self._seated(await self._ok("create", payload))

    async def join(self, connection_id: str, party: str | None = None) -> dict[str, Any]:
        payload: dict[str, Any] = {"connection_id": connection_id, **self._seat_fields()}
        if party is not None:
            payload["party"] = party
        return self._seated(await self._ok("join", payload))

    async def resume(self, connection_id: str, token: str) -> dict[str, Any]:
        self.token = token
        return self._seated(
            await self._ok("resume", {"connection_id": connection_id, "token": token})
        )

    async def propose(self, amount: str) -> dict[str, Any]:
        """Propose `amount`; a signing client names and signs the version it creates.

        If another tab of the seat proposed meanwhile (`stale_offer`), it signs
        the next version again: a proposal does not answer anything.
        """
        if not self._signs():
            return self._noted(await self._ok("propose", {"amount": amount}))
        state = self.last_state or {}
        for attempt in range(STALE_PROPOSE_RETRIES + 1):
            payload = self._signed_proposal(amount, state)
            ack = await self.call("propose", payload)
            if ack.get("ok"):
                return self._noted(ack)
            stale = ack["error"]["code"] == "stale_offer" and "state" in ack
            if not stale or attempt == STALE_PROPOSE_RETRIES:
                raise CommandError(ack)
            state = ack["state"]
        raise AssertionError("unreachable")

    def _signs(self) -> bool:
        """Sign unless there is no key, or the seat was taken without one (resumed)."""
        if self.key is None:
            return False
        state, party = self.last_state, self.party
        if state is None or party is None:
            return True
        return state["parties"][party].get("key_id") is not None

    def _signed_proposal(self, amount: str, state: dict[str, Any]) -> dict[str, Any]:
        offer = state.get("offer")
        version = (offer["version"] if offer else 0) + 1
        payload: dict[str, Any] = {"amount": amount, "version": version}
        currency = state.get("currency")
        try:
            normalised = money.normalise(money.parse_amount(amount, currency), currency)  # type: ignore[arg-type]
        except (money.MoneyError, TypeError):
            return payload  # the server says what is wrong with it (invalid_amount)
        statement = consent.propose_statement(
            state["connection_id"], state["currency"], normalised, version
        )
        payload["signature"] = self.sign_statement(statement)
        return payload

    async def respond(
        self, decision: str, version: int, reason: str | None = None
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {"decision": decision, "version": version}
        if reason is not None:
            payload["reason"] = reason
        if self._signs():
            offer = await self._offer(version)
            if offer is not None and self.last_state is not None:
                statement = consent.respond_statement(
                    decision,
                    self.last_state["connection_id"],
                    self.last_state["currency"],
                    offer,
                    reason,
                )
                payload["signature"] = self.sign_statement(statement)
        return self._noted(await self._ok("respond", payload))

    async def _offer(self, version: int) -> dict[str, Any] | None:
        """The offer of `version` (amount, version, hash): from the last state, else history."""
        offer = (self.last_state or {}).get("offer")
        if offer is not None and offer.get("version") == version and "hash" in offer:
            return dict(offer)
        for event in reversed(await self.history()):
            if event["type"] == "proposed" and event["version"] == version:
                return event
        return None

    def _noted(self, ack: dict[str, Any]) -> dict[str, Any]:
        if "state" in ack:
            self._note_state(ack["state"])
        return ack

    async def accept(self, version: int) -> dict[str, Any]:
        return await self.respond("accept", version)

    async def dispute(self, version: int, reason: str | None = None) -> dict[str, Any]:
        return await self.respond("dispute", version, reason)

    async def leave(self) -> dict[str, Any]:
        ack = await self._ok("leave", {})
        self.connection_id = self.party = self.token = None
        return ack

    async def history(self, after_seq: int = 0) -> list[dict[str, Any]]:
        """Every event after `after_seq`, following `more` across pages."""
        events: list[dict[str, Any]] = []
        while True:
            ack = await self._ok("history", {"after_seq": after_seq})
            events.extend(ack["events"])
            if not ack.get("more") or not ack["events"]:
                return events
            after_seq = ack["events"][-1]["seq"]

    async def receipt(self) -> dict[str, Any]:
        ack = await self._ok("receipt", {})
        receipt: dict[str, Any] = ack["receipt"]
        return receipt


def load_or_make_key(path: Path) -> Ed25519PrivateKey:
    """A party key kept in a PEM file (PKCS8, unencrypted); made with mode 0600 if missing."""
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} does not hold an Ed25519 private key")
        return key
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    return key
