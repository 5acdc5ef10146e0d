"""The data-layer assets end to end, through Dagster, on the tiny synthetic hub."""

import gzip
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dagster import DagsterInstance, materialize

from dmg_assets.partitions import cohort_partitions
from dmg_resources.warehouse import Warehouse
from tests.conftest import DATA_ASSETS, TINY, materialize_cohort, resources_for
from tests.http_server import FileServer
from warehouse.query import connect

TABLES = ["samples", "probes", "m_values", "expression", "gene_promoters", "gene_windows"]


def _warehouse(data_dir) -> Warehouse:
    return Warehouse(root=str(data_dir / "warehouse"), database=str(data_dir / "dmg.duckdb"))


def _snapshot(data_dir) -> dict[str, pd.DataFrame]:
    warehouse = _warehouse(data_dir)
    return {
        t: warehouse.query(f"SELECT * FROM {t} ORDER BY ALL").reset_index(drop=True)
        for t in TABLES
    }


def test_every_table_is_queryable_in_the_duckdb_file(built):
    with connect(str(built / "dmg.duckdb")) as connection:
        counts = dict(
            connection.execute(
                "SELECT cohort, count(*) FROM samples WHERE kept GROUP BY 1"
            ).fetchall()
        )
        assert counts == {"BRCA": 48, "COAD": 24}
        for table in TABLES:
            sql = f"SELECT DISTINCT cohort FROM {table} ORDER BY 1"
            cohorts = connection.execute(sql).fetchall()
            assert cohorts == [("BRCA",), ("COAD",)], table


def test_m_values_follow_the_protocol(built, tiny_hub):
    warehouse = _warehouse(built)
    probes = warehouse.read("probes", {"cohort": "BRCA"})
    kept = probes[probes["kept"]]
    assert (kept["missing_fraction"] <= 0.2).all()
    assert (probes.loc[~probes["kept"], "missing_fraction"] > 0.2).all()
    assert (~probes["kept"]).sum() > 0
    m = warehouse.query("SELECT * FROM m_values WHERE cohort = 'BRCA'")
    assert len(m) == len(kept) * 48
    assert m["m_value"].between(-10, 10).all() and np.isfinite(m["m_value"]).all()
    assert m["imputed"].sum() > 0
    # a non-imputed cell equals log2(beta / (1 - beta)) of the raw file
    raw = pd.read_csv(tiny_hub / "TCGA.BRCA.sampleMap/HumanMethylation450.gz", sep="\t",
                      index_col=0)
    observed = m[~m["imputed"]].sample(200, random_state=0)
    beta = np.array([raw.at[p, s] for p, s in zip(observed["probe_id"], observed["sample"],
                                                   strict=True)])
    expected = np.clip(np.log2(beta / (1 - beta)), -10, 10)
    np.testing.assert_allclose(observed["m_value"], expected, rtol=1e-5, atol=1e-5)
    # imputed cells were missing in the raw file
    imputed = m[m["imputed"]].head(50)
    assert all(np.isnan(raw.at[p, s]) for p, s in zip(imputed["probe_id"], imputed["sample"],
                                                      strict=True))
    # probes without coordinates or off the main chromosomes never reach the tables
    assert set(kept["chromosome"]) <= {f"chr{i}" for i in range(1, 23)} | {"chrX"}


def test_expression_and_promoters_follow_the_protocol(built):
    warehouse = _warehouse(built)
    means = warehouse.query(
        "SELECT gene, avg(log2_expression) AS mean FROM expression WHERE cohort = 'BRCA' "
        "GROUP BY gene"
    )
    assert (means["mean"] > 1).all()
    assert len(means) >= TINY.n_genes  # the low-expressed genes were dropped
    promoters = warehouse.read("gene_promoters", {"cohort": "BRCA"})
    assert len(promoters) == TINY.n_genes
    assert (promoters["n_promoter_probes"] >= 1).all()
    sizes = warehouse.query(
        "SELECT window_bp, min(n_cpgs) AS lo, max(n_cpgs) AS hi, count(*) AS genes "
        "FROM gene_window_sizes WHERE cohort = 'BRCA' GROUP BY 1 ORDER BY 1"
    )
    assert sizes["window_bp"].tolist() == [1_000, 10_000, 100_000, 1_000_000]
    assert (sizes["genes"] == TINY.n_genes).all() and (sizes["lo"] >= 1).all()
    assert sizes["hi"].is_monotonic_increasing


