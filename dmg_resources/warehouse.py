"""The warehouse: every table partition is its own Parquet file; DuckDB views read them all.

Why Parquet files and not DuckDB tables: DuckDB allows one writing process per database file, so
partitions materialised at once by several processes fail with "Could not set lock on file" (the
known dagster-duckdb pain). Here a step stages its partitions in a private directory and moves
them into place with renames, so concurrent writers never share a file, a failed step leaves the
old partitions as they were, and re-materialising replaces rows instead of appending them.

A step's writes are one transaction: the tables it writes become visible together. Before the
first rename the transaction writes a journal of its moves; a process killed between two renames
leaves that journal behind, and the next reader or writer of the warehouse completes the moves
(roll forward) before it reads or stages anything, so tables written together never disagree.
Each transaction holds a lock on its staging directory while it lives; staging whose lock is free
belongs to a dead process and is removed. A partition with rows is never replaced by an empty one
unless ``allow_empty_replacement`` says so.

The DuckDB file holds only views (``warehouse/schema.sql``), with paths relative to its own
directory, so a copied data directory reads its own files. It is rebuilt in a new file and renamed
into place, so readers never contend with a writer for DuckDB's lock. Open it with
``warehouse.query.connect`` (or set DuckDB's ``file_search_path`` to the file's directory).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from importlib.resources import files
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from dagster import ConfigurableResource, get_dagster_logger
from filelock import FileLock, Timeout
from pydantic import Field

_log = logging.getLogger(__name__)
_VIEW = re.compile(r"create\s+or\s+replace\s+view\s+(\w+)", re.IGNORECASE)
_PART = re.compile(r"^[A-Za-z0-9_.+-]+$")
_JOURNAL = "journal.json"


class EmptyPartitionError(ValueError):
    """A step would replace a partition holding rows with an empty one."""


def _statements(name: str) -> list[str]:
    text = files("warehouse").joinpath(name).read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


class PartitionWriter:
    """Appends frames to Parquet files in a staging directory (one file per sub-partition)."""

    def __init__(self, staging: Path) -> None:
        self.staging = staging
        self.rows = 0
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


def _hive(partition: Mapping[str, str]) -> list[str]:
    parts = []
    for key, value in partition.items():
        if not (_PART.match(key) and _PART.match(str(value))) or str(value) in (".", ".."):
            raise ValueError(f"bad partition key/value {key}={value!r}")
        parts.append(f"{key}={value}")
    return parts


def _rows_in(directory: Path) -> int:
    """Rows of the Parquet files under ``directory`` (footers only)."""
    return sum(pq.ParquetFile(p).metadata.num_rows for p in directory.rglob("*.parquet"))


def _swap(staged: Path, target: Path, trash: Path) -> None:
    """Move ``staged`` onto ``target``; safe to repeat after a crash at any point."""
    if not staged.exists():
        return  # moved already
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        os.replace(target, trash)
    os.replace(staged, target)


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    with suppress(FileNotFoundError, IsADirectoryError):
        path.unlink()


class Transaction:
    """Partitions staged by one step, made visible together when the step succeeds."""

    def __init__(self, warehouse: Warehouse, staging: Path) -> None:
        self.warehouse = warehouse
        self.staging = staging
        self._staged: dict[Path, tuple[Path, int, str]] = {}
        self._locks: dict[Path, FileLock] = {}
        self._opened = 0

    @contextmanager
    def writer(self, table: str, partition: Mapping[str, str]) -> Iterator[PartitionWriter]:
        """Stage one partition of ``table``; it replaces the old one whole at commit."""
        target = self.warehouse.partition_dir(table, partition)
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
        name = f"{table} {dict(partition)}"
        self._staged[target] = (writer.staging, writer.rows, name)

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
        target = self.warehouse.partition_dir(table, partition)
        self._hold(target)
        if any(target.rglob("*.parquet")):
            old = pq.ParquetDataset(target, partitioning=None).read().to_pandas()
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

    def _hold(self, target: Path) -> None:
        if target not in self._locks:
            lock = self.warehouse.partition_lock(target)
            lock.acquire()
            self._locks[target] = lock

    def commit(self) -> None:
        """Lock the targets, refuse empty replacements, journal the moves, then make them."""
        for target in sorted(self._staged):
            self._hold(target)
        if not self.warehouse.allow_empty_replacement:
            for target, (_, rows, name) in self._staged.items():
                if rows == 0 and target.exists() and (old := _rows_in(target)):
                    raise EmptyPartitionError(
                        f"{name}: the step produced 0 rows and would replace the {old:,} rows "
                        "there; nothing was written (set the warehouse resource's "
                        "allow_empty_replacement to empty a partition on purpose)"
                    )
        moves = [(str(staged), str(target)) for target, (staged, _, _) in self._staged.items()]
        _write_json_atomically(self.staging / _JOURNAL, moves)
        _roll_forward(self.staging)

    def release(self) -> None:
        while self._locks:
            _, lock = self._locks.popitem()
            lock.release()


def _roll_forward(staging: Path) -> None:
    """Make the moves a transaction's journal lists; the journal goes last."""
    journal = staging / _JOURNAL
    moves = json.loads(journal.read_text())
    for number, (staged, target) in enumerate(moves):
        _swap(Path(staged), Path(target), staging / f"old-{number}")
    journal.unlink()


def _write_json_atomically(path: Path, data: object) -> None:
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w") as handle:
        json.dump(data, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)


