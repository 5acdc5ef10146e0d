"""Shared fixtures: a tiny synthetic hub and a warehouse built from it through Dagster."""

import os

# The fused kernels run on CPU tensors under Triton's interpreter (read when they are defined).
os.environ.setdefault("TRITON_INTERPRET", "1")

import shutil
from pathlib import Path

import pytest
import torch
from dagster import DagsterInstance, load_assets_from_modules, materialize

from dmg_assets import data_layer
from dmg_assets.partitions import cohort_partitions
from dmg_ml.synthetic.writer import SyntheticSpec, write_synthetic_hub
from dmg_resources.source import XenaSource
from dmg_resources.warehouse import Warehouse

#: Two genes on each of the 23 chromosomes and two small cohorts: seconds, not minutes.
TINY = SyntheticSpec(
    n_genes=46,
    n_low_expressed=4,
    n_unmapped_genes=3,
    min_genes_per_chromosome=2,
    samples=(("BRCA", 40, 8), ("COAD", 20, 4)),
)
DATA_ASSETS = load_assets_from_modules([data_layer])


@pytest.fixture(scope="module")
def one_thread():
    """Tiny training problems run fastest, and least disturbed by other load, on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_hub(tmp_path_factory) -> Path:
    hub = tmp_path_factory.mktemp("hub")
    write_synthetic_hub(hub, TINY, cohorts=("BRCA", "COAD"), seed=7)
    return hub


def resources_for(base_url: str, data_dir: Path) -> dict:
    return {
        "source": XenaSource(
            base_url=base_url, cache_dir=str(data_dir / "cache"), backoff_seconds=0.01
        ),
        "warehouse": Warehouse(
            root=str(data_dir / "warehouse"), database=str(data_dir / "dmg.duckdb")
        ),
    }


def materialize_cohort(cohort: str, resources: dict, raise_on_error: bool = True):
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(cohort_partitions.name, [cohort])
    return materialize(
        DATA_ASSETS, partition_key=cohort, resources=resources, instance=instance,
        raise_on_error=raise_on_error,
    )


@pytest.fixture(scope="session")
def built(tiny_hub, tmp_path_factory) -> Path:
    """A data directory whose warehouse holds BRCA and COAD, built once per session."""
    data_dir = tmp_path_factory.mktemp("built")
    resources = resources_for(str(tiny_hub), data_dir)
    for cohort in ("BRCA", "COAD"):
        materialize_cohort(cohort, resources)
    return data_dir


@pytest.fixture
def built_copy(built, tmp_path) -> Path:
    """A private copy of the built data directory, free to break."""
    target = tmp_path / "data"
    shutil.copytree(built, target)
    return target
