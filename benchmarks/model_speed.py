"""Cost per gene of every model of the comparison, cross-validated as a real run does it.

Each model (a name of ``dmg_ml.evaluation.registry``) cross-validates the same simulated genes
through ``dmg_ml.evaluation.engine.evaluate``: 5 patient-grouped outer folds (honest protocol),
features scaled on the outer training rows, a fresh model per fold with its own inner choices
(enet's λ and cascade_forest's layers by inner CV, early stopping of mlp and cnn on an inner
hold-out; the CNN through its fast batched trainer, a gene's 5 folds stacked). The wall time of that
call per gene is the model's cost, so it includes everything the comparison pays per gene. The data
are ``benchmarks/trainer_speed.py``'s TCGA-like simulation: ``--samples`` samples (873 by default,
BRCA's size) and one gene per window length L at evenly spaced quantiles of the synthetic 450K
cohort's windows at ``--window-bp`` (1 Mb: L = 251, 438, 884 for 3 genes).

Every model runs in a fresh Python process (same data, seed, threads), after an untimed warm-up
on a tiny cohort (imports, thread pools, lazy kernel set-up). ``--timeout`` bounds the timed
part per model: a model still fitting after it is stopped, and its row gives what it finished
and a lower bound (">"); the verdict then uses the bound where that decides it, else says
UNDECIDED. Genes run in increasing L.

The table: seconds per gene (mean over the genes, and per gene L), projected hours for 14,000
genes on this machine (mean × 14,000 / 3,600, one model after another on the whole machine),
ratio to the CNN's time per gene, mean pooled R² (a check that the fits are real), epochs run per
network fit, and a verdict on the rule "no model may take more than the CNN per gene, except
cascade_forest, whose cost is stated" (OK / SLOWER THAN CNN). ``best`` fits its candidates
(enet, cnn) on inner folds inside every outer fold, so it contains the CNN and is not judged; by
default its row is estimated from its candidates' rows, ``--models best`` times it.

``--epochs`` below the paper's 700 caps the networks for a quick look: the output says so and
how many fits stopped at the cap (their times are then lower bounds of the paper's setting).

Timings are only meaningful on an otherwise idle machine: run it alone (the load average before
and after is printed). The default run (7 models, 3 genes, 873 samples, 700/90 epochs, timeout
240 s per model) is expected to take about 10-15 min on 2 cores, unmeasured: cascade_forest
(about 16 k + 12 forests of rf's size per outer fold, k its kept layers) will likely reach the
timeout, and the CNN may come close; it cannot exceed 7 × (240 s + start-up)::

    python benchmarks/model_speed.py
    python benchmarks/model_speed.py --models cnn cascade_forest --timeout 3600 --genes 5
    python benchmarks/model_speed.py --genes 1 --samples 120 --epochs 5 --models mean enet cnn
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import queue
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

import dmg_ml  # noqa: E402, F401, I001  (before torch: OpenMP threads then sleep, not spin)
from dmg_ml.data.windows import DEFAULT_WINDOW_BP  # noqa: E402
from dmg_ml.evaluation.registry import MODELS, model_class  # noqa: E402
from dmg_ml.training.reference import TrainConfig  # noqa: E402

PAPER_EPOCHS, PAPER_PATIENCE = TrainConfig().max_epochs, TrainConfig().patience
GENOME_GENES = 14_000
#: default order: the CNN first (every ratio needs it), cascade_forest, the likely timeout, last
DEFAULT_MODELS = ["cnn", "mean", "enet", "svr", "rf", "mlp", "cascade_forest"]
EXEMPT = {"cascade_forest": "cost stated"}  # may be slower than the CNN: its cost is stated
STARTUP_LIMIT_S = 600.0  # imports, simulation and warm-up of one worker
NETWORKS = ("mlp", "cnn")
assert set(DEFAULT_MODELS) == set(MODELS) - {"best"}, "DEFAULT_MODELS must follow the registry"


# ---------------------------------------------------------------------------------------------
# parameters


def constructor_params(name: str, args: argparse.Namespace, warm: bool = False) -> dict[str, Any]:
    """Constructor arguments of registry model ``name`` from the options, for those of its
    parameters that ``get_params()`` lists (``warm``: tiny forests and 2 epochs)."""
    keys = model_class(name)().get_params()
    params: dict[str, Any] = {}
    if "n_jobs" in keys:
        params["n_jobs"] = args.n_jobs
    if "max_epochs" in keys:
        params["max_epochs"] = 2 if warm else args.epochs
        params["patience"] = 2 if warm else args.patience
    if "precision" in keys:
        params["precision"] = args.precision
    if warm and "n_estimators" in keys:
        params["n_estimators"] = 2
    if name == "best":
        params["candidate_params"] = {
            candidate: constructor_params(candidate, args, warm) for candidate in keys["candidates"]
        }
    return params


def evaluate_params(name: str, args: argparse.Namespace, warm: bool = False) -> dict[str, Any]:
    """``evaluate``'s ``params`` for ``name``: its constructor arguments (for cnn,
    ``CNNRegressor``'s: the batched trainer on the CPU, its defaults)."""
    return constructor_params(name, args, warm)


