"""Everything Dagster loads: assets, checks, jobs, sensors, schedules and resources, in one place.
"""

from dagster import AssetSelection, Definitions, define_asset_job, load_assets_from_modules

from dmg_assets import data_layer, evaluation, experiments, prediction, report
from dmg_assets.automation import automation_sensor
from dmg_assets.sensors import build_watch_schedule, register_default_cohorts, watch_source
from dmg_resources.checkpoints import CheckpointStore
from dmg_resources.device import TorchDevice
from dmg_resources.settings import DATA_DIR, SOURCE_URL, database_path, warehouse_root
from dmg_resources.source import XenaSource
from dmg_resources.warehouse import Warehouse

#: When the ``watch_source_schedule`` looks at the source (cron, UTC): Mondays at 06:00. It does
#: what the ``watch_source`` sensor does every few minutes, for hubs that cannot be polled cheaply.
WATCH_SOURCE_CRON = "0 6 * * 1"

data_layer_job = define_asset_job(
    "data_layer_job",
    selection=AssetSelection.groups(data_layer.GROUP),
    description="Download one cohort and build its validated tables.",
)
evaluation_job = define_asset_job(
    "evaluation_job",
    selection=AssetSelection.assets(evaluation.model_evaluation),
    description="Cross-validate every configured model (the CNN and the baselines) of a "
    "(cohort, chromosome) partition on the same outer folds.",
)

defs = Definitions(
    assets=load_assets_from_modules(
        [data_layer, evaluation, experiments, report, prediction]
    ),
    jobs=[data_layer_job, evaluation_job, prediction.prediction_job],
    sensors=[register_default_cohorts, watch_source, automation_sensor],
    schedules=[build_watch_schedule(WATCH_SOURCE_CRON)],
    resources={
        "source": XenaSource(base_url=SOURCE_URL, cache_dir=f"{DATA_DIR}/cache"),
        "warehouse": Warehouse(root=warehouse_root(), database=database_path()),
        "device": TorchDevice(),
        "checkpoints": CheckpointStore(root=f"{DATA_DIR}/checkpoints"),
    },
)
