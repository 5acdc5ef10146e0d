"""A deterministic simulator that writes a synthetic TCGA hub in the UCSC Xena file formats.

The output directory mirrors the hub's download paths, so a downloader can use it as a base URL::

    TCGA.<COHORT>.sampleMap/HumanMethylation450.gz   probes x samples, beta values, ``NA`` missing
    TCGA.<COHORT>.sampleMap/HiSeqV2.gz               genes x samples, log2(RSEM + 1)
    probeMap/illuminaMethyl450_hg19_GPL16304_TCGAlegacy
    ground_truth/<COHORT>/genes.tsv                  per-gene truth (signal variance, expected R²)
    ground_truth/<COHORT>/drivers.tsv                the CpGs that drive each gene, with weights
    ground_truth/<COHORT>/signal.tsv.gz              noise-free methylation-driven expression part

Matrices are gzip TSVs whose first header cell is ``sample``; values carry 4 decimals. Matrix rows
come in probe-id order (as on Xena), not by position. The probe map (plain TSV, header
``#id gene chrom chromStart chromEnd strand``, hg19, ``chromEnd = chromStart + 1``) lists every
probe of the matrices. ``gene`` is the symbol of the promoter a probe was placed around, ``.`` for
open-sea probes. Two kinds of probe are unusable by design, as on the real array: probes on chrY
(a valid coordinate outside ``CHROMOSOMES``) and probes without coordinates, written as
``cg........\t.\t.\t-1\t-1\t.`` (chrom ``.``, chromStart and chromEnd ``-1``, strand ``.``).

Biology: probes cluster around real hg19 promoters (TSS ± 1.5 kb, at least one within ± 1 kb of a
modelled gene), with shores, gene-body probes and sparse open-sea background. M-values are
``mu + loading · block factor + cohort block offset + tumour shifts + probe noise``: neighbouring
CpGs share a per-sample block factor (a gene's promoter, or a 500 kb bin), tumours lose open-sea
methylation and gain it at some promoters (CIMP-like), and a normal shares part of its block
factors with its patient's tumour. Expression is
``baseline + cohort effect + tissue effect + Σ w_j · z(M_j) + noise`` where ``z`` standardises the
true M-value of driver CpG ``j`` over the cohort's samples; ``signal = Σ w_j · z(M_j)`` is the
ground truth and ``expected_r2 = var(signal) / (var(signal) + var(tissue effect) + noise_sd²)``.

``genes.tsv`` has one row per HiSeqV2 row: ``gene, chromosome, tss, strand, category``
(modelled, low_expressed or unmapped; unmapped rows have chromosome ``.`` and tss ``-1``),
``has_signal``, ``baseline`` (cohort mean, cohort effect included), ``cohort_effect``,
``tissue_effect`` (normal minus tumour), ``signal_variance``, ``noise_sd``, ``expected_r2``.
``drivers.tsv`` has ``gene, probe_id, chromosome, position, weight, distance_to_tss, kind``
(promoter or distal); ``weight`` multiplies the driver's standardised M-value.
``signal.tsv.gz`` has the rows and columns of HiSeqV2.

Same ``seed`` → byte-identical files; a cohort's files do not depend on which other cohorts are
written. The FULL preset streams probes in chunks, so no probe × sample matrix is held in memory.
"""

from __future__ import annotations

import argparse
import gzip
import os
import queue
import threading
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dmg_ml.genome import CHROMOSOMES, HG19_LENGTHS, PROMOTER_HALF_WIDTH, load_promoters
from dmg_ml.windows import window_counts
from dmg_ml.xena import DEFAULT_COHORTS, PROBE_MAP_PATH, expression_path, methylation_path


@dataclass(frozen=True)
class SyntheticSpec:
    """Size knobs of a synthetic hub.

    ``samples`` gives ``(cohort, tumour, normal)`` for the samples present in both matrices (what
    preprocessing keeps); every normal belongs to one of those tumour patients. On top of them the
    methylation matrix has ``n_methylation_only`` and the expression matrix ``n_expression_only``
    extra tumour samples of other patients. Cohorts not listed get ``default_samples``.
    """

    #: Promoter-table genes written to HiSeqV2 that pass the expression filter (mean log2 > 1).
    n_genes: int = 69
    #: Further promoter-table genes with mean log2 expression ≤ 1 (dropped by preprocessing).
    n_low_expressed: int = 10
    #: HiSeqV2 rows whose name is not in the promoter table (``?|<entrez>``, made-up symbols).
    n_unmapped_genes: int = 8
    #: Share of the ``n_genes`` with no methylation signal at all (no drivers, expected R² 0).
    no_signal_fraction: float = 0.2
    min_genes_per_chromosome: int = 3
    samples: tuple[tuple[str, int, int], ...] = (
        ("BRCA", 200, 25),
        ("COAD", 60, 10),
        ("GBM", 50, 5),
        ("LUAD", 60, 10),
    )
    default_samples: tuple[int, int] = (40, 5)
    n_methylation_only: int = 3
    n_expression_only: int = 4
    promoter_probes: tuple[int, int] = (6, 15)
    shore_probes: tuple[int, int] = (1, 3)
    body_probes: tuple[int, int] = (1, 4)
    #: Chance that a promoter of a gene not written to HiSeqV2 gets a probe cluster, and its size.
    other_promoter_probability: float = 0.15
    other_promoter_probes: tuple[int, int] = (2, 5)
    #: When set, background probes and other genes' clusters are confined to this distance of a
    #: modelled gene's TSS (keeps SMALL windows small); ``None`` spreads them genome-wide.
    region_half_width: int | None = 1_500_000
    #: Open-sea probes per Mb: inside the regions, or genome-wide without ``region_half_width``.
    background_per_mb: float = 25.0
    #: Open-sea probes per Mb outside the regions.
    genome_background_per_mb: float = 0.5
    #: When set, open-sea background is topped up genome-wide to exactly this many probes in all.
    n_probes: int | None = None
    #: Probes the reader must drop: on chrY, and without coordinates.
    n_chry: int = 20
    n_coordinate_less: int = 15
    missing_rate: float = 0.01
    high_missing_fraction: float = 0.03
    high_missing_rate: tuple[float, float] = (0.3, 0.7)
    #: Probes at |M| ≈ 14, whose betas often round to exactly 0 or 1.
    extreme_probe_fraction: float = 0.002
    chunk_size: int = 8192
    compresslevel: int = 6

    def sample_counts(self, cohort: str) -> tuple[int, int]:
        """``(tumour, normal)`` samples shared by both matrices of ``cohort``."""
        for name, n_tumour, n_normal in self.samples:
            if name == cohort:
                return n_tumour, n_normal
        return self.default_samples