# ---------------------------------------------------------------------------------------------
# worker: one model, in its own process; prints one JSON line per event on stdout


def emit(**event: Any) -> None:
    print(json.dumps(event), flush=True)


def record_epochs(sink: list[int]) -> None:
    """Collect the epochs run by every network fit of this process into ``sink``: the
    estimators' ``epochs_run_`` and the stacked CNN's per-fold ``epochs_run`` (wrappers)."""
    for name in NETWORKS:
        cls = model_class(name)
        fit = cls.fit

        def fit_and_record(self, X, y, groups=None, _fit=fit):
            fitted = _fit(self, X, y, groups=groups)
            sink.append(int(fitted.epochs_run_))
            return fitted

        cls.fit = fit_and_record
    cnn = model_class("cnn")
    fit_folds = cnn.fit_folds

    def fit_folds_and_record(self, *args, _fit_folds=fit_folds, **kwargs):
        for batch, folds in _fit_folds(self, *args, **kwargs):  # how evaluate trains the CNN
            sink.extend(int(fold.facts["epochs_run"]) for gene in folds for fold in gene)
            yield batch, folds

    cnn.fit_folds = fit_folds_and_record


def worker(args: argparse.Namespace) -> None:
    """Time ``args.worker`` on the genes (threads already set by ``resolve``)."""
    import warnings

    import torch
    from trainer_speed import simulate_cohort, synthetic_lengths

    from dmg_ml.evaluation.engine import evaluate
    from dmg_ml.runtime import keep_freed_memory

    warnings.filterwarnings("ignore")  # convergence chatter of the baselines; timing only
    kept = keep_freed_memory()  # as the training process does (the device resource)
    threads = torch.get_num_threads()
    name = args.worker
    epochs: list[int] = []
    record_epochs(epochs)
    warm = simulate_cohort(60, [20], args.seed + 1)
    evaluate(warm, name, params=evaluate_params(name, args, warm=True), seed=args.seed)
    epochs.clear()
    genes = simulate_cohort(args.samples, synthetic_lengths(args.genes, args.window_bp), args.seed)
    emit(event="start", threads=threads, kept_freed_memory=kept, params=repr(
        evaluate_params(name, args)))
    for gene in sorted(genes, key=lambda g: g.X.shape[1]):
        epochs.clear()
        started = time.perf_counter()
        (result,) = evaluate([gene], name, protocol="honest",
                             params=evaluate_params(name, args), n_folds=5, seed=args.seed)
        seconds = time.perf_counter() - started
        emit(event="gene", gene=gene.gene, length=int(gene.X.shape[1]), seconds=seconds,
             r2=float(result.r2), epochs=list(epochs))


# ---------------------------------------------------------------------------------------------
# parent: one worker per model, the table


