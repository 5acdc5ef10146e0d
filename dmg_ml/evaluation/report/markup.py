"""HTML building blocks of the report: escaping, cell formats, tables, figures and the CSS.

Every string from the data goes through :func:`escape`. Numbers are shown with 3 decimals,
p-values in 2-significant-digit scientific notation, counts with thousands separators and
windows as ``1 Mb`` / ``10 kb``; a missing value is a dash. Figures are embedded as base64 PNG
data URIs and the CSS is inline: the page references nothing outside itself.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Collection, Sequence

import numpy as np
import pandas as pd

from dmg_ml.evaluation.report.inputs import HOW_TO_RUN

_INTEGER_COLUMNS = ("genes", "n_cpgs", "n_samples", "median_n_samples", "median_n_cpgs")
_HEADERS = {"window_bp": "window (±)", "model_a": "model a", "model_b": "model b",
            "share_a_wins": "share a wins", "share_b_wins": "share b wins",
            "wilcoxon_p": "Wilcoxon p", "mean_delta": "mean Δ", "median_delta": "median Δ",
            "source_cohort": "source", "target_cohort": "target"}


def escape(value: object) -> str:
    """The value as text safe inside HTML elements and quoted attributes."""
    return html.escape(str(value), quote=True)


def not_run(what: str, how: str) -> str:
    """The note a section shows instead of its content: what was not run and how to run it
    (``how`` is a key of ``HOW_TO_RUN``)."""
    return (f'<p class="not-run">{escape(what)}: not run for this report. '
            f"To run it, {escape(HOW_TO_RUN[how])}.</p>")


def window_label(window: object) -> str:
    """A window half-width as ``1 Mb``, ``10 kb`` or ``1,500 bp``; ``?`` when unknown."""
    if window is None or pd.isna(window):
        return "?"
    window = int(window)
    for size, unit in ((1_000_000, "Mb"), (1_000, "kb")):
        if window >= size and window % size == 0:
            return f"{window // size} {unit}"
    return f"{window:,} bp"


def interval(low: float, high: float) -> str:
    """``[low, high]`` to 3 decimals; a dash when either end is missing."""
    if pd.isna(low) or pd.isna(high):
        return "–"
    return f"[{low:.3f}, {high:.3f}]"


def cell(column: str, value: object) -> str:
    """One formatted, escaped cell: 3 decimals, p-values in 2-significant-digit scientific."""
    if value is None or (isinstance(value, float | np.floating) and np.isnan(value)):
        return "–"
    if value is pd.NA or value is pd.NaT:
        return "–"
    if isinstance(value, bool | np.bool_):
        return escape(value)
    if column == "window_bp" and isinstance(value, int | float | np.integer | np.floating):
        return escape(window_label(value))
    if isinstance(value, np.integer | int):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        if column.endswith("_p") or column in ("p", "p_value", "pvalue"):
            return f"{float(value):.1e}"
        if column.endswith(_INTEGER_COLUMNS) and float(value).is_integer():
            return f"{int(value):,}"
        return f"{float(value):.3f}"
    return escape(value)


def header(column: str) -> str:
    """A column's heading: known names spelled out, ``r2`` as R² and ``pearson_r2`` as r²."""
    if column in _HEADERS:
        return _HEADERS[column]
    return column.replace("pearson_r2", "r²").replace("r2", "R²").replace("_", " ")


