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
import json
import sys
from pathlib import Path
from typing import Literal, get_args, get_origin

from dagster import AssetKey, Config, DagsterInstance, MultiPartitionKey
from tqdm import tqdm

from dmg_assets import runs
from dmg_assets.definitions import SOURCE_URL, defs
from dmg_assets.evaluation import EvaluationConfig
from dmg_assets.inputs import genes_by_chromosome
from dmg_assets.partitions import DEFAULT_COHORTS, cohort_partitions
from dmg_assets.report import report_path
from dmg_assets.training import POOL, TrainingConfig
from dmg_ml.data.genome import CHROMOSOMES
from dmg_ml.data.xena import PROBE_MAP_PATH, methylation_path
from dmg_ml.models.registry import MODELS
from dmg_ml.synthetic.writer import MANIFEST, SMALL, hub_manifest, write_synthetic_hub
from dmg_resources.source import CohortNotFound, SourceUnavailable, validate_cohort

#: The experiments ``--experiments`` offers, and those of the default run (the window experiment
#: trains every model four times over: through the option).
EXPERIMENTS = ("tissue", "generalisation", "window")
DEFAULT_EXPERIMENTS = ("tissue", "generalisation")


def _instance() -> DagsterInstance:
    try:
        return DagsterInstance.get()
    except Exception:  # no DAGSTER_HOME: runs are not kept, results still land in the warehouse
        print("DAGSTER_HOME is not set: using a temporary Dagster instance", file=sys.stderr)
        return DagsterInstance.ephemeral()


def ensure_synthetic_hub(base: str, cohorts: list[str]) -> None:
    """Write the synthetic hub under ``base`` if it is a local directory without one, or add
    missing cohorts to a synthetic hub written from the same spec and seed. Any other directory
    (a mirror, a hub of another spec) is left alone: its cohorts are what it holds."""
    if "://" in base:
        return
    root = Path(base)
    missing = [c for c in cohorts if not (root / methylation_path(c)).exists()]
    if not missing:
        return
    manifest = root / MANIFEST
    fresh = not (root / PROBE_MAP_PATH).exists()
    same = manifest.exists() and json.loads(manifest.read_text()) == hub_manifest(SMALL, 0)
    if fresh or same:
        print(f"writing the synthetic TCGA hub for {missing} under {base}")
        write_synthetic_hub(base, SMALL, cohorts=tuple(missing))


#: CLI option → (config class, field) it sets: defaults, choices and help come from the config.
_TRAINING_OPTIONS = ("window_bp", "protocol", "max_epochs", "patience", "seed")


def _training_config(args: argparse.Namespace) -> dict:
    config = {field: getattr(args, field) for field in _TRAINING_OPTIONS}
    config["restore_best_weights"] = not args.keep_last_weights
    return {"ops": {"cnn_models": {"config": config}}}


def _evaluation_config(args: argparse.Namespace) -> dict:
    config = {"models": args.models, "window_bp": args.window_bp, "protocol": args.protocol,
              "seed": args.seed}
    return {"ops": {"model_evaluation": {"config": config}}}


def _config_option(parser: argparse.ArgumentParser, config: type[Config], field: str,
                   **overrides) -> None:
    """``--field-name`` with the config field's default, choices (a ``Literal``) and help."""
    info = config.model_fields[field]
    options: dict = {"default": info.default, "help": f"{info.description} (default %(default)s)"}
    if get_origin(info.annotation) is Literal:
        options["choices"] = get_args(info.annotation)
    elif get_origin(info.annotation) is list:
        options |= {"nargs": "*", "default": info.get_default(call_default_factory=True)}
    else:
        options["type"] = info.annotation
    parser.add_argument("--" + field.replace("_", "-"), dest=field, **(options | overrides))


def _with_genes(run_config: dict, genes: list[str]) -> dict:
    """``run_config`` with every op's config limited to ``genes`` (when a list was given)."""
    if not genes:
        return run_config
    return {"ops": {op: {"config": {**body["config"], "genes": genes}}
                    for op, body in run_config["ops"].items()}}


