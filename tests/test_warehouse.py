import errno
import multiprocessing as mp
import shutil
import subprocess
import sys
import time

import pandas as pd
import pyarrow.parquet as pq
import pytest

from dmg_resources import store as store_module
from dmg_resources.store import EmptyPartitionError
from dmg_resources.warehouse import Warehouse
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
    monkeypatch.setattr(store_module.pq, "ParquetWriter", _DiskFull)
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


# Two tables written together, each carrying the run that wrote it (samples.patient = "run<N>",
# expression.log2_expression = N), as the subprocesses below write them too.
TWO_TABLES = """
def two_tables(tx, run, genes=("A", "B", "C")):
    tx.write("samples", {"cohort": "BRCA"}, pd.DataFrame({
        "sample": [f"S{i}" for i in range(3)], "patient": [f"run{run}"] * 3,
        "sample_type_code": ["01"] * 3, "tissue": ["tumour"] * 3, "in_methylation": [True] * 3,
        "in_expression": [True] * 3, "kept": [True] * 3}))
    tx.write("expression", {"cohort": "BRCA"}, pd.DataFrame({
        "gene": list(genes), "sample": ["S0"] * len(genes),
        "log2_expression": [float(run)] * len(genes)}))
"""
exec(TWO_TABLES)


def _two_tables(warehouse: Warehouse, run: int) -> None:
    with warehouse.transaction() as tx:
        two_tables(tx, run)  # noqa: F821 (defined by exec above)


RUNS_SQL = ("SELECT (SELECT list(DISTINCT patient) FROM samples) AS samples, "
            "(SELECT list(DISTINCT log2_expression) FROM expression) AS expression, "
            "(SELECT count(*) FROM expression) AS genes")


def _runs(frame_or_row) -> tuple:
    samples, expression, genes = frame_or_row
    return sorted(samples), sorted(f"run{int(v)}" for v in expression), genes


def _runs_in_the_database_file(database: str) -> tuple:
    with connect(database) as connection:
        return _runs(connection.execute(RUNS_SQL).fetchone())


# A commit killed at any of its renames: every reader (Python, the in-memory views, the DuckDB
# file the CLI opens, which nobody repairs) sees the old commit or the new one whole, and the next
# writer works. The script pauses before its first rename when asked to (argv[4]), so that a
# second writer can be started while it holds its locks.
KILLED_AT_RENAME = TWO_TABLES + """
import os, signal, sys, time
from pathlib import Path
import pandas as pd
from dmg_resources.warehouse import Warehouse
warehouse = Warehouse(root=sys.argv[1], database=sys.argv[2])
kill_after, pause = int(sys.argv[3]), sys.argv[4]
moved = 0
def counted(real):
    def move(src, dst, *args, **kwargs):
        global moved
        if moved == 0 and pause != "-":
            Path(pause, "ready").touch()
            while not Path(pause, "go").exists():
                time.sleep(0.02)
        real(src, dst, *args, **kwargs)
        moved += 1
        if moved == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
    return move
with warehouse.transaction() as tx:
    two_tables(tx, 2)
    os.replace, os.rename = counted(os.replace), counted(os.rename)
"""


@pytest.mark.parametrize("kill_after", [1, 2, 3, 4])
def test_a_commit_killed_at_any_rename_is_whole_to_every_reader(tmp_path, kill_after):
    warehouse = _warehouse(tmp_path)
    _two_tables(warehouse, run=1)
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_AT_RENAME, warehouse.root, warehouse.database,
         str(kill_after), "-"], check=False,
    )
    assert killed.returncode in (-9, 0)
    whole = ((["run1"], ["run1"], 3), (["run2"], ["run2"], 3))
    assert _runs_in_the_database_file(warehouse.database) in whole  # first: it never repairs
    assert _runs(warehouse.query(RUNS_SQL).iloc[0]) in whole
    _two_tables(warehouse, run=3)
    assert _runs_in_the_database_file(warehouse.database) == (["run3"], ["run3"], 3)
    assert set(warehouse.read("samples", {"cohort": "BRCA"})["patient"]) == {"run3"}


