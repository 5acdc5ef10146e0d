"""Data-layer assets: Xena downloads → samples, expression, probes, M-values, promoters, windows.

Each asset reads its inputs, calls ``dmg_ml``, validates and writes one cohort partition of a
warehouse table, and reports metadata. Checks that a person should see in the UI are declared as
asset checks and evaluated on the rows just written.
"""


import time

import numpy as np
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetSpec,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
    multi_asset,
)
from pydantic import Field

from dmg_assets.metadata import markdown_table
from dmg_assets.partitions import cohort_partitions
from dmg_ml.data.barcodes import sample_table
from dmg_ml.data.genome import load_promoters
from dmg_ml.data.methylation import MValueStream, m_value_rows
from dmg_ml.data.preprocess import filter_expression
from dmg_ml.data.schemas import validate
from dmg_ml.data.windows import AUTHORS_CODE_WINDOW, WINDOW_SIZES, promoters_with_probes
from dmg_ml.data.windows import gene_windows as build_gene_windows
from dmg_ml.data.xena import SourceFormatError, read_matrix, read_matrix_header, read_probe_map
from dmg_resources.source import (
    PROBE_MAP_PATH,
    XenaSource,
    validate_cohort,
)
from dmg_resources.warehouse import Warehouse

GROUP = "data_layer"


def _cohort(context: AssetExecutionContext) -> dict[str, str]:
    """The partition's cohort, checked against the one rule for cohort names.

    A partition added from the UI with a name that breaks the rule is removed again, so it
    does not stay registered; the step fails before any file is read or written.
    """
    cohort = context.partition_key
    try:
        validate_cohort(cohort)
    except ValueError:
        context.instance.delete_dynamic_partition(cohort_partitions.name, cohort)
        raise
    return {"cohort": cohort}


def _require_rows(rows: int, what: str, why: str) -> None:
    """Fail a step whose input gave nothing: an empty table must never replace a cohort."""
    if rows == 0:
        raise SourceFormatError(f"{what}: {why}; nothing was written")


def _source_paths(source: XenaSource, cohort: str) -> dict[str, str]:
    """The files a cohort's data layer reads, spelled by the source (its one way to)."""
    return {**source.cohort_files(cohort), "probe_map": PROBE_MAP_PATH}


def _cached(source: XenaSource, relative: str):
    path = source.cache_path(relative)
    if not path.exists():
        raise FileNotFoundError(f"{path} is not cached: materialise source_files first")
    return path


def _kept_samples(warehouse: Warehouse, partition: dict[str, str]) -> list[str]:
    samples = warehouse.read("samples", partition, columns=["sample", "kept"])
    return samples.loc[samples["kept"], "sample"].astype(str).tolist()


@asset(partitions_def=cohort_partitions, group_name=GROUP, kinds={"http"})
def source_files(context: AssetExecutionContext, source: XenaSource) -> MaterializeResult:
    """The cohort's methylation and expression matrices and the probe map, cached locally.

    The source is asked for the cohort's files first: a cohort it lacks (added in the UI by a
    wrong name) fails here naming the URL tried, before anything is downloaded or written."""
    cohort = _cohort(context)["cohort"]
    version = source.version(cohort)
    metadata: dict[str, object] = {"source_version": version.key}
    for name, relative in _source_paths(source, cohort).items():
        started = time.monotonic()
        download = source.fetch(relative)
        verb = "reused" if download.reused else "downloaded"
        context.log.info(f"{name}: {verb} {download.url} ({download.size_bytes:,} bytes)")
        metadata[f"{name}_url"] = MetadataValue.url(download.url)
        metadata[f"{name}_sha256"] = download.sha256
        metadata[f"{name}_bytes"] = download.size_bytes
        metadata[f"{name}_reused"] = download.reused
        metadata[f"{name}_seconds"] = round(time.monotonic() - started, 2)
    return MaterializeResult(metadata=metadata)


