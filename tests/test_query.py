"""``dmg query`` / ``python -m warehouse.query``: the data directory the project uses, a sandbox
that keeps SQL inside the warehouse and never lets it write a file, one-line errors."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from dmg_resources.warehouse import Warehouse
from warehouse import query

ROOT = Path(__file__).parents[1]


def _samples(n: int) -> pd.DataFrame:
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


@pytest.fixture
def data_dir(tmp_path) -> Path:
    """A data directory as ``make run`` lays it out: three BRCA samples, a cache file beside."""
    data = tmp_path / "data"
    Warehouse(root=str(data / "warehouse"), database=str(data / "dmg.duckdb")).write(
        "samples", {"cohort": "BRCA"}, _samples(3)
    )
    (data / "cache").mkdir()
    (data / "cache" / "secret.txt").write_text("not for SQL\n")
    return data


@pytest.fixture
def elsewhere(tmp_path, monkeypatch) -> Path:
    """An empty working directory: no ./data to fall back on."""
    directory = tmp_path / "elsewhere"
    directory.mkdir()
    monkeypatch.chdir(directory)
    return directory


def _snapshot(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*")) if p.is_file()
    }


def _main(argv: list[str], capsys) -> tuple[object, str, str]:
    """main's exit code and output; an exception escaping main counts as a failure."""
    try:
        code: object = query.main(argv)
    except BaseException as exc:  # noqa: BLE001 - a traceback is what these tests rule out
        code = f"raised {type(exc).__name__}: {exc}"
    out, err = capsys.readouterr()
    return code, out, err


