import errno
import multiprocessing as mp
import shutil
import subprocess
import sys
import time

import pandas as pd
import pyarrow.parquet as pq
import pytest

from dmg_resources import warehouse as warehouse_module
from dmg_resources.warehouse import EmptyPartitionError, Warehouse
from warehouse.query import connect


def _warehouse(tmp_path) -> Warehouse:
    return Warehouse(root=str(tmp_path / "wh"), database=str(tmp_path / "dmg.duckdb"))


def _samples(cohort: str, n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "sample": [f"TCGA-AA-{i:04d}-01" for i in range(n)],
            "patient": [f"TCGA-AA-{i:04d}" for i in range(n)],
            "sample_type_code": ["01"] * n,
            "tissue": ["tumour"] * n,
            "in_methylation": [True] * n,
            "in_expression": [True] * n,
            "kept": [True] * n,
        }
    )


def test_rewriting_a_partition_replaces_its_rows(tmp_path):
    warehouse = _warehouse(tmp_path)
    warehouse.write("samples", {"cohort": "BRCA"}, _samples("BRCA", 5))
    warehouse.write("samples", {"cohort": "BRCA"}, _samples("BRCA", 3))
    warehouse.write("samples", {"cohort": "COAD"}, _samples("COAD", 4))
    counts = warehouse.query("SELECT cohort, count(*) AS n FROM samples GROUP BY 1 ORDER BY 1")
    assert counts.to_dict("list") == {"cohort": ["BRCA", "COAD"], "n": [3, 4]}
    with connect(str(tmp_path / "dmg.duckdb")) as connection:
        assert connection.execute("SELECT count(*) FROM samples").fetchone()[0] == 7


def test_a_failed_write_leaves_the_old_partition(tmp_path):
    warehouse = _warehouse(tmp_path)
    warehouse.write("samples", {"cohort": "BRCA"}, _samples("BRCA", 5))
    with pytest.raises(RuntimeError, match="boom"), warehouse.writer(
        "samples", {"cohort": "BRCA"}
    ) as writer:
        writer.write(_samples("BRCA", 2))
        raise RuntimeError("boom")
    assert len(warehouse.read("samples", {"cohort": "BRCA"})) == 5
    assert not any((tmp_path / "wh" / ".staging").iterdir())


