"""Run SQL against the warehouse: ``python -m warehouse.query "SELECT ..."`` or a .sql file.

Opens the DuckDB file read-only, so it never blocks a materialisation. The views read Parquet
paths relative to the file's directory: ``connect`` sets DuckDB's ``file_search_path`` to it (from
the DuckDB CLI: ``duckdb -readonly -cmd "SET file_search_path='data'" data/dmg.duckdb``).
"""

import argparse
from pathlib import Path

import duckdb


def connect(database: str = "data/dmg.duckdb") -> duckdb.DuckDBPyConnection:
    """A read-only connection to the warehouse's views, wherever the data directory lies."""
    connection = duckdb.connect(database, read_only=True)
    directory = Path(database).resolve().parent.as_posix().replace("'", "''")
    connection.execute(f"SET file_search_path = '{directory}'")
    return connection


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sql", help="a SQL statement or the path of a .sql file")
    parser.add_argument("--database", default="data/dmg.duckdb")
    args = parser.parse_args(argv)
    sql = Path(args.sql).read_text() if args.sql.endswith(".sql") else args.sql
    with connect(args.database) as connection:
        print(connection.sql(sql).df().to_string(index=False, max_rows=50))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
