"""The warehouse: every table partition is its own Parquet file; DuckDB views read them all.

Why Parquet files and not DuckDB tables: DuckDB allows one writing process per database file, so
partitions materialised at once by several processes fail with "Could not set lock on file" (the
known dagster-duckdb pain). Here a partition is written to a staging directory and moved into place
with a rename, so concurrent writers never share a file, a failed step leaves the old partition as
it was, and re-materialising replaces rows instead of appending them. A writer holds a lock on its
staging directory while it lives; the next writer removes staging whose lock is free (left by a
process that was killed). The DuckDB file holds only
views (``warehouse/schema.sql``), refreshed under a file lock; it is opened for a moment, so it is
never the bottleneck, and the data stays safe even if a user holds it open.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from importlib.resources import files
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from dagster import ConfigurableResource, get_dagster_logger
from filelock import FileLock, Timeout
from pydantic import Field
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

_log = logging.getLogger(__name__)
_VIEW = re.compile(r"create\s+or\s+replace\s+view\s+(\w+)", re.IGNORECASE)
_PART = re.compile(r"^[A-Za-z0-9_.+-]+$")


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
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()


def _hive(partition: Mapping[str, str]) -> list[str]:
    parts = []
    for key, value in partition.items():
        if not (_PART.match(key) and _PART.match(str(value))):
            raise ValueError(f"bad partition key/value {key}={value!r}")
        parts.append(f"{key}={value}")
    return parts


class Warehouse(ConfigurableResource):
    """Parquet partitions under ``root`` and a DuckDB file of views over them."""

    root: str = Field(
        default="data/warehouse", description="Directory holding one Parquet tree per table."
    )
    database: str = Field(
        default="data/dmg.duckdb", description="DuckDB file with a view per table (for SQL)."
    )

    @property
    def root_path(self) -> Path:
        return Path(self.root).resolve()

    def partition_dir(self, table: str, partition: Mapping[str, str]) -> Path:
        return self.root_path.joinpath(table, *_hive(partition))

    @contextmanager
    def writer(
        self, table: str, partition: Mapping[str, str], _locked: bool = False
    ) -> Iterator[PartitionWriter]:
        """Stage a partition; on success it replaces the old one whole, on error nothing changes."""
        target = self.partition_dir(table, partition)
        staging_root = self.root_path / ".staging"
        staging_root.mkdir(parents=True, exist_ok=True)
        self._sweep_orphans(staging_root)
        staging = staging_root / f"{table}-{uuid.uuid4().hex}"
        alive = FileLock(staging.with_name(staging.name + ".lock"))  # held while this writer lives
        writer = PartitionWriter(staging)
        try:
            alive.acquire()
            staging.mkdir()
            yield writer
            writer.close()
            if _locked:
                self._swap(staging, target)
            else:
                with self._lock(target):
                    self._swap(staging, target)
            self._publish_quietly()
        finally:
            writer.close()
            shutil.rmtree(staging, ignore_errors=True)
            alive.release()
            Path(alive.lock_file).unlink(missing_ok=True)

    @staticmethod
    def _sweep_orphans(staging_root: Path) -> None:
        """Remove staging directories whose writer died: nobody holds their lock any more."""
        for lock_file in staging_root.glob("*.lock"):
            try:
                with FileLock(lock_file, timeout=0):
                    for leftover in (lock_file.stem, f"{lock_file.stem}-old"):
                        shutil.rmtree(staging_root / leftover, ignore_errors=True)
            except Timeout:
                continue  # a live writer
            lock_file.unlink(missing_ok=True)

    def write(
        self, table: str, partition: Mapping[str, str], frame: pd.DataFrame | pa.Table
    ) -> int:
        with self.writer(table, partition) as writer:
            writer.write(frame)
        return writer.rows

    def replace_rows(
        self, table: str, partition: Mapping[str, str], frame: pd.DataFrame, key: str
    ) -> int:
        """Replace the rows of ``frame``'s ``key`` values in a partition, keeping the others."""
        target = self.partition_dir(table, partition)
        with self._lock(target):
            if any(target.rglob("*.parquet")):
                old = pq.ParquetDataset(target, partitioning=None).read().to_pandas()
                old = old[~old[key].isin(set(frame[key]))]
                frame = pd.concat([old, frame], ignore_index=True)
            with self.writer(table, partition, _locked=True) as writer:
                writer.write(frame)
        return writer.rows

    def _lock(self, target: Path) -> FileLock:
        locks = self.root_path / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        key = str(target.relative_to(self.root_path)).replace(os.sep, "__")
        return FileLock(locks / f"{key}.lock")

    def _swap(self, staging: Path, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        trash = staging.with_name(staging.name + "-old")
        if target.exists():
            os.replace(target, trash)
        os.replace(staging, target)
        shutil.rmtree(trash, ignore_errors=True)

    def _publish_quietly(self) -> None:
        try:
            self.publish_views()
        except (duckdb.Error, TimeoutError) as exc:
            get_dagster_logger().warning(
                f"data written, but the views in {self.database} were not refreshed ({exc}); "
                "they will be on the next write"
            )

    def read(
        self, table: str, partition: Mapping[str, str] | None = None,
        columns: list[str] | None = None, filters: list[tuple] | None = None,
    ) -> pd.DataFrame:
        """A table's rows (of one partition when given) straight from Parquet."""
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

    def view_statements(self) -> list[str]:
        """CREATE VIEW statements for the tables present, then the derived views."""
        present = set(self.tables())
        root = self.root_path.as_posix().replace("'", "''")
        chosen = []
        for statement in _statements("schema.sql"):
            match = _VIEW.search(statement)
            if match and match.group(1) in present:
                chosen.append(statement.replace("{root}", root))
        return chosen + _statements("derived.sql")

    def connect(self) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB connection with every view; touches no database file."""
        connection = duckdb.connect()
        _create_views(connection, self.view_statements())
        return connection

    def query(self, sql: str, params: list | None = None) -> pd.DataFrame:
        with self.connect() as connection:
            return connection.execute(sql, params or []).df()

    def publish_views(self) -> list[str]:
        """(Re)create the views in the DuckDB file; returns the views it now holds.

        Serialised across processes by a file lock and retried while another program (a user's
        DuckDB shell, say) holds DuckDB's own lock. Failing here loses no data.
        """
        database = Path(self.database).resolve()
        database.parent.mkdir(parents=True, exist_ok=True)
        statements = self.view_statements()
        with FileLock(str(database) + ".lock", timeout=300):
            return _publish(database, statements)


@retry(
    retry=retry_if_exception_type(duckdb.IOException),
    wait=wait_exponential(multiplier=0.2, max=5),
    stop=stop_after_attempt(8),
    reraise=True,
)
def _publish(database: Path, statements: list[str]) -> list[str]:
    with duckdb.connect(str(database)) as connection:
        return _create_views(connection, statements)


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