def test_rematerialising_replaces_rows(built_copy, tiny_hub):
    before = _snapshot(built_copy)
    result = materialize_cohort("BRCA", resources_for(str(tiny_hub), built_copy))
    downloads = result.asset_materializations_for_node("source_files")[0].metadata
    assert downloads["methylation_reused"].value is True
    after = _snapshot(built_copy)
    for table in TABLES:
        pd.testing.assert_frame_equal(before[table], after[table], obj=table)


def test_http_source_gives_the_same_tables(tiny_hub, tmp_path, built):
    with FileServer(tiny_hub) as server:
        result = materialize_cohort("COAD", resources_for(server.url, tmp_path))
        assert any("%2F" in r.raw_path for r in server.requests)
    sha = result.asset_materializations_for_node("source_files")[0].metadata
    local = _warehouse(built).query("SELECT * FROM m_values WHERE cohort = 'COAD' ORDER BY ALL")
    remote = _warehouse(tmp_path).query("SELECT * FROM m_values ORDER BY ALL")
    pd.testing.assert_frame_equal(local, remote)
    assert len(sha["methylation_sha256"].value) == 64


def _corrupt_truncated_gzip(hub):
    path = hub / "TCGA.BRCA.sampleMap/HumanMethylation450.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])


def _rewrite_matrix(path, edit):
    with gzip.open(path, "rt") as handle:
        lines = handle.read().splitlines()
    lines = edit(lines)
    with gzip.open(path, "wt") as handle:
        handle.write("\n".join(lines) + "\n")


def _corrupt_duplicate_barcode(hub):
    def edit(lines):
        header = lines[0].split("\t")
        header[2] = header[1]
        return ["\t".join(header), *lines[1:]]

    _rewrite_matrix(hub / "TCGA.BRCA.sampleMap/HumanMethylation450.gz", edit)


def _corrupt_beta_range(hub):
    def edit(lines):
        cells = lines[5].split("\t")
        cells[3] = "1.7"
        return [*lines[:5], "\t".join(cells), *lines[6:]]

    _rewrite_matrix(hub / "TCGA.BRCA.sampleMap/HumanMethylation450.gz", edit)


def _corrupt_probe_map(hub):
    path = hub / "probeMap/illuminaMethyl450_hg19_GPL16304_TCGAlegacy"
    table = pd.read_csv(path, sep="\t", dtype=str)
    table.drop(columns=["chromStart"]).to_csv(path, sep="\t", index=False)


def _corrupt_disjoint_expression(hub):
    def edit(lines):
        header = lines[0].split("\t")
        renamed = [header[0]] + [f"TCGA-ZZ-{i:04d}-01" for i in range(len(header) - 1)]
        return ["\t".join(renamed), *lines[1:]]

    _rewrite_matrix(hub / "TCGA.BRCA.sampleMap/HiSeqV2.gz", edit)


def _header_only(relative):
    def corrupt(hub):
        _rewrite_matrix(hub / relative, lambda lines: lines[:1])

    return corrupt


