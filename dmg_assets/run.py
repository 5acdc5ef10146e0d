"""Materialise the platform from a shell: ``dmg run`` (or ``python -m dmg_assets.run``).

Writes the embedded synthetic hub when the source is a local directory that lacks it, registers
the cohorts as partitions, runs the data-layer job for each cohort, then trains the CNNs of the
training cohorts, chromosome by chromosome, and summarises them. Every run is recorded in the
Dagster instance, so the UI shows them: ``$DAGSTER_HOME`` when it is set (it must exist), else the
project's, ``.dagster_home`` beside the data directory, where ``make run`` keeps it too (created
on first use, as the Makefile creates it).

The options (``dmg_assets.options.run_parser``) are checked before any work: cohort names against
their one rule (``validate_cohort``), the training options against ``TrainingConfig``, the models
against ``EvaluationConfig``, the window against the windows the data layer builds, and the genes
against the genes the hub lists when it lists them (a synthetic hub; on another, once its data
layer has run). Runs left behind by a killed driver are marked failed and their pool slots freed
before anything is launched; a training run waits, aloud, for a free slot in the training pool.

Exit codes: 0 done; 2 an option, cohort, gene or input file refused (one line saying which); 1
another failure (one line; ``--verbose`` adds the traceback); 130 after Ctrl-C, 143 after
SIGTERM. See ``dmg_assets.runs``.
"""

import argparse
import csv
import json
import sys
from pathlib import Path

from dagster import AssetKey, Config, DagsterInstance, MultiPartitionKey
from pydantic import ValidationError
from tqdm import tqdm

from dmg_assets import commands, options, runs
from dmg_assets.commands import cohort_names, limit_pool
from dmg_assets.definitions import SOURCE_URL, defs
from dmg_assets.evaluation import EvaluationConfig
from dmg_assets.experiments import GeneralisationConfig, TissueConfig, WindowExperimentConfig
from dmg_assets.inputs import genes_by_chromosome
from dmg_assets.partitions import cohort_partitions
from dmg_assets.report import report_path
from dmg_ml.data.genome import CHROMOSOMES
from dmg_ml.data.windows import WINDOW_SIZES
from dmg_ml.data.xena import GROUND_TRUTH_PATH, PROBE_MAP_PATH, methylation_path
from dmg_ml.synthetic.writer import MANIFEST, SMALL, hub_manifest, write_synthetic_hub
from dmg_resources.source import CohortNotFound, SourceUnavailable


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


def unknown_genes(base: str, cohorts: list[str], genes: list[str]) -> str | None:
    """Why ``genes`` cannot be trained on ``cohorts``, when the hub under ``base`` lists its genes
    (a local synthetic hub: ``ground_truth/<COHORT>/genes.tsv``); else None. Read before the data
    layer runs; on other hubs the genes are known only after it (``genes_by_chromosome``)."""
    if "://" in base or not genes:
        return None
    for cohort in cohorts:
        listing = Path(base) / GROUND_TRUTH_PATH.format(cohort=cohort)
        if not listing.is_file():
            continue
        with listing.open(newline="") as table:
            rows = list(csv.DictReader(table, delimiter="\t"))
        unknown = sorted(set(genes) - {row["gene"] for row in rows})
        if unknown:
            examples = sorted(row["gene"] for row in rows if row["category"] == "modelled")[:3]
            return (f"--genes: {', '.join(unknown[:10])} not among the {len(rows)} genes of "
                    f"{cohort} in the hub {base} (e.g. {' '.join(examples)}; {listing} lists "
                    "them)")
    return None


def _options(args: argparse.Namespace) -> dict:
    """The config fields ``args`` sets: every ``dmg run`` option under its field's name."""
    fields = {field: getattr(args, field) for field in options.TRAINING_OPTIONS}
    return fields | {"models": args.models, "genes": args.genes or [],
                      "restore_best_weights": not args.keep_last_weights}


def _run_config(op: str, config: type[Config], options: dict,
                leave_out: tuple[str, ...] = ()) -> dict:
    """The run config of ``op``: each option mapped onto the field of ``config`` it names (less
    ``leave_out``); the config's defaults for the rest."""
    fields = {k: v for k, v in options.items()
              if k in config.model_fields and k not in leave_out}
    return {"ops": {op: {"config": fields}}}


def _evaluation_config(args: argparse.Namespace, genes: list[str] | None = None) -> dict:
    options = _options(args) | ({"genes": genes} if genes is not None else {})
    return _run_config("model_evaluation", EvaluationConfig, options)


#: Each experiment's config class. ``--models`` picks the models of the main cross-validation;
#: the experiments keep their own lighter defaults (``EXPERIMENT_MODELS``), so it is not mapped
#: onto them.
EXPERIMENT_CONFIGS = {"tissue_experiment": TissueConfig,
                      "window_experiment": WindowExperimentConfig,
                      "generalisation": GeneralisationConfig}


def _experiment_config(args: argparse.Namespace, experiment: str) -> dict:
    return _run_config(experiment, EXPERIMENT_CONFIGS[experiment], _options(args),
                       leave_out=("models",))