SMALL = SyntheticSpec()

FULL = SyntheticSpec(
    n_genes=16_000,
    n_low_expressed=800,
    n_unmapped_genes=200,
    samples=(("BRCA", 788, 85), ("COAD", 297, 38), ("GBM", 138, 2), ("LUAD", 455, 32)),
    default_samples=(300, 30),
    n_methylation_only=12,
    n_expression_only=20,
    other_promoter_probability=1.0,
    other_promoter_probes=(6, 15),
    region_half_width=None,
    n_probes=485_577,
    n_chry=416,
    n_coordinate_less=65,
    chunk_size=16_384,
    compresslevel=1,
)

PRESETS: dict[str, SyntheticSpec] = {"small": SMALL, "full": FULL}

# Probe classes.
_PROMOTER, _SHORE, _BODY, _OPEN_SEA, _VARIABLE, _EXTREME, _UNPLACED = range(7)

_CHROMS: tuple[str, ...] = CHROMOSOMES + ("chrY",)
_LENGTHS = np.array([HG19_LENGTHS[c] for c in CHROMOSOMES] + [59_373_566], dtype=np.int64)
_CHRY = len(CHROMOSOMES)
_POS_BITS = 32
_BIN = 500_000
_NA_CODE = 10_001
_PAIR_CORRELATION = np.float32(0.5)