def _unmatched_chromosome_names(hub):
    path = hub / "probeMap/illuminaMethyl450_hg19_GPL16304_TCGAlegacy"
    table = pd.read_csv(path, sep="\t", dtype=str)
    table["chrom"] = "contig_" + table["chrom"].str.removeprefix("chr")
    table.to_csv(path, sep="\t", index=False)


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (_corrupt_truncated_gzip, "truncated or corrupt gzip"),
        (_corrupt_duplicate_barcode, "more than once"),
        (_corrupt_beta_range, "outside [0, 1]"),
        (_corrupt_probe_map, "lacks column(s) ['chromStart']"),
        (_corrupt_disjoint_expression, "shares no sample"),
        (_header_only("TCGA.BRCA.sampleMap/HumanMethylation450.gz"),
         "HumanMethylation450.gz: the matrix has no data rows"),
        (_header_only("TCGA.BRCA.sampleMap/HiSeqV2.gz"), "HiSeqV2.gz: the matrix has no data rows"),
        (_unmatched_chromosome_names, "contig_"),
    ],
    ids=["truncated-gzip", "duplicate-barcode", "beta-range", "probe-map-column", "disjoint",
         "methylation-header-only", "expression-header-only", "unmatched-chromosomes"],
)
def test_bad_input_fails_clearly_and_leaves_the_warehouse(
    corrupt, message, tiny_hub, built_copy, tmp_path
):
    before = _snapshot(built_copy)
    bad_hub = tmp_path / "bad_hub"
    shutil.copytree(tiny_hub, bad_hub)
    corrupt(bad_hub)
    result = materialize_cohort(
        "BRCA", resources_for(str(bad_hub), built_copy), raise_on_error=False
    )
    assert not result.success
    failures = [e for e in result.all_events if e.is_step_failure]
    assert failures
    text = failures[0].event_specific_data.error.to_string()
    assert message in text
    after = _snapshot(built_copy)
    for table in TABLES:
        pd.testing.assert_frame_equal(before[table], after[table], obj=table)


@pytest.mark.parametrize(
    "name", ["cpgs_per_gene", "promoter_methylation_vs_expression", "samples_by_tissue"]
)
def test_example_queries_answer(built, name):
    sql = (Path(__file__).parents[1] / "warehouse" / "queries" / f"{name}.sql").read_text()
    answer = _warehouse(built).query(sql)
    assert len(answer) > 0


def test_synthetic_window_lengths_predict_the_built_windows(built):
    """What the trainer benchmark draws its input lengths from is what the data layer builds."""
    from dmg_ml.synthetic.writer import window_lengths

    warehouse = resources_for("unused", built)["warehouse"]
    counts = warehouse.query(
        "SELECT gene, count(*) AS n FROM gene_windows "
        "WHERE cohort = 'BRCA' AND window_bp = 1000000 GROUP BY gene ORDER BY gene"
    )
    expected = window_lengths(TINY, 1_000_000, seed=7)
    assert counts.set_index("gene")["n"].to_dict() == expected.to_dict()


