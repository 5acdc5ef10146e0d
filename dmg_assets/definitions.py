"""Everything Dagster loads: assets, checks, jobs, sensors and resources, wired in one place."""


import os

from dagster import AssetSelection, Definitions, define_asset_job, load_assets_from_modules

from dmg_assets import data_layer
from dmg_assets.partitions import cohort_partitions
from dmg_assets.sensors import register_default_cohorts
from dmg_resources.source import XenaSource
from dmg_resources.warehouse import Warehouse

#: Where the source files come from: the embedded synthetic hub unless DMG_SOURCE_URL says
#: otherwise (e.g. the public Xena hub, https://tcga-xena-hub.s3.us-east-1.amazonaws.com/download/).
#: Like every resource field it can also be overridden per run in the Launchpad.
SOURCE_URL = os.environ.get("DMG_SOURCE_URL", "data/synthetic")
DATA_DIR = os.environ.get("DMG_DATA_DIR", "data")

data_layer_job = define_asset_job(
    "data_layer_job",
    selection=AssetSelection.groups(data_layer.GROUP),
    partitions_def=cohort_partitions,
    description="Download one cohort and build its validated tables.",
)

defs = Definitions(
    assets=load_assets_from_modules([data_layer]),
    jobs=[data_layer_job],
    sensors=[register_default_cohorts],
    resources={
        "source": XenaSource(base_url=SOURCE_URL, cache_dir=f"{DATA_DIR}/cache"),
        "warehouse": Warehouse(
            root=f"{DATA_DIR}/warehouse", database=f"{DATA_DIR}/dmg.duckdb"
        ),
    },
)