def _command(args: list[str], cwd: Path, data_dir: Path | None,
             stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DMG_DATA_DIR"}
    env["PYTHONPATH"] = str(ROOT)
    if data_dir is not None:
        env["DMG_DATA_DIR"] = str(data_dir)
    return subprocess.run([sys.executable, "-m", "warehouse.query", *args], cwd=cwd, env=env,
                          input=stdin, capture_output=True, text=True, timeout=120)


def _one_line_error(err: str) -> str:
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_the_default_database_is_the_one_DMG_DATA_DIR_names(data_dir, elsewhere):
    result = _command(["SELECT count(*) AS n FROM samples"], cwd=elsewhere, data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["n", "3"]


def test_the_default_data_directory_is_data_under_the_working_directory(data_dir):
    result = _command(["SELECT count(*) AS n FROM samples"], cwd=data_dir.parent, data_dir=None)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["n", "3"]


def test_a_missing_database_says_where_it_looked_and_what_to_run(tmp_path, elsewhere):
    result = _command(["SELECT 1"], cwd=elsewhere, data_dir=tmp_path / "nothing")
    assert result.returncode == 2
    line = _one_line_error(result.stderr)
    assert str((tmp_path / "nothing" / "dmg.duckdb").resolve()) in line
    assert "make run" in line and "dmg run" in line


def test_sql_can_come_from_stdin(data_dir, elsewhere):
    result = _command([], cwd=elsewhere, data_dir=data_dir,
                      stdin="SELECT count(*) AS n\nFROM samples;\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["n", "3"]


def test_a_query_and_a_sql_file_print_their_rows(data_dir, elsewhere, capsys):
    database = str(data_dir / "dmg.duckdb")
    code, out, err = _main(["SELECT count(*) AS n FROM samples", "--database", database], capsys)
    assert (code, out.split()) == (0, ["n", "3"]), err
    script = elsewhere / "two.sql"
    script.write_text("-- two answers\nSELECT 1 AS a;\nSELECT count(*) AS n FROM samples;\n")
    code, out, err = _main([str(script), "--database", database], capsys)
    assert (code, out.split()) == (0, ["a", "1", "n", "3"]), err
    assert Path.cwd() == elsewhere  # main works from the database's directory, then returns


def test_a_prompt_on_a_terminal_runs_each_statement_and_carries_on_after_errors(
    data_dir, elsewhere, capsys, monkeypatch
):
    class Terminal:
        def isatty(self) -> bool:
            return True

    lines = iter(["SELECT count(*) AS n", "FROM samples;", "SELEC 1;",
                  "COPY (SELECT 1 AS a) TO 'out.csv';", "SELECT 7 AS b;"])

    def typed(prompt: str) -> str:
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    monkeypatch.setattr("sys.stdin", Terminal())
    monkeypatch.setattr("builtins.input", typed)
    code, out, err = _main(["--database", str(data_dir / "dmg.duckdb")], capsys)
    assert code == 0 and out.split() == ["n", "3", "b", "7"]
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2 and "Parser Error" in errors[0] and "COPY refused" in errors[1]
    assert "Traceback" not in err and not (data_dir / "out.csv").exists()


def test_a_missing_sql_file_is_one_line(data_dir, elsewhere, capsys):
    code, _, err = _main(["nowhere.sql", "--database", str(data_dir / "dmg.duckdb")], capsys)
    assert code == 2
    assert "nowhere.sql" in _one_line_error(err)


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELEC 1", 'error: Parser Error: syntax error at or near "SELEC"'),
        ("SELECT * FROM sample", "error: Catalog Error: Table with name sample does not exist!"),
    ],
)
def test_sql_errors_are_one_line_and_exit_2(data_dir, elsewhere, capsys, sql, message):
    database = str(data_dir / "dmg.duckdb")
    code, out, err = _main([sql, "--database", database], capsys)
    assert code == 2 and out == ""
    assert _one_line_error(err).startswith(message)
    code, _, err = _main([sql, "--database", database, "--verbose"], capsys)
    assert code == 2 and "Traceback" in err and message in err


def _attacks(data: Path, partition: Path) -> dict[str, str]:
    outside = data.parent
    return {
        "copy-empty-over-a-partition":
            f"COPY (SELECT * FROM samples WHERE false) TO '{partition}' (FORMAT parquet)",
        "copy-relative-over-a-partition":
            f"COPY (SELECT * FROM samples LIMIT 0) TO "
            f"'{partition.relative_to(data).as_posix()}' (FORMAT parquet)",
        "copy-new-file-in-warehouse":
            f"COPY (SELECT 1 AS a) TO '{data / 'warehouse' / 'new.csv'}'",
        "copy-outside": f"COPY (SELECT 1 AS a) TO '{outside / 'out.csv'}'",
        "explain-analyze-copy":
            f"EXPLAIN ANALYZE COPY (SELECT * FROM samples LIMIT 0) TO '{partition}'",
        "explain-analyze-copy-behind-a-comment":
            f"EXPLAIN /* analyse */ ANALYZE COPY (SELECT 1 AS a) TO '{outside / 'out.csv'}'",
        "copy-behind-a-comment": f"/* SELECT */ COPY (SELECT 1 AS a) TO '{outside / 'out.csv'}'",
        "prepared-copy":
            f"PREPARE p AS COPY (SELECT 1 AS a) TO '{outside / 'out.csv'}'; EXECUTE p",
        "export-database": f"EXPORT DATABASE '{data / 'warehouse' / 'export'}'",
        "attach-writable-outside": f"ATTACH '{outside / 'new.duckdb'}' (READ_ONLY false)",
        "attach-writable-in-warehouse":
            f"ATTACH '{data / 'warehouse' / 'new.duckdb'}' (READ_ONLY false)",
        "read-text-passwd": "SELECT * FROM read_text('/etc/passwd')",
        "read-csv-passwd": "SELECT * FROM read_csv('/etc/passwd', sep = ':')",
        "read-beside-the-warehouse": "SELECT * FROM read_text('cache/secret.txt')",
        "read-up-out-of-the-warehouse":
            "SELECT * FROM read_text('warehouse/../cache/secret.txt')",
        "glob-outside": "SELECT * FROM glob('/etc/*')",
        "install-extension": "INSTALL httpfs",
        "load-extension": "LOAD httpfs",
        "autoload-extension": "SELECT * FROM read_json('https://example.com/x.json')",
        "set-external-access":
            "SET enable_external_access = true; SELECT * FROM read_text('/etc/passwd')",
        "unlock-configuration": "SET lock_configuration = false",
        "select-then-copy": f"SELECT 1 AS a; COPY (SELECT 1 AS a) TO '{outside / 'out.csv'}'",
    }


ATTACKS = list(_attacks(Path("/d"), Path("/d/warehouse/p.parquet")))


@pytest.mark.parametrize("attack", ATTACKS)
def test_sql_cannot_write_or_read_outside_the_warehouse(data_dir, elsewhere, capsys, attack):
    partition = next((data_dir / "warehouse" / "samples").rglob("*.parquet"))
    sql = _attacks(data_dir, partition)[attack]
    tree = data_dir.parent
    before = _snapshot(tree)
    code, out, err = _main([sql, "--database", str(data_dir / "dmg.duckdb")], capsys)
    assert code == 2, (code, out, err)
    _one_line_error(err)
    assert "root:" not in out and "not for SQL" not in out
    assert out == ""  # nothing ran, not even the SELECT before a refused statement
    assert _snapshot(tree) == before


def test_the_connection_is_sandboxed_in_duckdb_itself(data_dir, elsewhere):
    """What ``connect`` returns refuses, by DuckDB's own settings, every file outside the
    warehouse, extension loading and changing those settings."""
    tree = data_dir.parent
    (elsewhere / "warehouse").mkdir()  # where the views' relative paths point from here
    (elsewhere / "warehouse" / "notes.txt").write_text("not the warehouse\n")
    before = _snapshot(tree)
    with query.connect(str(data_dir / "dmg.duckdb")) as connection:
        assert connection.execute("SELECT count(*) FROM samples").fetchall() == [(3,)]
        for sql in ("SELECT * FROM read_text('/etc/passwd')",
                    "SELECT * FROM read_text('cache/secret.txt')",
                    "SELECT * FROM read_text('warehouse/notes.txt')",
                    "COPY (SELECT 1 AS a) TO 'warehouse/new.csv'",
                    f"COPY (SELECT 1 AS a) TO '{tree / 'out.csv'}'",
                    f"ATTACH '{tree / 'new.duckdb'}' (READ_ONLY false)",
                    "INSTALL httpfs", "LOAD httpfs",
                    "SELECT * FROM read_json('https://example.com/x.json')"):
            with pytest.raises(duckdb.PermissionException):
                connection.execute(sql)
        for sql in ("SET enable_external_access = true", "SET allowed_directories = ['/']",
                    "SET autoload_known_extensions = true", "SET lock_configuration = false"):
            with pytest.raises(duckdb.Error, match="configuration has been locked"):
                connection.execute(sql)
        with pytest.raises(duckdb.Error):
            connection.execute("CREATE TABLE t AS SELECT 1")
        with query.connect(str(data_dir / "dmg.duckdb")) as second:  # one DuckDB instance
            assert second.execute("SELECT count(*) FROM samples").fetchall() == [(3,)]
            with pytest.raises(duckdb.PermissionException):
                second.execute("SELECT * FROM read_text('/etc/passwd')")
    assert _snapshot(tree) == before


def test_a_warehouse_elsewhere_is_found_from_the_database_or_named(tmp_path, elsewhere, capsys):
    database = tmp_path / "dmg.duckdb"
    Warehouse(root=str(tmp_path / "wh"), database=str(database)).write(
        "samples", {"cohort": "BRCA"}, _samples(2)
    )
    with query.connect(str(database), warehouse=str(tmp_path / "wh")) as connection:
        assert connection.execute("SELECT count(*) FROM samples").fetchall() == [(2,)]
    code, out, err = _main(["SELECT count(*) AS n FROM samples", "--database", str(database),
                            "--warehouse", str(tmp_path / "wh")], capsys)
    assert (code, out.split()) == (0, ["n", "2"]), err
    code, out, err = _main(["SELECT count(*) AS n FROM samples", "--database", str(database)],
                           capsys)  # the root its views were published over (warehouse_snapshot)
    assert (code, out.split()) == (0, ["n", "2"]), err
    code, _, err = _main(["SELECT count(*) AS n FROM samples", "--database", str(database),
                          "--warehouse", str(tmp_path / "other")], capsys)
    assert code == 2
    assert "Permission Error" in _one_line_error(err)


def test_dmg_query_imports_nothing_heavy():
    code = "import sys, warehouse.query; print(sorted({'dagster', 'torch'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, check=True)
    assert result.stdout.strip() == "[]"
