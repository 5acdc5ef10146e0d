"""Jobs reconstructable in other processes (for tests that use the multiprocess executor)."""

from dmg_assets.definitions import defs


def data_layer_job():
    return defs.resolve_job_def("data_layer_job")