def build_parser() -> argparse.ArgumentParser:
    """The options of ``python -m dmg_assets.run``: those of ``dmg run``."""
    return options.run_parser(prog="python -m dmg_assets.run")


def _check_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse (argparse error, exit 2) what the runs' configs would refuse once the data layer
    had run: the same config classes check the same values, before any work."""
    try:
        config = EvaluationConfig(**_evaluation_config(args)["ops"]["model_evaluation"]["config"])
        config.train_config(precision="fp32", seed=config.seed)
    except ValidationError as exc:
        error = exc.errors()[0]
        flag = "--" + str(error["loc"][0]).replace("_", "-")
        parser.error(f"{flag}: {error['msg'].removeprefix('Value error, ')}")
    except ValueError as exc:  # TrainConfig's own rule
        parser.error(f"--max-epochs {args.max_epochs}, --patience {args.patience}: {exc}")
    if args.window_bp not in WINDOW_SIZES:
        parser.error(f"--window-bp {args.window_bp}: not a window the data layer builds "
                     f"({', '.join(map(str, WINDOW_SIZES[:-1]))} or {WINDOW_SIZES[-1]} bp)")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    return drive(parser, parser.parse_args(argv))


def drive(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """The run ``args`` asks for, its options checked first (``parser.error`` refuses them)."""
    cohorts = cohort_names(parser, "--cohorts", args.cohorts)
    if args.train is None:
        default = options.DEFAULT_TRAINING_COHORT
        args.train = [default] if default in cohorts else cohorts[:1]
    train = cohort_names(parser, "--train", args.train)
    _check_options(parser, args)
    instance = commands.project_instance()
    runs.log_to_terminal()
    return runs.until_interrupted(lambda: runs.in_one_line(
        lambda: _materialise(args, cohorts, train, instance), verbose=args.verbose))


#: Seconds a step of each kind took per unit of its work in ``make run`` (2 CPU cores, 16.1 min:
#: a gene's CNN cross-validation, a gene and baseline model, a gene of an experiment per model,
#: a cohort's data layer, summary or report). The progress bar counts these, so its ETA weighs a
#: chromosome of 600 genes over one of 3 and training over a summary, not steps alike.
WORK_SECONDS = {"data layer": 5.0, "training": 9.0, "evaluating": 0.8, "experiment": 0.6,
                "window experiment": 6.0, "summaries": 2.0, "report": 2.0}
#: Genes a chromosome is assumed to hold until the data layer says (the default hub's 69 / 23).
ASSUMED_GENES_PER_CHROMOSOME = 3


def step_work(kind: str, genes: int = 1, models: int = 1) -> float:
    """The bar's units for one step: ``WORK_SECONDS[kind]`` × genes × models."""
    return WORK_SECONDS[kind] * genes * models


class _Progress:
    """One bar over the work of the run, with an ETA, and the lines a person reads above it.

    The bar counts work (``step_work``), not steps. Dagster's own event log goes to the console
    at ``log_level`` (WARNING unless ``--verbose``), so the terminal shows progress, results and
    problems, not every engine event; a failed step's stack trace only with ``--verbose`` (else
    the driver says why in one line).
    """

    def __init__(self, total: float, log_level: str) -> None:
        self.bar = tqdm(total=total, file=sys.stdout, dynamic_ncols=True,
                        bar_format="{l_bar}{bar}| [{elapsed}<{remaining}]")
        self.log_level = log_level

    def plan(self, remaining: float) -> None:
        """The work left, now known better (after the data layer: the genes of each chromosome)."""
        self.bar.total = self.bar.n + remaining
        self.bar.refresh()

    def run(self, label: str, job, instance: DagsterInstance, run_config: dict | None = None,
            work: float = 1.0, **kwargs):
        """A run of ``job``, ``work`` units of the bar; ``runs.RunFailed`` naming ``label`` when
        it fails."""
        self.bar.set_description(label)
        config = {**(run_config or {}),
                  "loggers": {"console": {"config": {"log_level": self.log_level}}}}
        if self.log_level != "INFO":
            job = job.with_logger_defs({"console": runs.QUIET_CONSOLE})
        try:
            result = runs.execute(job, instance, run_config=config, **kwargs)
        except Exception as exc:
            raise runs.RunFailed(label, exc) from exc
        if not result.success:
            raise runs.RunFailed(label, RuntimeError(
                f"run {result.run_id} failed: its events are in the Dagster UI (make dev)"))
        self.bar.update(work)
        return result

    def say(self, text: str) -> None:
        self.bar.write(text)

    def close(self) -> None:
        self.bar.close()


def _cohort_work(args: argparse.Namespace, genes: dict[str, int], others: int) -> float:
    """The work of training and evaluating one cohort with ``genes`` per chromosome, then its
    summaries, experiments and report."""
    total = sum(_evaluation_work(args, n) for n in genes.values())
    models = len(args.models)
    for experiment in args.experiments:
        if experiment == "window":
            total += step_work("window experiment", sum(genes.values()), models)
        elif experiment != "generalisation" or others:
            total += step_work("experiment", sum(genes.values()), models)
    return total + step_work("summaries") + step_work("report")


