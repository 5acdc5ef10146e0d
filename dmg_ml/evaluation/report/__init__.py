"""The evaluation report: one self-contained HTML page per cohort that a biologist can open offline.

Pure rendering, no Dagster and no warehouse: the ``evaluation_report`` asset queries the tables and
passes them here as :class:`ReportInputs`; :func:`write_report` writes the page and, beside it,
every per-gene row as a CSV (:data:`GENES_CSV`) that the page links to.

The package is split along the page's seams:

- ``inputs``: :class:`ReportInputs`, :class:`DataSource` and the constants (figure sizes, the
  bootstrap, the models' names, what to run when a section has no data);
- ``tables``: the numbers as DataFrames (the headline, the ceiling, the per-gene rows) and the
  primary scope every section shares;
- ``figures``: the matplotlib figures, as PNG bytes;
- ``markup``: escaping, cell formats, HTML tables and the CSS;
- ``sections``: the page's sections in order;
- ``page``: the document around them, and the files written.

The headline follows ``dmg_ml.evaluation.protocols``: each model's R² and r² are the columns
``headline_columns(model, protocol)`` names and its headline figure is
``headline_metric(model, protocol)``: the pooled out-of-fold R² of every model under the honest
protocol, the figure the authors reported for it under the published audit.
"""

from dmg_ml.evaluation.report.figures import report_figures
from dmg_ml.evaluation.report.inputs import (
    GENES_CSV,
    HOW_TO_RUN,
    MAX_GENE_ROWS,
    NEAR_CEILING,
    DataSource,
    ReportInputs,
)
from dmg_ml.evaluation.report.page import render_report, write_report
from dmg_ml.evaluation.report.tables import (
    bootstrap_interval,
    ceiling_table,
    gene_table,
    headline_table,
    primary_scope,
)

__all__ = [
    "GENES_CSV",
    "HOW_TO_RUN",
    "MAX_GENE_ROWS",
    "NEAR_CEILING",
    "DataSource",
    "ReportInputs",
    "bootstrap_interval",
    "ceiling_table",
    "gene_table",
    "headline_table",
    "primary_scope",
    "render_report",
    "report_figures",
    "write_report",
]
