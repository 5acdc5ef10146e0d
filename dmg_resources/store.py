"""The warehouse's storage engine: Parquet files listed by one snapshot, DuckDB views over them.

Why Parquet files and not DuckDB tables: DuckDB allows one writing process per database file, so
partitions materialised at once by several processes fail with "Could not set lock on file" (the
known dagster-duckdb pain). Here a step stages its partitions in a private directory and commits
them by replacing one small file, so concurrent writers never share a file, a failed step leaves
the old partitions as they were, and re-materialising replaces rows instead of appending them.

The snapshot (``<root>/_manifest.json``) lists every data file of every table with its rows, and
it is the only thing that says what the warehouse holds: a file on disk that it does not list
does not exist to any reader. A step's writes are one transaction. Under the warehouse's commit
lock it moves its staged files into the table directories under new names (nobody reads them
yet), builds the views of the next snapshot in a new DuckDB file, writes that snapshot, which
lists the moved files in place of the partitions they replace, and renames it over the current
one: that rename is the commit, so the tables a step writes become visible together, and a
process killed at any point before it has changed nothing. The new DuckDB file is renamed in
after it. Every reader (``read``, ``connect``, the DuckDB file, the DuckDB CLI) reads one
snapshot's files, so nobody sees a partition absent or two tables from different commits, and no
reader has anything to repair. Data files are never modified: a replaced file stays on disk for
``retain_replaced_minutes`` (readers that took the older snapshot finish) and is then deleted by
a later commit, which also deletes files a killed commit moved in and never listed.

Locks are ``flock`` locks, which the kernel releases when their process dies, so a killed writer
never wedges the others: the commit lock serialises commits (a moment each), a partition lock
keeps ``replace_rows`` from its read to its commit, and each transaction holds a lock on its
staging directory while it lives, so staging whose lock is free belongs to a dead process and is
removed. A partition with rows is never replaced by an empty one unless
``allow_empty_replacement`` says so.

Views: ``schema.sql`` has one view per table (``{files}`` stands for the snapshot's files of that
table) and ``derived.sql`` views over those. A table with no committed file has no view, and a
derived view that reads an absent view, directly or through another derived view, is absent too
(DuckDB's binder names the missing view). Any other view that does not bind fails the commit
before its rename, with nothing changed (``ViewError``): the views are built before the snapshot
is committed so that the DuckDB file and the snapshot never disagree because of a bad view. The
DuckDB file holds only views, with paths relative to its own directory, so a copied data
directory reads its own files; readers never contend with a writer for DuckDB's lock. Open it
with ``dmg query`` or ``warehouse.query.connect``, which let SQL read the warehouse's files only.

This module imports no Dagster (``dmg_resources.warehouse`` is the resource around it). It stays
one module because the commit, the views it publishes and the sweep after it are one protocol
run under one lock, each step relying on the order of the others.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from filelock import FileLock, Timeout

from dmg_ml.files import write_atomically
from dmg_resources.settings import SNAPSHOT_VIEW

_VIEW = re.compile(r"create\s+or\s+replace\s+view\s+(\w+)", re.IGNORECASE)
_MISSING = re.compile(r"Table with name (\S+) does not exist")
_PART = re.compile(r"^[A-Za-z0-9_.+-]+$")
MANIFEST = "_manifest.json"
_FORMAT = "dmg.warehouse/1"
#: How long a commit may wait for another's (commits hold the lock for moments, not minutes).
COMMIT_LOCK_TIMEOUT_S = 600.0
#: The views of every table (``{files}`` placeholders) and the views built on them.
SCHEMA_SQL: Traversable = files("warehouse") / "schema.sql"
DERIVED_SQL: Traversable = files("warehouse") / "derived.sql"
#: Tables of an earlier layout: a warehouse listing any of them is refused (``RetiredTablesError``).
RETIRED_TABLES = frozenset({
    "cnn_fold_metrics", "cnn_gene_metrics", "cnn_predictions", "cnn_checkpoints",
    "cnn_superseded", "cnn_cohort_summary", "model_fold_metrics", "model_gene_metrics",
    "model_predictions",
})


class EmptyPartitionError(ValueError):
    """A step would replace a partition holding rows with an empty one."""


class RetiredTablesError(RuntimeError):
    """The warehouse holds tables of an earlier layout, which this dmg no longer writes."""


class ViewError(RuntimeError):
    """A view that does not bind, for a reason other than a table with no files yet."""

    def __init__(self, message: str, view: str | None = None) -> None:
        super().__init__(message)
        self.view = view


@dataclass(frozen=True)
class Snapshot:
    """One committed state: each table's data files (paths relative to the root) with their
    rows, and the files replaced since, with when (Unix time), until they are deleted."""

    version: int = 0
    tables: dict[str, dict[str, int]] = field(default_factory=dict)
    retired: dict[str, float] = field(default_factory=dict)

    def files(self, table: str, partition: Mapping[str, str] | None = None) -> dict[str, int]:
        """The files of ``table`` (of one partition, sub-partitions included) and their rows."""
        prefix = "/".join([table, *_hive(partition or {})]) + "/"
        return {f: n for f, n in self.tables.get(table, {}).items() if f.startswith(prefix)}

    def to_json(self) -> str:
        return json.dumps({"format": _FORMAT, "version": self.version, "tables": self.tables,
                           "retired": self.retired}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Snapshot:
        data = json.loads(text)
        if data.get("format") != _FORMAT:
            raise ValueError(f"not a dmg warehouse manifest (format {data.get('format')!r})")
        return cls(int(data["version"]), data["tables"], data["retired"])


class PartitionWriter:
    """Appends frames to Parquet files in a staging directory (one file per sub-partition)."""

    def __init__(self, staging: Path) -> None:
        self.staging = staging
        self.rows = 0
        self.file_rows: dict[Path, int] = {}
        self._writers: dict[Path, pq.ParquetWriter] = {}

    def write(self, frame: pd.DataFrame | pa.Table, sub: Mapping[str, str] | None = None) -> None:
        table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(
            frame, preserve_index=False
        )
        path = self.staging.joinpath(*_hive(sub or {}), "part-0.parquet")
        writer = self._writers.get(path)
        if writer is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            writer = self._writers[path] = pq.ParquetWriter(path, table.schema)
        writer.write_table(table.cast(writer.schema))
        self.rows += table.num_rows
        self.file_rows[path] = self.file_rows.get(path, 0) + table.num_rows

    def close(self) -> None:
        while self._writers:
            _, writer = self._writers.popitem()
            writer.close()

    def abort(self) -> None:
        """Close every file without raising: the staging is thrown away anyway (disk full...)."""
        while self._writers:
            _, writer = self._writers.popitem()
            with suppress(Exception):
                writer.close()


@dataclass
class _Staged:
    table: str
    partition: dict[str, str]
    writer: PartitionWriter

    @property
    def name(self) -> str:
        return f"{self.table} {self.partition}"


class Transaction:
    """Partitions staged by one step, made visible together when the step succeeds."""

    def __init__(self, store: WarehouseStore, staging: Path) -> None:
        self.store = store
        self.staging = staging
        self._staged: dict[Path, _Staged] = {}
        self._locks: dict[Path, FileLock] = {}
        self._opened = 0
        self._must_be_empty: list[tuple[str, dict[str, str], Exception]] = []

    @contextmanager
    def writer(self, table: str, partition: Mapping[str, str]) -> Iterator[PartitionWriter]:
        """Stage one partition of ``table``; it replaces the old one whole at commit."""
        target = self.store.partition_dir(table, partition)
        if target in self._staged:
            raise ValueError(f"{table} {dict(partition)} is staged twice in one transaction")
        self._opened += 1
        writer = PartitionWriter(self.staging / str(self._opened))
        try:
            yield writer
            writer.close()
        except BaseException:
            writer.abort()
            raise
        self._staged[target] = _Staged(table, dict(partition), writer)

    def write(
        self, table: str, partition: Mapping[str, str], frame: pd.DataFrame | pa.Table
    ) -> int:
        with self.writer(table, partition) as writer:
            writer.write(frame)
        return writer.rows

    def replace_rows(
        self, table: str, partition: Mapping[str, str], frame: pd.DataFrame,
        key: str | list[str],
    ) -> int:
        """Replace the rows whose ``key`` values (one column or several) ``frame`` holds,
        keeping the others.

        The partition stays locked from this read until the commit, so two steps replacing
        different keys of one partition both keep their rows.
        """
        target = self.store.partition_dir(table, partition)
        self._hold(target)
        old_files = self.store.snapshot().files(table, partition)
        if old_files:
            paths = [str(self.store.root_path / f) for f in sorted(old_files)]
            old = ds.dataset(paths, format="parquet").to_table().to_pandas()
            columns = [key] if isinstance(key, str) else list(key)
            if missing := [c for c in columns if c not in old.columns]:
                raise ValueError(
                    f"{table} {dict(partition)} was written without the key columns {missing} "
                    f"(an older dmg): remove {target} to rebuild it, or start a fresh data "
                    "directory (make clean)"
                )
            replaced = pd.MultiIndex.from_frame(frame[columns].drop_duplicates())
            old = old[~pd.MultiIndex.from_frame(old[columns]).isin(replaced)]
            frame = pd.concat([old, frame], ignore_index=True)
        return self.write(table, partition, frame)

    def require_empty(self, table: str, partition: Mapping[str, str], refusal: Exception) -> None:
        """Raise ``refusal`` at commit, writing nothing, if ``table``'s ``partition`` holds rows
        then: a check made before the step's work (a batch name in use) cannot see a concurrent
        step that commits the same partition first."""
        self._must_be_empty.append((table, dict(partition), refusal))

    def _hold(self, target: Path) -> None:
        if target not in self._locks:
            lock = self.store.partition_lock(target)
            lock.acquire()
            self._locks[target] = lock

    def commit(self) -> None:
        """Lock the targets, refuse empty replacements, move the staged files in, then commit
        the snapshot that lists them."""
        for target in sorted(self._staged):
            self._hold(target)
        with self.store.commit_lock():
            current = self.store.snapshot()
            for table, partition, refusal in self._must_be_empty:
                if sum(current.files(table, partition).values()):
                    raise refusal
            self._refuse_empty_replacements(current)
            self.store.commit_snapshot(self._next(current))

    def _refuse_empty_replacements(self, current: Snapshot) -> None:
        if self.store.allow_empty_replacement:
            return
        for staged in self._staged.values():
            old = sum(current.files(staged.table, staged.partition).values())
            if staged.writer.rows == 0 and old:
                raise EmptyPartitionError(
                    f"{staged.name}: the step produced 0 rows and would replace the {old:,} "
                    "rows there; nothing was written (set the warehouse resource's "
                    "allow_empty_replacement to empty a partition on purpose)"
                )

    def _next(self, current: Snapshot) -> Snapshot:
        """Move every staged file to its table directory under a new name and return the
        snapshot that lists them instead of the files of the partitions they replace."""
        root = self.store.root_path
        tables = {table: dict(entries) for table, entries in current.tables.items()}
        retired, now = dict(current.retired), time.time()
        for number, (target, staged) in enumerate(sorted(self._staged.items())):
            entries = tables.setdefault(staged.table, {})
            for old in current.files(staged.table, staged.partition):
                retired[old] = now
                del entries[old]
            for file, rows in sorted(staged.writer.file_rows.items()):
                relative = file.relative_to(staged.writer.staging)
                moved = target / relative.parent / f"part-{self.staging.name}-{number}.parquet"
                moved.parent.mkdir(parents=True, exist_ok=True)
                os.replace(file, moved)
                entries[moved.relative_to(root).as_posix()] = rows
        tables = {table: entries for table, entries in tables.items() if entries}
        return Snapshot(current.version + 1, tables, retired)

    def release(self) -> None:
        while self._locks:
            _, lock = self._locks.popitem()
            lock.release()


class WarehouseStore:
    """Parquet partitions under ``root``, the snapshot that lists them, and the DuckDB file
    ``database`` of views over them (built from ``schema_sql`` and ``derived_sql``)."""

    def __init__(
        self, root: str | os.PathLike[str], database: str | os.PathLike[str], *,
        allow_empty_replacement: bool = False, retain_replaced_minutes: float = 60.0,
        schema_sql: Traversable | Path = SCHEMA_SQL, derived_sql: Traversable | Path = DERIVED_SQL,
        log: logging.Logger | None = None,
    ) -> None:
        self.root_path = Path(root).resolve()
        self.database_path = Path(database).resolve()
        self.allow_empty_replacement = allow_empty_replacement
        self.retain_replaced_minutes = retain_replaced_minutes
        self.schema_sql, self.derived_sql = schema_sql, derived_sql
        self.log = log or logging.getLogger(__name__)
        self._staging_root = self.root_path / ".staging"
        self._manifest_path = self.root_path / MANIFEST

    def partition_dir(self, table: str, partition: Mapping[str, str]) -> Path:
        return self.root_path.joinpath(table, *_hive(partition))

    def _lock(self, name: str, timeout: float = -1) -> FileLock:
        locks = self.root_path / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        return FileLock(locks / f"{name}.lock", timeout=timeout)

    def partition_lock(self, target: Path) -> FileLock:
        """The lock serialising writers of one partition directory."""
        return self._lock(str(target.relative_to(self.root_path)).replace(os.sep, "__"))

    @contextmanager
    def commit_lock(self) -> Iterator[None]:
        """Held while a snapshot is committed (and the views and the sweep that go with it)."""
        with self._lock(".commit", timeout=COMMIT_LOCK_TIMEOUT_S):
            yield

    def snapshot(self) -> Snapshot:
        """The committed state. A data directory written before snapshots existed (or never
        written) is read from its files."""
        try:
            return Snapshot.from_json(self._manifest_path.read_text())
        except FileNotFoundError:
            return self._snapshot_from_files()

    def _snapshot_from_files(self) -> Snapshot:
        root = self.root_path
        tables: dict[str, dict[str, int]] = {}
        if root.exists():
            for directory in sorted(d for d in root.iterdir() if _is_table_dir(d)):
                entries = {p.relative_to(root).as_posix(): pq.ParquetFile(p).metadata.num_rows
                           for p in sorted(directory.rglob("*.parquet"))}
                if entries:
                    tables[directory.name] = entries
        return Snapshot(0, tables, {})

    def refuse_retired_tables(self, snapshot: Snapshot | None = None) -> None:
        """Raise ``RetiredTablesError`` when the snapshot lists a table of an earlier layout."""
        found = sorted(RETIRED_TABLES & set((snapshot or self.snapshot()).tables))
        if found:
            raise RetiredTablesError(
                f"this warehouse was written by an earlier dmg (tables {', '.join(found)}); its "
                f"results are in the old layout: move {self.root_path} and the checkpoints "
                "directory aside and run `make run` (or `dmg run`) again"
            )

    def commit_snapshot(self, snapshot: Snapshot) -> None:
        """Make ``snapshot`` the committed state (the caller holds ``commit_lock``).

        Its views are built first, in a new DuckDB file: a view that does not bind fails the
        commit with nothing changed (the files moved in are deleted at once). Then the snapshot
        is renamed in (the commit), then the DuckDB file, then what no snapshot needs is swept.
        """
        try:
            fresh, _ = self._build_views(snapshot)
        except Exception as exc:
            self._sweep(self.snapshot(), delete_replaced=False)
            if isinstance(exc, ViewError):
                raise ViewError(f"{exc}; nothing was committed", exc.view) from exc
            raise
        try:
            write_atomically(self._manifest_path, snapshot.to_json())
        except BaseException:
            _remove_database(fresh)
            raise
        published = self._install_views(fresh)
        self._sweep(snapshot, delete_replaced=published)

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """Stage partitions of any tables; on success they replace the old ones together, on
        error nothing changes."""
        self.refuse_retired_tables()
        self._staging_root.mkdir(parents=True, exist_ok=True)
        self._start_snapshots()
        self._remove_dead_staging()
        self._refresh_stale_views()
        name = uuid.uuid4().hex
        alive = FileLock(self._staging_root / f"{name}.lock")  # held while this step lives
        transaction = Transaction(self, self._staging_root / name)
        alive.acquire()
        try:
            transaction.staging.mkdir()
            yield transaction
            transaction.commit()
        finally:
            transaction.release()
            _remove(transaction.staging)
            alive.release()
            Path(alive.lock_file).unlink(missing_ok=True)

    def _start_snapshots(self) -> None:
        """Write the first snapshot (of the files there, for an older data directory) before
        any commit moves a file in, so that files a killed commit left are never taken as
        committed."""
        if self._manifest_path.exists():
            return
        with self.commit_lock():
            if not self._manifest_path.exists():
                write_atomically(self._manifest_path, self._snapshot_from_files().to_json())

    def _refresh_stale_views(self) -> None:
        """Publish the views again when the DuckDB file shows an older snapshot than the
        committed one (a writer killed between its commit and its views)."""
        if self._published_version() == self.snapshot().version:
            return
        with self.commit_lock():
            snapshot = self.snapshot()
            if self._published_version() != snapshot.version:
                self._install_views(self._build_views(snapshot)[0])

    def _published_version(self) -> int | None:
        try:
            with duckdb.connect(str(self.database_path), read_only=True) as connection:
                return connection.execute(f"SELECT version FROM {SNAPSHOT_VIEW}").fetchone()[0]
        except duckdb.Error:
            return None

    def _remove_dead_staging(self) -> None:
        """Remove the staging of writers that died (their lock is free)."""
        for lock_file in sorted(self._staging_root.glob("*.lock")):
            try:
                with FileLock(lock_file, timeout=0):
                    _remove(self._staging_root / lock_file.stem)
            except Timeout:
                continue  # a live writer
            lock_file.unlink(missing_ok=True)

    def _sweep(self, snapshot: Snapshot, delete_replaced: bool) -> None:
        """Delete files no snapshot lists (moved in by a commit that was killed or refused
        before it committed) and, once the DuckDB file shows ``snapshot``
        (``delete_replaced``), replaced files past their retention. Runs under the commit lock,
        the only place files enter the table directories, so nothing it deletes is being
        committed."""
        root, cutoff = self.root_path, time.time() - 60 * self.retain_replaced_minutes
        expired = {f for f, when in snapshot.retired.items() if delete_replaced and when <= cutoff}
        listed = {f for entries in snapshot.tables.values() for f in entries}
        kept = set(snapshot.retired) - expired
        for directory in (d for d in root.iterdir() if _is_table_dir(d)):
            for path in directory.rglob("*.parquet"):
                if path.relative_to(root).as_posix() not in listed | kept:
                    path.unlink(missing_ok=True)
            _remove_empty_dirs(directory)
        if expired:
            remaining = {f: w for f, w in snapshot.retired.items() if f not in expired}
            write_atomically(self._manifest_path, Snapshot(
                snapshot.version, snapshot.tables, remaining).to_json())

    @contextmanager
    def writer(self, table: str, partition: Mapping[str, str]) -> Iterator[PartitionWriter]:
        """Stage one partition; on success it replaces the old one whole, on error nothing
        changes."""
        with self.transaction() as transaction, transaction.writer(table, partition) as writer:
            yield writer

    def write(
        self, table: str, partition: Mapping[str, str], frame: pd.DataFrame | pa.Table
    ) -> int:
        with self.transaction() as transaction:
            return transaction.write(table, partition, frame)

    def replace_rows(
        self, table: str, partition: Mapping[str, str], frame: pd.DataFrame,
        key: str | list[str],
    ) -> int:
        """Replace the rows of ``frame``'s ``key`` values in a partition, keeping the others."""
        with self.transaction() as transaction:
            return transaction.replace_rows(table, partition, frame, key)

    def read(
        self, table: str, partition: Mapping[str, str] | None = None,
        columns: list[str] | None = None, filters: list[tuple] | None = None,
    ) -> pd.DataFrame:
        """A table's rows (of one partition when given) from the committed snapshot."""
        chosen = self.snapshot().files(table, partition)
        if not chosen:
            where = f" partition {dict(partition)}" if partition else ""
            raise LookupError(f"table {table!r}{where} has not been materialised")
        base = self.partition_dir(table, partition or {})
        dataset = ds.dataset([str(self.root_path / f) for f in sorted(chosen)],
                             format="parquet", partitioning="hive", partition_base_dir=str(base))
        expression = pq.filters_to_expression(filters) if filters else None
        return dataset.to_table(columns=columns, filter=expression).to_pandas()

    def tables(self) -> list[str]:
        """Tables that have at least one Parquet file."""
        return sorted(self.snapshot().tables)

    def _table_views(self, snapshot: Snapshot) -> tuple[list[str], set[str]]:
        """The snapshot view and the views of the tables that have files, over those files
        (paths relative to the database file's directory, DuckDB's ``file_search_path``); and
        the names of the table views left out because their table has none."""
        root = Path(os.path.relpath(self.root_path, self.database_path.parent)).as_posix()
        chosen, absent = [], set()
        for statement in _statements(self.schema_sql):
            name = _view_name(statement)
            entries = snapshot.tables.get(name) if name else None
            if entries:
                paths = ", ".join(_sql_string(f"{root}/{f}") for f in sorted(entries))
                chosen.append(statement.replace("{files}", f"[{paths}]"))
            elif name:
                absent.add(name.lower())
        version = (f"CREATE OR REPLACE VIEW {SNAPSHOT_VIEW} AS SELECT {snapshot.version} AS "
                   f"version, {_sql_string(root)} AS root")
        return [version, *chosen], absent

    def view_statements(self, snapshot: Snapshot | None = None) -> list[str]:
        """The statements that publish ``snapshot``'s views (the committed one by default): its
        table views, then every derived view (those over absent tables are skipped when run)."""
        chosen, _ = self._table_views(snapshot or self.snapshot())
        return [*chosen, *_statements(self.derived_sql)]

    def _create_views(self, connection: duckdb.DuckDBPyConnection,
                      snapshot: Snapshot) -> list[str]:
        """Create ``snapshot``'s views in ``connection``; returns the views created."""
        chosen, absent = self._table_views(snapshot)
        created = [_create(connection, s, self.schema_sql, absent) for s in chosen]
        for statement in _statements(self.derived_sql):
            created.append(name := _create(connection, statement, self.derived_sql, absent))
            if name is None and _view_name(statement):
                self.log.debug("view %s skipped: a view it reads has no files yet",
                               _view_name(statement))
        return [name for name in created if name]

    def connect(self) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB connection with every view; touches no database file."""
        connection = duckdb.connect()
        try:
            _search_from(connection, self.database_path.parent)
            self._create_views(connection, self.snapshot())
        except BaseException:
            connection.close()
            raise
        return connection

    def query(self, sql: str, params: list | None = None) -> pd.DataFrame:
        with self.connect() as connection:
            return connection.execute(sql, params or []).df()

    def publish_views(self) -> list[str]:
        """(Re)create the views of the committed snapshot in the DuckDB file; returns the
        views it now holds. Failing here loses no data."""
        with self.commit_lock():
            snapshot = self.snapshot()
            self.refuse_retired_tables(snapshot)
            fresh, created = self._build_views(snapshot)
            try:
                os.replace(fresh, self.database_path)
            finally:
                _remove_database(fresh)
            return created

    def _build_views(self, snapshot: Snapshot) -> tuple[Path, list[str]]:
        """A new DuckDB file beside the database holding ``snapshot``'s views, and their names.
        The caller holds ``commit_lock``, so files left by a publisher that died are removed."""
        database = self.database_path
        database.parent.mkdir(parents=True, exist_ok=True)
        for abandoned in database.parent.glob(f".{database.name}.*"):
            abandoned.unlink(missing_ok=True)
        fresh = database.with_name(f".{database.name}.{uuid.uuid4().hex}")
        try:
            with duckdb.connect(str(fresh)) as connection:
                _search_from(connection, database.parent)
                created = self._create_views(connection, snapshot)
        except BaseException:
            _remove_database(fresh)
            raise
        Path(f"{fresh}.wal").unlink(missing_ok=True)
        return fresh, created

    def _install_views(self, fresh: Path) -> bool:
        """Rename a built DuckDB file over the database: a reader holding the old file keeps
        reading it and a new reader opens the new one, so nobody waits for DuckDB's lock."""
        try:
            os.replace(fresh, self.database_path)
        except OSError as exc:
            self.log.warning(f"data committed, but the views in {self.database_path} were not "
                             f"refreshed ({exc}); they will be on the next write")
            return False
        finally:
            _remove_database(fresh)
        return True