def _evaluation_work(args: argparse.Namespace, genes: int) -> float:
    """A chromosome's cross-validation: the CNN's share and the other models'."""
    others = [m for m in args.models if m != "cnn"]
    return (step_work("training", genes) * ("cnn" in args.models)
            + step_work("evaluating", genes, len(others)))


def _assumed_genes(args: argparse.Namespace) -> dict[str, int]:
    if args.genes:
        return {"any": len(args.genes)}
    return dict.fromkeys(CHROMOSOMES, ASSUMED_GENES_PER_CHROMOSOME)


def _planned_work(args: argparse.Namespace, cohorts: list[str], train: list[str]) -> float:
    """The run's work as planned before the data layer says how many genes each chromosome has."""
    others = {c: len(set(cohorts) - {c}) for c in train}
    return step_work("data layer", len(cohorts)) + sum(
        _cohort_work(args, _assumed_genes(args), others[c]) for c in train)


def _materialise(args: argparse.Namespace, cohorts: list[str], train: list[str],
                 instance: DagsterInstance) -> int:
    runs.release_stale_runs(instance)
    ensure_synthetic_hub(SOURCE_URL, sorted(set(cohorts) | set(train)))
    source = defs.resources["source"]
    for cohort in sorted(set(cohorts) | set(train)):  # before anything is registered or run
        try:
            source.version(cohort)
        except (CohortNotFound, SourceUnavailable) as exc:
            print(f"error: {exc}; nothing was registered or run", file=sys.stderr)
            return 2 if isinstance(exc, CohortNotFound) else 1
    unknown = unknown_genes(SOURCE_URL, train, args.genes or [])
    if unknown:
        print(f"error: {unknown}; nothing was registered or run", file=sys.stderr)
        return 2
    known = set(instance.get_dynamic_partitions(cohort_partitions.name))
    instance.add_dynamic_partitions(cohort_partitions.name, [c for c in cohorts if c not in known])
    limit_pool(instance)
    progress = _Progress(_planned_work(args, cohorts, train),
                         "INFO" if args.verbose else "WARNING")
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
        progress.run(f"data layer {cohort}", data_job, instance, partition_key=cohort,
                     work=step_work("data layer"))
        progress.say(f"data layer: {cohort} done")

    evaluation_job = defs.resolve_job_def("evaluation_job")
    summary_job = defs.resolve_implicit_global_asset_job_def()
    summaries = [AssetKey("model_summary"), AssetKey("r2_by_cpg_count")]
    summaries += [AssetKey("model_comparison")] if len(args.models) > 1 else []
    warehouse = defs.resources["warehouse"]
    routed = {c: genes_by_chromosome(warehouse, c, args.window_bp, args.genes or [])
              for c in train}
    others = {c: len(set(cohorts) - {c}) for c in train}
    progress.plan(sum(_cohort_work(args, {k: len(v) for k, v in routed[c].items()}, others[c])
                      for c in train))
    for cohort in train:
        chromosomes = CHROMOSOMES if not args.genes else list(routed[cohort])
        for chromosome in chromosomes:
            key = MultiPartitionKey({"cohort": cohort, "chromosome": chromosome})
            genes = routed[cohort].get(chromosome, []) if args.genes else []
            n = len(routed[cohort].get(chromosome, []))
            progress.run(f"evaluating {cohort} {chromosome}", evaluation_job, instance,
                         partition_key=key, work=_evaluation_work(args, n),
                         run_config=_evaluation_config(args, genes))
            progress.say(_chromosome_line(warehouse, args, cohort, chromosome))
        progress.run(f"summaries {cohort}", summary_job, instance, partition_key=cohort,
                     asset_selection=summaries, work=step_work("summaries"))
        genes_in_cohort = sum(len(v) for v in routed[cohort].values())
        _experiments(args, instance, summary_job, cohort, others[cohort], progress,
                     genes_in_cohort)


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
    if train and len(args.models) > 1:
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
                 others: int, progress: _Progress, genes: int) -> None:
    """The requested experiments of ``cohort``, then its report (which notes any not run)."""
    models = len(args.models)
    for experiment in args.experiments:
        asset = f"{experiment}_experiment" if experiment != "generalisation" else experiment
        if asset == "generalisation" and not others:
            progress.say(f"generalisation: skipped, no cohort besides {cohort} (see --cohorts)")
            continue
        kind = "window experiment" if experiment == "window" else "experiment"
        progress.run(f"{experiment} {cohort}", job, instance, partition_key=cohort,
                     asset_selection=[AssetKey(asset)], work=step_work(kind, genes, models),
                     run_config=_experiment_config(args, asset))
        progress.say(f"experiment {experiment} on {cohort}: done")
    progress.run(f"report {cohort}", job, instance, partition_key=cohort,
                 asset_selection=[AssetKey("evaluation_report")], work=step_work("report"))


if __name__ == "__main__":
    raise SystemExit(main())
