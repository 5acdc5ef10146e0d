"""Metadata a person reads in the UI: markdown tables and embedded plots."""

import base64
import io
import re
import time

import pandas as pd


def markdown_table(frame: pd.DataFrame, digits: int = 3) -> str:
    """A DataFrame as a markdown table (numbers right-aligned, floats rounded)."""
    def cell(value) -> str:
        value = value.item() if hasattr(value, "item") else value
        if isinstance(value, float):
            return f"{value:.{digits}f}"
        if isinstance(value, int):
            return f"{value:,}"
        return str(value)

    numeric = [pd.api.types.is_numeric_dtype(frame[c]) for c in frame.columns]
    lines = [
        "| " + " | ".join(str(c) for c in frame.columns) + " |",
        "|" + "|".join("---:" if n else "---" for n in numeric) + "|",
    ]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    return "\n".join(lines)


def png_markdown(figure, alt: str) -> str:
    """A matplotlib figure embedded as a data-URI image in markdown (closes the figure)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return f"![{alt}](data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()})"


class ProgressClock:
    """When long per-gene work says how far it is: every ~10 % of the items or 30 s, and at the
    last one. ``tick()`` counts an item and returns (done, elapsed s, ETA s) when it is time."""

    def __init__(self, total: int) -> None:
        self.total, self.done = total, 0
        self.started = self.last = time.monotonic()

    def tick(self) -> tuple[int, float, float] | None:
        self.done += 1
        now = time.monotonic()
        step = max(1, self.total // 10)
        if self.done % step and self.done != self.total and now - self.last < 30:
            return None
        self.last = now
        elapsed = now - self.started
        return self.done, elapsed, elapsed / self.done * (self.total - self.done)


_PROGRESS = re.compile(r"^genes (\d+)/(\d+)\b")


def progress_line(total: int, timing: tuple[int, float, float], detail: str) -> str:
    """The line a per-gene step logs as it goes, from a ``ProgressClock.tick``: ``genes 3/10``,
    ``detail``, then the elapsed time and the ETA; commands that draw a progress bar read it
    back with ``progress_counts``."""
    done, elapsed, eta = timing
    return f"genes {done}/{total}{detail}, elapsed {elapsed:.0f} s, ETA {eta:.0f} s"


def progress_counts(message: str) -> tuple[int, int] | None:
    """``(done, total)`` of a ``progress_line``; None for any other message."""
    match = _PROGRESS.match(message)
    return None if match is None else (int(match[1]), int(match[2]))
