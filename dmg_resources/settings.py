"""The project's only environment lookups, in a module that imports nothing heavy, so a command's
``--help`` or ``dmg query`` can read them without loading Dagster or torch.

``DMG_SOURCE_URL``: where the source files come from; the embedded synthetic hub by default, e.g.
https://tcga-xena-hub.s3.us-east-1.amazonaws.com/download/ for the public Xena hub.
``DMG_DATA_DIR``: where the cache, warehouse, database and checkpoints live.
``dmg_assets.definitions`` hands them to the resources; every resource field can also be
overridden per run in the Launchpad.
"""

import os
from pathlib import Path

SOURCE_URL = os.environ.get("DMG_SOURCE_URL", "data/synthetic")
DATA_DIR = os.environ.get("DMG_DATA_DIR", "data")


#: The view that names the published snapshot (its ``version``) and its root, which the store
#: writes and ``warehouse.query`` reads.
SNAPSHOT_VIEW = "warehouse_snapshot"


def warehouse_root(data_dir: str = DATA_DIR) -> str:
    return str(Path(data_dir) / "warehouse")


def database_path(data_dir: str = DATA_DIR) -> str:
    return str(Path(data_dir) / "dmg.duckdb")
