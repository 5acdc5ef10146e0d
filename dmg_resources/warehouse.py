"""The ``warehouse`` resource: Dagster configuration around ``dmg_resources.store``.

The resource holds only its settings; every call builds a ``WarehouseStore`` from them and
delegates to it, as dagster-duckdb keeps its resource thin. The snapshot, the transactions, the
views and their rules are the store's (see its module docstring); code that needs them without
Dagster (``dmg query``, scripts) uses the store directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
from dagster import ConfigurableResource, get_dagster_logger
from pydantic import Field

from dmg_resources.store import PartitionWriter, Snapshot, Transaction, WarehouseStore

__all__ = ["Transaction", "Warehouse"]


class Warehouse(ConfigurableResource):
    """Parquet partitions under ``root``, the snapshot that lists them, and a DuckDB file of
    views over them."""

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
    retain_replaced_minutes: float = Field(
        default=60.0, ge=0,
        description="How long a replaced data file stays on disk after the commit that "
        "replaced it, so that readers of the older snapshot (an open DuckDB session) finish.",
    )

    @property
    def store(self) -> WarehouseStore:
        """The store these settings describe (paths resolved against the working directory
        now, as every call resolves them)."""
        return WarehouseStore(
            self.root, self.database, allow_empty_replacement=self.allow_empty_replacement,
            retain_replaced_minutes=self.retain_replaced_minutes, log=get_dagster_logger(),
        )

    @property
    def root_path(self) -> Path:
        return self.store.root_path

    def partition_dir(self, table: str, partition: Mapping[str, str]) -> Path:
        return self.store.partition_dir(table, partition)

    def snapshot(self) -> Snapshot:
        """The committed state."""
        return self.store.snapshot()

    def transaction(self) -> AbstractContextManager[Transaction]:
        """Stage partitions of any tables; on success they replace the old ones together, on
        error nothing changes."""
        return self.store.transaction()

    def writer(
        self, table: str, partition: Mapping[str, str]
    ) -> AbstractContextManager[PartitionWriter]:
        """Stage one partition in a transaction of its own."""
        return self.store.writer(table, partition)

    def write(
        self, table: str, partition: Mapping[str, str], frame: pd.DataFrame | pa.Table
    ) -> int:
        return self.store.write(table, partition, frame)

    def replace_rows(
        self, table: str, partition: Mapping[str, str], frame: pd.DataFrame,
        key: str | list[str],
    ) -> int:
        """Replace the rows of ``frame``'s ``key`` values in a partition, keeping the others."""
        return self.store.replace_rows(table, partition, frame, key)

    def read(
        self, table: str, partition: Mapping[str, str] | None = None,
        columns: list[str] | None = None, filters: list[tuple] | None = None,
    ) -> pd.DataFrame:
        """A table's rows (of one partition when given) from the committed snapshot."""
        return self.store.read(table, partition, columns, filters)

    def tables(self) -> list[str]:
        """Tables that have at least one Parquet file."""
        return self.store.tables()

    def view_statements(self, snapshot: Snapshot | None = None) -> list[str]:
        return self.store.view_statements(snapshot)

    def connect(self) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB connection with every view; touches no database file."""
        return self.store.connect()

    def query(self, sql: str, params: list | None = None) -> pd.DataFrame:
        return self.store.query(sql, params)

    def publish_views(self) -> list[str]:
        """(Re)create the views of the committed snapshot in the DuckDB file; returns the
        views it now holds."""
        return self.store.publish_views()