def html_table(frame: pd.DataFrame, headers: dict[str, str] | None = None,
          groups: Sequence[tuple[str, int]] | None = None,
          row_class: Sequence[str] | None = None,
          bold: Sequence[Collection[str]] | None = None) -> str:
    """An HTML table of a DataFrame, every string escaped; numbers right-aligned. ``groups``:
    (label, columns spanned) headings above the column headings; ``row_class``: each row's CSS
    class; ``bold``: per row, the columns whose cell is bold."""
    headers = headers or {}
    head = ""
    if groups:
        head += "<tr>" + "".join(f'<th colspan="{span}">{escape(label)}</th>'
                                 for label, span in groups) + "</tr>"
    head += "<tr>" + "".join(f"<th>{escape(headers.get(str(c), header(str(c))))}</th>"
                             for c in frame.columns) + "</tr>"
    rows = []
    for index, record in enumerate(frame.itertuples(index=False, name=None)):
        klass = row_class[index] if row_class else ""
        strong = bold[index] if bold else ()
        cells = []
        for column, value in zip(frame.columns, record, strict=True):
            text = cell(str(column), value)
            if column in strong:
                text = f"<b>{text}</b>"
            numeric = (isinstance(value, int | float | np.integer | np.floating)
                       and not isinstance(value, bool))
            cells.append(f'<td class="num">{text}</td>' if numeric else f"<td>{text}</td>")
        cells = "".join(cells)
        rows.append(f'<tr class="{klass}">{cells}</tr>' if klass else f"<tr>{cells}</tr>")
    return (f'<div class="scroll"><table>\n<thead>{head}</thead>\n<tbody>\n'
            + "\n".join(rows) + "\n</tbody>\n</table></div>\n")


def runs_link(runs: Sequence[str] | None) -> str:
    """How many runs made a table or figure, linking to the provenance block that lists them."""
    if not runs:
        return ""
    plural = "s" if len(runs) != 1 else ""
    return f'<p class="runs">Made by <a href="#provenance">{len(runs)} run{plural}</a>.</p>'


def html_figure(png: bytes, alt: str, caption: str, runs: Sequence[str] | None) -> str:
    """A PNG embedded as a data URI, with its (already escaped) caption and its runs."""
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{escape(alt)}">'
            f"<figcaption>{caption} {runs_link(runs)}</figcaption></figure>\n")


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       color: #1d232a; background: #fafafa; margin: 0; line-height: 1.45; }
main { max-width: 1100px; margin: 0 auto; padding: 1.5rem 2rem 4rem; background: #fff; }
h1 { font-size: 1.6rem; margin-bottom: 0.3rem; }
h2 { font-size: 1.25rem; border-bottom: 1px solid #d8dde3; padding-bottom: 0.2rem;
     margin-top: 2.2rem; }
dl.provenance, dl.models { display: grid; grid-template-columns: max-content 1fr;
     gap: 0.1rem 1rem; font-size: 0.9rem; }
dt { font-weight: 600; color: #44505c; }
dd { margin: 0; word-break: break-word; }
nav ol { columns: 2; font-size: 0.92rem; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.6rem 0; }
th, td { padding: 0.2rem 0.55rem; border-bottom: 1px solid #e3e7eb; text-align: left; }
thead th { background: #eef2f5; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.audit td { color: #6b5a2e; background: #fdf8ea; font-style: italic; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; border: 1px solid #e3e7eb; }
figcaption { font-size: 0.85rem; color: #4b5560; }
.not-run { background: #fff4e5; border-left: 4px solid #f0a030; padding: 0.5rem 0.8rem; }
div.not-run p { margin: 0.3rem 0; }
pre { background: #f0f2f4; padding: 0.4rem 0.6rem; overflow-x: auto; font-size: 0.85rem; }
pre code { padding: 0; }
p.source { margin: 0 0 0.6rem; padding: 0.6rem 0.9rem; border-radius: 4px; font-size: 0.95rem; }
p.source.synthetic { background: #eef4ff; border: 1px solid #9db8e8; }
p.source.real { background: #eefaf0; border: 1px solid #97cda2; }
p.source.unknown { background: #f6f6f6; border: 1px solid #c8c8c8; }
details.provenance { margin: 0.8rem 0; font-size: 0.9rem; }
details.provenance summary { cursor: pointer; color: #44505c; }
p.runs { font-size: 0.8rem; color: #66707a; margin: 0.2rem 0; }
code { background: #f0f2f4; padding: 0 0.2rem; }
"""