def test_a_cohort_name_breaking_the_rule_fails_and_is_unregistered(tiny_hub, tmp_path):
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(cohort_partitions.name, ["brca"])
    result = materialize(
        DATA_ASSETS, partition_key="brca", instance=instance, raise_on_error=False,
        resources=resources_for(str(tiny_hub), tmp_path),
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "invalid cohort name 'brca'" in failure.event_specific_data.error.to_string()
    assert "brca" not in instance.get_dynamic_partitions(cohort_partitions.name)
    assert not (tmp_path / "cache").exists() and not (tmp_path / "warehouse").exists()


def _all_na_sample(hub):
    def edit(lines):
        rows = [line.split("\t") for line in lines]
        for cells in rows[1:]:
            cells[3] = "NA"
        return ["\t".join(cells) for cells in rows]

    _rewrite_matrix(hub / "TCGA.BRCA.sampleMap/HumanMethylation450.gz", edit)


def _minus_inf_expression(hub):
    def edit(lines):
        cells = lines[4].split("\t")
        cells[2] = "-inf"
        return [*lines[:4], "\t".join(cells), *lines[5:]]

    _rewrite_matrix(hub / "TCGA.BRCA.sampleMap/HiSeqV2.gz", edit)


def test_silent_drops_are_errors_naming_the_sample_or_gene(tiny_hub, built_copy, tmp_path):
    bad_hub = tmp_path / "bad_hub"
    shutil.copytree(tiny_hub, bad_hub)
    before = _snapshot(built_copy)
    for corrupt, relative, column in [
        (_all_na_sample, "TCGA.BRCA.sampleMap/HumanMethylation450.gz", 3),
        (_minus_inf_expression, "TCGA.BRCA.sampleMap/HiSeqV2.gz", 2),
    ]:
        shutil.copy(tiny_hub / relative, bad_hub / relative)
        with gzip.open(bad_hub / relative, "rt") as handle:
            named = handle.readline().rstrip("\n").split("\t")[column]
        corrupt(bad_hub)
        result = materialize_cohort(
            "BRCA", resources_for(str(bad_hub), built_copy), raise_on_error=False
        )
        failure = next(e for e in result.all_events if e.is_step_failure)
        assert named in failure.event_specific_data.error.to_string()
        shutil.copy(tiny_hub / relative, bad_hub / relative)
    after = _snapshot(built_copy)
    for table in TABLES:
        pd.testing.assert_frame_equal(before[table], after[table], obj=table)


def test_an_excluded_sample_is_not_kept(tiny_hub, built_copy):
    resources = resources_for(str(tiny_hub), built_copy)
    excluded = resources["warehouse"].read("samples", {"cohort": "BRCA"})["sample"].iloc[0]
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(cohort_partitions.name, ["BRCA"])
    materialize(
        DATA_ASSETS, partition_key="BRCA", resources=resources, instance=instance,
        run_config={"ops": {"samples": {"config": {"exclude": [excluded]}}}},
    )
    m = resources["warehouse"].query(
        "SELECT count(*) FILTER (WHERE sample = ?) AS n, count(DISTINCT sample) AS samples "
        "FROM m_values WHERE cohort = 'BRCA'", [excluded],
    )
    assert m.to_dict("records") == [{"n": 0, "samples": 47}]


def test_a_failed_error_check_blocks_everything_downstream(tiny_hub, built_copy):
    """Fewer than 10 shared samples: the samples check fails and no later table is rebuilt."""
    resources = resources_for(str(tiny_hub), built_copy)
    before = _snapshot(built_copy)
    samples = resources["warehouse"].read("samples", {"cohort": "BRCA"})
    keep = samples[samples["kept"]]["sample"].iloc[:8]
    exclude = samples[~samples["sample"].isin(keep)]["sample"].tolist()
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(cohort_partitions.name, ["BRCA"])
    result = materialize(
        DATA_ASSETS, partition_key="BRCA", resources=resources, instance=instance,
        run_config={"ops": {"samples": {"config": {"exclude": exclude}}}}, raise_on_error=False,
    )
    assert not result.success
    materialised = {e.asset_key.to_user_string() for e in result.all_events
                    if e.event_type_value == "ASSET_MATERIALIZATION"}
    assert "samples" in materialised
    assert not materialised & {"expression", "m_values", "probes", "gene_promoters",
                               "gene_windows"}
    after = _snapshot(built_copy)
    for table in ("expression", "m_values", "gene_windows"):
        pd.testing.assert_frame_equal(after[table], before[table])


def test_a_cohort_the_source_lacks_fails_naming_the_file_before_anything_is_written(
    tiny_hub, tmp_path
):
    resources = resources_for(str(tiny_hub), tmp_path / "data")
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(cohort_partitions.name, ["KIRC"])
    with pytest.raises(Exception, match=r"no file .*TCGA\.KIRC\.sampleMap.*HumanMethylation450"):
        materialize(DATA_ASSETS, partition_key="KIRC", resources=resources, instance=instance)
    assert not (tmp_path / "data" / "cache").exists()
    assert not (tmp_path / "data" / "warehouse").exists()
