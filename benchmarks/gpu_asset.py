"""The CNN trained by the evaluation asset end to end on a full-size synthetic BRCA: genes per hour.

    bash benchmarks/gpu_asset.sh                        # on the CUDA machine (wheels, limits)
    python benchmarks/gpu_asset.py --preset small --device cpu --chromosome chr17 --genes 2 \\
        --budget-s 30                                   # the same phases, small, on a CPU

Runs from the source tree (no install); each phase is timed and summarised on one ``PHASE``
line, and everything lands under ``--out`` with a throw-away Dagster instance (``DAGSTER_HOME``
in a temporary folder, sqlite storage, the ``torch_training`` pool limited as ``dmg run``
limits it, ``dmg_assets.commands.limit_pool``):

1. **hub**: ``write_synthetic_hub`` for BRCA alone, preset ``--preset`` (``full``: 788 tumour +
   85 normal shared samples, 485,577 probes, 17,000 expression rows; reused when there). With
   ``--data-layer chromosome`` (the default) a second hub beside it holds the same files with the
   methylation matrix cut to the rows of ``--chromosome``'s probes (every sample). Its data layer
   gives that chromosome the full hub's promoters, windows and observed M-values, row for row;
   only the ~1 % imputed cells differ, since the kNN imputation compares samples over the probes
   of a block of the file. It reads 2.6 % of the matrix (chr20) instead of all of it: the whole
   matrix's M-values took 616 s on 2 busy cores. ``--data-layer full`` reads it all. The
   default chr20 (469 genes) has the genome's mean window length at 1 Mb (550 CpGs; median
   438, 10-90 % 215-1,075 over the 16,000 genes).
2. **data layer**: the ``data_layer_job`` of the BRCA partition, as ``dmg_assets.run`` runs it.
3. **training**: ``model_evaluation`` (the ``evaluation_job``) of the (BRCA, ``--chromosome``)
   partition with ``models: ["cnn"]`` (the CNN alone) and the project's default CNN config (700
   epochs at most, patience 90, honest protocol, W = 1 Mb, the batched trainer, checkpoints as
   configured by default) on the ``device`` resource
   (``--device``; ``auto`` is CUDA when present, and precision ``auto`` is bf16 there). Genes
   are named in run config (``genes``), in rounds: the first trains ``--genes`` genes of the
   chromosome, each later one as many as the last round's rate fits in what is left of
   ``--budget-s`` (times ``--safety``); ``--rounds 1`` trains one list, ``--genes 0`` the whole
   chromosome at once. Genes per hour are the genes the asset reports (the ``genes`` metadata of
   ``gene_metrics``, checked against the CNN's rows of ``gene_metrics`` of the run) over the
   run's wall time; the step's own time and the trainer's (the sum of those rows' ``seconds``)
   are given too, with the mean epochs per fold (``cnn_training``), the saved models' bytes
   (``model_registry``) and the peak GPU memory of each round.

``--report`` writes every figure as JSON.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

COHORT = "BRCA"
TRAINING_OPTIONS = ("window_bp", "protocol", "max_epochs", "patience", "seed")
#: The op of the multi-asset that trains the CNN (and names the step).
STEP = "model_evaluation"


def build_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help)
    parser.add_argument("--preset", choices=["full", "small"], default="full",
                        help="synthetic hub size (default %(default)s)")
    parser.add_argument("--chromosome", default="chr20",
                        help="the training partition's chromosome (default %(default)s)")
    parser.add_argument("--data-layer", choices=["chromosome", "full"], default="chromosome",
                        help="build the data layer from the chromosome's rows of the matrix "
                        "(every sample) or from the whole matrix (default %(default)s)")
    parser.add_argument("--device", default="auto",
                        help="the device resource's device: auto, cpu, cuda (default %(default)s)")
    parser.add_argument("--genes", type=int, default=24,
                        help="genes of the first round (24: ~2 min at the ~700 genes/hour the "
                        "GPU trainer measured, so half that rate still ends inside the "
                        "time limit); 0: every gene of the chromosome in one run "
                        "(default %(default)s)")
    parser.add_argument("--budget-s", type=float, default=200.0,
                        help="training seconds to fill with rounds (default %(default)s)")
    parser.add_argument("--safety", type=float, default=0.8,
                        help="share of the time left a later round is sized for "
                        "(default %(default)s)")
    parser.add_argument("--min-genes", type=int, default=8,
                        help="no later round of fewer genes than this (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=10,
                        help="training rounds at most (default %(default)s)")
    parser.add_argument("--out", default="/tmp/dmg_gpu_asset",
                        help="hub, warehouse, checkpoints (default %(default)s)")
    parser.add_argument("--report", default=None, help="write the figures here as JSON")
    parser.add_argument("--keep", action="store_true",
                        help="keep the warehouse and checkpoints (the hubs are always kept)")
    parser.add_argument("--verbose", action="store_true",
                        help="Dagster's INFO events of the data layer too")
    return parser


def _add_training_options(parser: argparse.ArgumentParser) -> None:
    """``dmg run``'s own training options, with ``EvaluationConfig``'s defaults (imports
    ``dmg_assets.definitions``: its environment must be set first)."""
    from dmg_assets.commands import config_option
    from dmg_assets.evaluation import EvaluationConfig

    for field in TRAINING_OPTIONS:
        config_option(parser, EvaluationConfig, field)
    parser.add_argument("--keep-last-weights", action="store_true",
                        help="restore_best_weights: false (default: best weights, as the paper)")


def phase(name: str, seconds: float, detail: str) -> None:
    print(f"PHASE {name}: {seconds:.1f} s; {detail}", flush=True)


# -- 1. hub -----------------------------------------------------------------------------------

def write_hub(hub: Path, preset: str) -> dict:
    """The synthetic hub of BRCA alone, written unless the same spec's is already there."""
    from dmg_ml.data.xena import methylation_path
    from dmg_ml.synthetic.writer import MANIFEST, PRESETS, hub_manifest, write_synthetic_hub

    spec = PRESETS[preset]
    manifest = hub / MANIFEST
    started = time.perf_counter()
    reused = (
        manifest.exists() and json.loads(manifest.read_text()) == hub_manifest(spec, 0)
        and (hub / methylation_path(COHORT)).exists()
    )
    if not reused:
        shutil.rmtree(hub, ignore_errors=True)
        write_synthetic_hub(hub, spec, cohorts=(COHORT,))
    n_tumour, n_normal = spec.sample_counts(COHORT)
    return {
        "seconds": time.perf_counter() - started,
        "reused": reused,
        "shared_samples": n_tumour + n_normal,
        "methylation_bytes": (hub / methylation_path(COHORT)).stat().st_size,
    }


