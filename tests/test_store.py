"""The Dagster-free store: which views are published, which fail the commit, retired tables."""

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from dmg_resources.store import (
    RetiredTablesError,
    ViewError,
    WarehouseStore,
    write_atomically,
)
from dmg_resources.warehouse import Warehouse

ROOT = Path(__file__).parents[1]
SCHEMA = """
-- things: one file per cohort; nothing: never written.
CREATE OR REPLACE VIEW things AS
SELECT cohort, gene, r2 FROM read_parquet({files}, hive_partitioning = true);
CREATE OR REPLACE VIEW nothing AS
SELECT cohort, gene FROM read_parquet({files}, hive_partitioning = true);
"""
DERIVED = """
CREATE OR REPLACE VIEW things_count AS SELECT cohort, count(*) AS n FROM things GROUP BY ALL;
CREATE OR REPLACE VIEW over_nothing AS SELECT * FROM nothing;
CREATE OR REPLACE VIEW over_over_nothing AS SELECT count(*) AS n FROM over_nothing;
CREATE OR REPLACE VIEW things_and_nothing AS SELECT * FROM things JOIN nothing USING (gene);
"""


def _store(tmp_path: Path, schema: str = SCHEMA, derived: str = DERIVED) -> WarehouseStore:
    sql = tmp_path / f"sql{len(list(tmp_path.glob('sql*')))}"
    sql.mkdir()
    (sql / "schema.sql").write_text(schema)
    (sql / "derived.sql").write_text(derived)
    return WarehouseStore(tmp_path / "wh", tmp_path / "dmg.duckdb",
                          schema_sql=sql / "schema.sql", derived_sql=sql / "derived.sql")


def _things(n: int) -> pd.DataFrame:
    return pd.DataFrame({"gene": [f"G{i}" for i in range(n)], "r2": [0.5] * n})


def _published(database: Path) -> tuple[int, list[str]]:
    with duckdb.connect(str(database), read_only=True) as connection:
        (version,) = connection.execute("SELECT version FROM warehouse_snapshot").fetchone()
        views = connection.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal "
                                   "ORDER BY 1").fetchall()
    return version, [v for (v,) in views]


def test_the_store_imports_no_dagster():
    code = "import sys, dmg_resources.store; print('dagster' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, check=True)
    assert result.stdout.strip() == "False"


def test_views_over_a_table_without_files_are_skipped_and_the_rest_published(tmp_path):
    store = _store(tmp_path)
    store.write("things", {"cohort": "BRCA"}, _things(3))
    assert _published(store.database_path) == (1, ["things", "things_count",
                                                   "warehouse_snapshot"])
    assert store.publish_views() == ["warehouse_snapshot", "things", "things_count"]
    assert store.query("SELECT n FROM things_count")["n"].tolist() == [3]


BROKEN = {
    "a missing column": ("CREATE OR REPLACE VIEW broken AS SELECT missing_column FROM things",
                         'Referenced column "missing_column" not found'),
    "an unknown table": ("CREATE OR REPLACE VIEW broken AS SELECT * FROM thingz",
                         "Table with name thingz does not exist"),
    "a view defined later": ("CREATE OR REPLACE VIEW broken AS SELECT * FROM later;\n"
                             "CREATE OR REPLACE VIEW later AS SELECT * FROM things",
                             "Table with name later does not exist"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_derived_view_that_does_not_bind_fails_the_commit_naming_it(tmp_path, case):
    good = _store(tmp_path)
    good.write("things", {"cohort": "BRCA"}, _things(3))
    statement, message = BROKEN[case]
    broken = _store(tmp_path, derived=DERIVED + statement + ";\n")
    with pytest.raises(ViewError, match="the view broken .*derived.sql") as raised:
        broken.write("things", {"cohort": "BRCA"}, _things(5))
    assert raised.value.view == "broken"
    assert message in str(raised.value) and "nothing was committed" in str(raised.value)
    assert good.snapshot().version == 1 and len(good.read("things")) == 3
    assert _published(good.database_path)[0] == 1
    on_disk = {p.relative_to(good.root_path).as_posix()
               for p in (good.root_path / "things").rglob("*.parquet")}
    assert on_disk == set(good.snapshot().tables["things"])  # the refused files are gone
    assert not any((good.root_path / ".staging").iterdir())
    assert [p.name for p in tmp_path.glob(".dmg.duckdb*")] == []
    for read in (broken.publish_views, broken.connect):
        with pytest.raises(ViewError, match="the view broken"):
            read()
    assert len(good.query("SELECT * FROM things")) == 3


def test_a_table_view_its_files_do_not_bind_fails_naming_it(tmp_path):
    store = _store(tmp_path)
    with pytest.raises(ViewError, match=r'the view things .*schema.sql.*"r2" not found'):
        store.write("things", {"cohort": "BRCA"}, pd.DataFrame({"gene": ["A"]}))
    assert store.tables() == []


def _plant_retired(store: WarehouseStore) -> str:
    manifest = store.root_path / "_manifest.json"
    data = json.loads(manifest.read_text())
    data["tables"]["cnn_gene_metrics"] = {"cnn_gene_metrics/cohort=BRCA/part-0.parquet": 4}
    data["tables"]["model_predictions"] = {"model_predictions/cohort=BRCA/part-0.parquet": 9}
    manifest.write_text(json.dumps(data))
    return manifest.read_text()


def test_a_warehouse_listing_retired_tables_refuses_writes_and_publishing(tmp_path):
    store = _store(tmp_path)
    store.write("things", {"cohort": "BRCA"}, _things(3))
    planted = _plant_retired(store)
    expected = (r"earlier dmg \(tables cnn_gene_metrics, model_predictions\).*old layout: "
                rf"move {store.root_path} and the checkpoints directory aside and run "
                r"`make run` \(or `dmg run`\) again")
    with pytest.raises(RetiredTablesError, match=expected), store.transaction():
        pytest.fail("a transaction opened")
    with pytest.raises(RetiredTablesError, match=expected):
        store.publish_views()
    resource = Warehouse(root=str(store.root_path), database=str(store.database_path))
    with pytest.raises(RetiredTablesError, match=expected):
        resource.write("samples", {"cohort": "BRCA"}, pd.DataFrame({"sample": ["S0"]}))
    assert isinstance(RetiredTablesError("x"), RuntimeError)
    assert (store.root_path / "_manifest.json").read_text() == planted
    assert len(store.read("things")) == 3
    assert store.query("SELECT n FROM things_count")["n"].tolist() == [3]


def test_a_directory_from_before_snapshots_with_retired_tables_is_refused_untouched(tmp_path):
    store = _store(tmp_path)
    old = store.root_path / "cnn_predictions" / "cohort=BRCA"
    old.mkdir(parents=True)
    _things(2).to_parquet(old / "part-0.parquet")
    with pytest.raises(RetiredTablesError, match=r"tables cnn_predictions\)"):
        store.write("things", {"cohort": "BRCA"}, _things(3))
    assert sorted(p.name for p in store.root_path.iterdir()) == ["cnn_predictions"]


def test_write_atomically_takes_text_and_bytes_and_leaves_no_partial(tmp_path):
    target = tmp_path / "new" / "file"
    write_atomically(target, "text")
    assert target.read_text() == "text"
    write_atomically(target, b"\x00bytes")
    assert target.read_bytes() == b"\x00bytes"
    assert [p.name for p in target.parent.iterdir()] == ["file"]
