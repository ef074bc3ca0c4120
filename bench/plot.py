"""The latency plot: propose -> B's state percentiles against offered load."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot(result: dict[str, Any], out: Path) -> tuple[Path, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    full, small = out / "latency.png", out / "latency-small.png"
    for path, size, dpi in ((full, (8, 4.8), 120), (small, (6, 3.6), 80)):
        fig, ax = plt.subplots(figsize=size)
        styles = {"service": "-", "pg": "--", "pg2": "-.", "ceiling": ":"}
        colors = {"p50_ms": "tab:blue", "p90_ms": "tab:orange", "p99_ms": "tab:red"}
        for server in styles:
            rows = sorted(
                (r for r in result["latency"] if r["server"] == server),
                key=lambda r: r["offered_per_s"],
            )
            if not rows:
                continue
            xs = [r["offered_per_s"] for r in rows]
            for key, color in colors.items():
                ax.plot(
                    xs,
                    [r[key] for r in rows],
                    styles[server],
                    marker="o",
                    markersize=3,
                    color=color,
                    label=f"{server} {key[:-3]}",
                )
        base = next(iter(result["summary"].values()))
        tp = {"service": base["service_per_s"], "ceiling": base["ceiling_per_s"]}
        tp.update({k: v["per_s"] for k, v in base.get("paths", {}).items()})
        for server, rate in tp.items():
            ax.axvline(rate, color="grey", linestyle=styles[server], linewidth=0.8)
            ax.text(
                rate,
                0.98,
                f" {server} max",
                rotation=90,
                va="top",
                fontsize=7,
                transform=ax.get_xaxis_transform(),
                color="grey",
            )
        ax.axhline(10, color="black", linewidth=0.8, linestyle="--")
        ax.text(
            0.01, 10, "10 ms target", fontsize=7, va="bottom", transform=ax.get_yaxis_transform()
        )
        ax.set_yscale("log")
        ax.set_xlabel("offered load (commands/s)")
        ax.set_ylabel("propose -> B's state (ms)")
        h = result["headline"]
        ax.set_title(
            f"settlement bench: ratio {h['ratio']}, {h['commands_per_s']:.0f} vs "
            f"{h['ceiling_per_s']:.0f} cmd/s ({result['config']['latency_pairs']} pairs)",
            fontsize=9,
        )
        ax.grid(True, which="both", linewidth=0.3)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        fig.savefig(path, dpi=dpi)
        plt.close(fig)
    return full, small