def _experiment_config(args: argparse.Namespace, experiment: str) -> dict:
    config: dict = {"genes": args.genes or []}
    if experiment == "window_experiment":
        config["protocol"] = args.protocol
    elif experiment == "tissue_experiment":
        config |= {"window_bp": args.window_bp, "protocol": args.protocol}
    else:
        config["window_bp"] = args.window_bp
    return {"ops": {experiment: {"config": config}}}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohorts", nargs="+", default=list(DEFAULT_COHORTS),
                        help="cohorts to register and build (default %(default)s)")
    parser.add_argument(
        "--train", nargs="*", default=None,
        help="cohorts to train and evaluate on (default: BRCA when among --cohorts, else the "
        "first of them; none trains nothing)",
    )
    for field in _TRAINING_OPTIONS:
        _config_option(parser, TrainingConfig, field)
    _config_option(
        parser, EvaluationConfig, "models",
        help="baseline models to cross-validate beside the CNN (registry names: "
        f"{', '.join(m for m in MODELS if m != 'cnn')}; default %(default)s); none skips the "
        "evaluation",
    )
    parser.add_argument(
        "--experiments", nargs="*", default=list(DEFAULT_EXPERIMENTS), choices=EXPERIMENTS,
        help="the paper's experiments to run on each training cohort after its models: "
        "tissue (all, tumour-only, normal-only samples), generalisation (its models applied to "
        "the other cohorts), window (1 kb to 1 Mb; slower); default: "
        + " ".join(DEFAULT_EXPERIMENTS) + "; none skips them",
    )
    parser.add_argument(
        "--genes", nargs="+", default=None,
        help="only these genes (any chromosomes: each goes to its own partition)",
    )
    parser.add_argument(
        "--verbose", action="store_true",
        help="show Dagster's INFO events (each step's own progress) above the progress bar",
    )
    parser.add_argument(
        "--keep-last-weights", action="store_true",
        help="keep each fold's last-epoch weights (restore_best_weights: false), as the "
        "authors' script does in effect; with --protocol published --seed 42 it is their run",
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
    if args.train is None:
        args.train = ["BRCA"] if "BRCA" in cohorts else cohorts[:1]
    train = _cohort_names(parser, "--train", args.train)
    runs.log_to_terminal()
    return runs.until_interrupted(lambda: _materialise(args, cohorts, train))


class _Progress:
    """One bar over every step of the run, with an ETA, and the lines a person reads above it.

    Dagster's own event log goes to the console at ``log_level`` (WARNING unless ``--verbose``),
    so the terminal shows progress, results and problems, not every engine event.
    """

    def __init__(self, total: int, log_level: str) -> None:
        self.bar = tqdm(total=total, unit="step", file=sys.stdout, dynamic_ncols=True,
                        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}]")
        self.log_level = log_level

    def run(self, label: str, job, instance: DagsterInstance, run_config: dict | None = None,
            **kwargs):
        self.bar.set_description(label)
        config = {**(run_config or {}),
                  "loggers": {"console": {"config": {"log_level": self.log_level}}}}
        result = runs.execute(job, instance, run_config=config, **kwargs)
        self.bar.update(1)
        return result

    def say(self, text: str) -> None:
        self.bar.write(text)

    def close(self) -> None:
        self.bar.close()


def _steps(args: argparse.Namespace, cohorts: list[str], train: list[str]) -> int:
    """Runs the driver will launch (with ``--genes``, an upper bound lowered as genes route)."""
    per_cohort = len(CHROMOSOMES) * (1 + bool(args.models)) + 1 + len(args.experiments) + 1
    return len(cohorts) + len(train) * per_cohort


def _materialise(args: argparse.Namespace, cohorts: list[str], train: list[str]) -> int:
    instance = _instance()
    runs.release_stale_runs(instance)
    ensure_synthetic_hub(SOURCE_URL, sorted(set(cohorts) | set(train)))
    source = defs.resources["source"]
    for cohort in sorted(set(cohorts) | set(train)):  # before anything is registered or run
        try:
            source.version(cohort)
        except (CohortNotFound, SourceUnavailable) as exc:
            print(f"error: {exc}; nothing was registered or run", file=sys.stderr)
            return 2 if isinstance(exc, CohortNotFound) else 1
    known = set(instance.get_dynamic_partitions(cohort_partitions.name))
    instance.add_dynamic_partitions(cohort_partitions.name, [c for c in cohorts if c not in known])
    if instance.event_log_storage.supports_global_concurrency_limits:
        instance.event_log_storage.set_concurrency_slots(POOL, max(1, _gpus()))
    progress = _Progress(_steps(args, cohorts, train), "INFO" if args.verbose else "WARNING")
    try:
        _run_all(args, cohorts, train, instance, progress)
    finally:
        progress.close()
    _print_results(args, train)
    return 0


