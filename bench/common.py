"""What every benchmark shares: the run context, figures and the summary table."""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field

from .server import DEFAULT_THREADS, DEFAULT_WORKERS, ServerPool


@dataclass
class Figure:
    name: str
    measured: str
    target: str = "info"
    ok: bool | None = None  # None: no target, the figure is for information


@dataclass
class Context:
    engine: str
    seconds: float  # measured seconds per load run
    warmup: float
    quick: bool
    pool: ServerPool = field(default_factory=ServerPool)
    figures: list[Figure] = field(default_factory=list)
    default: tuple[int, int] = (DEFAULT_WORKERS, DEFAULT_THREADS)  # the emulator's (workers, threads)
    connections: int = 8  # batch-load connections
    replay_entries: int = 100_000  # DLQ entries the replay bench drains
    started: float = field(default_factory=time.monotonic)

    def add(self, name: str, measured: str, target: str = "info", ok: bool | None = None) -> None:
        self.figures.append(Figure(name, measured, target, ok))


def say(text: str = "") -> None:
    print(text, flush=True)


def median(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return statistics.median(values) if values else math.nan


def fmt_int(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.0f}"


def fmt_ms(value: float) -> str:
    return "n/a" if math.isnan(value) else (f"{value:.2f} ms" if value < 10 else f"{value:.1f} ms")


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True)), line]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def summary(figures: list[Figure]) -> str:
    marks = {True: "ok", False: "NOT MET", None: "-"}
    return table([[f.name, f.measured, f.target, marks[f.ok]] for f in figures],
                 ["figure", "measured", "target", "ok/not"])
