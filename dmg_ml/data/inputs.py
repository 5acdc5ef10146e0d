"""Per-gene model inputs from warehouse tables: CpG M-values of a window, ordered by position."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass
class GeneData:
    """One gene's data set: ``X`` is samples × CpGs (ordered by genomic position)."""

    gene: str
    X: np.ndarray
    y: np.ndarray
    patients: np.ndarray
    samples: np.ndarray

    def __post_init__(self) -> None:
        self.X = np.ascontiguousarray(self.X, dtype=np.float32)
        self.y = np.asarray(self.y, dtype=np.float32).ravel()
        self.patients = np.asarray(self.patients).astype(str)
        self.samples = np.asarray(self.samples).astype(str)
        n = len(self.y)
        if self.X.ndim != 2 or self.X.shape[0] != n or self.X.shape[1] < 1:
            raise ValueError(f"{self.gene}: X must be (n_samples={n}, L>=1), got {self.X.shape}")
        if len(self.patients) != n or len(self.samples) != n:
            raise ValueError(f"{self.gene}: patients and samples need one entry per sample")
        if not (np.isfinite(self.X).all() and np.isfinite(self.y).all()):
            raise ValueError(f"{self.gene}: X and y must be finite (impute before training)")



@dataclass(frozen=True)
class GeneInput:
    """A gene's training data and the probe behind each column of ``data.X``."""

    data: GeneData
    probe_ids: np.ndarray


def m_value_matrix(m_values: pd.DataFrame) -> pd.DataFrame:
    """Long (probe_id, sample, m_value) rows → a probes × samples float32 frame."""
    probes = pd.Categorical(m_values["probe_id"])
    samples = pd.Categorical(m_values["sample"])
    matrix = np.full((len(probes.categories), len(samples.categories)), np.nan, dtype=np.float32)
    matrix[probes.codes, samples.codes] = m_values["m_value"].to_numpy(dtype=np.float32)
    return pd.DataFrame(
        matrix, index=probes.categories.astype(str), columns=samples.categories.astype(str)
    )


def gene_inputs(
    windows: pd.DataFrame,
    m_values: pd.DataFrame,
    expression: pd.DataFrame,
    samples: pd.DataFrame,
    genes: Iterable[str] | None = None,
) -> list[GeneInput]:
    """One ``GeneInput`` per gene of ``windows`` (one window size), in gene order.

    Samples are those of ``samples`` with both M-values and the gene's expression, in a fixed
    order shared by all genes, so fold assignment is the same for every gene of a cohort.
    """
    if genes is not None:
        wanted = set(genes)
        windows = windows[windows["gene"].isin(wanted)]
    matrix = m_value_matrix(m_values)
    levels = expression.pivot(index="gene", columns="sample", values="log2_expression")
    shared = sorted(set(matrix.columns) & set(levels.columns) & set(samples["sample"]))
    patients = samples.set_index("sample").loc[shared, "patient"].astype(str).to_numpy()
    probe_row = pd.Series(np.arange(len(matrix)), index=matrix.index)
    values = matrix[shared].to_numpy()
    y_all = levels.reindex(columns=shared)
    inputs = []
    for gene, rows in windows.sort_values(["gene", "position"]).groupby("gene", sort=True):
        if gene not in y_all.index:
            continue
        probe_ids = rows["probe_id"].astype(str).to_numpy()
        X = values[probe_row.loc[probe_ids].to_numpy()].T
        data = GeneData(
            gene=str(gene),
            X=X,
            y=y_all.loc[gene].to_numpy(dtype=np.float32),
            patients=patients,
            samples=np.asarray(shared, dtype=object),
        )
        inputs.append(GeneInput(data=data, probe_ids=probe_ids))
    return inputs
