"""Materialise the platform from a shell: ``python -m dmg_assets.run``.

Writes the embedded synthetic hub when the source is a local directory that lacks it, registers
the cohorts as partitions, runs the data-layer job for each cohort, then trains the CNNs of the
training cohorts, chromosome by chromosome, and summarises them. Every run is recorded in the
Dagster instance (``$DAGSTER_HOME``), so the UI shows them.

Cohort names are checked against the one rule for them (``validate_cohort``) before anything is
written or registered. Runs left behind by a killed driver are marked failed and their pool slots
freed before anything is launched; a training run waits, aloud, for a free slot in the training
pool; Ctrl-C or SIGTERM stops the driver (exit code 130 or 143). See ``dmg_assets.runs``.
"""

import argparse
import sys
from pathlib import Path

from dagster import AssetKey, DagsterInstance, MultiPartitionKey

from dmg_assets import runs
from dmg_assets.definitions import SOURCE_URL, defs
from dmg_assets.evaluation import DEFAULT_MODELS
from dmg_assets.partitions import DEFAULT_COHORTS, cohort_partitions
from dmg_assets.training import POOL
from dmg_ml.data.genome import CHROMOSOMES
from dmg_ml.data.windows import DEFAULT_WINDOW_BP
from dmg_ml.data.xena import methylation_path
from dmg_ml.models.registry import MODELS
from dmg_ml.synthetic.writer import SMALL, write_synthetic_hub
from dmg_resources.source import validate_cohort


def _instance() -> DagsterInstance:
    try:
        return DagsterInstance.get()
    except Exception:  # no DAGSTER_HOME: runs are not kept, results still land in the warehouse
        print("DAGSTER_HOME is not set: using a temporary Dagster instance", file=sys.stderr)
        return DagsterInstance.ephemeral()


def ensure_synthetic_hub(base: str, cohorts: list[str]) -> None:
    """Write the synthetic hub under ``base`` if it is a local directory without the files."""
    if "://" in base:
        return
    missing = [c for c in cohorts if not (Path(base) / methylation_path(c)).exists()]
    if missing:
        print(f"writing the synthetic TCGA hub for {missing} under {base}")
        write_synthetic_hub(base, SMALL, cohorts=tuple(missing))


def _training_config(args: argparse.Namespace) -> dict:
    config = {"window_bp": args.window_bp, "protocol": args.protocol}
    if args.max_epochs is not None:
        config["max_epochs"] = args.max_epochs
    if args.patience is not None:
        config["patience"] = args.patience
    if args.keep_last_weights:
        config["restore_best_weights"] = False
    return {"ops": {"cnn_models": {"config": config}}}


def _evaluation_config(args: argparse.Namespace) -> dict:
    config = {"models": args.models, "window_bp": args.window_bp, "protocol": args.protocol}
    return {"ops": {"model_evaluation": {"config": config}}}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohorts", nargs="+", default=list(DEFAULT_COHORTS))
    parser.add_argument("--train", nargs="*", default=["BRCA"], help="cohorts to train on")
    parser.add_argument("--window-bp", type=int, default=DEFAULT_WINDOW_BP)
    parser.add_argument("--protocol", default="honest", choices=["honest", "published"])
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--patience", type=int, default=None)
    parser.add_argument(
        "--models", nargs="*", default=list(DEFAULT_MODELS),
        help=f"baseline models to cross-validate beside the CNN (registry names: "
        f"{', '.join(m for m in MODELS if m != 'cnn')}); none skips the evaluation",
    )
    parser.add_argument(
        "--keep-last-weights", action="store_true",
        help="keep each fold's last-epoch weights, as the authors' script does in effect",
    )
    return parser


def _cohort_names(parser: argparse.ArgumentParser, option: str, names: list[str]) -> list[str]:
    """``names`` upper-cased, or an argparse error (exit 2) naming the first one that is bad."""
    for name in names:
        try:
            validate_cohort(name.upper())
        except ValueError:
            parser.error(f"{option}: invalid cohort name {name!r}: expected letters, digits and "
                         "dashes, e.g. BRCA or LUAD")
    return [name.upper() for name in names]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    cohorts = _cohort_names(parser, "--cohorts", args.cohorts)
    train = _cohort_names(parser, "--train", args.train)
    runs.log_to_terminal()
    return runs.until_interrupted(lambda: _materialise(args, cohorts, train))


def _materialise(args: argparse.Namespace, cohorts: list[str], train: list[str]) -> int:
    instance = _instance()
    runs.release_stale_runs(instance)
    ensure_synthetic_hub(SOURCE_URL, sorted(set(cohorts) | set(train)))
    known = set(instance.get_dynamic_partitions(cohort_partitions.name))
    instance.add_dynamic_partitions(cohort_partitions.name, [c for c in cohorts if c not in known])
    if instance.event_log_storage.supports_global_concurrency_limits:
        instance.event_log_storage.set_concurrency_slots(POOL, max(1, _gpus()))

    data_job = defs.resolve_job_def("data_layer_job")
    for cohort in cohorts:
        print(f"data layer: {cohort}", flush=True)
        runs.execute(data_job, instance, partition_key=cohort)

    training_job = defs.resolve_job_def("training_job")
    evaluation_job = defs.resolve_job_def("evaluation_job")
    summary_job = defs.resolve_implicit_global_asset_job_def()
    summaries = [AssetKey("cnn_summary"), AssetKey("r2_by_cpg_count")]
    summaries += [AssetKey("model_comparison")] if args.models else []
    for cohort in train:
        for chromosome in CHROMOSOMES:
            key = MultiPartitionKey({"cohort": cohort, "chromosome": chromosome})
            print(f"training: {cohort} {chromosome}", flush=True)
            runs.execute(training_job, instance, run_config=_training_config(args),
                         partition_key=key)
            if args.models:
                print(f"evaluating {', '.join(args.models)}: {cohort} {chromosome}", flush=True)
                runs.execute(evaluation_job, instance, run_config=_evaluation_config(args),
                             partition_key=key)
        runs.execute(summary_job, instance, partition_key=cohort, asset_selection=summaries)

    warehouse = defs.resources["warehouse"]
    views = ["cohort_overview"] + (["model_summary"] if train else [])
    for view in views:
        print(warehouse.query(f"SELECT * FROM {view} ORDER BY ALL").to_string(index=False))
    if train and args.models:
        print(warehouse.query(
            "SELECT cohort, model_a, model_b, genes, round(mean_delta, 3) AS mean_dR2, "
            "round(share_a_wins, 2) AS a_wins, wilcoxon_p, round(ci_low, 3) AS ci_low, "
            "round(ci_high, 3) AS ci_high FROM model_comparison WHERE metric = 'r2' ORDER BY ALL"
        ).to_string(index=False))
    return 0


def _gpus() -> int:
    return defs.resources["device"].gpu_count()


if __name__ == "__main__":
    raise SystemExit(main())
