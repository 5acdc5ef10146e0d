"""Full-size data-layer benchmark: wall time and peak RSS of each step on a synthetic BRCA.

    python benchmarks/data_layer.py [--out benchmarks/out/full] [--size full|small] [--keep]

Writes the FULL synthetic BRCA (873 samples × 485,577 probes) unless it is already there, then
materialises each data-layer asset of the BRCA partition in a fresh process, so each step's peak
RSS is its own. The issue's bound is 8 GB on a 2-core machine.
"""

import argparse
import json
import resource
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

STEPS = ["source_files", "samples", "expression", "m_values", "gene_promoters", "gene_windows"]
SELECTION = {"m_values": ["m_values", "probes"]}  # one multi-asset writes both
LIMIT_GB = 8.0


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def _generate(hub: str, size: str) -> dict:
    from dmg_ml.synthetic.writer import PRESETS, write_synthetic_hub

    started = time.perf_counter()
    write_synthetic_hub(hub, PRESETS[size], cohorts=("BRCA",))
    return {"seconds": time.perf_counter() - started, "peak_gb": _peak_gb()}


def _materialise(step: str, hub: str, data: str) -> dict:
    from dagster import AssetKey, DagsterInstance

    from dmg_assets.definitions import defs
    from dmg_assets.partitions import cohort_partitions

    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(cohort_partitions.name, ["BRCA"])
    run_config = {
        "resources": {
            "source": {"config": {"base_url": hub, "cache_dir": f"{data}/cache"}},
            "warehouse": {
                "config": {"root": f"{data}/warehouse", "database": f"{data}/dmg.duckdb"}
            },
        }
    }
    started = time.perf_counter()
    result = defs.resolve_job_def("data_layer_job").execute_in_process(
        partition_key="BRCA", instance=instance, run_config=run_config,
        asset_selection=[AssetKey(key) for key in SELECTION.get(step, [step])],
    )
    seconds = time.perf_counter() - started
    rows = {}
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        if "rows" in materialization.metadata:
            rows[materialization.asset_key.to_user_string()] = int(
                materialization.metadata["rows"].value
            )
    return {"seconds": seconds, "peak_gb": _peak_gb(), "rows": rows}


def _in_fresh_process(function, *args) -> dict:
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/out/full")
    parser.add_argument("--size", default="full", choices=["full", "small"])
    parser.add_argument("--keep", action="store_true", help="keep the data directory afterwards")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    hub, data = out / "hub", out / "data"
    shutil.rmtree(data, ignore_errors=True)

    report = []
    if not (hub / "TCGA.BRCA.sampleMap/HumanMethylation450.gz").exists():
        figures = _in_fresh_process(_generate, str(hub), args.size)
        report.append(("generate synthetic BRCA", figures))
    for step in STEPS:
        report.append((step, _in_fresh_process(_materialise, step, str(hub), str(data))))
        print(f"  {step}: {report[-1][1]['seconds']:.1f} s", flush=True)

    print(f"\n{'step':<26}{'wall s':>9}{'peak RSS GB':>13}  rows")
    for name, figures in report:
        rows = ", ".join(f"{k}={v:,}" for k, v in figures.get("rows", {}).items())
        print(f"{name:<26}{figures['seconds']:>9.1f}{figures['peak_gb']:>13.2f}  {rows}")
    peak = max(f["peak_gb"] for _, f in report)
    total = sum(f["seconds"] for name, f in report if name in STEPS)
    print(f"\ndata layer total: {total:.0f} s; largest peak RSS {peak:.2f} GB "
          f"({peak / LIMIT_GB:.2f} of the {LIMIT_GB:.0f} GB bound)")
    (out / "report.json").write_text(json.dumps(report, indent=1))
    if not args.keep:
        shutil.rmtree(data, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