KILLED_WRITER = """
import os, signal, sys
import pandas as pd
from dmg_resources.warehouse import Warehouse
warehouse = Warehouse(root=sys.argv[1], database=sys.argv[2])
with warehouse.writer("things", {"cohort": "BRCA"}) as writer:
    writer.write(pd.DataFrame({"probe_id": ["a"], "m_value": [1.0]}))
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_staging_of_a_killed_writer_is_swept_by_the_next(tmp_path):
    warehouse = _warehouse(tmp_path)
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, warehouse.root, warehouse.database], check=False
    )
    assert killed.returncode == -9
    staging = tmp_path / "wh" / ".staging"
    assert len(list(staging.iterdir())) == 2  # its directory and its lock file
    warehouse.write("samples", {"cohort": "BRCA"}, _samples("BRCA", 3))
    assert list(staging.iterdir()) == []
    assert not (tmp_path / "wh" / "things").exists()


def test_a_live_writers_staging_is_left_alone(tmp_path):
    warehouse = _warehouse(tmp_path)
    with warehouse.writer("samples", {"cohort": "BRCA"}) as writer:
        writer.write(_samples("BRCA", 5))
        warehouse.write("samples", {"cohort": "COAD"}, _samples("COAD", 2))
        assert writer.staging.exists()
    counts = warehouse.query("SELECT cohort, count(*) AS n FROM samples GROUP BY 1 ORDER BY 1")
    assert counts.to_dict("list") == {"cohort": ["BRCA", "COAD"], "n": [5, 2]}


def test_sub_partitions_and_partition_reads(tmp_path):
    warehouse = _warehouse(tmp_path)
    frame = pd.DataFrame({"probe_id": ["a", "b"], "m_value": [1.0, 2.0]})
    with warehouse.writer("things", {"cohort": "BRCA"}) as writer:
        writer.write(frame, sub={"chromosome": "chr1"})
        writer.write(frame, sub={"chromosome": "chr2"})
        writer.write(frame, sub={"chromosome": "chr1"})
    assert writer.rows == 6
    chr1 = warehouse.read("things", {"cohort": "BRCA", "chromosome": "chr1"})
    assert len(chr1) == 4
    with pytest.raises(LookupError, match="has not been materialised"):
        warehouse.read("things", {"cohort": "LUAD"})
    with pytest.raises(ValueError, match="bad partition"):
        warehouse.write("things", {"cohort": "../etc"}, frame)


def _write_many(root: str, database: str, cohort: str, start, rounds: int) -> None:
    warehouse = Warehouse(root=root, database=database)
    start.wait()
    for n in range(1, rounds + 1):
        warehouse.write("samples", {"cohort": cohort}, _samples(cohort, n * 10))


def test_concurrent_processes_lose_no_rows_and_never_hit_the_duckdb_lock(tmp_path):
    """Four processes rewrite their partitions 5 times each, all refreshing the same DuckDB file."""
    context = mp.get_context("spawn")
    start = context.Barrier(4)
    root, database = str(tmp_path / "wh"), str(tmp_path / "dmg.duckdb")
    cohorts = ["BRCA", "COAD", "GBM", "LUAD"]
    workers = [
        context.Process(target=_write_many, args=(root, database, c, start, 5)) for c in cohorts
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    with connect(database) as connection:
        rows = connection.execute(
            "SELECT cohort, count(*) FROM samples GROUP BY 1 ORDER BY 1"
        ).fetchall()
    assert rows == [(c, 50) for c in sorted(cohorts)]


def test_replace_rows_swaps_only_the_given_keys(tmp_path):
    warehouse = _warehouse(tmp_path)
    partition = {"cohort": "BRCA", "chromosome": "chr1"}
    first = pd.DataFrame({"gene": ["A", "B", "C"], "r2": [0.1, 0.2, 0.3]})
    warehouse.write("gene_scores", partition, first)
    warehouse.replace_rows("gene_scores", partition, pd.DataFrame({"gene": ["B"], "r2": [0.9]}),
                           key="gene")
    rows = warehouse.read("gene_scores", partition).sort_values("gene")
    assert rows.to_dict("list") == {"gene": ["A", "B", "C"], "r2": [0.1, 0.9, 0.3]}


def test_replace_rows_refuses_a_partition_written_without_its_key_columns(tmp_path):
    """A data directory from before a key column existed: a clear error, not a KeyError."""
    warehouse = _warehouse(tmp_path)
    partition = {"cohort": "BRCA", "chromosome": "chr1"}
    warehouse.write("gene_scores", partition, pd.DataFrame({"gene": ["A"], "r2": [0.1]}))
    new = pd.DataFrame({"gene": ["A"], "tissue": ["all"], "r2": [0.5]})
    with pytest.raises(ValueError, match=r"without the key columns \['tissue'\].*make clean"):
        warehouse.replace_rows("gene_scores", partition, new, key=["tissue", "gene"])
    assert warehouse.read("gene_scores", partition)["r2"].tolist() == [0.1]


def test_an_empty_frame_never_replaces_a_partition_with_rows(tmp_path):
    warehouse = _warehouse(tmp_path)
    warehouse.write("samples", {"cohort": "BRCA"}, _samples("BRCA", 5))
    with pytest.raises(EmptyPartitionError, match=r"samples.*cohort.*BRCA.*5 rows"):
        warehouse.write("samples", {"cohort": "BRCA"}, _samples("BRCA", 0))
    assert len(warehouse.read("samples", {"cohort": "BRCA"})) == 5
    permissive = warehouse.model_copy(update={"allow_empty_replacement": True})
    assert permissive.write("samples", {"cohort": "BRCA"}, _samples("BRCA", 0)) == 0
    assert warehouse.query("SELECT count(*) AS n FROM samples")["n"].item() == 0


KILLED_BETWEEN_SWAPS = """
import os, signal, sys
import pandas as pd
from dmg_resources import warehouse as module
warehouse = module.Warehouse(root=sys.argv[1], database=sys.argv[2])
swapped = []
real_replace = os.replace
def replace_then_die(src, dst):
    real_replace(src, dst)
    if "=" in os.path.basename(str(dst)):  # a staged partition moved into place
        swapped.append(dst)
        if len(swapped) == 1:
            os.kill(os.getpid(), signal.SIGKILL)
module.os.replace = replace_then_die
with warehouse.transaction() as tx:
    tx.write("left", {"cohort": "BRCA"}, pd.DataFrame({"gene": ["A", "B"], "run": [2, 2]}))
    tx.write("right", {"cohort": "BRCA"}, pd.DataFrame({"gene": ["A", "B"], "run": [2, 2]}))