class SamplesConfig(Config):
    exclude: list[str] = Field(
        default_factory=list,
        description="Barcodes to leave out (kept = false), e.g. samples whose methylation is "
        "mostly missing.",
    )


@asset(
    partitions_def=cohort_partitions, group_name=GROUP, deps=[source_files], kinds={"duckdb"},
    check_specs=[AssetCheckSpec(
        "has_shared_samples", asset="samples", blocking=True,
        description="At least 10 samples are in both matrices (enough for 5-fold CV); when it "
        "fails, nothing downstream runs.",
    )],
)
def samples(
    context: AssetExecutionContext, config: SamplesConfig, source: XenaSource,
    warehouse: Warehouse,
) -> MaterializeResult:
    """Barcodes of both matrices parsed into patient, sample type and tissue; kept = in both
    and not excluded by config."""
    paths = _source_paths(source, _cohort(context)["cohort"])
    table = sample_table(
        read_matrix_header(_cached(source, paths["methylation"])),
        read_matrix_header(_cached(source, paths["expression"])),
    )
    unknown = sorted(set(config.exclude) - set(table["sample"]))
    if unknown:
        raise ValueError(f"samples to exclude are in neither matrix: {unknown[:10]}")
    table["kept"] &= ~table["sample"].isin(config.exclude)
    rows = warehouse.write("samples", _cohort(context), validate("samples", table))
    kept = table[table["kept"]]
    counts = kept["tissue"].value_counts()
    yield MaterializeResult(
        metadata={
            "rows": rows,
            "samples_kept": len(kept),
            "tumour": int(counts.get("tumour", 0)),
            "normal": int(counts.get("normal", 0)),
            "patients": int(kept["patient"].nunique()),
            "only_in_methylation": int((table["in_methylation"] & ~table["in_expression"]).sum()),
            "only_in_expression": int((table["in_expression"] & ~table["in_methylation"]).sum()),
            "excluded": len(config.exclude),
        }
    )
    yield AssetCheckResult(
        check_name="has_shared_samples",
        passed=len(kept) >= 10,
        severity=AssetCheckSeverity.ERROR,
        # text, not a number: the UI plots a check's numeric metadata of every cohort on one
        # time axis, as if the cohorts were one series
        metadata={"samples_kept": MetadataValue.text(f"{_cohort(context)['cohort']}: {len(kept)}")},
        description="At least 10 samples are in both matrices (enough for 5-fold CV).",
    )


@asset(partitions_def=cohort_partitions, group_name=GROUP, deps=[samples], kinds={"duckdb"})
def expression(
    context: AssetExecutionContext, source: XenaSource, warehouse: Warehouse
) -> MaterializeResult:
    """log2(RSEM + 1) of genes with mean > 1 over the samples kept (docs/design.md §3 steps 3-4)."""
    partition = _cohort(context)
    kept = _kept_samples(warehouse, partition)
    path = _cached(source, _source_paths(source, partition["cohort"])["expression"])
    matrix = read_matrix(path, columns=kept)
    _require_rows(len(matrix), path.name, "the matrix has no data rows")
    expressed = filter_expression(matrix)
    _require_rows(len(expressed), path.name, "no gene has a mean log2 expression above 1")
    long = (
        expressed.rename_axis(index="gene", columns="sample")
        .stack()
        .rename("log2_expression")
        .reset_index()
    )
    rows = warehouse.write("expression", partition, validate("expression", long))
    means = expressed.mean(axis=1)
    return MaterializeResult(
        metadata={
            "rows": rows,
            "genes_in_file": len(matrix),
            "genes_kept": len(expressed),
            "samples": len(kept),
            "median_gene_mean": float(means.median()) if len(means) else float("nan"),
        }
    )


class MValuesConfig(Config):
    """The stream's defaults (``MValueStream``) are the one home of these settings."""

    max_missing_fraction: float = Field(
        default=MValueStream.max_missing_fraction,
        description="Probes missing in more samples than this are dropped.",
    )
    n_neighbors: int = Field(
        default=MValueStream.n_neighbors, description="Samples averaged by the kNN imputation."
    )
    block_megabytes: int = Field(
        default=MValueStream.block_bytes >> 20,
        description="Text read (and imputed) per block; bounds memory.",
    )


