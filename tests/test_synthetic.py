"""The synthetic Xena hub: formats, determinism, samples, probes and the ground truth."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dmg_ml.data.barcodes import parse_barcodes
from dmg_ml.data.genome import CHROMOSOMES, load_promoters
from dmg_ml.synthetic.writer import (
    PROBE_MAP_PATH,
    SMALL,
    SyntheticSpec,
    expression_path,
    main,
    methylation_path,
    write_synthetic_hub,
)

TINY = SyntheticSpec(
    n_genes=30,
    n_low_expressed=3,
    n_unmapped_genes=3,
    min_genes_per_chromosome=1,
    samples=(("BRCA", 30, 6), ("COAD", 20, 4)),
    default_samples=(15, 3),
    region_half_width=300_000,
    n_chry=5,
    n_coordinate_less=5,
)


@pytest.fixture(scope="module")
def small_hub(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("hub")
    summary = write_synthetic_hub(out, SMALL, cohorts=("BRCA", "GBM"), seed=0)
    return out, summary


def read_matrix(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", index_col=0)


def read_probe_map(hub: Path) -> pd.DataFrame:
    return pd.read_csv(hub / PROBE_MAP_PATH, sep="\t", dtype={"chrom": str})


def m_values(beta: pd.DataFrame) -> pd.DataFrame:
    clipped = beta.clip(1e-4, 1 - 1e-4)
    return np.log2(clipped / (1 - clipped))


def all_files(root: Path) -> dict[str, bytes]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


def test_layout_mirrors_the_xena_hub(small_hub: tuple[Path, dict]) -> None:
    hub, summary = small_hub
    for cohort in ("BRCA", "GBM"):
        assert (hub / methylation_path(cohort)).is_file()
        assert (hub / expression_path(cohort)).is_file()
        for name in ("genes.tsv", "drivers.tsv", "signal.tsv.gz"):
            assert (hub / "ground_truth" / cohort / name).is_file()
    assert not (hub / methylation_path("COAD")).exists()
    assert methylation_path("BRCA") == "TCGA.BRCA.sampleMap/HumanMethylation450.gz"
    assert expression_path("LUAD") == "TCGA.LUAD.sampleMap/HiSeqV2.gz"
    assert (hub / "probeMap" / "illuminaMethyl450_hg19_GPL16304_TCGAlegacy").is_file()
    assert (summary["cohorts"]["BRCA"]["tumour"], summary["cohorts"]["BRCA"]["normal"]) == (
        SMALL.sample_counts("BRCA")
    )
    assert summary["cohorts"]["GBM"]["shared_samples"] == 55


def test_methylation_matrix_format(small_hub: tuple[Path, dict]) -> None:
    hub, summary = small_hub
    path = hub / methylation_path("BRCA")
    with gzip.open(path, "rt") as handle:
        header = handle.readline().rstrip("\n").split("\t")
        first = handle.readline().rstrip("\n").split("\t")
    assert header[0] == "sample"
    assert re.fullmatch(r"cg\d{8}", first[0])
    assert all(re.fullmatch(r"NA|[01]\.\d{4}", v) for v in first[1:])
    beta = read_matrix(path)
    assert len(beta) == summary["probes"]
    assert beta.index.is_unique and beta.index.is_monotonic_increasing  # probe-id order
    values = beta.to_numpy()
    assert np.isnan(values).any()
    finite = values[~np.isnan(values)]
    assert finite.min() >= 0.0 and finite.max() <= 1.0
    assert (finite == 0.0).sum() > 0 and (finite == 1.0).sum() > 0
    assert (finite == 0.0).mean() < 0.01 and (finite == 1.0).mean() < 0.01
    # Bimodal: most values near one of the two modes.
    assert ((finite < 0.25) | (finite > 0.6)).mean() > 0.75


def test_expression_matrix_format(small_hub: tuple[Path, dict]) -> None:
    hub, summary = small_hub
    path = hub / expression_path("BRCA")
    with gzip.open(path, "rt") as handle:
        header = handle.readline().rstrip("\n").split("\t")
        first = handle.readline().rstrip("\n").split("\t")
    assert header[0] == "sample"
    assert all(re.fullmatch(r"\d+\.\d{4}", v) for v in first[1:])
    expression = read_matrix(path)
    assert expression.index.is_unique
    assert len(expression) == summary["cohorts"]["BRCA"]["expression_rows"]
    assert not expression.isna().any().any()
    assert expression.to_numpy().min() >= 0.0


def test_probe_map_format(small_hub: tuple[Path, dict]) -> None:
    hub, _ = small_hub
    with open(hub / PROBE_MAP_PATH) as handle:
        assert handle.readline() == "#id\tgene\tchrom\tchromStart\tchromEnd\tstrand\n"
    probes = read_probe_map(hub)
    beta = read_matrix(hub / methylation_path("BRCA"))
    assert probes["#id"].tolist() == beta.index.tolist()
    placed = probes[probes["chrom"] != "."]
    assert (placed["chromEnd"] == placed["chromStart"] + 1).all()
    assert (placed["chromStart"] > 0).all()
    assert not placed.duplicated(["chrom", "chromStart"]).any()
    unplaced = probes[probes["chrom"] == "."]
    assert len(unplaced) == SMALL.n_coordinate_less
    assert (unplaced["chromStart"] == -1).all() and (unplaced["chromEnd"] == -1).all()
    assert (probes["chrom"] == "chrY").sum() == SMALL.n_chry
    assert set(placed["chrom"]) == set(CHROMOSOMES) | {"chrY"}
    # Rows are in id order, so positions are shuffled rather than sorted.
    assert not placed["chromStart"].is_monotonic_increasing


def test_same_seed_same_bytes_and_different_seed_differs(tmp_path: Path) -> None:
    write_synthetic_hub(tmp_path / "a", TINY, cohorts=("BRCA",), seed=7)
    write_synthetic_hub(tmp_path / "b", TINY, cohorts=("BRCA",), seed=7)
    write_synthetic_hub(tmp_path / "c", TINY, cohorts=("BRCA",), seed=8)
    a, b, c = (all_files(tmp_path / name) for name in "abc")
    assert a == b
    assert len(a) == 7  # probe map, two matrices, three ground-truth files, the manifest
    for name in a:
        assert a[name] != c[name], name
    raw = a[methylation_path("BRCA")]
    assert raw[:3] == b"\x1f\x8b\x08"
    assert raw[3] & 0x08 == 0  # no file name in the gzip header
    assert raw[4:8] == b"\0\0\0\0"  # mtime 0


def test_cohort_files_do_not_depend_on_other_cohorts(tmp_path: Path) -> None:
    write_synthetic_hub(tmp_path / "one", TINY, cohorts=("BRCA",), seed=3)
    write_synthetic_hub(tmp_path / "two", TINY, cohorts=("COAD", "BRCA"), seed=3)
    one, two = all_files(tmp_path / "one"), all_files(tmp_path / "two")
    for name, data in one.items():
        assert two[name] == data, name
    assert two[methylation_path("COAD")] != two[methylation_path("BRCA")]


def test_new_cohort_gets_default_sizes(tmp_path: Path) -> None:
    summary = write_synthetic_hub(tmp_path, TINY, cohorts=("KIRC",), seed=0)
    assert summary["cohorts"]["KIRC"]["tumour"] == 15
    assert summary["cohorts"]["KIRC"]["normal"] == 3
    samples = read_matrix(tmp_path / expression_path("KIRC")).columns
    assert parse_barcodes(samples)["tissue"].value_counts()["normal"] == 3


@pytest.mark.parametrize("cohort", ["BRCA", "GBM"])
def test_barcodes_and_sample_sets(small_hub: tuple[Path, dict], cohort: str) -> None:
    hub, summary = small_hub
    with gzip.open(hub / methylation_path(cohort), "rt") as handle:
        meth = handle.readline().rstrip("\n").split("\t")[1:]
    with gzip.open(hub / expression_path(cohort), "rt") as handle:
        expr = handle.readline().rstrip("\n").split("\t")[1:]
    for columns in (meth, expr):
        assert len(set(columns)) == len(columns)
        assert all(len(b) == 15 for b in columns)
        parsed = parse_barcodes(columns)
        assert set(parsed["sample_type_code"]) == {"01", "11"}
        tumour_patients = set(parsed.loc[parsed["tissue"] == "tumour", "patient"])
        assert set(parsed.loc[parsed["tissue"] == "normal", "patient"]) <= tumour_patients
    shared = set(meth) & set(expr)
    counts = summary["cohorts"][cohort]
    assert len(shared) == counts["tumour"] + counts["normal"]
    assert set(meth) - set(expr) and set(expr) - set(meth)
    assert [b for b in meth if b in shared] != [b for b in expr if b in shared]
    normals = parse_barcodes(sorted(shared)).query("tissue == 'normal'")
    assert len(normals) == counts["normal"]


def test_cohorts_use_their_own_tissue_source_sites(small_hub: tuple[Path, dict]) -> None:
    hub, _ = small_hub
    sites = {}
    for cohort in ("BRCA", "GBM"):
        columns = read_matrix(hub / expression_path(cohort)).columns
        sites[cohort] = {b[5:7] for b in columns}
    assert "A1" in sites["BRCA"] or "A2" in sites["BRCA"]
    assert not sites["BRCA"] & sites["GBM"]


def test_genes_cover_every_chromosome(small_hub: tuple[Path, dict]) -> None:
    hub, summary = small_hub
    genes = pd.read_csv(hub / "ground_truth" / "BRCA" / "genes.tsv", sep="\t")
    modelled = genes[genes["category"] == "modelled"]
    assert len(modelled) == SMALL.n_genes == summary["modelled_genes"]
    per_chromosome = modelled["chromosome"].value_counts()
    assert set(per_chromosome.index) == set(CHROMOSOMES)
    assert per_chromosome.min() >= 3
    promoters = load_promoters().set_index("gene")
    in_table = genes[genes["category"] != "unmapped"]
    assert (promoters.loc[in_table["gene"], "tss"].to_numpy() == in_table["tss"].to_numpy()).all()
    unmapped = genes.loc[genes["category"] == "unmapped", "gene"]
    assert len(unmapped) == SMALL.n_unmapped_genes
    assert not set(unmapped) & set(promoters.index)
    assert any(name.startswith("?|") for name in unmapped)
    assert not genes.loc[genes["category"] != "modelled", "has_signal"].any()


def test_same_genes_in_every_cohort(small_hub: tuple[Path, dict]) -> None:
    hub, _ = small_hub
    brca = read_matrix(hub / expression_path("BRCA")).index
    gbm = read_matrix(hub / expression_path("GBM")).index
    assert brca.tolist() == gbm.tolist()


def test_expression_filter_targets(small_hub: tuple[Path, dict]) -> None:
    hub, _ = small_hub
    genes = pd.read_csv(hub / "ground_truth" / "BRCA" / "genes.tsv", sep="\t").set_index("gene")
    mean = read_matrix(hub / expression_path("BRCA")).mean(axis=1)
    low = genes.index[genes["category"] == "low_expressed"]
    assert len(low) == SMALL.n_low_expressed
    assert (mean[low] <= 1).all()
    assert (mean[genes.index[genes["category"] == "modelled"]] > 2).all()


def test_every_modelled_gene_has_a_usable_promoter_probe(small_hub: tuple[Path, dict]) -> None:
    hub, _ = small_hub
    probes = read_probe_map(hub).set_index("#id")
    beta = read_matrix(hub / methylation_path("BRCA"))
    usable = probes[(beta.isna().mean(axis=1) <= 0.2).reindex(probes.index)]
    genes = pd.read_csv(hub / "ground_truth" / "BRCA" / "genes.tsv", sep="\t")
    for gene in genes[genes["category"] == "modelled"].itertuples():
        on_chrom = usable[usable["chrom"] == gene.chromosome]["chromStart"]
        assert ((on_chrom - gene.tss).abs() <= 1_000).any(), gene.gene
        cluster = probes[(probes["chrom"] == gene.chromosome)
                         & ((probes["chromStart"] - gene.tss).abs() <= 1_500)]
        assert len(cluster) >= 6, gene.gene


def test_missing_values(small_hub: tuple[Path, dict]) -> None:
    hub, _ = small_hub
    for cohort in ("BRCA", "GBM"):
        missing = read_matrix(hub / methylation_path(cohort)).isna().mean(axis=1)
        assert 0.015 <= (missing > 0.2).mean() <= 0.05
        assert 0.005 <= missing[missing <= 0.2].mean() <= 0.02


def test_small_windows_stay_small(small_hub: tuple[Path, dict]) -> None:
    hub, _ = small_hub
    probes = read_probe_map(hub)
    genes = pd.read_csv(hub / "ground_truth" / "BRCA" / "genes.tsv", sep="\t")
    counts = []
    for gene in genes[genes["category"] == "modelled"].itertuples():
        on_chrom = probes.loc[probes["chrom"] == gene.chromosome, "chromStart"]
        counts.append(int(((on_chrom - gene.tss).abs() <= 1_001_000).sum()))
    assert 30 <= np.median(counts) <= 120
    assert min(counts) >= 20 and max(counts) <= 250


def test_methylation_biology(small_hub: tuple[Path, dict]) -> None:
    hub, _ = small_hub
    probes = read_probe_map(hub).set_index("#id")
    beta = read_matrix(hub / methylation_path("BRCA"))
    genes = pd.read_csv(hub / "ground_truth" / "BRCA" / "genes.tsv", sep="\t")
    tss = dict(zip(genes["gene"], genes["tss"], strict=True))
    offset = (probes["chromStart"] - probes["gene"].map(tss)).abs()
    median = beta.median(axis=1)
    open_sea = median[probes.index[(probes["gene"] == ".") & (probes["chrom"] != "chrY")]]
    promoter = median[probes.index[offset <= 1_000]]
    assert open_sea.median() > 0.65
    assert promoter.median() < 0.25
    tissue = parse_barcodes(beta.columns).set_index("sample")["tissue"]
    sea = beta.loc[open_sea.index]
    assert (sea.loc[:, tissue == "tumour"].mean().mean()
            < sea.loc[:, tissue == "normal"].mean().mean() - 0.02)
    # Neighbouring CpGs co-vary: promoter probes of one gene correlate more than random pairs.
    m = m_values(beta)
    within, across = [], []
    for gene in genes[genes["category"] == "modelled"]["gene"][:40]:
        ids = probes.index[(probes["gene"] == gene) & (offset <= 1_000)]
        ids = [i for i in ids if beta.loc[i].isna().mean() < 0.2][:4]
        if len(ids) >= 2:
            within.append(m.loc[ids].T.corr().to_numpy()[np.triu_indices(len(ids), 1)].mean())
    rng = np.random.default_rng(0)
    for _ in range(40):
        a, b = rng.choice(promoter.index, 2, replace=False)
        across.append(m.loc[[a, b]].T.corr().iloc[0, 1])
    assert np.mean(within) > np.mean(across) + 0.2


def test_ground_truth_is_consistent(small_hub: tuple[Path, dict]) -> None:
    hub, _ = small_hub
    truth = hub / "ground_truth" / "BRCA"
    genes = pd.read_csv(truth / "genes.tsv", sep="\t").set_index("gene")
    drivers = pd.read_csv(truth / "drivers.tsv", sep="\t")
    signal = read_matrix(truth / "signal.tsv.gz")
    expression = read_matrix(hub / expression_path("BRCA"))
    assert signal.index.tolist() == expression.index.tolist()
    assert signal.columns.tolist() == expression.columns.tolist()

    silent = genes.index[~genes["has_signal"]]
    assert len(silent) > 0
    assert not set(drivers["gene"]) & set(silent)
    assert (signal.loc[silent] == 0).all().all()
    assert (genes.loc[silent, "expected_r2"] == 0).all()
    modelled = genes[genes["category"] == "modelled"]
    assert 0.1 <= 1 - modelled["has_signal"].mean() <= 0.3

    active = genes.index[genes["has_signal"]]
    assert set(drivers["gene"]) == set(active)
    assert (signal.loc[active].var(axis=1) > 0).all()
    r2 = genes.loc[active, "expected_r2"]
    assert r2.between(0.1, 0.9).all()
    assert r2.min() < 0.3 and r2.max() > 0.7
    shared = expression.columns.intersection(read_matrix(hub / methylation_path("BRCA")).columns)
    corr = np.array([np.corrcoef(signal.loc[g, shared], expression.loc[g, shared])[0, 1]
                     for g in active])
    assert (corr > 0.2).all()
    assert np.median(corr) > 0.5
    # Correlation tracks the stated expected r² (sqrt of it, up to sampling noise).
    assert np.corrcoef(corr, np.sqrt(r2))[0, 1] > 0.7

    promoter = drivers[drivers["kind"] == "promoter"]
    assert (promoter["distance_to_tss"].abs() <= 1_500).all()
    assert (promoter["weight"] < 0).mean() > 0.7
    distal = drivers[drivers["kind"] == "distal"]
    assert len(distal) > 0
    assert (distal["distance_to_tss"].abs() <= 1_000_000).all()
    assert (distal["weight"] > 0).any() and (distal["weight"] < 0).any()


def test_drivers_match_the_probe_map(small_hub: tuple[Path, dict]) -> None:
    hub, _ = small_hub
    probes = read_probe_map(hub).set_index("#id")
    drivers = pd.read_csv(hub / "ground_truth" / "BRCA" / "drivers.tsv", sep="\t")
    genes = pd.read_csv(hub / "ground_truth" / "BRCA" / "genes.tsv", sep="\t").set_index("gene")
    located = probes.loc[drivers["probe_id"]]
    assert (located["chrom"].to_numpy() == drivers["chromosome"].to_numpy()).all()
    assert (located["chromStart"].to_numpy() == drivers["position"].to_numpy()).all()
    tss = genes.loc[drivers["gene"], "tss"].to_numpy()
    assert (drivers["position"].to_numpy() - tss == drivers["distance_to_tss"].to_numpy()).all()
    assert (genes.loc[drivers["gene"], "chromosome"].to_numpy()
            == drivers["chromosome"].to_numpy()).all()


def test_written_methylation_carries_the_signal(small_hub: tuple[Path, dict]) -> None:
    """Regressing expression on its driver CpGs as written recovers about the expected r²."""
    hub, _ = small_hub
    truth = hub / "ground_truth" / "BRCA"
    genes = pd.read_csv(truth / "genes.tsv", sep="\t").set_index("gene")
    drivers = pd.read_csv(truth / "drivers.tsv", sep="\t")
    beta = read_matrix(hub / methylation_path("BRCA"))
    expression = read_matrix(hub / expression_path("BRCA"))
    shared = beta.columns.intersection(expression.columns)
    m = m_values(beta.loc[drivers["probe_id"].unique(), shared])
    m = m.apply(lambda row: row.fillna(row.mean()), axis=1)
    fitted, expected = [], []
    for gene, rows in drivers.groupby("gene"):
        x = np.column_stack([np.ones(len(shared)), m.loc[rows["probe_id"]].T.to_numpy()])
        y = expression.loc[gene, shared].to_numpy()
        residual = y - x @ np.linalg.lstsq(x, y, rcond=None)[0]
        fitted.append(1 - residual.var() / y.var())
        expected.append(genes.loc[gene, "expected_r2"])
    fitted, expected = np.array(fitted), np.array(expected)
    assert np.corrcoef(fitted, expected)[0, 1] > 0.7
    assert -0.1 < np.median(fitted - expected) < 0.15


def test_exact_probe_count_streams_in_chunks(tmp_path: Path) -> None:
    """The FULL code path: genome-wide background topped up to an exact count, several chunks."""
    spec = SyntheticSpec(
        n_genes=20, n_low_expressed=2, n_unmapped_genes=2, min_genes_per_chromosome=0,
        samples=(("BRCA", 12, 3),), n_methylation_only=1, n_expression_only=1,
        other_promoter_probability=0.02, region_half_width=None, n_probes=4_000,
        n_chry=10, n_coordinate_less=7, chunk_size=1_000, compresslevel=1,
    )
    summary = write_synthetic_hub(tmp_path, spec, cohorts=("BRCA",), seed=1)
    beta = read_matrix(tmp_path / methylation_path("BRCA"))
    probes = read_probe_map(tmp_path)
    assert summary["probes"] == len(beta) == len(probes) == 4_000
    assert beta.index.is_monotonic_increasing
    assert (probes["chrom"] == ".").sum() == 7
    assert beta.shape[1] == 16
    open_sea = probes[(probes["gene"] == ".") & probes["chrom"].isin(CHROMOSOMES)]
    assert open_sea["chrom"].nunique() == len(CHROMOSOMES)


def test_cli_writes_a_hub(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path), "--cohorts", "GBM", "--seed", "2"]) == 0
    printed = capsys.readouterr().out
    assert "GBM: 50 tumour + 5 normal" in printed
    assert (tmp_path / methylation_path("GBM")).is_file()
    assert not (tmp_path / methylation_path("BRCA")).exists()
