"""Per-gene model inputs of a (cohort, chromosome) partition, read from the warehouse."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from dmg_ml.data.genome import CHROMOSOMES
from dmg_ml.data.inputs import GeneInput, gene_inputs
from dmg_resources.warehouse import Warehouse


def load_gene_inputs(
    warehouse: Warehouse, cohort: str, chromosome: str, window_bp: int,
    genes: Sequence[str] = (), tissue: str = "all",
) -> list[GeneInput]:
    """The genes of one chromosome (or those named) with their window's M-values and expression.

    Raises ``ValueError`` naming genes that are not in the partition's windows.
    """
    partition = {"cohort": cohort}
    windows = warehouse.read(
        "gene_windows", partition,
        filters=[("chromosome", "=", chromosome), ("window_bp", "=", window_bp)],
    )
    if windows.empty:
        _window_built(warehouse, cohort, window_bp)
        return []  # the window exists, but no gene of this chromosome has one
    wanted = list(genes) or None
    if wanted is not None:
        unknown = sorted(set(wanted) - set(windows["gene"]))
        if unknown:
            raise ValueError(
                f"genes not in gene_windows of {cohort} {chromosome} at W={window_bp}: "
                f"{unknown[:10]}"
            )
    m_values = warehouse.read("m_values", {**partition, "chromosome": chromosome})
    expression = warehouse.read(
        "expression", partition, filters=[("gene", "in", set(wanted or windows["gene"]))]
    )
    samples = warehouse.read("samples", partition, filters=[("kept", "=", True)])
    if tissue != "all":
        samples = samples[samples["tissue"] == tissue]
        m_values = m_values[m_values["sample"].isin(set(samples["sample"]))]
    return gene_inputs(windows, m_values, expression, samples, wanted)


def genes_by_chromosome(
    warehouse: Warehouse, cohort: str, window_bp: int, genes: Sequence[str] = (),
) -> dict[str, list[str]]:
    """The genes of ``cohort``'s window ``window_bp`` (or those named) by chromosome, in
    chromosome order: a gene list that crosses chromosomes routed to their partitions.

    Raises ``LookupError`` when the window was never built and ``ValueError`` naming genes that
    have no window in the cohort.
    """
    windows = _window_built(warehouse, cohort, window_bp)
    if genes:
        unknown = sorted(set(genes) - set(windows["gene"]))
        if unknown:
            raise ValueError(f"genes without a window in {cohort} at W={window_bp:,}: "
                             f"{unknown[:10]} ({len(unknown)} in all)")
        windows = windows[windows["gene"].isin(set(genes))]
    grouped = windows.groupby("chromosome")["gene"].apply(sorted).to_dict()
    return {c: grouped[c] for c in CHROMOSOMES if c in grouped}


def _window_built(warehouse: Warehouse, cohort: str, window_bp: int) -> pd.DataFrame:
    """(gene, chromosome) of ``cohort``'s window ``window_bp``; ``LookupError`` saying what to
    do when the cohort has no windows or not this one (a run would train nothing)."""
    try:
        windows = warehouse.read("gene_windows", {"cohort": cohort},
                                 columns=["gene", "chromosome", "window_bp"])
    except LookupError as exc:
        raise LookupError(f"{cohort} has no gene_windows: run its data layer first") from exc
    built = sorted(windows["window_bp"].unique().tolist())
    if window_bp not in built:
        raise LookupError(
            f"gene_windows of {cohort} holds W in {built}, not {window_bp:,}: add it to the "
            "windows of gene_windows' config and rematerialise it"
        )
    return windows[windows["window_bp"] == window_bp].drop_duplicates(["gene", "chromosome"])
