"""Prometheus metrics (prometheus-client), one registry per application."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

KNOWN_EVENTS = frozenset(
    {"create", "join", "resume", "propose", "respond", "leave", "history", "receipt"}
)


class Metrics:
    def __init__(self) -> None:
        self._counters: dict[tuple[str, str], Any] = {}
        self._histograms: dict[str, Any] = {}
        self.registry = CollectorRegistry()
        r = self.registry
        self.commands = Counter(
            "settlement_commands",
            "Commands answered, by event and outcome.",
            ["event", "outcome"],
            registry=r,
        )
        self.latency = Histogram(
            "settlement_command_seconds",
            "Time from a command's arrival to its ack.",
            ["event"],
            registry=r,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.sockets = Gauge(
            "settlement_connected_sockets",
            "Sockets connected to /settlement on this node.",
            registry=r,
        )
        self.seated = Gauge(
            "settlement_seated_sockets", "Sockets holding a seat on this node.", registry=r
        )
        self.open_rooms = Gauge(
            "settlement_open_rooms", "Connections not yet settled (from the store).", registry=r
        )
        self.rooms_created = Counter(
            "settlement_rooms_created", "Connections created on this node.", registry=r
        )
        self.settlements = Counter(
            "settlement_settlements", "Connections settled (B accepted) on this node.", registry=r
        )
        self.http_unavailable = Counter(
            "settlement_http_unavailable",
            "HTTP requests answered 503 because the store was unavailable, by route.",
            ["route"],
            registry=r,
        )
        self.webhook_deliveries = Counter(
            "settlement_webhook_deliveries",
            "Webhook attempts on this node by outcome (delivered, failed; abandoned messages).",
            ["outcome"],
            registry=r,
        )
        self._webhook_outcomes = {
            o: self.webhook_deliveries.labels(o) for o in ("delivered", "failed", "abandoned")
        }
        self.webhook_waiting = Gauge(
            "settlement_webhook_waiting", "Webhook messages waiting (from the store).", registry=r
        )
        self.webhook_oldest = Gauge(
            "settlement_webhook_oldest_waiting_seconds",
            "Age of the oldest webhook message waiting (from the store; 0 when none).",
            registry=r,
        )

    def webhook_outcome(self, outcome: str) -> None:
        self._webhook_outcomes[outcome].inc()

    def command(self, event: str, outcome: str, seconds: float) -> None:
        # Labelled children are looked up once per (event, outcome), not per command.
        counter = self._counters.get((event, outcome))
        if counter is None:
            counter = self._counters[(event, outcome)] = self.commands.labels(event, outcome)
        histogram = self._histograms.get(event)
        if histogram is None:
            histogram = self._histograms[event] = self.latency.labels(event)
        counter.inc()
        histogram.observe(seconds)