@multi_asset(
    specs=[
        AssetSpec(
            "m_values", deps=[samples], group_name=GROUP, kinds={"duckdb"},
            description="M = log2(β / (1 − β)) of every kept probe and sample, clamped to ±10; "
            "missing cells filled by kNN over samples (imputed = true).",
        ),
        AssetSpec(
            "probes", deps=[samples], group_name=GROUP, kinds={"duckdb"},
            description="Every probe of the matrix with hg19 coordinates on chr1-22/X, its "
            "missing fraction over the kept samples and whether it was kept (≤ 20 % missing).",
        ),
    ],
    check_specs=[
        AssetCheckSpec(
            "one_row_per_probe_and_sample", asset="m_values", blocking=True,
            description="m_values holds exactly kept probes × kept samples rows.",
        ),
        AssetCheckSpec(
            "imputed_share_below_5_percent", asset="m_values",
            description="Under 5 % of the M-values were imputed (a warning, not a stop).",
        ),
    ],
    partitions_def=cohort_partitions,
)
def m_values_and_probes(
    context: AssetExecutionContext, config: MValuesConfig, source: XenaSource,
    warehouse: Warehouse,
):
    """Betas → M-values (±10 clamp) → >20% missing dropped → kNN-imputed, streamed block by block.

    ``probes`` records every located probe of the matrix, its missing fraction and whether it was
    kept; ``m_values`` holds one row per kept probe and sample, partitioned by chromosome.
    """
    partition = _cohort(context)
    paths = _source_paths(source, partition["cohort"])
    kept_samples = _kept_samples(warehouse, partition)
    matrix = _cached(source, paths["methylation"])
    coordinates = read_probe_map(_cached(source, paths["probe_map"]))
    stream = MValueStream(
        path=matrix,
        samples=kept_samples,
        coordinates=coordinates,
        max_missing_fraction=config.max_missing_fraction,
        n_neighbors=config.n_neighbors,
        block_bytes=config.block_megabytes << 20,
    )
    imputed = 0
    started = time.monotonic()
    with warehouse.transaction() as transaction, transaction.writer(
        "m_values", partition
    ) as writer:
        for number, block in enumerate(stream.blocks(), start=1):
            imputed += int(block.imputed.sum())
            for chromosome in np.unique(block.chromosome):
                rows = np.flatnonzero(block.chromosome == chromosome)
                table = m_value_rows(block, kept_samples, rows)
                validate("m_values", table.to_pandas())
                writer.write(table, sub={"chromosome": str(chromosome)})
            context.log.info(
                f"m_values block {number}: {writer.rows:,} rows so far "
                f"({time.monotonic() - started:.0f} s)"
            )
        probes = validate("probes", stream.probe_table())
        if not len(probes):
            why = "the matrix has no data rows" if not stream.n_unlocated else (
                f"none of its {stream.n_unlocated:,} probes has coordinates in the probe map"
            )
            _require_rows(0, matrix.name, why)
        _require_rows(writer.rows, matrix.name, "every probe is missing in over "
                      f"{config.max_missing_fraction:.0%} of the samples")
        transaction.write("probes", partition, probes)
    n_kept = int(probes["kept"].sum())
    expected = n_kept * len(kept_samples)
    yield MaterializeResult(
        asset_key="m_values",
        metadata={
            "rows": writer.rows,
            "probes": n_kept,
            "samples": len(kept_samples),
            "imputed_values": imputed,
            "seconds": round(time.monotonic() - started, 1),
        },
    )
    yield MaterializeResult(
        asset_key="probes",
        metadata={
            "rows": len(probes),
            "kept": n_kept,
            "dropped_over_missing_limit": len(probes) - n_kept,
            "dropped_without_coordinates": stream.n_unlocated,
            "probe_map_chromosome_aliases": str(coordinates.attrs.get("chromosome_aliases", {})),
        },
    )
    yield AssetCheckResult(
        asset_key="m_values",
        check_name="one_row_per_probe_and_sample",
        passed=writer.rows == expected,
        metadata={"rows": writer.rows, "kept_probes_x_samples": expected},
    )
    share = imputed / expected if expected else 0.0
    yield AssetCheckResult(
        asset_key="m_values",
        check_name="imputed_share_below_5_percent",
        passed=share < 0.05,
        severity=AssetCheckSeverity.WARN,
        metadata={"imputed_share": round(share, 5)},
    )


