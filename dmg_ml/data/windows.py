"""Gene promoters and the CpG windows around them (docs/design.md §3 steps 5 and 6)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from dmg_ml import defaults

#: Window half-widths W the paper compares; the authors' code used 10 Mb for every model.
WINDOW_SIZES: tuple[int, ...] = (1_000, 10_000, 100_000, 1_000_000)
AUTHORS_CODE_WINDOW = 10_000_000
#: The window models train on unless told otherwise (the paper's 1 Mb).
DEFAULT_WINDOW_BP = defaults.WINDOW_BP


def _ranges(probes: pd.DataFrame, chromosome: str, lo: np.ndarray, hi: np.ndarray):
    """Sorted probes of a chromosome and, per query, the slice [first, last) within [lo, hi]."""
    on_chr = probes[probes["chromosome"] == chromosome].sort_values("position", kind="stable")
    positions = on_chr["position"].to_numpy()
    first = np.searchsorted(positions, lo, side="left")
    last = np.searchsorted(positions, hi, side="right")
    return on_chr, first, last


def promoters_with_probes(
    promoters: pd.DataFrame, probes: pd.DataFrame, genes: Iterable[str]
) -> pd.DataFrame:
    """Promoters of ``genes`` that contain at least one probe, with ``n_promoter_probes``."""
    chosen = promoters[promoters["gene"].isin(set(genes))].copy()
    chosen["n_promoter_probes"] = 0
    for chromosome, rows in chosen.groupby("chromosome", sort=False):
        _, first, last = _ranges(
            probes, chromosome, rows["start"].to_numpy(), rows["end"].to_numpy()
        )
        chosen.loc[rows.index, "n_promoter_probes"] = last - first
    chosen["n_promoter_probes"] = chosen["n_promoter_probes"].astype(np.int32)
    chosen = chosen[chosen["n_promoter_probes"] > 0].sort_values(["chromosome", "tss"])
    return chosen.reset_index(drop=True)


def window_counts(promoters: pd.DataFrame, probes: pd.DataFrame, window_bp: int) -> np.ndarray:
    """Number of probes in each promoter's window (the CNN's input length L), in row order."""
    counts = np.zeros(len(promoters), dtype=np.int64)
    for chromosome, positions in promoters.groupby("chromosome", sort=False).indices.items():
        rows = promoters.iloc[positions]
        _, first, last = _ranges(
            probes, chromosome, rows["start"].to_numpy() - window_bp,
            rows["end"].to_numpy() + window_bp,
        )
        counts[positions] = last - first
    return counts


def gene_windows(
    promoters: pd.DataFrame, probes: pd.DataFrame, window_sizes: Iterable[int] = WINDOW_SIZES
) -> pd.DataFrame:
    """Every (gene, window, probe) with the probe in [promoter start − W, promoter end + W].

    ``distance_to_tss`` is strand-aware: negative upstream of the TSS, positive downstream.
    Rows are ordered by gene, window and genomic position (the CNN's input order).
    """
    pieces = []
    for window in sorted(set(int(w) for w in window_sizes)):
        for chromosome, genes in promoters.groupby("chromosome", sort=True):
            on_chr, first, last = _ranges(
                probes, chromosome, genes["start"].to_numpy() - window,
                genes["end"].to_numpy() + window,
            )
            counts = last - first
            gene_index = np.repeat(np.arange(len(genes)), counts)
            offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
            probe_index = np.repeat(first, counts) + offsets
            position = on_chr["position"].to_numpy()[probe_index]
            tss = genes["tss"].to_numpy()[gene_index]
            sign = np.where(genes["strand"].to_numpy()[gene_index] == "-", -1, 1)
            pieces.append(
                pd.DataFrame(
                    {
                        "gene": genes["gene"].to_numpy()[gene_index],
                        "window_bp": np.full(len(gene_index), window, dtype=np.int64),
                        "probe_id": on_chr["probe_id"].to_numpy()[probe_index],
                        "chromosome": chromosome,
                        "position": position.astype(np.int64),
                        "distance_to_tss": ((position - tss) * sign).astype(np.int64),
                    }
                )
            )
    if not pieces:
        return pd.DataFrame(
            columns=["gene", "window_bp", "probe_id", "chromosome", "position", "distance_to_tss"]
        )
    table = pd.concat(pieces, ignore_index=True)
    table = table.sort_values(["gene", "window_bp", "position"], kind="stable")
    return table.reset_index(drop=True)