@dataclass
class Measured:
    model: str
    lengths: list[int]
    seconds: dict[int, float] = field(default_factory=dict)  # finished genes, by L
    running: tuple[int, float] | None = None  # (L, seconds so far) of a gene stopped unfinished
    r2: list[float] = field(default_factory=list)
    epochs: list[int] = field(default_factory=list)
    status: str = "ok"  # ok, timeout, failed
    note: str = ""
    estimated: bool = False

    @property
    def complete(self) -> bool:
        return len(self.seconds) == len(self.lengths)

    @property
    def low(self) -> float:
        """Mean seconds per gene, or its lower bound when unfinished (unstarted genes as 0)."""
        total = sum(self.seconds.values()) + (self.running[1] if self.running else 0.0)
        return total / len(self.lengths)

    @property
    def high(self) -> float:
        return self.low if self.complete else math.inf


def run_model(name: str, args: argparse.Namespace, forward: list[str]) -> Measured:
    """One worker for ``name``; its timed part is stopped after ``args.timeout`` seconds."""
    from trainer_speed import synthetic_lengths

    measured = Measured(name, sorted(synthetic_lengths(args.genes, args.window_bp)))
    command = [sys.executable, str(Path(__file__).resolve()), *forward, "--worker", name]
    with tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True)
        lines: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            for line in process.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + STARTUP_LIMIT_S
        gene_started = None
        try:
            while True:
                try:
                    line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    if gene_started is None:
                        measured.status, measured.note = "failed", "start-up took too long"
                    else:
                        measured.status = "timeout"
                        pending = [L for L in measured.lengths if L not in measured.seconds]
                        measured.running = (pending[0], time.monotonic() - gene_started)
                    break
                if line is None:
                    break
                if not line.startswith("{"):
                    continue
                event = json.loads(line)
                if event["event"] == "start":
                    gene_started = time.monotonic()
                    deadline = gene_started + args.timeout
                    print(f"  {name}: threads {event['threads']}, params {event['params']}",
                          flush=True)
                elif event["event"] == "gene":
                    gene_started = time.monotonic()
                    measured.seconds[event["length"]] = event["seconds"]
                    measured.r2.append(event["r2"])
                    measured.epochs.extend(event["epochs"])
                    print(f"  {name}: L={event['length']} {event['seconds']:.2f} s, "
                          f"R2 {event['r2']:.3f}", flush=True)
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
        if measured.status == "ok" and (process.returncode or not measured.complete):
            stderr.seek(0)
            tail = stderr.read()[-2000:]
            measured.status = "failed"
            measured.note = f"worker exited {process.returncode}"
            print(f"  {name}: FAILED (exit {process.returncode})\n{tail}", file=sys.stderr)
    if measured.status == "timeout":
        print(f"  {name}: stopped after the {args.timeout:g} s timeout "
              f"({len(measured.seconds)}/{len(measured.lengths)} genes done)", flush=True)
    return measured


def estimate_best(rows: dict[str, Measured], args: argparse.Namespace) -> Measured | None:
    """``best`` from its candidates' rows: per outer fold it fits every candidate on
    ``inner_splits`` inner folds and refits the winner, so at most (inner_splits + 1) x the sum
    of its candidates' per-fold costs (inner fits see 2/3 of the rows, but its CNN trains fold
    by fold, not stacked as the cnn row's 5 folds are: a rough figure)."""
    defaults = model_class("best")().get_params()
    candidates, factor = list(defaults["candidates"]), defaults["inner_splits"] + 1
    if not all(c in rows and rows[c].status == "ok" for c in candidates):
        return None
    lengths = rows[candidates[0]].lengths
    best = Measured("best", lengths, estimated=True,
                    note=f"est. {factor} x ({' + '.join(candidates)})")
    best.seconds = {L: factor * sum(rows[c].seconds[L] for c in candidates) for L in lengths}
    return best


def verdict(row: Measured, cnn: Measured | None) -> str:
    if row.model == "cnn":
        return "(reference)"
    if row.model == "best":
        return "not judged (contains cnn)"
    if row.status == "failed":
        return "FAILED"
    if cnn is None or cnn.status == "failed":
        return "? (no cnn)"
    if row.high <= cnn.low:
        judged = "OK"
    elif row.low > cnn.high:
        judged = "SLOWER THAN CNN"
    else:
        judged = "UNDECIDED (timeout)"
    return f"{judged} (exempt: {EXEMPT[row.model]})" if row.model in EXEMPT else judged


