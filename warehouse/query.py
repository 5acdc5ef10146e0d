"""Run SQL over the warehouse's views: ``dmg query "SELECT ..."``, a .sql file, or a prompt.

The database is the one of the data directory the rest of the project uses (``DMG_DATA_DIR``,
default ``data``), opened read-only so it never blocks a materialisation. The views read Parquet
paths relative to the file's directory, so ``connect`` sets DuckDB's ``file_search_path`` to it.

SQL here only reads, and only the warehouse. ``connect`` locks DuckDB itself: external access off
except for the warehouse directory (``allowed_directories``), no extension installing or
autoloading, and ``lock_configuration`` so that no ``SET`` undoes it. DuckDB has no switch that
makes the allowed directory read-only, though: ``COPY ... TO``, ``EXPORT DATABASE`` and
``ATTACH ... (READ_ONLY false)`` could still write there. So ``dmg query`` runs only SELECT
statements (WITH, FROM, VALUES, DESCRIBE, SHOW and SUMMARIZE are SELECTs) and EXPLAIN of one, and
refuses the whole input before running any of it if another statement is in it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

import duckdb

from dmg_resources import settings

PathLike = str | os.PathLike[str]
SNAPSHOT_VIEW = settings.SNAPSHOT_VIEW

_LEADING = re.compile(r"(?:\s+|--[^\n]*|/\*.*?\*/)*", re.DOTALL)
_EXPLAIN = re.compile(r"explain\b\s*(?:analy[sz]e\b)?", re.IGNORECASE)
_OPTIONS = re.compile(r"\s*\([^()]*\)")
_WORD = re.compile(r"\w+")


class QueryError(Exception):
    """A refused statement or a missing file, said in one line."""


def locate(database: PathLike | None = None, warehouse: PathLike | None = None,
           ) -> tuple[Path, Path]:
    """The database file and the warehouse directory its views may read.

    By default the data directory's database (``dmg_resources.settings``), and the directory its
    views were published over (the ``warehouse_snapshot`` view's ``root``); for a database
    published before that view existed, the ``warehouse`` directory beside it.
    """
    path = Path(settings.database_path() if database is None else database).resolve()
    if warehouse is None:
        warehouse = _published_root(path) or path.parent / "warehouse"
    return path, Path(os.path.normpath(Path(warehouse).absolute()))


def _published_root(database: Path) -> Path | None:
    """Where the views of ``database`` read their files (a view that reads no file)."""
    if not database.is_file():
        return None
    try:
        with duckdb.connect(str(database), read_only=True) as connection:
            (root,) = connection.execute(f"SELECT root FROM {SNAPSHOT_VIEW}").fetchone()
    except duckdb.Error:
        return None
    return database.parent / root


def connect(database: PathLike | None = None,
            warehouse: PathLike | None = None) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the warehouse's views that can open no file outside the
    warehouse directory, load no extension and change none of that (see the module's doc)."""
    path, root = locate(database, warehouse)
    _require(path)
    connection = duckdb.connect(str(path), read_only=True)
    try:
        _sandbox(connection, path, root)
    except BaseException:
        connection.close()
        raise
    return connection


def _require(database: Path) -> None:
    if not database.is_file():
        raise QueryError(
            f"no warehouse database at {database}: build it with `make run` (or `dmg run`), or "
            "set DMG_DATA_DIR to the data directory that holds one"
        )


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _allowed(directory: Path, root: Path) -> tuple[list[str], list[str]]:
    """The directories DuckDB may open (the warehouse) and single files besides.

    DuckDB checks a relative path against the working directory before it looks in
    ``file_search_path``, so from another working directory each file a view reads must also be
    allowed where its relative path points from there (that file alone, not its directory).
    ``main`` works from the database's directory, where the two are the same.
    """
    here = {root, root.resolve()}
    # A trailing slash: DuckDB allows directory *prefixes*, and warehouse2/ is not warehouse/.
    directories = sorted(f"{os.path.normpath(p)}/" for p in here)
    seen = Path(os.path.normpath(Path.cwd() / os.path.relpath(root, directory)))
    if seen in here:
        return directories, []
    return directories, sorted(str(seen / f) for f in _data_files(root))


def _data_files(root: Path) -> Iterator[str]:
    """The Parquet files under ``root``, relative to it, outside hidden directories (staging);
    a directory that a concurrent commit removes meanwhile is skipped."""
    for top, directories, names in os.walk(root):
        directories[:] = [d for d in directories if not d.startswith(".")]
        for name in names:
            if name.endswith(".parquet"):
                yield os.path.relpath(os.path.join(top, name), root)


def _sandbox(connection: duckdb.DuckDBPyConnection, database: Path, root: Path) -> None:
    """Lock the DuckDB instance to the warehouse, then point this session's file search at the
    database's directory (a per-connection setting, the one the lock leaves open)."""
    directory = database.parent
    directories, files = _allowed(directory, root)
    locked, open_to, external = connection.execute(
        "SELECT current_setting('lock_configuration'), current_setting('allowed_directories'), "
        "current_setting('enable_external_access')"
    ).fetchone()
    if locked:  # DuckDB shares one instance per file: another connect() locked it already
        if external or not set(directories) <= set(open_to):
            raise QueryError(
                f"{database} is already open in this process with other "
                f"access settings ({', '.join(open_to)}); close that connection first"
            )
    else:
        connection.execute(f"SET allowed_directories = [{', '.join(map(_literal, directories))}]")
        connection.execute(f"SET allowed_paths = [{', '.join(map(_literal, files))}]")
        for setting in ("enable_external_access", "autoload_known_extensions",
                        "autoinstall_known_extensions", "allow_community_extensions",
                        "allow_persistent_secrets"):
            connection.execute(f"SET {setting} = false")
        connection.execute("SET allowed_configs = ['file_search_path']")
        connection.execute("SET lock_configuration = true")
    connection.execute(f"SET file_search_path = {_literal(directory.as_posix())}")


def _first_word(text: str) -> str:
    match = _WORD.search(text, _LEADING.match(text).end())
    return match.group(0).upper() if match else "an empty statement"


def _explains_a_select(connection: duckdb.DuckDBPyConnection, text: str) -> bool:
    """Whether an EXPLAIN [ANALYZE] [(options)] statement explains a SELECT (EXPLAIN ANALYZE
    runs what it explains); anything this cannot read counts as no."""
    explain = _EXPLAIN.match(text, _LEADING.match(text).end())
    if explain is None:
        return False
    rest = text[explain.end():]
    candidates = [rest]
    if options := _OPTIONS.match(rest):
        candidates.append(rest[options.end():])
    for candidate in candidates:
        try:
            inner = connection.extract_statements(candidate)
        except duckdb.Error:
            continue
        if len(inner) == 1 and inner[0].type == duckdb.StatementType.SELECT:
            return True
    return False


def read_only_statements(connection: duckdb.DuckDBPyConnection,
                         sql: str) -> list[duckdb.Statement]:
    """The statements of ``sql``, all of them SELECTs or EXPLAINs of one; else QueryError."""
    statements = connection.extract_statements(sql)
    if not statements:
        raise QueryError("no SQL statement given")
    for statement in statements:
        if statement.type == duckdb.StatementType.SELECT:
            continue
        if statement.type == duckdb.StatementType.EXPLAIN:
            if _explains_a_select(connection, statement.query):
                continue
            refused = "EXPLAIN of a statement other than SELECT"
        else:
            refused = _first_word(statement.query)
        raise QueryError(
            f"{refused} refused: dmg query only reads the warehouse (it runs SELECT, WITH, FROM, "
            "VALUES, DESCRIBE, SHOW, SUMMARIZE and EXPLAIN of those); nothing ran"
        )
    return statements


def _table(connection: duckdb.DuckDBPyConnection) -> str:
    frame = connection.df()
    if list(frame.columns) == ["explain_key", "explain_value"]:
        return "\n".join(frame["explain_value"])
    return frame.to_string(index=False, max_rows=50)


def run(connection: duckdb.DuckDBPyConnection, sql: str) -> Iterator[str]:
    """Check that every statement of ``sql`` only reads, then run them: a table each."""
    for statement in read_only_statements(connection, sql):
        connection.execute(statement)
        yield _table(connection)


def _one_line(exc: BaseException) -> str:
    """DuckDB's message without its multi-line context (the LINE 1: ... caret)."""
    lines = []
    for line in str(exc).splitlines():
        if not line.strip() or line.startswith("LINE "):
            break
        lines.append(line.strip())
    return " ".join(lines) or type(exc).__name__


def _report(exc: BaseException, root: Path, verbose: bool) -> int:
    if verbose:
        traceback.print_exception(exc)
    message = _one_line(exc)
    if isinstance(exc, duckdb.PermissionException):
        message += f" (dmg query opens only the files under {root.absolute()})"
    print(f"error: {message}", file=sys.stderr)
    return 2


def _read_sql(argument: str | None) -> str:
    if argument is None:
        return sys.stdin.read()
    if not argument.endswith(".sql"):
        return argument
    try:
        return Path(argument).read_text()
    except FileNotFoundError:
        raise QueryError(f"no SQL file at {Path(argument).absolute()}") from None


def _prompt(connection: duckdb.DuckDBPyConnection, database: Path, root: Path,
            verbose: bool) -> int:
    """Statements typed at a terminal, each run when a line ends with ';'; Ctrl-D leaves."""
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401 - line editing and history for input()
    print(f"dmg query on {database}: end statements with ';', leave with Ctrl-D",
          file=sys.stderr)
    lines: list[str] = []
    while True:
        try:
            line = input("...> " if lines else "dmg> ")
        except EOFError:
            print(file=sys.stderr)
            return 0
        except KeyboardInterrupt:
            print(file=sys.stderr)
            lines = []
            continue
        if not lines and line.strip() in {".quit", ".exit", "quit", "exit", "\\q"}:
            return 0
        lines.append(line)
        sql = "\n".join(lines)
        if not sql.strip():
            lines = []
        elif sql.rstrip().endswith(";"):
            lines = []
            try:
                for table in run(connection, sql):
                    print(table)
            except (QueryError, duckdb.Error) as exc:
                _report(exc, root, verbose)
            except KeyboardInterrupt:
                print("interrupted", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dmg query", description=__doc__.splitlines()[0].replace("``", "")
    )
    parser.add_argument("sql", nargs="?",
                        help="a SQL statement or the path of a .sql file; without it, SQL from "
                             "standard input (a prompt on a terminal)")
    parser.add_argument("--database",
                        help=f"the DuckDB file of views (default {settings.database_path()}, "
                             "the data directory from DMG_DATA_DIR)")
    parser.add_argument("--warehouse",
                        help="the directory of Parquet files its views read (default: the "
                             "one they were published over)")
    parser.add_argument("--verbose", action="store_true", help="a traceback with an error")
    args = parser.parse_args(argv)
    database, root = locate(args.database, args.warehouse)
    try:
        sql = None if args.sql is None and sys.stdin.isatty() else _read_sql(args.sql)
        _require(database)
        with contextlib.chdir(database.parent), connect(database, root) as connection:
            if sql is None:
                return _prompt(connection, database, root, args.verbose)
            for number, table in enumerate(run(connection, sql)):
                print(("\n" if number else "") + table)
    except BrokenPipeError:  # the reader left (| head): stop quietly, and flush nowhere at exit
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (QueryError, duckdb.Error, OSError) as exc:
        return _report(exc, root, args.verbose)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
