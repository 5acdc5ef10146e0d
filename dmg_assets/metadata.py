"""Metadata a person reads in the UI: markdown tables and embedded plots."""

import base64
import io

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