@asset(
    partitions_def=cohort_partitions, group_name=GROUP, deps=[expression, "probes"],
    kinds={"duckdb"},
)
def gene_promoters(context: AssetExecutionContext, warehouse: Warehouse) -> MaterializeResult:
    """Promoters (TSS ± 1 kb) of expressed genes holding at least one kept probe (§3 step 5)."""
    partition = _cohort(context)
    genes = warehouse.read("expression", partition, columns=["gene"])["gene"].unique()
    probes = warehouse.read("probes", partition, filters=[("kept", "=", True)])
    promoters = promoters_with_probes(load_promoters(), probes, genes)
    _require_rows(len(promoters), f"gene_promoters of {partition['cohort']}",
                  "no expressed gene has a kept probe in its promoter")
    rows = warehouse.write("gene_promoters", partition, validate("gene_promoters", promoters))
    return MaterializeResult(
        metadata={
            "rows": rows,
            "expressed_genes": len(genes),
            "expressed_without_promoter_probe": len(genes) - rows,
            "median_promoter_probes": float(promoters["n_promoter_probes"].median())
            if rows else 0.0,
        }
    )


class WindowSizesConfig(Config):
    window_sizes: list[int] = Field(
        default=list(WINDOW_SIZES),
        description="Half-widths W (bp) around the promoter; the authors' code used "
        f"{AUTHORS_CODE_WINDOW}.",
    )


@asset(
    partitions_def=cohort_partitions, group_name=GROUP, deps=[gene_promoters, "probes"],
    kinds={"duckdb"},
    check_specs=[AssetCheckSpec(
        "every_gene_has_cpgs_in_every_window", asset="gene_windows", blocking=True,
        description="Every promoter of gene_promoters has CpGs in every window size.",
    )],
)
def gene_windows(
    context: AssetExecutionContext, config: WindowSizesConfig, warehouse: Warehouse
):
    """CpGs within [promoter start − W, promoter end + W] of each gene, for each window W."""
    partition = _cohort(context)
    promoters = warehouse.read("gene_promoters", partition)
    probes = warehouse.read("probes", partition, filters=[("kept", "=", True)])
    windows = validate("gene_windows", build_gene_windows(promoters, probes, config.window_sizes))
    _require_rows(len(windows), f"gene_windows of {partition['cohort']}", "no CpG in any window")
    rows = warehouse.write("gene_windows", partition, windows)
    sizes = windows.groupby(["window_bp", "gene"]).size().rename("n_cpgs").reset_index()
    summary = (
        sizes.groupby("window_bp")["n_cpgs"]
        .agg(genes="count", min="min", median="median", mean="mean", max="max")
        .reset_index()
    )
    genes_per_window = sizes.groupby("window_bp")["gene"].nunique()
    yield MaterializeResult(
        metadata={
            "rows": rows,
            "genes": len(promoters),
            "cpgs_per_gene": MetadataValue.md(markdown_table(summary, digits=1)),
        }
    )
    uncovered = {
        int(w): int(len(promoters) - genes_per_window.get(w, 0)) for w in config.window_sizes
    }
    yield AssetCheckResult(
        check_name="every_gene_has_cpgs_in_every_window",
        passed=not any(uncovered.values()),
        severity=AssetCheckSeverity.ERROR,
        metadata={"genes_without_cpgs": str(uncovered)},
    )