# Tissue source site codes seen in each cohort's real barcodes.
_TSS_CODES: dict[str, tuple[str, ...]] = {
    "BRCA": ("A1", "A2", "A7", "A8", "AC", "AN", "AO", "AQ", "AR", "B6", "BH", "C8", "D8", "E2",
             "E9", "EW", "GM", "LL", "OL", "S3"),
    "COAD": ("A6", "AA", "AD", "AU", "AY", "AZ", "CA", "CK", "CM", "D5", "DM", "F4", "G4", "NH",
             "QG", "RU", "SS", "T9", "WS"),
    "GBM": ("02", "06", "08", "12", "14", "15", "16", "19", "26", "27", "28", "32", "41", "76",
            "81", "87"),
    "LUAD": ("05", "35", "38", "44", "49", "50", "55", "64", "67", "69", "71", "73", "75", "78",
             "80", "86", "91", "93", "95", "97", "99", "J2", "L4", "L9", "MN", "MP", "NJ"),
}
_ALPHABET = np.array(list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"))


@dataclass
class _Layout:
    """Everything shared by all cohorts: probes (in position order), genes and drivers."""

    chrom: np.ndarray  # int64 index into _CHROMS, -1 without coordinates
    pos: np.ndarray  # int64, -1 without coordinates
    klass: np.ndarray  # uint8 probe class
    gene: np.ndarray  # int64 promoter-table row the probe was placed around, -1 otherwise
    block: np.ndarray  # int64 co-variation block
    block_is_promoter: np.ndarray
    hyper_gamma: np.ndarray  # float32 per block: tumour hypermethylation of a promoter, 0 if none
    mu: np.ndarray
    loading: np.ndarray
    noise_sd: np.ndarray
    hypo: np.ndarray
    missing_rate: np.ndarray
    probe_ids: np.ndarray  # int64 number in ``cg%08d``
    id_order: np.ndarray  # probe indices in id order (the matrices' row order)
    genes: pd.DataFrame  # expression rows
    drivers: pd.DataFrame  # gene_row, probe, base_weight, distance_to_tss, kind
    promoters: pd.DataFrame

    @property
    def n_probes(self) -> int:
        return len(self.pos)


def _keys(chrom: np.ndarray, pos: np.ndarray) -> np.ndarray:
    return (np.asarray(chrom, np.int64) << _POS_BITS) + np.asarray(pos, np.int64)


def _uniform_genome(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    autosomes_x = _LENGTHS[:_CHRY]
    chrom = rng.choice(_CHRY, size=n, p=autosomes_x / autosomes_x.sum())
    pos = (rng.random(n) * (autosomes_x[chrom] - 2)).astype(np.int64) + 1
    return chrom.astype(np.int64), pos


def _near(chrom: np.ndarray, pos: np.ndarray, ref_chrom: np.ndarray, ref_pos: np.ndarray,
          half: int) -> np.ndarray:
    """Whether each (chrom, pos) lies within ``half`` bp of some reference position."""
    ref = np.sort(_keys(ref_chrom, ref_pos))
    key = _keys(chrom, pos)
    i = np.searchsorted(ref, key)
    left = np.abs(key - ref[np.clip(i - 1, 0, len(ref) - 1)])
    right = np.abs(ref[np.clip(i, 0, len(ref) - 1)] - key)
    return np.minimum(left, right) <= half


def _choose_genes(promoters: pd.DataFrame, spec: SyntheticSpec,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Promoter-table rows of the modelled and of the low-expressed genes."""
    n_total = len(promoters)
    if spec.n_genes + spec.n_low_expressed > n_total:
        raise ValueError(f"at most {n_total} promoter genes can be written")
    chromosome = promoters["chromosome"].to_numpy()
    stratified: list[int] = []
    for name in CHROMOSOMES:
        rows = np.flatnonzero(chromosome == name)
        k = min(spec.min_genes_per_chromosome, len(rows))
        stratified.extend(rng.choice(rows, size=k, replace=False).tolist())
    chosen = np.array(stratified, dtype=np.int64)
    if len(chosen) > spec.n_genes:
        chosen = rng.choice(chosen, size=spec.n_genes, replace=False)
    rest = np.setdiff1d(np.arange(n_total), chosen)
    extra = rng.choice(rest, size=spec.n_genes - len(chosen), replace=False)
    modelled = np.sort(np.concatenate([chosen, extra]))
    rest = np.setdiff1d(np.arange(n_total), modelled)
    low = np.sort(rng.choice(rest, size=spec.n_low_expressed, replace=False))
    return modelled, low


def _place_probes(spec: SyntheticSpec, rng: np.random.Generator, p_chrom: np.ndarray,
                  p_tss: np.ndarray, p_strand: np.ndarray, written: np.ndarray,
                  modelled: np.ndarray) -> dict[str, np.ndarray]:
    """Positions, classes and genes of the probes with coordinates on CHROMOSOMES + chrY."""
    chrom_parts: list[np.ndarray] = []
    pos_parts: list[np.ndarray] = []
    class_parts: list[np.ndarray] = []
    gene_parts: list[np.ndarray] = []
    protected_parts: list[np.ndarray] = []

    def add(genes: np.ndarray | None, chrom: np.ndarray, pos: np.ndarray, klass: int,
            protected: bool = False) -> None:
        n = len(pos)
        chrom_parts.append(np.asarray(chrom, np.int64))
        pos_parts.append(np.clip(np.asarray(pos, np.int64), 1, _LENGTHS[chrom] - 1))
        class_parts.append(np.full(n, klass, np.uint8))
        gene_parts.append(np.full(n, -1, np.int64) if genes is None else genes)
        protected_parts.append(np.full(n, protected))

    def cluster(genes: np.ndarray, counts: np.ndarray, offsets: np.ndarray, klass: int) -> None:
        rows = np.repeat(genes, counts)
        add(rows, p_chrom[rows], p_tss[rows] + offsets, klass)

    # One probe well inside the promoter of every written gene, placed first so deduplication
    # keeps it, and kept clean of extreme values and heavy missingness.
    inner = PROMOTER_HALF_WIDTH - 200
    add(written, p_chrom[written], p_tss[written] + rng.integers(-inner, inner + 1, len(written)),
        _PROMOTER, protected=True)
    lo, hi = spec.promoter_probes
    counts = rng.integers(lo - 1, hi, len(written))
    offsets = np.clip(np.rint(rng.normal(0, 650, counts.sum())), -1500, 1500).astype(np.int64)
    cluster(written, counts, offsets, _PROMOTER)

    others = np.setdiff1d(np.arange(len(p_tss)), written)
    if spec.region_half_width is not None:
        others = others[_near(p_chrom[others], p_tss[others], p_chrom[modelled], p_tss[modelled],
                              spec.region_half_width)]
    others = others[rng.random(len(others)) < spec.other_promoter_probability]
    lo, hi = spec.other_promoter_probes
    counts = rng.integers(lo, hi + 1, len(others))
    offsets = np.clip(np.rint(rng.normal(0, 650, counts.sum())), -1500, 1500).astype(np.int64)
    cluster(others, counts, offsets, _PROMOTER)

    lo, hi = spec.shore_probes
    counts = rng.integers(lo, hi + 1, len(written))
    sign = rng.choice([-1, 1], counts.sum())
    cluster(written, counts, sign * rng.integers(1_500, 4_000, counts.sum()), _SHORE)

    lo, hi = spec.body_probes
    counts = rng.integers(lo, hi + 1, len(written))
    offsets = np.repeat(p_strand[written], counts) * rng.integers(2_000, 50_000, counts.sum())
    cluster(written, counts, offsets, _BODY)

    if spec.region_half_width is not None:
        half = spec.region_half_width
        for c in np.unique(p_chrom[modelled]):
            centres = np.sort(p_tss[modelled][p_chrom[modelled] == c])
            starts = np.maximum(centres - half, 1)
            ends = np.minimum(centres + half, _LENGTHS[c] - 1)
            merged_start, merged_end = [starts[0]], [ends[0]]
            for s, e in zip(starts[1:], ends[1:], strict=True):
                if s <= merged_end[-1]:
                    merged_end[-1] = max(merged_end[-1], e)
                else:
                    merged_start.append(s)
                    merged_end.append(e)
            for s, e in zip(merged_start, merged_end, strict=True):
                n = rng.poisson(spec.background_per_mb * (e - s) / 1e6)
                add(None, np.full(n, c), rng.integers(s, e, n), _OPEN_SEA)
        genome_density = spec.genome_background_per_mb
    else:
        genome_density = spec.background_per_mb
    if spec.n_probes is None:
        n = rng.poisson(genome_density * _LENGTHS[:_CHRY].sum() / 1e6)
        add(None, *_uniform_genome(rng, n), _OPEN_SEA)
    add(None, np.full(spec.n_chry, _CHRY), rng.integers(1, _LENGTHS[_CHRY], spec.n_chry),
        _UNPLACED)

    chrom = np.concatenate(chrom_parts)
    pos = np.concatenate(pos_parts)
    keys, first = np.unique(_keys(chrom, pos), return_index=True)  # first occurrence wins
    klass = np.concatenate(class_parts)[first]
    gene = np.concatenate(gene_parts)[first]
    protected = np.concatenate(protected_parts)[first]

    if spec.n_probes is not None:
        target = spec.n_probes - spec.n_coordinate_less
        if len(keys) > target:
            raise ValueError(f"clusters alone need {len(keys)} probes, more than n_probes")
        while len(keys) < target:
            deficit = target - len(keys)
            new = np.setdiff1d(_keys(*_uniform_genome(rng, deficit + 64)), keys)
            if len(new) > deficit:
                new = np.sort(rng.choice(new, size=deficit, replace=False))
            merged = np.concatenate([keys, new])
            order = np.argsort(merged, kind="stable")
            keys = merged[order]
            klass = np.concatenate([klass, np.full(len(new), _OPEN_SEA, np.uint8)])[order]
            gene = np.concatenate([gene, np.full(len(new), -1, np.int64)])[order]
            protected = np.concatenate([protected, np.zeros(len(new), bool)])[order]
    return {
        "chrom": keys >> _POS_BITS,
        "pos": keys & ((1 << _POS_BITS) - 1),
        "klass": klass,
        "gene": gene,
        "protected": protected,
    }


def _probe_parameters(klass: np.ndarray, gene: np.ndarray, n_promoter_table: int,
                      rng: np.random.Generator) -> dict[str, np.ndarray]:
    """M-value mean, block loading, noise sd and tumour hypomethylation of every probe."""
    n = len(klass)
    mu = np.empty(n)
    loading = np.empty(n)
    noise_sd = rng.uniform(0.25, 0.5, n)
    hypo = np.zeros(n)
    # 75% of promoters are unmethylated CpG islands, the rest intermediate or methylated.
    cgi = rng.random(n_promoter_table) < 0.75
    gene_mu = np.where(cgi, rng.normal(-3.3, 0.4, n_promoter_table),
                       rng.uniform(-1.0, 2.5, n_promoter_table))

    def rows(k: int) -> np.ndarray:
        return np.flatnonzero(klass == k)

    r = rows(_PROMOTER)
    mu[r] = gene_mu[gene[r]] + rng.normal(0, 0.4, len(r))
    loading[r] = rng.uniform(0.3, 0.9, len(r))
    noise_sd[r] = rng.uniform(0.2, 0.45, len(r))
    r = rows(_SHORE)
    mu[r] = rng.normal(-0.3, 1.0, len(r))
    loading[r] = rng.uniform(0.5, 1.3, len(r))
    hypo[r] = rng.uniform(0.0, 0.5, len(r))
    r = rows(_BODY)
    mu[r] = rng.normal(1.8, 0.7, len(r))
    loading[r] = rng.uniform(0.2, 0.7, len(r))
    hypo[r] = rng.uniform(0.2, 1.0, len(r))
    r = np.flatnonzero((klass == _OPEN_SEA) | (klass == _UNPLACED))
    mu[r] = rng.normal(2.1, 0.5, len(r))
    loading[r] = rng.uniform(0.2, 0.7, len(r))
    hypo[r] = rng.uniform(0.2, 1.0, len(r))
    r = rows(_VARIABLE)
    mu[r] = rng.uniform(-1.5, 1.5, len(r))
    loading[r] = rng.uniform(1.0, 2.0, len(r))
    hypo[r] = rng.uniform(0.0, 0.8, len(r))
    # Extreme probes sit at |M| ≈ 14, so about half their betas round to exactly 0 or 1.
    r = rows(_EXTREME)
    mu[r] = np.where(gene[r] >= 0, -14.0, 14.0)
    loading[r] = 0.0
    noise_sd[r] = 1.5
    return {
        "mu": mu.astype(np.float32),
        "loading": loading.astype(np.float32),
        "noise_sd": noise_sd.astype(np.float32),
        "hypo": hypo.astype(np.float32),
    }


def _choose_drivers(genes: pd.DataFrame, chrom: np.ndarray, pos: np.ndarray, gene: np.ndarray,
                    eligible: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """Driver CpGs of the signal genes: 1-4 in the promoter (mostly negative), some distal."""
    keys = _keys(chrom, pos)
    eligible_rows = np.flatnonzero(eligible)
    eligible_keys = keys[eligible_rows]
    records: list[tuple[int, int, float, int, str]] = []
    for row in np.flatnonzero(genes["has_signal"].to_numpy()):
        g = int(genes["promoter_row"].iat[row])
        c, tss = int(genes["chrom_index"].iat[row]), int(genes["tss"].iat[row])
        lo = np.searchsorted(eligible_keys, _keys(c, tss - 1_000_000))
        hi = np.searchsorted(eligible_keys, _keys(c, tss + 1_000_000), side="right")
        window = eligible_rows[lo:hi]
        distance = pos[window] - tss
        promoter = window[(gene[window] == g) & (np.abs(distance) <= 1_500)]
        k = min(len(promoter), int(rng.integers(1, 5)))
        for p in rng.choice(promoter, size=k, replace=False):
            sign = -1.0 if rng.random() < 0.85 else 1.0
            records.append((row, int(p), sign * rng.uniform(0.5, 1.5), int(pos[p] - tss),
                            "promoter"))
        distal = window[(np.abs(distance) > 2_000) & (gene[window] != g)]
        if len(distal) and rng.random() < 0.5:
            k = min(len(distal), int(rng.integers(1, 4)))
            for p in rng.choice(distal, size=k, replace=False):
                sign = rng.choice([-1.0, 1.0])
                records.append((row, int(p), sign * rng.uniform(0.3, 1.0), int(pos[p] - tss),
                                "distal"))
    return pd.DataFrame.from_records(
        records, columns=["gene_row", "probe", "base_weight", "distance_to_tss", "kind"]
    )


def _unmapped_names(n: int, known: set[str], rng: np.random.Generator) -> list[str]:
    """Expression row names absent from the promoter table: ``?|<entrez>`` and made-up symbols."""
    names: list[str] = []
    while len(names) < n:
        if len(names) % 2 == 0:
            name = f"?|{int(rng.integers(100_000_000, 100_999_999))}"
        else:
            name = f"ZSYN{int(rng.integers(1, 99_999))}"
        if name not in known and name not in names:
            names.append(name)
    return names


def _build_layout(spec: SyntheticSpec, seed: int) -> _Layout:
    rng = np.random.default_rng([seed, 0])
    promoters = load_promoters()
    chrom_index = {c: i for i, c in enumerate(_CHROMS)}
    p_chrom = promoters["chromosome"].map(chrom_index).to_numpy(np.int64)
    p_tss = promoters["tss"].to_numpy(np.int64)
    p_strand = np.where(promoters["strand"].to_numpy() == "-", -1, 1)
    modelled, low = _choose_genes(promoters, spec, rng)
    written = np.concatenate([modelled, low])

    placed = _place_probes(spec, rng, p_chrom, p_tss, p_strand, written, modelled)
    n_unplaced = spec.n_coordinate_less
    chrom = np.concatenate([placed["chrom"], np.full(n_unplaced, -1, np.int64)])
    pos = np.concatenate([placed["pos"], np.full(n_unplaced, -1, np.int64)])
    klass = np.concatenate([placed["klass"], np.full(n_unplaced, _UNPLACED, np.uint8)])
    gene = np.concatenate([placed["gene"], np.full(n_unplaced, -1, np.int64)])
    protected = np.concatenate([placed["protected"], np.zeros(n_unplaced, bool)])
    n = len(pos)

    free = ~protected & (klass != _UNPLACED)
    variable = free & np.isin(klass, (_BODY, _OPEN_SEA)) & (rng.random(n) < 0.05)
    klass[variable] = _VARIABLE
    extreme = free & (rng.random(n) < spec.extreme_probe_fraction)
    klass[extreme] = _EXTREME
    missing_rate = np.full(n, spec.missing_rate, np.float32)
    high = ~protected & (rng.random(n) < spec.high_missing_fraction)
    missing_rate[high] = rng.uniform(*spec.high_missing_rate, high.sum())

    # Blocks: a gene's promoter cluster and shores; otherwise a 500 kb bin of its chromosome.
    in_cluster = (gene >= 0) & np.isin(klass, (_PROMOTER, _SHORE, _EXTREME))
    bin_key = len(p_tss) + (chrom + 1) * 1_000 + np.maximum(pos, 0) // _BIN
    block_keys, block = np.unique(np.where(in_cluster, gene, bin_key), return_inverse=True)
    block_is_promoter = block_keys < len(p_tss)
    hyper_gamma = np.where(block_is_promoter & (rng.random(len(block_keys)) < 0.07),
                           rng.uniform(1.0, 3.0, len(block_keys)), 0.0).astype(np.float32)

    params = _probe_parameters(klass, gene, len(p_tss), rng)

    # Probe ids: sorted distinct numbers spread over cg00000029..cg27700000, assigned at random.
    gaps = rng.integers(1, max(2, 2 * 27_700_000 // n), n)
    numbers = 29 + np.cumsum(gaps) - gaps[0]
    probe_ids = numbers[rng.permutation(n)]
    id_order = np.argsort(probe_ids, kind="stable")

    genes = _gene_table(spec, promoters, modelled, low, p_chrom, rng)
    eligible = (chrom >= 0) & (chrom < _CHRY) & (missing_rate <= spec.missing_rate) & np.isin(
        klass, (_PROMOTER, _SHORE, _BODY, _OPEN_SEA, _VARIABLE)
    )
    drivers = _choose_drivers(genes, chrom, pos, gene, eligible, rng)
    return _Layout(
        chrom=chrom, pos=pos, klass=klass, gene=gene, block=block.astype(np.int64),
        block_is_promoter=block_is_promoter, hyper_gamma=hyper_gamma,
        missing_rate=missing_rate, probe_ids=probe_ids, id_order=id_order, genes=genes,
        drivers=drivers, promoters=promoters, **params,
    )


def _gene_table(spec: SyntheticSpec, promoters: pd.DataFrame, modelled: np.ndarray,
                low: np.ndarray, p_chrom: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """One row per HiSeqV2 row with the cohort-independent parameters of its expression."""
    n_m, n_l, n_u = len(modelled), len(low), spec.n_unmapped_genes
    has_signal = np.ones(n_m, bool)
    has_signal[rng.permutation(n_m)[: int(round(spec.no_signal_fraction * n_m))]] = False
    names = _unmapped_names(n_u, set(promoters["gene"]), rng)
    rows = np.concatenate([modelled, low, np.full(n_u, -1)])
    table = pd.DataFrame(
        {
            "gene": np.concatenate([promoters["gene"].to_numpy()[np.concatenate([modelled, low])],
                                    np.array(names, dtype=object)]),
            "promoter_row": rows,
            "chrom_index": np.where(rows >= 0, p_chrom[np.maximum(rows, 0)], -1),
            "chromosome": np.where(rows >= 0,
                                   promoters["chromosome"].to_numpy()[np.maximum(rows, 0)], "."),
            "tss": np.where(rows >= 0, promoters["tss"].to_numpy()[np.maximum(rows, 0)], -1),
            "strand": np.where(rows >= 0,
                               promoters["strand"].to_numpy()[np.maximum(rows, 0)], "."),
            "category": ["modelled"] * n_m + ["low_expressed"] * n_l + ["unmapped"] * n_u,
            "has_signal": np.concatenate([has_signal, np.zeros(n_l + n_u, bool)]),
            "baseline": np.concatenate([rng.uniform(5.0, 12.0, n_m), rng.uniform(0.05, 0.6, n_l),
                                        rng.uniform(3.0, 10.0, n_u)]),
            "total_sd": np.concatenate([rng.uniform(0.6, 2.0, n_m), np.full(n_l, 0.3),
                                        rng.uniform(0.4, 1.5, n_u)]),
            "target_r2": np.where(np.concatenate([has_signal, np.zeros(n_l + n_u, bool)]),
                                  rng.uniform(0.2, 0.8, n_m + n_l + n_u), 0.0),
            "tissue_fraction": rng.uniform(0.0, 0.4, n_m + n_l + n_u),
            "tissue_sign": rng.choice([-1.0, 1.0], n_m + n_l + n_u),
            "zero_fraction": np.concatenate([np.zeros(n_m), rng.uniform(0.2, 0.7, n_l),
                                             np.zeros(n_u)]),
        }
    )
    return table.sort_values("gene", kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# Writing


def _decimal_table(lo: int, hi: int, na: bool = False) -> np.ndarray:
    """``\\t``-prefixed strings for codes ``lo..hi`` (value = code / 10⁴), plus ``\\tNA`` last."""
    cells = []
    for k in range(lo, hi + 1):
        sign = "-" if k < 0 else ""
        a = abs(k)
        cells.append(f"\t{sign}{a // 10_000}.{a % 10_000:04d}")
    if na:
        cells.append("\tNA")
    width = max(len(c) for c in cells)
    return np.array(cells, dtype=f"S{width}")


_BETA_TABLE = _decimal_table(0, 10_000, na=True)


def _encode_rows(names: np.ndarray, codes: np.ndarray, table: np.ndarray) -> bytes:
    """TSV rows ``name\\tv1\\tv2...\\n`` from table codes, without per-value Python formatting.

    Table cells are null-padded to a fixed width; the nulls are deleted from the joined bytes.
    """
    codes = np.ascontiguousarray(codes)
    n, m = codes.shape
    name_bytes = names.view(np.uint8).reshape(n, names.dtype.itemsize)
    cells = table[codes].view(np.uint8).reshape(n, m * table.dtype.itemsize)
    newline = np.full((n, 1), ord("\n"), np.uint8)
    return np.concatenate([name_bytes, cells, newline], axis=1).tobytes().translate(None, b"\0")


def _write_matrix(path: Path, columns: Sequence[str], names: Sequence[str], values: np.ndarray,
                  compresslevel: int) -> None:
    """Gzip TSV of a genes × samples float matrix with 4 decimals."""
    codes = np.rint(values * 10_000).astype(np.int64)
    lo, hi = (int(codes.min()), int(codes.max())) if codes.size else (0, 0)
    table = _decimal_table(lo, hi)
    with _GzipWriter(path, compresslevel) as out:
        out.write(("sample\t" + "\t".join(columns) + "\n").encode())
        name_array = np.array(list(names), dtype="S")
        for start in range(0, len(name_array), 4096):
            stop = start + 4096
            out.write(_encode_rows(name_array[start:stop], codes[start:stop] - lo, table))


class _GzipWriter:
    """Deterministic gzip (mtime 0, no file name) written to a temporary name, then renamed.

    Compression runs in a background thread (zlib releases the GIL), overlapping generation.
    """

    def __init__(self, path: Path, compresslevel: int) -> None:
        self.path = path
        self.tmp = path.with_name(path.name + ".part")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.raw = open(self.tmp, "wb")  # noqa: SIM115 - closed in __exit__
        self.gz = gzip.GzipFile(fileobj=self.raw, mode="wb", mtime=0, filename="",
                                compresslevel=compresslevel)
        self.queue: queue.Queue[bytes | None] = queue.Queue(maxsize=3)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (data := self.queue.get()) is not None:
            if self.error is None:
                try:
                    self.gz.write(data)
                except BaseException as exc:  # re-raised in the caller's thread
                    self.error = exc

    def write(self, data: bytes) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(data)

    def __enter__(self) -> _GzipWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.queue.put(None)
        self.thread.join()
        self.gz.close()
        self.raw.close()
        if exc_type is None and self.error is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)
            if self.error is not None and exc_type is None:
                raise self.error


def _write_probe_map(path: Path, layout: _Layout) -> None:
    order = layout.id_order
    placed = layout.chrom[order] >= 0
    gene_names = layout.promoters["gene"].to_numpy()
    gene = layout.gene[order]
    strand = layout.promoters["strand"].to_numpy()
    chrom_names = np.array(_CHROMS + (".",), dtype=object)
    table = pd.DataFrame(
        {
            "#id": [f"cg{i:08d}" for i in layout.probe_ids[order]],
            "gene": np.where(gene >= 0, gene_names[np.maximum(gene, 0)], "."),
            "chrom": chrom_names[np.where(placed, layout.chrom[order], len(_CHROMS))],
            "chromStart": np.where(placed, layout.pos[order], -1),
            "chromEnd": np.where(placed, layout.pos[order] + 1, -1),
            "strand": np.where(gene >= 0, strand[np.maximum(gene, 0)], "."),
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    table.to_csv(tmp, sep="\t", index=False, lineterminator="\n")
    os.replace(tmp, path)


@dataclass
class _Samples:
    barcodes: np.ndarray  # union of both matrices, object
    is_normal: np.ndarray
    paired_tumour: np.ndarray  # for normals: union index of the patient's tumour, else -1
    methylation_columns: np.ndarray  # union indices in the methylation file's column order
    expression_columns: np.ndarray


def _cohort_samples(spec: SyntheticSpec, cohort: str, rng: np.random.Generator) -> _Samples:
    n_tumour, n_normal = spec.sample_counts(cohort)
    if n_normal > n_tumour:
        raise ValueError(f"{cohort}: more normals than tumour patients")
    n_mo, n_eo = spec.n_methylation_only, spec.n_expression_only
    n_patients = n_tumour + n_mo + n_eo
    sites = _TSS_CODES.get(cohort)
    if sites is None:
        sites = tuple("".join(rng.choice(_ALPHABET, 2)) for _ in range(12))
    codes = rng.choice(36**4, size=n_patients, replace=False)
    patients = []
    for number, site in zip(codes, rng.choice(len(sites), n_patients), strict=True):
        digits = "".join(_ALPHABET[(int(number) // 36**k) % 36] for k in (3, 2, 1, 0))
        patients.append(f"TCGA-{sites[site]}-{digits}")
    normal_of = np.sort(rng.choice(n_tumour, size=n_normal, replace=False))
    barcodes = np.array([p + "-01" for p in patients] + [patients[i] + "-11" for i in normal_of],
                        dtype=object)
    n_union = len(barcodes)
    shared = np.concatenate([np.arange(n_tumour), np.arange(n_patients, n_union)])
    methylation = np.concatenate([shared, np.arange(n_tumour, n_tumour + n_mo)])
    expression = np.concatenate([shared, np.arange(n_tumour + n_mo, n_patients)])
    return _Samples(
        barcodes=barcodes,
        is_normal=np.arange(n_union) >= n_patients,
        paired_tumour=np.concatenate([np.full(n_patients, -1), normal_of]),
        methylation_columns=rng.permutation(methylation),
        expression_columns=rng.permutation(expression),
    )


def _cohort_key(cohort: str) -> int:
    return zlib.crc32(cohort.encode())


def _write_cohort(out_dir: Path, layout: _Layout, spec: SyntheticSpec, cohort: str,
                  seed: int) -> dict[str, int]:
    key = _cohort_key(cohort)
    rng = np.random.default_rng([seed, 1, key])
    samples = _cohort_samples(spec, cohort, rng)
    n_union = len(samples.barcodes)
    normal = samples.is_normal

    # Per-sample factors: open-sea hypomethylation and CIMP-like promoter gain in tumours.
    hypo_scale = rng.uniform(1.0, 2.0)
    hypo_level = np.where(normal, 0.0, rng.beta(2.0, 3.0, n_union) * hypo_scale).astype(np.float32)
    cimp = np.where(normal, 0.0, rng.beta(0.6, 2.0, n_union)).astype(np.float32)
    sample_shift = rng.normal(0.0, 0.1, n_union).astype(np.float32)

    n_blocks = len(layout.block_is_promoter)
    factors = rng.standard_normal((n_blocks, n_union), dtype=np.float32)
    normals = np.flatnonzero(normal)
    factors[:, normals] = (_PAIR_CORRELATION * factors[:, samples.paired_tumour[normals]]
                           + np.sqrt(1 - _PAIR_CORRELATION**2) * factors[:, normals])
    block_offset = rng.normal(0.0, 0.3, n_blocks).astype(np.float32)
    keep = rng.random(n_blocks) < 0.7
    extra = layout.block_is_promoter & (rng.random(n_blocks) < 0.03)
    gamma = np.where(keep, layout.hyper_gamma, 0.0)
    gamma = np.where(extra & (gamma == 0), rng.uniform(1.0, 3.0, n_blocks), gamma)
    gamma = gamma.astype(np.float32)
    hyper_probe = np.isin(layout.klass, (_PROMOTER, _SHORE))

    drivers = layout.drivers
    weights = drivers["base_weight"].to_numpy() * np.exp(rng.normal(0.0, 0.25, len(drivers)))
    genes = layout.genes
    n_genes = len(genes)
    raw_signal = np.zeros((n_genes, n_union))
    rank = np.empty(layout.n_probes, np.int64)
    rank[layout.id_order] = np.arange(layout.n_probes)
    driver_rank = rank[drivers["probe"].to_numpy()]
    driver_gene = drivers["gene_row"].to_numpy()

    id_names = np.array([f"cg{i:08d}" for i in layout.probe_ids[layout.id_order]], dtype="S10")
    meth_cols = samples.methylation_columns
    path = out_dir / methylation_path(cohort)
    with _GzipWriter(path, spec.compresslevel) as out:
        out.write(("sample\t" + "\t".join(samples.barcodes[meth_cols]) + "\n").encode())
        for chunk, start in enumerate(range(0, layout.n_probes, spec.chunk_size)):
            crng = np.random.default_rng([seed, 2, key, chunk])
            idx = layout.id_order[start:start + spec.chunk_size]
            block = layout.block[idx]
            m = factors[block]
            m *= layout.loading[idx, None]
            m += (layout.mu[idx] + block_offset[block])[:, None]
            m += sample_shift[None, :]
            m -= layout.hypo[idx, None] * hypo_level[None, :]
            hyper = np.flatnonzero(hyper_probe[idx] & (gamma[block] > 0))
            m[hyper] += gamma[block[hyper], None] * cimp[None, :]
            noise = crng.standard_normal(m.shape, dtype=np.float32)
            noise *= layout.noise_sd[idx, None]
            m += noise

            in_chunk = np.flatnonzero((driver_rank >= start) & (driver_rank < start + len(idx)))
            if len(in_chunk):
                values = m[driver_rank[in_chunk] - start].astype(np.float64)
                z = (values - values.mean(axis=1, keepdims=True)) / values.std(axis=1,
                                                                               keepdims=True)
                np.add.at(raw_signal, driver_gene[in_chunk], weights[in_chunk, None] * z)

            observed = m[:, meth_cols]
            np.negative(observed, out=observed)
            np.exp2(observed, out=observed)
            observed += 1.0
            np.divide(10_000.0, observed, out=observed)
            codes = np.rint(observed).astype(np.uint16)
            missing = crng.random(codes.shape, dtype=np.float32) < layout.missing_rate[idx, None]
            codes[missing] = _NA_CODE
            out.write(_encode_rows(id_names[start:start + len(idx)], codes, _BETA_TABLE))

    return _write_expression(out_dir, layout, spec, cohort, seed, samples, raw_signal, weights)


def _write_expression(out_dir: Path, layout: _Layout, spec: SyntheticSpec, cohort: str,
                      seed: int, samples: _Samples, raw_signal: np.ndarray,
                      weights: np.ndarray) -> dict[str, int]:
    rng = np.random.default_rng([seed, 3, _cohort_key(cohort)])
    genes = layout.genes
    n_genes = len(genes)
    cols = samples.expression_columns
    normal = samples.is_normal[cols].astype(float)
    p_normal = normal.mean()

    raw = raw_signal[:, cols]
    raw_var = raw.var(axis=1)
    target_r2 = np.clip(genes["target_r2"].to_numpy() + rng.normal(0, 0.05, n_genes), 0.15, 0.85)
    has_signal = genes["has_signal"].to_numpy() & (raw_var > 0)
    total_var = genes["total_sd"].to_numpy() ** 2
    signal_var = np.where(has_signal, target_r2 * total_var, 0.0)
    scale = np.where(has_signal, np.sqrt(signal_var / np.where(raw_var > 0, raw_var, 1.0)), 0.0)
    signal = raw * scale[:, None]
    other_var = np.where(has_signal, signal_var * (1 - target_r2) / target_r2, total_var)
    tissue_var = genes["tissue_fraction"].to_numpy() * other_var
    if 0 < p_normal < 1:
        tissue_effect = np.minimum(np.sqrt(tissue_var / (p_normal * (1 - p_normal))), 3.0)
    else:
        tissue_effect = np.zeros(n_genes)
    tissue_effect *= genes["tissue_sign"].to_numpy()
    tissue_var = tissue_effect**2 * p_normal * (1 - p_normal)
    noise_sd = np.sqrt(np.maximum(other_var - tissue_var, 0.0))
    expressed = (genes["category"] != "low_expressed").to_numpy()
    cohort_effect = rng.normal(0.0, 0.5, n_genes) * expressed

    # Noise: a normal shares half its noise variance with its patient's tumour.
    union_noise = rng.standard_normal((n_genes, len(samples.barcodes)))
    normals = np.flatnonzero(samples.is_normal)
    union_noise[:, normals] = (0.5 * union_noise[:, samples.paired_tumour[normals]]
                               + np.sqrt(0.75) * union_noise[:, normals])
    noise = union_noise[:, cols] * noise_sd[:, None]
    expression = (genes["baseline"].to_numpy() + cohort_effect)[:, None]
    expression = expression + tissue_effect[:, None] * (normal - p_normal)[None, :] + signal + noise
    zero = rng.random(expression.shape) < genes["zero_fraction"].to_numpy()[:, None]
    expression = np.where(zero, 0.0, np.maximum(expression, 0.0))

    barcodes = samples.barcodes[cols]
    names = genes["gene"].tolist()
    _write_matrix(out_dir / expression_path(cohort), barcodes, names, expression,
                  spec.compresslevel)
    truth = out_dir / "ground_truth" / cohort
    _write_matrix(truth / "signal.tsv.gz", barcodes, names, signal, spec.compresslevel)

    signal_var_written = signal.var(axis=1)
    explained = signal_var_written + tissue_var + noise_sd**2
    table = pd.DataFrame(
        {
            "gene": genes["gene"],
            "chromosome": genes["chromosome"],
            "tss": genes["tss"],
            "strand": genes["strand"],
            "category": genes["category"],
            "has_signal": has_signal,
            "baseline": genes["baseline"] + cohort_effect,
            "cohort_effect": cohort_effect,
            "tissue_effect": tissue_effect,
            "signal_variance": signal_var_written,
            "noise_sd": noise_sd,
            "expected_r2": np.where(explained > 0, signal_var_written / explained, 0.0),
        }
    )
    truth.mkdir(parents=True, exist_ok=True)
    table.to_csv(truth / "genes.tsv", sep="\t", index=False, float_format="%.6g",
                 lineterminator="\n")

    drivers = layout.drivers
    probes = drivers["probe"].to_numpy()
    gene_rows = drivers["gene_row"].to_numpy()
    driver_table = pd.DataFrame(
        {
            "gene": genes["gene"].to_numpy()[gene_rows],
            "probe_id": [f"cg{i:08d}" for i in layout.probe_ids[probes]],
            "chromosome": np.array(_CHROMS, dtype=object)[layout.chrom[probes]],
            "position": layout.pos[probes],
            "weight": weights * scale[gene_rows],
            "distance_to_tss": drivers["distance_to_tss"],
            "kind": drivers["kind"],
        }
    ).sort_values(["gene", "distance_to_tss"], kind="stable")
    driver_table.to_csv(truth / "drivers.tsv", sep="\t", index=False, float_format="%.6g",
                        lineterminator="\n")

    n_tumour, n_normal = spec.sample_counts(cohort)
    return {
        "tumour": n_tumour,
        "normal": n_normal,
        "methylation_samples": len(samples.methylation_columns),
        "expression_samples": len(cols),
        "shared_samples": n_tumour + n_normal,
        "probes": layout.n_probes,
        "expression_rows": n_genes,
        "signal_genes": int(has_signal.sum()),
        "drivers": len(drivers),
    }


def window_lengths(spec: SyntheticSpec, window_bp: int, seed: int = 0) -> pd.Series:
    """Probes in each modelled gene's window (indexed by gene) in the hub that ``spec`` and
    ``seed`` would write, without writing it (about 2 s for FULL).

    Probes without coordinates, on chrY or with a missing rate above 20 % are left out, as the
    data layer would leave them out. ``benchmarks/trainer_speed.py`` draws its genes' input
    lengths from this distribution.
    """
    layout = _build_layout(spec, seed)
    usable = (layout.chrom >= 0) & (layout.chrom < _CHRY) & (layout.missing_rate <= 0.2)
    probes = pd.DataFrame(
        {
            "probe_id": layout.probe_ids[usable],
            "chromosome": np.asarray(_CHROMS)[layout.chrom[usable]],
            "position": layout.pos[usable],
        }
    )
    modelled = layout.genes[layout.genes["category"] == "modelled"]
    promoters = layout.promoters.iloc[modelled["promoter_row"].to_numpy()].reset_index(drop=True)
    counts = window_counts(promoters, probes, window_bp)
    return pd.Series(counts, index=pd.Index(promoters["gene"], name="gene"), name="n_cpgs")


def write_synthetic_hub(out_dir: str | os.PathLike[str], spec: SyntheticSpec = SMALL,
                        cohorts: Sequence[str] = DEFAULT_COHORTS, seed: int = 0) -> dict:
    """Write a synthetic Xena hub under ``out_dir`` and return counts per cohort.

    Deterministic: the same ``spec`` and ``seed`` give byte-identical files, and a cohort's files
    are the same whichever other cohorts are written alongside.
    """
    if seed < 0:
        raise ValueError("seed must be non-negative")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    layout = _build_layout(spec, seed)
    _write_probe_map(out / PROBE_MAP_PATH, layout)
    category = layout.genes["category"]
    summary: dict = {
        "out_dir": str(out),
        "seed": seed,
        "probes": layout.n_probes,
        "probes_on_chromosomes": int(((layout.chrom >= 0) & (layout.chrom < _CHRY)).sum()),
        "modelled_genes": int((category == "modelled").sum()),
        "low_expressed_genes": int((category == "low_expressed").sum()),
        "unmapped_genes": int((category == "unmapped").sum()),
        "cohorts": {},
    }
    for cohort in cohorts:
        summary["cohorts"][cohort] = _write_cohort(out, layout, spec, cohort, seed)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dmg_ml.synthetic",
        description="Write a deterministic synthetic TCGA hub in the UCSC Xena file formats.",
    )
    parser.add_argument("out_dir", help="directory to write the hub into")
    parser.add_argument("--size", choices=sorted(PRESETS), default="small")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cohorts", nargs="+", default=list(DEFAULT_COHORTS))
    args = parser.parse_args(argv)
    started = time.perf_counter()
    summary = write_synthetic_hub(args.out_dir, PRESETS[args.size], args.cohorts, args.seed)
    print(f"wrote {args.size} synthetic hub to {summary['out_dir']} (seed {args.seed}): "
          f"{summary['probes']} probes, {summary['modelled_genes']} modelled genes")
    for cohort, counts in summary["cohorts"].items():
        print(f"  {cohort}: {counts['tumour']} tumour + {counts['normal']} normal shared, "
              f"{counts['methylation_samples']} methylation / {counts['expression_samples']} "
              f"expression samples, {counts['expression_rows']} expression rows, "
              f"{counts['signal_genes']} with methylation signal")
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