def chromosome_hub(hub: Path, out: Path, chromosome: str) -> dict:
    """``hub`` with BRCA's methylation matrix cut to the probes on ``chromosome`` (header and
    rows unchanged, in the file's order); the other files are hard links (copies elsewhere)."""
    from dmg_ml.data.xena import (
        GROUND_TRUTH_PATH,
        PROBE_MAP_PATH,
        expression_path,
        methylation_path,
        read_probe_map,
    )
    from dmg_ml.synthetic.writer import MANIFEST

    started = time.perf_counter()
    shutil.rmtree(out, ignore_errors=True)
    truth = Path(GROUND_TRUTH_PATH.format(cohort=COHORT)).parent
    for relative in [PROBE_MAP_PATH, expression_path(COHORT), MANIFEST,
                     *(str(p.relative_to(hub)) for p in (hub / truth).iterdir())]:
        (out / relative).parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(hub / relative, out / relative)
        except OSError:
            shutil.copy2(hub / relative, out / relative)
    probes = read_probe_map(hub / PROBE_MAP_PATH)
    wanted = {p.encode() for p in probes.loc[probes["chromosome"] == chromosome, "probe_id"]}
    if not wanted:
        raise SystemExit(f"no probe of the hub lies on {chromosome}")
    target = out / methylation_path(COHORT)
    target.parent.mkdir(parents=True, exist_ok=True)
    rows = 0
    with gzip.open(hub / methylation_path(COHORT), "rb") as source, \
            gzip.open(target, "wb", compresslevel=1) as sink:
        sink.write(source.readline())
        for line in source:
            if line[:line.find(b"\t")] in wanted:
                sink.write(line)
                rows += 1
    return {"seconds": time.perf_counter() - started, "probes": rows,
            "methylation_bytes": target.stat().st_size}