def report(rows: list[Measured], args: argparse.Namespace) -> None:
    by_name = {row.model: row for row in rows}
    cnn = by_name.get("cnn")
    lengths = rows[0].lengths
    head = (f"{'model':<15}{'s/gene':>10}" + "".join(f"{'L=' + str(L):>10}" for L in lengths)
            + f"{'h/14k':>9}{'xCNN':>8}{'R2':>8}{'epochs':>12}  verdict")
    print("\n" + head)
    print("-" * len(head))
    for row in rows:
        bound = "" if row.complete else ">"
        mean = f"{bound}{row.low:.2f}" if row.status != "failed" else "-"
        cells = []
        for L in lengths:
            if L in row.seconds:
                cells.append(f"{row.seconds[L]:.2f}")
            elif row.running and row.running[0] == L:
                cells.append(f">{row.running[1]:.1f}")
            else:
                cells.append("-")
        hours = f"{bound}{row.low * GENOME_GENES / 3600:.2f}" if row.status != "failed" else "-"
        if cnn is not None and cnn.status != "failed" and row.status != "failed":
            if row.complete and cnn.complete:
                ratio = f"{row.low / cnn.low:.2f}"
            elif cnn.complete:
                ratio = f">{row.low / cnn.low:.2f}"
            elif row.complete and cnn.low > 0:
                ratio = f"<{row.low / cnn.low:.2f}"
            else:
                ratio = "?"
        else:
            ratio = "-"
        r2 = f"{sum(row.r2) / len(row.r2):.3f}" if row.r2 else "-"
        epochs = "-"
        if row.epochs:
            at_cap = sum(e >= args.epochs for e in row.epochs)
            epochs = f"{sum(row.epochs) / len(row.epochs):.0f} ({at_cap}/{len(row.epochs)})"
        name = row.model + (" (est.)" if row.estimated else "")
        print(f"{name:<15}{mean:>10}" + "".join(f"{c:>10}" for c in cells)
              + f"{hours:>9}{ratio:>8}{r2:>8}{epochs:>12}  {verdict(row, cnn)}")
    print()
    print("s/gene: wall seconds of evaluate() per gene (5 outer folds, honest), mean over the "
          "genes; L=: per gene;")
    print(f"h/14k: s/gene x {GENOME_GENES:,} / 3600 on this machine; xCNN: s/gene over the "
          "CNN's; R2: mean pooled out-of-fold R2;")
    print("epochs: mean epochs run per network fit (fits that stopped at the cap / fits); "
          "'>': lower bound (timeout).")
    for row in rows:
        if row.note:
            print(f"{row.model}: {row.note}")
    cascade, rf = by_name.get("cascade_forest"), by_name.get("rf")
    if cascade and cascade.status != "failed":
        params = model_class("cascade_forest")().get_params()
        forests = 2 * params["forests_per_type"]
        stated = (f"cascade_forest's cost: per outer fold {forests * (params['inner_splits'] + 1)}"
                  f" forests of {params['n_estimators']} trees per kept layer + "
                  f"{forests * params['inner_splits']} for the rejected one (half extra-trees)")
        if rf and rf.complete and rf.low > 0:
            stated += f"; measured {'>' if not cascade.complete else ''}" \
                      f"{cascade.low / rf.low:.1f} x rf per gene"
        print(stated)
    if args.epochs < PAPER_EPOCHS or args.patience != PAPER_PATIENCE:
        capped = [f"{row.model} {at_cap}/{len(row.epochs)}" for row in rows
                  if (at_cap := sum(e >= args.epochs for e in row.epochs))]
        effect = (f"fits that stopped at the cap: {', '.join(capped)}; their times understate "
                  "the paper's setting" if capped else "no fit reached the cap")
        print(f"NOTE: networks at {args.epochs} epochs{' (CAPPED)' * (args.epochs < PAPER_EPOCHS)}"
              f", patience {args.patience}, not the paper's {PAPER_EPOCHS}/{PAPER_PATIENCE}: "
              f"{effect}.")


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--models", nargs="+", choices=sorted(MODELS), default=DEFAULT_MODELS,
                   metavar="NAME",
                   help="registry models to time, in this order (default: all but best: "
                   f"{' '.join(DEFAULT_MODELS)}; best is then estimated from its candidates; "
                   f"choices: {' '.join(sorted(MODELS))})")
    p.add_argument("--genes", type=int, default=3,
                   help="genes, one per window length at evenly spaced quantiles (default 3)")
    p.add_argument("--samples", type=int, default=873,
                   help="samples per gene, ~10%% of them normals paired with a tumour "
                   "(default 873, BRCA)")
    p.add_argument("--window-bp", type=int, default=DEFAULT_WINDOW_BP,
                   help="window half-width W whose synthetic 450K lengths L the genes take "
                   "(default 1,000,000)")
    p.add_argument("--epochs", type=int, default=PAPER_EPOCHS,
                   help=f"max epochs of mlp and cnn (default {PAPER_EPOCHS}, the paper's; "
                   "smaller caps them for a quick look, and the output says so)")
    p.add_argument("--patience", type=int, default=PAPER_PATIENCE,
                   help=f"early-stopping patience of mlp and cnn (default {PAPER_PATIENCE})")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="network precision; auto: bf16 where the CPU computes in it natively, "
                   "else fp32, as the training assets choose (default auto)")
    p.add_argument("--n-jobs", type=int, default=0,
                   help="n_jobs of the models that take it (enet, rf, cascade_forest, per "
                   "get_params()); 0 (default): as many as the torch threads, so every model "
                   "may use the cores the CNN uses")
    p.add_argument("--threads", type=int, default=0,
                   help="torch intra-op threads; 0 (default): "
                   "dmg_ml.runtime.set_training_threads (one per physical core)")
    p.add_argument("--timeout", type=float, default=240.0,
                   help="seconds of timed fitting per model (after its untimed start-up); a "
                   "model still fitting is stopped and reported as a lower bound (default 240)")
    p.add_argument("--seed", type=int, default=0, help="data and model seed (default 0)")
    p.add_argument("--worker", choices=sorted(MODELS), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for option in ("genes", "samples", "window_bp", "epochs", "patience", "timeout"):
        if getattr(args, option) <= 0:
            p.error(f"--{option.replace('_', '-')} must be positive")
    return args


def resolve(args: argparse.Namespace) -> None:
    """Concrete thread, job and precision settings, in the parent (to print them) and in each
    worker (where they take effect). Imports torch: ``dmg_ml`` was imported first."""
    import torch

    from dmg_ml.runtime import auto_precision, set_training_threads

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = args.threads or set_training_threads()
    args.n_jobs = args.n_jobs or threads
    if args.precision == "auto":
        args.precision = auto_precision("cpu")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    resolve(args)
    if args.worker:
        worker(args)
        return
    from trainer_speed import synthetic_lengths

    forward = [*argv, "--n-jobs", str(args.n_jobs), "--precision", args.precision]
    lengths = sorted(synthetic_lengths(args.genes, args.window_bp))
    capped = "" if args.epochs >= PAPER_EPOCHS else f" (CAPPED; paper {PAPER_EPOCHS})"
    print(f"{cpu_name()}, {os.cpu_count()} CPUs, "
          f"load average {load()} (run alone: timings are wall time)")
    print(f"{args.genes} genes x {args.samples} samples, L = {lengths} (quantiles of the "
          f"synthetic 450K windows at W={args.window_bp:,} bp), 5 outer folds, honest")
    print(f"networks: {args.epochs} epochs{capped}, patience {args.patience}, {args.precision}; "
          f"n_jobs {args.n_jobs}; timeout {args.timeout:g} s per model")
    print(f"models: {' '.join(args.models)} (each in a fresh process; timed part at most "
          f"{len(args.models)} x {args.timeout:g} s, plus start-ups)", flush=True)
    started = time.monotonic()
    rows = [run_model(name, args, forward) for name in args.models]
    if "best" not in args.models:
        best = estimate_best({row.model: row for row in rows}, args)
        if best is not None:
            rows.append(best)
    report(rows, args)
    print(f"total {time.monotonic() - started:.0f} s; load average now {load()}")


if __name__ == "__main__":
    main()
