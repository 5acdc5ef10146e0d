"""Two cohort partitions materialised at once, each run on Dagster's multiprocess executor."""

import threading

from dagster import DagsterInstance, execute_job, reconstructable

from dmg_assets.partitions import cohort_partitions
from tests.dagster_jobs import data_layer_job
from warehouse.query import connect


def _run_config(hub, data_dir) -> dict:
    return {
        "resources": {
            "source": {"config": {"base_url": str(hub), "cache_dir": str(data_dir / "cache")}},
            "warehouse": {
                "config": {
                    "root": str(data_dir / "warehouse"),
                    "database": str(data_dir / "dmg.duckdb"),
                }
            },
        }
    }


def test_two_partitions_at_once_both_land(tiny_hub, tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    instance = DagsterInstance.local_temp(str(home))
    instance.add_dynamic_partitions(cohort_partitions.name, ["BRCA", "COAD"])
    results = {}

    def run(cohort: str) -> None:
        results[cohort] = execute_job(
            reconstructable(data_layer_job),
            instance=instance,
            run_config=_run_config(tiny_hub, tmp_path),
            tags={"dagster/partition": cohort},
        )

    threads = [threading.Thread(target=run, args=(c,)) for c in ("BRCA", "COAD")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert {c: r.success for c, r in results.items()} == {"BRCA": True, "COAD": True}
    with connect(str(tmp_path / "dmg.duckdb")) as connection:
        for table in ("samples", "m_values", "expression", "gene_windows"):
            rows = connection.execute(
                f"SELECT cohort, count(*) > 0 FROM {table} GROUP BY 1 ORDER BY 1"
            ).fetchall()
            assert rows == [("BRCA", True), ("COAD", True)], table
        m_rows = connection.execute(
            "SELECT cohort, count(*) FROM m_values GROUP BY 1 ORDER BY 1"
        ).fetchall()
        probes = connection.execute(
            "SELECT p.cohort, count(*) * any_value(s.n) FROM probes p JOIN "
            "(SELECT cohort, count(*) AS n FROM samples WHERE kept GROUP BY 1) s USING (cohort) "
            "WHERE p.kept GROUP BY 1 ORDER BY 1"
        ).fetchall()
    assert m_rows == probes  # no lost rows: kept probes × kept samples for each cohort