def _create(connection: duckdb.DuckDBPyConnection, statement: str,
            source: Traversable | Path, absent: set[str]) -> str | None:
    """Run one view statement; its view's name, or None when it reads an absent view (then it
    is absent too) or is no view. Any other failure is a ``ViewError`` quoting DuckDB."""
    name = _view_name(statement)
    try:
        connection.execute(statement)
    except duckdb.Error as exc:
        missing = _MISSING.search(str(exc)) if isinstance(exc, duckdb.CatalogException) else None
        if name and missing and missing.group(1).lower() in absent:
            absent.add(name.lower())
            return None
        what = f"the view {name}" if name else f"the statement {statement.splitlines()[0]!r}"
        raise ViewError(f"{what} ({source}) does not bind: {_first_paragraph(exc)}",
                        name) from exc
    return name


def _first_paragraph(exc: BaseException) -> str:
    """DuckDB's message without the query excerpt that follows its first blank line."""
    return " ".join(str(exc).strip().split("\n\n")[0].split())


def _statements(source: Traversable | Path) -> list[str]:
    text = source.read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def _view_name(statement: str) -> str | None:
    match = _VIEW.search(statement)
    return match.group(1) if match else None


def _hive(partition: Mapping[str, str]) -> list[str]:
    parts = []
    for key, value in partition.items():
        if not (_PART.match(key) and _PART.match(str(value))) or str(value) in (".", ".."):
            raise ValueError(f"bad partition key/value {key}={value!r}")
        parts.append(f"{key}={value}")
    return parts


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    with suppress(FileNotFoundError, IsADirectoryError):
        path.unlink()


def _remove_database(path: Path) -> None:
    path.unlink(missing_ok=True)
    Path(f"{path}.wal").unlink(missing_ok=True)


def _is_table_dir(path: Path) -> bool:
    return path.is_dir() and not path.name.startswith((".", "_"))


def _remove_empty_dirs(directory: Path) -> None:
    for path in sorted(directory.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir():
            with suppress(OSError):
                path.rmdir()


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _search_from(connection: duckdb.DuckDBPyConnection, directory: Path) -> None:
    path = directory.as_posix().replace("'", "''")
    connection.execute(f"SET file_search_path = '{path}'")