"""


def test_a_step_killed_between_table_swaps_is_completed_not_torn(tmp_path):
    warehouse = _warehouse(tmp_path)
    first = pd.DataFrame({"gene": ["A", "B"], "run": [1, 1]})
    with warehouse.transaction() as tx:
        tx.write("left", {"cohort": "BRCA"}, first)
        tx.write("right", {"cohort": "BRCA"}, first)
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_BETWEEN_SWAPS, warehouse.root, warehouse.database],
        check=False,
    )
    assert killed.returncode == -9
    runs = {t: set(warehouse.read(t, {"cohort": "BRCA"})["run"]) for t in ("left", "right")}
    assert runs == {"left": {2}, "right": {2}}
    assert list((tmp_path / "wh" / ".staging").iterdir()) == []


class _DiskFull(pq.ParquetWriter):
    def write_table(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    def close(self):
        raise OSError(errno.ENOSPC, "No space left on device")

    def __del__(self):
        pass


def test_disk_full_reports_enospc_and_removes_its_staging(tmp_path, monkeypatch):
    warehouse = _warehouse(tmp_path)
    warehouse.write("samples", {"cohort": "BRCA"}, _samples("BRCA", 5))
    monkeypatch.setattr(warehouse_module.pq, "ParquetWriter", _DiskFull)
    with pytest.raises(OSError) as raised:
        warehouse.write("samples", {"cohort": "BRCA"}, _samples("BRCA", 3))
    assert raised.value.errno == errno.ENOSPC
    assert raised.value.__context__ is None  # the first failure, not one from the cleanup
    assert list((tmp_path / "wh" / ".staging").iterdir()) == []
    monkeypatch.undo()
    assert len(warehouse.read("samples", {"cohort": "BRCA"})) == 5


READER = """
import sys, time, duckdb
from pathlib import Path
failures = opens = 0
deadline = time.monotonic() + 60
Path(sys.argv[2]).touch()
while not Path(sys.argv[3]).exists() and time.monotonic() < deadline:
    try:
        with duckdb.connect(sys.argv[1], read_only=True) as connection:
            connection.execute("SELECT count(*) FROM duckdb_views()").fetchall()
    except duckdb.Error as exc:
        failures += 1
        print(exc, file=sys.stderr)
    opens += 1
print(opens, failures)
"""


def test_readers_never_fail_while_views_are_refreshed(tmp_path):
    warehouse = _warehouse(tmp_path)
    warehouse.write("samples", {"cohort": "BRCA"}, _samples("BRCA", 5))
    stop = tmp_path / "stop"
    ready = [tmp_path / f"ready{i}" for i in range(2)]
    readers = [
        subprocess.Popen(
            [sys.executable, "-c", READER, warehouse.database, str(flag), str(stop)],
            stdout=subprocess.PIPE, text=True,
        )
        for flag in ready
    ]
    while not all(flag.exists() for flag in ready):
        time.sleep(0.05)
    for _ in range(40):
        warehouse.publish_views()
    stop.touch()
    results = [r.communicate(timeout=120)[0].split() for r in readers]
    assert all(int(opens) > 10 for opens, _ in results)
    assert [int(failures) for _, failures in results] == [0, 0]


def test_a_copied_data_directory_reads_its_own_files(tmp_path):
    original = tmp_path / "original"
    warehouse = Warehouse(root=str(original / "warehouse"), database=str(original / "dmg.duckdb"))
    warehouse.write("samples", {"cohort": "BRCA"}, _samples("BRCA", 5))
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    shutil.rmtree(original)
    with connect(str(copy / "dmg.duckdb")) as connection:
        assert connection.execute("SELECT count(*) FROM samples").fetchone()[0] == 5


def test_partitions_staged_at_once_in_one_transaction_stay_apart(tmp_path):
    warehouse = _warehouse(tmp_path)
    with warehouse.transaction() as tx, tx.writer("outer", {"cohort": "BRCA"}) as writer:
        writer.write(pd.DataFrame({"gene": ["A"]}))
        tx.write("inner", {"cohort": "BRCA"}, pd.DataFrame({"probe": ["p", "q"]}))
    assert warehouse.read("outer", {"cohort": "BRCA"})["gene"].tolist() == ["A"]
    assert warehouse.read("inner", {"cohort": "BRCA"})["probe"].tolist() == ["p", "q"]


def test_replace_rows_on_a_composite_key_keeps_other_combinations(tmp_path):
    warehouse = _warehouse(tmp_path)
    partition = {"cohort": "BRCA"}
    first = pd.DataFrame({"model": ["enet", "enet", "rf"], "gene": ["A", "B", "A"],
                          "r2": [0.1, 0.2, 0.3]})
    warehouse.write("scores", partition, first)
    warehouse.replace_rows("scores", partition,
                           pd.DataFrame({"model": ["enet"], "gene": ["A"], "r2": [0.9]}),
                           key=["model", "gene"])
    rows = warehouse.read("scores", partition).sort_values(["model", "gene"])
    assert rows["r2"].tolist() == [0.9, 0.2, 0.3]