# -- 2. data layer ----------------------------------------------------------------------------

def _step_seconds(result) -> dict[str, float]:
    return {
        event.step_key: event.event_specific_data.duration_ms / 1000
        for event in result.all_events if event.event_type_value == "STEP_SUCCESS"
    }


def _metadata(result, asset: str) -> dict:
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        if materialization.asset_key.to_user_string() == asset:
            return {k: v.value for k, v in materialization.metadata.items()}
    return {}


def data_layer(instance, log_level: str) -> dict:
    from dmg_assets import runs
    from dmg_assets.definitions import defs

    started = time.perf_counter()
    result = runs.execute(
        defs.resolve_job_def("data_layer_job"), instance, partition_key=COHORT,
        run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
    )
    return {
        "seconds": time.perf_counter() - started,
        "steps": _step_seconds(result),
        "m_value_rows": _metadata(result, "m_values").get("rows"),
        "probes_kept": _metadata(result, "m_values").get("probes"),
        "samples": _metadata(result, "m_values").get("samples"),
        "genes_with_windows": _metadata(result, "gene_windows").get("genes"),
    }


# -- 3. training ------------------------------------------------------------------------------

def _gpu_memory(device: str) -> dict:
    import torch

    if not (device.startswith("cuda") and torch.cuda.is_available()):
        return {}
    return {"peak_allocated_gib": torch.cuda.max_memory_allocated() / 2**30,
            "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30}


def _reset_gpu_memory(device: str) -> None:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def cnn_name(args: argparse.Namespace) -> str:
    """The CNN's ``model`` in the tables: ``cnn``, or ``cnn_last_epoch`` with its last weights."""
    return "cnn_last_epoch" if args.keep_last_weights else "cnn"


def evaluation_config(args: argparse.Namespace, genes: list[str]) -> dict:
    """``model_evaluation``'s run config: the CNN alone, the training options, ``genes``."""
    config = {field: getattr(args, field) for field in TRAINING_OPTIONS}
    config |= {"models": ["cnn"], "genes": genes,
               "restore_best_weights": not args.keep_last_weights}
    return {"ops": {STEP: {"config": config}}}


def train_round(instance, args: argparse.Namespace, genes: list[str], device: str) -> dict:
    """One ``model_evaluation`` run of the CNN on ``genes`` (all of the chromosome when empty),
    read back."""
    from dagster import MultiPartitionKey

    from dmg_assets import runs
    from dmg_assets.definitions import defs

    run_config = evaluation_config(args, genes)
    run_config |= {
        "resources": {"device": {"config": {"device": args.device}}},
        "loggers": {"console": {"config": {"log_level": "INFO"}}},
    }
    key = MultiPartitionKey({"cohort": COHORT, "chromosome": args.chromosome})
    _reset_gpu_memory(device)
    started = time.perf_counter()
    result = runs.execute(defs.resolve_job_def("evaluation_job"), instance, partition_key=key,
                          run_config=run_config)
    wall = time.perf_counter() - started
    warehouse = defs.resources["warehouse"]
    ours = [cnn_name(args), result.run_id]
    rows = warehouse.query(
        "SELECT count(*) AS genes, sum(seconds) AS trainer_s, avg(r2) AS r2, "
        "avg(n_cpgs) AS n_cpgs, max(n_cpgs) AS max_cpgs "
        "FROM gene_metrics WHERE model = ? AND run_id = ?", ours,
    ).iloc[0]
    epochs = warehouse.query(  # per gene the mean over its folds, then over the genes
        "SELECT avg(epochs) AS epochs FROM (SELECT gene, avg(epochs_run) AS epochs "
        "FROM cnn_training WHERE model = ? AND run_id = ? GROUP BY gene)", ours,
    ).iloc[0]
    checkpoints = warehouse.query(
        "SELECT any_value(config) AS config, sum(bytes) AS bytes FROM model_registry "
        "WHERE model = ? AND run_id = ?", ours,
    ).iloc[0]
    reported = _metadata(result, "gene_metrics").get("genes")
    if reported != int(rows["genes"]):
        raise SystemExit(f"{STEP} reported {reported} genes, gene_metrics of run "
                         f"{result.run_id} holds {int(rows['genes'])} of {ours[0]}")
    config = json.loads(checkpoints["config"]) if checkpoints["config"] else {}
    return {
        "run_id": result.run_id,
        "genes": int(reported),
        "wall_s": wall,
        "step_s": _step_seconds(result).get(STEP),
        "trainer_s": float(rows["trainer_s"]),
        "mean_r2": float(rows["r2"]),
        "mean_epochs": float(epochs["epochs"]),
        "mean_cpgs": float(rows["n_cpgs"]),
        "max_cpgs": int(rows["max_cpgs"]),
        "precision": config.get("precision"),
        "checkpoint_bytes": int(checkpoints["bytes"] or 0),
        **_gpu_memory(device),
    }


def _rate(genes: int, seconds: float) -> float:
    return genes / seconds * 3600 if seconds else float("nan")


def _round_line(number: int, r: dict, device: str) -> str:
    memory = (f", peak GPU memory {r['peak_allocated_gib']:.1f} GiB allocated / "
              f"{r['peak_reserved_gib']:.1f} GiB reserved" if "peak_allocated_gib" in r else "")
    return (f"training round {number}: {r['genes']} genes in {r['wall_s']:.1f} s of run "
            f"({r['step_s']:.1f} s step, {r['trainer_s']:.1f} s trainer): "
            f"{_rate(r['genes'], r['wall_s']):.0f} genes/hour; {device} {r['precision']}, "
            f"mean R² {r['mean_r2']:.3f}, mean epochs {r['mean_epochs']:.0f}, CpGs per gene "
            f"{r['mean_cpgs']:.0f} (max {r['max_cpgs']}), checkpoints "
            f"{r['checkpoint_bytes'] / 2**20:.0f} MiB{memory}")


def training(instance, args: argparse.Namespace, device: str, report: dict) -> dict:
    """Rounds of ``model_evaluation`` (the CNN) over the chromosome's genes; each round's
    figures are added to ``report["rounds"]`` as it ends, so a run stopped later still reports
    them."""
    from dmg_assets.definitions import defs
    from dmg_assets.inputs import genes_by_chromosome

    warehouse = defs.resources["warehouse"]
    pending = genes_by_chromosome(warehouse, COHORT, args.window_bp).get(args.chromosome, [])
    if not pending:
        raise SystemExit(f"{COHORT} has no gene with a window on {args.chromosome}")
    available = len(pending)
    print(f"{available} genes of {COHORT} {args.chromosome} have a W={args.window_bp:,} window",
          flush=True)
    rounds: list[dict] = report.setdefault("rounds", [])
    size = args.genes or available
    started = time.perf_counter()
    while pending and len(rounds) < args.rounds:
        genes, pending = pending[:size], pending[size:]
        rounds.append(train_round(instance, args, [] if args.genes == 0 else genes, device))
        print(_round_line(len(rounds), rounds[-1], device), flush=True)
        done = sum(r["genes"] for r in rounds)
        spent = sum(r["wall_s"] for r in rounds)
        print(f"training so far: {done} genes in {spent:.1f} s of runs, "
              f"{_rate(done, spent):.0f} genes/hour", flush=True)
        left = args.budget_s - (time.perf_counter() - started)
        size = int(rounds[-1]["genes"] / rounds[-1]["wall_s"] * left * args.safety)
        if size < args.min_genes:
            break
    genes = sum(r["genes"] for r in rounds)
    wall = sum(r["wall_s"] for r in rounds)
    report.update({
        "seconds": time.perf_counter() - started,
        "available_genes": available,
        "genes": genes,
        "runs_s": wall,
        "genes_per_hour": _rate(genes, wall),
        "genes_per_hour_step": _rate(genes, sum(r["step_s"] for r in rounds)),
        "genes_per_hour_trainer": _rate(genes, sum(r["trainer_s"] for r in rounds)),
        "peak_allocated_gib": max(r.get("peak_allocated_gib", 0.0) for r in rounds),
    })
    return report


# -- driver -----------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    args, _ = build_parser(add_help=False).parse_known_args(argv)
    out = Path(args.out).resolve()
    hub = out / f"hub_{args.preset}"
    data = out / "data"
    source = hub if args.data_layer == "full" else out / f"hub_{args.preset}_{args.chromosome}"
    # The project's own settings, read when dmg_assets.definitions is imported: the source the
    # data layer downloads from and the folder of the warehouse, cache and checkpoints.
    os.environ["DMG_SOURCE_URL"] = str(source)
    os.environ["DMG_DATA_DIR"] = str(data)
    parser = build_parser()
    _add_training_options(parser)
    args = parser.parse_args(argv)
    out.mkdir(parents=True, exist_ok=True)
    home = tempfile.mkdtemp(prefix="dagster_home_", dir=out)
    Path(home, "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    os.environ["DAGSTER_HOME"] = home
    shutil.rmtree(data, ignore_errors=True)
    report: dict = {"args": vars(args)}
    from dmg_assets import runs

    try:  # SIGTERM (timeout) ends it like Ctrl-C: the report is written, the data removed
        return runs.until_interrupted(lambda: _run(args, hub, source, report))
    finally:
        shutil.rmtree(home, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(data, ignore_errors=True)
        if args.report:
            Path(args.report).write_text(json.dumps(report, indent=1, default=str))


def _run(args: argparse.Namespace, hub: Path, source: Path, report: dict) -> int:
    import torch

    from dmg_assets import runs
    from dmg_assets.commands import limit_pool, project_instance
    from dmg_assets.partitions import cohort_partitions
    from dmg_resources.device import TorchDevice

    device = TorchDevice(device=args.device).resolve()
    gpu = torch.cuda.get_device_name(device) if device.startswith("cuda") else "no GPU"
    print(f"device {device} ({gpu}), torch {torch.__version__}, {os.cpu_count()} CPUs; "
          f"{args.preset} BRCA, {args.chromosome}, data layer from the "
          f"{'whole matrix' if args.data_layer == 'full' else 'chromosome rows'}", flush=True)

    figures = report["hub"] = write_hub(hub, args.preset)
    phase("hub", figures["seconds"],
          f"{'reused' if figures['reused'] else 'written'}: {args.preset} BRCA, "
          f"{figures['shared_samples']} shared samples, methylation "
          f"{figures['methylation_bytes'] / 2**20:,.0f} MiB")
    if source != hub:
        figures = report["chromosome_hub"] = chromosome_hub(hub, source, args.chromosome)
        phase("chromosome hub", figures["seconds"],
              f"{figures['probes']:,} probes on {args.chromosome}, methylation "
              f"{figures['methylation_bytes'] / 2**20:,.1f} MiB")

    runs.log_to_terminal()
    instance = project_instance()  # the DAGSTER_HOME set above
    instance.add_dynamic_partitions(cohort_partitions.name, [COHORT])
    limit_pool(instance)
    figures = report["data_layer"] = data_layer(instance, "INFO" if args.verbose else "WARNING")
    steps = ", ".join(f"{k} {v:.1f}" for k, v in figures["steps"].items())
    phase("data layer", figures["seconds"],
          f"{figures['samples']} samples, {figures['probes_kept']:,} probes kept, "
          f"{figures['m_value_rows']:,} M-values, {figures['genes_with_windows']:,} genes with "
          f"windows; steps (s): {steps}")

    figures = training(instance, args, device, report.setdefault("training", {}))
    memory = (f", peak GPU memory {figures['peak_allocated_gib']:.1f} GiB allocated"
              if device.startswith("cuda") else "")
    phase("training", figures["seconds"],
          f"{figures['genes']} of {figures['available_genes']} genes of {COHORT} "
          f"{args.chromosome} in {len(figures['rounds'])} {STEP} run(s) of "
          f"{figures['runs_s']:.1f} s{memory}")
    print(f"GENES PER HOUR: {figures['genes_per_hour']:.0f} ({STEP} runs' wall time; "
          f"{figures['genes_per_hour_step']:.0f} by the step's time, "
          f"{figures['genes_per_hour_trainer']:.0f} by the trainer's) on {device} ({gpu})",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    raise SystemExit(main())