def _run_all(args: argparse.Namespace, cohorts: list[str], train: list[str],
             instance: DagsterInstance, progress: _Progress) -> None:
    data_job = defs.resolve_job_def("data_layer_job")
    for cohort in cohorts:
        progress.run(f"data layer {cohort}", data_job, instance, partition_key=cohort)
        progress.say(f"data layer: {cohort} done")

    training_job = defs.resolve_job_def("training_job")
    evaluation_job = defs.resolve_job_def("evaluation_job")
    summary_job = defs.resolve_implicit_global_asset_job_def()
    summaries = [AssetKey("cnn_summary"), AssetKey("r2_by_cpg_count")]
    summaries += [AssetKey("model_comparison")] if args.models else []
    warehouse = defs.resources["warehouse"]
    for cohort in train:
        routed = genes_by_chromosome(warehouse, cohort, args.window_bp, args.genes or [])
        chromosomes = CHROMOSOMES if not args.genes else list(routed)
        if args.genes:  # fewer steps than the bar's upper bound
            progress.bar.total -= (len(CHROMOSOMES) - len(chromosomes)) * (1 + bool(args.models))
        for chromosome in chromosomes:
            key = MultiPartitionKey({"cohort": cohort, "chromosome": chromosome})
            genes = routed.get(chromosome, []) if args.genes else []
            progress.run(f"training {cohort} {chromosome}", training_job, instance,
                         partition_key=key,
                         run_config=_with_genes(_training_config(args), genes))
            if args.models:
                progress.run(f"evaluating {cohort} {chromosome}", evaluation_job, instance,
                             partition_key=key,
                             run_config=_with_genes(_evaluation_config(args), genes))
            progress.say(_chromosome_line(warehouse, args, cohort, chromosome))
        progress.run(f"summaries {cohort}", summary_job, instance, partition_key=cohort,
                     asset_selection=summaries)
        _experiments(args, instance, summary_job, cohort, len(set(cohorts) - {cohort}), progress)


def _chromosome_line(warehouse, args: argparse.Namespace, cohort: str, chromosome: str) -> str:
    """``BRCA chr1 (3 genes): cnn 0.21, enet 0.40, ...``: mean honest R² per model so far."""
    scores = warehouse.query(
        "SELECT model, count(*) AS genes, avg(r2) AS r2 FROM gene_metrics WHERE cohort = ? "
        "AND chromosome = ? AND protocol = ? AND window_bp = ? AND tissue = 'all' "
        "GROUP BY model ORDER BY model",
        [cohort, chromosome, args.protocol, args.window_bp],
    )
    if scores.empty:
        return f"{cohort} {chromosome}: no gene"
    models = ", ".join(f"{m} {r:.2f}" for m, r in zip(scores["model"], scores["r2"], strict=True))
    return f"{cohort} {chromosome} ({scores['genes'].max()} genes), mean R²: {models}"


def _print_results(args: argparse.Namespace, train: list[str]) -> None:
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
    print("R² is the share of expression variance predicted (below 0: worse than the training "
          "mean); r² the squared correlation.")
    print(f"Every table: {Path(warehouse.database).resolve()} (python -m warehouse.query "
          "\"SELECT * FROM gene_metrics\"; the README lists the views)")
    for cohort in train:
        print(f"Report: {report_path(warehouse, cohort)} (open it in a browser)")


def _experiments(args: argparse.Namespace, instance: DagsterInstance, job, cohort: str,
                 others: int, progress: _Progress) -> None:
    """The requested experiments of ``cohort``, then its report (which notes any not run)."""
    for experiment in args.experiments:
        asset = f"{experiment}_experiment" if experiment != "generalisation" else experiment
        if asset == "generalisation" and not others:
            progress.say(f"generalisation: skipped, no cohort besides {cohort} (see --cohorts)")
            progress.bar.update(1)
            continue
        progress.run(f"{experiment} {cohort}", job, instance, partition_key=cohort,
                     asset_selection=[AssetKey(asset)],
                     run_config=_experiment_config(args, asset))
        progress.say(f"experiment {experiment} on {cohort}: done")
    progress.run(f"report {cohort}", job, instance, partition_key=cohort,
                 asset_selection=[AssetKey("evaluation_report")])


def _gpus() -> int:
    return defs.resources["device"].gpu_count()


if __name__ == "__main__":
    raise SystemExit(main())