REPLACE_ROWS = """
import sys
from pathlib import Path
import pandas as pd
from dmg_resources.warehouse import Warehouse
warehouse = Warehouse(root=sys.argv[1], database=sys.argv[2])
Path(sys.argv[3]).touch()
warehouse.replace_rows("expression", {"cohort": "BRCA"}, pd.DataFrame(
    {"gene": ["D"], "sample": ["S0"], "log2_expression": [9.0]}), key="gene")
"""


def test_a_writer_waiting_on_one_that_is_killed_keeps_every_row(tmp_path):
    """Issue 22, case 1: B's replace_rows starts while A is alive and committing; A is killed
    between its renames; B must see A's commit or the one before, whole, and nothing wedges."""
    warehouse = _warehouse(tmp_path)
    _two_tables(warehouse, run=1)
    flags = tmp_path / "flags"
    flags.mkdir()
    a = subprocess.Popen([sys.executable, "-c", KILLED_AT_RENAME, warehouse.root,
                          warehouse.database, "2", str(flags)])
    deadline = time.monotonic() + 60
    while not (flags / "ready").exists():
        assert a.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    b = subprocess.Popen([sys.executable, "-c", REPLACE_ROWS, warehouse.root,
                          warehouse.database, str(flags / "b_started")])
    while not (flags / "b_started").exists():
        assert b.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(1.0)  # B is now waiting for A's lock
    (flags / "go").touch()
    assert a.wait(60) == -9
    assert b.wait(60) == 0
    expression = warehouse.read("expression", {"cohort": "BRCA"}).sort_values("gene")
    assert expression["gene"].tolist() == ["A", "B", "C", "D"]
    assert len(set(expression["log2_expression"][:3])) == 1
    _two_tables(warehouse, run=3)
    assert set(warehouse.read("samples", {"cohort": "BRCA"})["patient"]) == {"run3"}


SLOW_REWRITER = """
import os, sys, time
import pandas as pd
from dmg_resources.warehouse import Warehouse
warehouse = Warehouse(root=sys.argv[1], database=sys.argv[2])
def slow(real):
    def move(*args, **kwargs):
        real(*args, **kwargs)
        time.sleep(0.15)
    return move
os.replace, os.rename = slow(os.replace), slow(os.rename)
def samples(n):
    return pd.DataFrame({
        "sample": [f"S{i}" for i in range(n)], "patient": [f"P{i}" for i in range(n)],
        "sample_type_code": ["01"] * n, "tissue": ["tumour"] * n, "in_methylation": [True] * n,
        "in_expression": [True] * n, "kept": [True] * n})
for run in range(3):
    with warehouse.transaction() as tx:
        for cohort, n in (("BRCA", 5), ("COAD", 7)):
            tx.write("samples", {"cohort": cohort}, samples(n))
"""


def test_readers_never_see_a_partition_absent_during_a_rewrite(tmp_path):
    """Issue 22, case 3: a cohort absent between two renames counted 216 samples, not 448."""
    warehouse = _warehouse(tmp_path)
    with warehouse.transaction() as tx:
        for cohort, n in (("BRCA", 5), ("COAD", 7)):
            tx.write("samples", {"cohort": cohort}, _samples(cohort, n))
    writer = subprocess.Popen([sys.executable, "-c", SLOW_REWRITER, warehouse.root,
                               warehouse.database])
    counts = set()
    while writer.poll() is None:
        counts.add(warehouse.query("SELECT count(*) AS n FROM samples")["n"].item())
        counts.add(len(warehouse.read("samples")))
        with connect(warehouse.database) as connection:
            counts.add(connection.execute("SELECT count(*) FROM samples").fetchone()[0])
    assert writer.returncode == 0
    assert counts == {12}


def test_a_partition_required_empty_refuses_a_commit_that_finds_rows_there(tmp_path):
    """Two steps that both checked a new batch name before their work: the second to commit is
    refused and writes nothing (dmg predict's batch names)."""
    warehouse = _warehouse(tmp_path)
    with pytest.raises(LookupError, match="taken"), warehouse.transaction() as tx:
        tx.require_empty("samples", {"cohort": "BRCA"}, LookupError("taken"))
        tx.write("expression", {"cohort": "BRCA"},
                 pd.DataFrame({"gene": ["A"], "sample": ["S0"], "log2_expression": [1.0]}))
        warehouse.write("samples", {"cohort": "BRCA"}, _samples("BRCA", 2))  # the other step
    assert warehouse.tables() == ["samples"]
