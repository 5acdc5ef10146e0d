"""The cohort-independent part of the synthetic TCGA hub that :mod:`dmg_ml.synthetic.writer` writes.

:class:`SyntheticSpec` holds the size knobs (presets ``SMALL`` and ``FULL``). :func:`build_layout`
turns a spec and a seed into the :class:`Layout` that all cohorts share: the probes (positions,
classes, ids, methylation parameters, co-variation blocks, missing rates), the HiSeqV2 rows and the
driver CpGs of each signal gene. :func:`window_lengths` counts the probes in each modelled gene's
window from the layout alone, without writing a hub.

Probes cluster around real hg19 promoters (TSS ± 1.5 kb, at least one within ± 1 kb of a modelled
gene), with shores, gene-body probes and sparse open-sea background. Two kinds of probe are
unusable by design, as on the real array: probes on chrY (a valid coordinate outside
``CHROMOSOMES``) and probes without coordinates. Neighbouring CpGs share a co-variation block (a
gene's promoter, or a 500 kb bin). HiSeqV2 rows are modelled genes (a share of them without
methylation signal), low-expressed genes and unmapped names absent from the promoter table.

The layout is drawn from its own random stream of ``seed``, so it is the same whichever cohorts
are written. It stays one module (over 400 lines) because probes, genes and drivers are drawn in
order from that one stream: split, the draw order (and so every hub) would be a contract between
modules.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from dmg_ml.data.genome import CHROMOSOMES, HG19_LENGTHS, PROMOTER_HALF_WIDTH, load_promoters
from dmg_ml.data.preprocess import MAX_MISSING_FRACTION
from dmg_ml.data.windows import window_counts


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
PROMOTER, SHORE, _BODY, _OPEN_SEA, _VARIABLE, _EXTREME, _UNPLACED = range(7)

CHROMS: tuple[str, ...] = CHROMOSOMES + ("chrY",)
_LENGTHS = np.array([HG19_LENGTHS[c] for c in CHROMOSOMES] + [59_373_566], dtype=np.int64)
CHRY = len(CHROMOSOMES)
_POS_BITS = 32
_BIN = 500_000


@dataclass
class Layout:
    """Everything shared by all cohorts: probes (in position order), genes and drivers."""

    chrom: np.ndarray  # int64 index into CHROMS, -1 without coordinates
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
    autosomes_x = _LENGTHS[:CHRY]
    chrom = rng.choice(CHRY, size=n, p=autosomes_x / autosomes_x.sum())
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
        PROMOTER, protected=True)
    lo, hi = spec.promoter_probes
    counts = rng.integers(lo - 1, hi, len(written))
    offsets = np.clip(np.rint(rng.normal(0, 650, counts.sum())), -1500, 1500).astype(np.int64)
    cluster(written, counts, offsets, PROMOTER)

    others = np.setdiff1d(np.arange(len(p_tss)), written)
    if spec.region_half_width is not None:
        others = others[_near(p_chrom[others], p_tss[others], p_chrom[modelled], p_tss[modelled],
                              spec.region_half_width)]
    others = others[rng.random(len(others)) < spec.other_promoter_probability]
    lo, hi = spec.other_promoter_probes
    counts = rng.integers(lo, hi + 1, len(others))
    offsets = np.clip(np.rint(rng.normal(0, 650, counts.sum())), -1500, 1500).astype(np.int64)
    cluster(others, counts, offsets, PROMOTER)

    lo, hi = spec.shore_probes
    counts = rng.integers(lo, hi + 1, len(written))
    sign = rng.choice([-1, 1], counts.sum())
    cluster(written, counts, sign * rng.integers(1_500, 4_000, counts.sum()), SHORE)

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
        n = rng.poisson(genome_density * _LENGTHS[:CHRY].sum() / 1e6)
        add(None, *_uniform_genome(rng, n), _OPEN_SEA)
    add(None, np.full(spec.n_chry, CHRY), rng.integers(1, _LENGTHS[CHRY], spec.n_chry),
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

    r = rows(PROMOTER)
    mu[r] = gene_mu[gene[r]] + rng.normal(0, 0.4, len(r))
    loading[r] = rng.uniform(0.3, 0.9, len(r))
    noise_sd[r] = rng.uniform(0.2, 0.45, len(r))
    r = rows(SHORE)
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


def build_layout(spec: SyntheticSpec, seed: int) -> Layout:
    rng = np.random.default_rng([seed, 0])
    promoters = load_promoters()
    chrom_index = {c: i for i, c in enumerate(CHROMS)}
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
    in_cluster = (gene >= 0) & np.isin(klass, (PROMOTER, SHORE, _EXTREME))
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
    eligible = (chrom >= 0) & (chrom < CHRY) & (missing_rate <= spec.missing_rate) & np.isin(
        klass, (PROMOTER, SHORE, _BODY, _OPEN_SEA, _VARIABLE)
    )
    drivers = _choose_drivers(genes, chrom, pos, gene, eligible, rng)
    return Layout(
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


def window_lengths(spec: SyntheticSpec, window_bp: int, seed: int = 0) -> pd.Series:
    """Probes in each modelled gene's window (indexed by gene) in the hub that ``spec`` and
    ``seed`` would write, without writing it (about 2 s for FULL).

    Probes without coordinates, on chrY or with a missing rate above 20 % are left out, as the
    data layer would leave them out. ``benchmarks/trainer_speed.py`` draws its genes' input
    lengths from this distribution.
    """
    layout = build_layout(spec, seed)
    placed = (layout.chrom >= 0) & (layout.chrom < CHRY)
    usable = placed & (layout.missing_rate <= MAX_MISSING_FRACTION)
    probes = pd.DataFrame(
        {
            "probe_id": layout.probe_ids[usable],
            "chromosome": np.asarray(CHROMS)[layout.chrom[usable]],
            "position": layout.pos[usable],
        }
    )
    modelled = layout.genes[layout.genes["category"] == "modelled"]
    promoters = layout.promoters.iloc[modelled["promoter_row"].to_numpy()].reset_index(drop=True)
    counts = window_counts(promoters, probes, window_bp)
    return pd.Series(counts, index=pd.Index(promoters["gene"], name="gene"), name="n_cpgs")