class Warehouse(ConfigurableResource):
    """Parquet partitions under ``root`` and a DuckDB file of views over them."""

    root: str = Field(
        default="data/warehouse", description="Directory holding one Parquet tree per table."
    )
    database: str = Field(
        default="data/dmg.duckdb", description="DuckDB file with a view per table (for SQL)."
    )
    allow_empty_replacement: bool = Field(
        default=False,
        description="Let a step replace a partition that has rows with an empty one. Off, such "
        "a step fails and the old rows stay (an empty input file must not wipe a cohort).",
    )

    @property
    def root_path(self) -> Path:
        return Path(self.root).resolve()

    @property
    def _staging_root(self) -> Path:
        return self.root_path / ".staging"

    def partition_dir(self, table: str, partition: Mapping[str, str]) -> Path:
        return self.root_path.joinpath(table, *_hive(partition))

    def partition_lock(self, target: Path) -> FileLock:
        """The lock serialising writers of one partition directory."""
        locks = self.root_path / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        key = str(target.relative_to(self.root_path)).replace(os.sep, "__")
        return FileLock(locks / f"{key}.lock")

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """Stage partitions of any tables; on success they replace the old ones together, on
        error nothing changes. Views are refreshed once, after the commit."""
        self._staging_root.mkdir(parents=True, exist_ok=True)
        self.recover()
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
        self._publish_quietly()

    def recover(self) -> None:
        """Finish the commits of killed writers and remove the staging they left."""
        if not self._staging_root.exists():
            return
        for lock_file in sorted(self._staging_root.glob("*.lock")):
            try:
                with FileLock(lock_file, timeout=0):
                    self._recover_one(self._staging_root / lock_file.stem)
            except Timeout:
                continue  # a live writer
            lock_file.unlink(missing_ok=True)

    def _recover_one(self, staging: Path) -> None:
        if (staging / _JOURNAL).exists():
            targets = sorted(Path(t) for _, t in json.loads((staging / _JOURNAL).read_text()))
            locks = [self.partition_lock(t) for t in targets]
            for lock in locks:
                lock.acquire()
            try:
                _roll_forward(staging)
                _log.warning("completed the commit of a killed writer (%s)", staging.name)
            finally:
                for lock in reversed(locks):
                    lock.release()
        _remove(staging)

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

    def _publish_quietly(self) -> None:
        try:
            self.publish_views()
        except (duckdb.Error, OSError, TimeoutError) as exc:
            get_dagster_logger().warning(
                f"data written, but the views in {self.database} were not refreshed ({exc}); "
                "they will be on the next write"
            )

    def read(
        self, table: str, partition: Mapping[str, str] | None = None,
        columns: list[str] | None = None, filters: list[tuple] | None = None,
    ) -> pd.DataFrame:
        """A table's rows (of one partition when given) straight from Parquet."""
        self.recover()
        base = self.partition_dir(table, partition or {})
        if not any(base.rglob("*.parquet")):
            where = f" partition {dict(partition)}" if partition else ""
            raise LookupError(f"table {table!r}{where} has not been materialised")
        dataset = pq.ParquetDataset(base, filters=filters, partitioning="hive")
        return dataset.read(columns=columns).to_pandas()

    def tables(self) -> list[str]:
        """Tables that have at least one Parquet file."""
        if not self.root_path.exists():
            return []
        return sorted(
            d.name for d in self.root_path.iterdir()
            if not d.name.startswith(".") and any(d.rglob("*.parquet"))
        )

    @property
    def _database_dir(self) -> Path:
        return Path(self.database).resolve().parent

    def view_statements(self) -> list[str]:
        """CREATE VIEW statements for the tables present, then the derived views.

        Paths are relative to the database file's directory (DuckDB's ``file_search_path``).
        """
        present = set(self.tables())
        root = Path(os.path.relpath(self.root_path, self._database_dir)).as_posix()
        root = root.replace("'", "''")
        chosen = []
        for statement in _statements("schema.sql"):
            match = _VIEW.search(statement)
            if match and match.group(1) in present:
                chosen.append(statement.replace("{root}", root))
        return chosen + _statements("derived.sql")

    def connect(self) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB connection with every view; touches no database file."""
        self.recover()
        connection = duckdb.connect()
        _search_from(connection, self._database_dir)
        _create_views(connection, self.view_statements())
        return connection

    def query(self, sql: str, params: list | None = None) -> pd.DataFrame:
        with self.connect() as connection:
            return connection.execute(sql, params or []).df()

    def publish_views(self) -> list[str]:
        """(Re)create the views in the DuckDB file; returns the views it now holds.

        The views are written to a new file that is renamed over the old one, so a reader
        holding the old file keeps reading it and a new reader opens the new one: nobody waits
        for DuckDB's lock. Publishers are serialised by a file lock. Failing here loses no data.
        """
        database = Path(self.database).resolve()
        database.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(database) + ".lock", timeout=300):
            fresh = database.with_name(f".{database.name}.{uuid.uuid4().hex}")
            try:
                with duckdb.connect(str(fresh)) as connection:
                    _search_from(connection, database.parent)
                    created = _create_views(connection, self.view_statements())
                os.replace(fresh, database)
            finally:
                fresh.unlink(missing_ok=True)
                Path(str(fresh) + ".wal").unlink(missing_ok=True)
        return created


def _search_from(connection: duckdb.DuckDBPyConnection, directory: Path) -> None:
    path = directory.as_posix().replace("'", "''")
    connection.execute(f"SET file_search_path = '{path}'")


def _create_views(connection: duckdb.DuckDBPyConnection, statements: list[str]) -> list[str]:
    created = []
    for statement in statements:
        try:
            connection.execute(statement)
        except (duckdb.CatalogException, duckdb.BinderException) as exc:
            _log.debug("view skipped: %s", exc)
            continue
        match = _VIEW.search(statement)
        if match:
            created.append(match.group(1))
    return created
