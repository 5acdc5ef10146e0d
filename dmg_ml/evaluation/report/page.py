"""The report's page: the document around its sections, and the files written.

The page opens with where its data came from (``DataSource``: the embedded synthetic hub or the
URL of a real one), then the title, what was not run (each with a link to the section that says
how to run it), and the provenance (run ids, configs) in one collapsed block: the sections and
figures name their scope and how many runs made them, never the run ids themselves. Then the
sections (``sections``), with a table of contents. The CSS is inline and the figures are data
URIs: the file opens offline.

:func:`write_report` writes the page and, beside it, every per-gene row as a CSV (``GENES_CSV``)
that the page links to, each atomically.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from dmg_ml.evaluation.report.inputs import GENES_CSV, ReportInputs
from dmg_ml.evaluation.report.markup import CSS, escape, html_table, window_label
from dmg_ml.evaluation.report.sections import Section, report_sections
from dmg_ml.evaluation.report.tables import gene_table, primary_scope, run_table
from dmg_ml.files import write_atomically


def write_report(inputs: ReportInputs, path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write the page to ``path`` and every per-gene row to :data:`GENES_CSV` beside it (the
    page links to it), each atomically (a partial file, then a rename): the CSV first, so a page
    never links to a missing or older CSV. Returns (page, CSV)."""
    page = Path(path)
    csv = page.with_name(GENES_CSV)
    write_atomically(csv, gene_table(inputs).to_csv(index=False))
    write_atomically(page, render_report(inputs, genes_csv=GENES_CSV))
    return page, csv


def render_report(inputs: ReportInputs, genes_csv: str | None = GENES_CSV) -> str:
    """The complete, self-contained HTML document (UTF-8, no external reference). ``genes_csv``:
    the name of the per-gene CSV beside the page to link to (``None``: no link);
    :func:`write_report` writes both."""
    window, tissue = primary_scope(inputs.gene_metrics)
    sections = report_sections(inputs, genes_csv)
    nav = "".join(f'<li><a href="#{s.anchor}">{escape(s.title)}</a></li>' for s in sections)
    body = "\n".join(f'<section id="{s.anchor}">\n<h2>{escape(s.title)}</h2>\n{s.content}\n'
                     "</section>" for s in sections)
    synthetic = inputs.source is not None and inputs.source.synthetic
    title = f"dmg evaluation report: {inputs.cohort}"
    scope = (f"Headline scope: window ±{window_label(window)}, tissue {tissue}."
             if window is not None else "No per-gene metrics were passed to this report.")
    downloads = ""
    if genes_csv and not inputs.gene_metrics.empty:
        downloads = (f' Per-gene results: <a href="#genes">the table</a> and '
                     f'<a href="{escape(genes_csv)}" download>{escape(genes_csv)}</a> '
                     "(every row, CSV).")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{escape(title)}{' (synthetic data)' if synthetic else ''}</title>\n"
        f"<style>{CSS}</style>\n</head>\n<body>\n<main>\n{_source_banner(inputs)}\n"
        f"<header>\n<h1>{escape(title)}</h1>\n"
        f"<p>Generated {escape(inputs.provenance.get('generated', 'at an unrecorded time'))}. "
        f"{escape(scope)}{downloads}</p>\n{_missing_list(sections)}"
        f"<nav><ol>{nav}</ol></nav>\n{_provenance_block(inputs)}</header>\n{body}\n</main>\n"
        "</body>\n</html>\n"
    )



def _source_banner(inputs: ReportInputs) -> str:
    """The page's first line: where every number on it comes from."""
    source = inputs.source
    if source is None:
        return ('<p class="source unknown" id="data-source"><b>Data source not recorded.</b> '
                "This report was made without saying which hub its cohort was read from.</p>")
    if source.synthetic:
        return (
            '<p class="source synthetic" id="data-source"><b>Synthetic data.</b> '
            f"{escape(inputs.cohort)} here is the embedded simulated TCGA cohort read from "
            f"<code>{escape(source.url)}</code>: its samples are simulated, not measured on "
            "patients. The numbers say how well the models recover a simulated signal whose "
            'truth is known (<a href="#ceiling">the ceiling</a>), not how well they predict '
            "real expression. For real TCGA data set <code>DMG_SOURCE_URL</code> to the UCSC "
            "Xena hub (see the README) and run again.</p>"
        )
    return (f'<p class="source real" id="data-source"><b>Data: TCGA {escape(inputs.cohort)}</b> '
            f"from <code>{escape(source.url)}</code>.</p>")


def _missing_list(sections: Sequence[Section]) -> str:
    missing = [(s.anchor, s.missing) for s in sections if s.missing]
    if not missing:
        return ""
    items = ", ".join(f'<a href="#{anchor}">{escape(what)}</a>' for anchor, what in missing)
    return (f'<p class="not-run" id="not-run"><b>Not run for this report:</b> {items}. Each '
            "section says how to run it.</p>\n")


def _provenance_block(inputs: ReportInputs) -> str:
    """Run ids and configs, once, in a collapsed block: a run table (run → protocol, models,
    genes, scope) when ``gene_metrics`` has run ids, then the provenance entries."""
    metrics = inputs.gene_metrics
    runs = run_table(metrics)
    entries = {"cohort": inputs.cohort}
    if inputs.source is not None:
        entries["data source"] = (f"{inputs.source.url} "
                                  f"({'synthetic' if inputs.source.synthetic else 'real'})")
    entries |= {k: v for k, v in inputs.provenance.items()
                if not (k == "run ids" and runs is not None)}
    listed = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in entries.items())
    count = (f"{len(runs)} run{'s' if len(runs) != 1 else ''}, " if runs is not None else "")
    table = html_table(runs, headers={"run_id": "run id"}) if runs is not None else ""
    return (f'<details class="provenance" id="provenance"><summary>Provenance: {count}the '
            "configs and the warehouse behind every number</summary>\n"
            f'<dl class="provenance">{listed}</dl>\n{table}</details>\n')
