"""Training speed on a shared machine: the fast trainer alone and beside busy processes.

Each measurement runs in a fresh Python process (the OpenMP runtime reads its wait policy once,
when torch loads it) that cross-validates a small task with the fast trainer (by default the
Hardening issue's: 1 gene, 5 folds, L = 80, 150 fixed epochs, bf16, 600 samples, data from
``benchmarks/trainer_speed.py``'s simulator), first alone and then beside 1 and 3 busy processes
(single-threaded Python spin loops that this script starts and kills). It prints wall seconds per
gene-fold-epoch against the fair share: with n busy single-threaded processes on C CPUs, a
training team of T threads can get ``share = min(T, C*T/(T+n))`` cores of the T it used alone, so
the fair time is ``alone * T / share``. A row passes when measured / fair <= 1.5.

Policies (``--policies``, or ``--compare`` for ``dmg active``): ``dmg`` is what the project runs
(``import dmg_ml`` sets ``OMP_WAIT_POLICY=PASSIVE``; threads from
``dmg_ml.runtime.set_training_threads``); ``active`` is ``OMP_WAIT_POLICY=ACTIVE``
with the same
thread count; ``torch-default`` imports torch before dmg_ml, i.e. libgomp's default (spin
300000 times, then sleep), as before the fix. The spin count libgomp reports at start-up
(``OMP_DISPLAY_ENV=verbose``) is printed as evidence of the policy in effect. Spinning policies
can be many times slower under load: a run that exceeds ``--timeout`` is stopped and reported as
a lower bound.

Run it on an otherwise idle machine (the busy processes are the only load it should see); the
default (3 fresh processes of 750 gene-fold-epochs each) is sized for about 2 minutes on 2 cores::

    python benchmarks/contention.py            # dmg's policy: alone, +1 and +3 busy
    python benchmarks/contention.py --compare  # and OMP_WAIT_POLICY=ACTIVE for contrast
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
POLICIES = ("dmg", "active", "torch-default")
MAX_RATIO = 1.5
SPIN = "while True:\n    pass\n"


def worker(args: argparse.Namespace) -> None:
    """One measurement, in this (fresh) process; prints a JSON line on stdout."""
    import warnings

    if args.worker == "torch-default":
        import torch  # noqa: F401  (before dmg_ml: libgomp starts with its default policy)

        warnings.filterwarnings("ignore", message="OpenMP runtime was loaded before dmg_ml")
    sys.path[:0] = [str(ROOT), str(HERE)]
    import dmg_ml  # sets the wait policy before torch loads libgomp

    # done on import; called again: no change, no warning
    dmg_ml.runtime.configure_threads()
    import torch
    from trainer_speed import Tally, cross_validate_cnn, simulate_cohort

    from dmg_ml.runtime import set_training_threads
    from dmg_ml.training.reference import TrainConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = set_training_threads() if not args.threads else torch.get_num_threads()
    warm = simulate_cohort(60, [20], args.seed + 1)
    cross_validate_cnn(warm, TrainConfig(max_epochs=2), trainer="batched", device="cpu")
    genes = simulate_cohort(args.samples, [args.length] * args.genes, args.seed)
    config = TrainConfig(
        max_epochs=args.epochs, patience=args.epochs + 1, seed=args.seed, precision=args.precision
    )
    tally = Tally()
    print(f"training from {time.time()}", flush=True)  # for a timed-out run's lower bound
    for gene in genes:
        start = time.perf_counter()
        (result,) = cross_validate_cnn(
            [gene], config, trainer="batched", device="cpu", n_folds=args.folds
        )
        tally.add(result, time.perf_counter() - start)
    print(json.dumps({"seconds": tally.seconds, "gene_fold_epochs": tally.gene_fold_epochs,
                      "threads": threads}))


@dataclass
class Row:
    policy: str
    busy: int
    threads: int
    spin_count: str
    seconds_per_gfe: float  # wall seconds per gene-fold-epoch; a lower bound if timed_out
    timed_out: bool = False


def _spin_count(stderr: str) -> str:
    """GOMP_SPINCOUNT from the first OpenMP display (torch's libgomp), or '?'."""
    for line in stderr.splitlines():
        if line.strip().startswith("GOMP_SPINCOUNT"):
            return line.split("=", 1)[1].strip().strip("'")
    return "?"


def measure(policy: str, busy: int, args: argparse.Namespace) -> Row:
    """Start ``busy`` spin loops, run one worker beside them under ``policy``, stop them."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy == "active":
        env["OMP_WAIT_POLICY"] = "ACTIVE"
    env["OMP_DISPLAY_ENV"] = "verbose"
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(busy)]
    command = [sys.executable, __file__, "--worker", policy, *args.forward]
    launched = time.time()
    try:
        out = subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=args.timeout, check=True
        )
    except subprocess.TimeoutExpired as stopped:
        stdout, stderr = (
            (text.decode() if isinstance(text, bytes) else text or "")
            for text in (stopped.stdout, stopped.stderr)
        )
        started = [float(line.split()[-1]) for line in stdout.splitlines()
                   if line.startswith("training from ")]
        # it trained from `started` until stopped without finishing: a lower bound
        trained = launched + args.timeout - started[0] if started else 0.0
        total = args.genes * args.folds * args.epochs
        return Row(policy, busy, args.threads or 0, _spin_count(stderr), trained / total,
                   timed_out=True)
    except subprocess.CalledProcessError as failed:
        sys.exit(f"worker failed ({policy}, {busy} busy):\n{failed.stderr}")
    finally:
        for spinner in spinners:
            spinner.kill()
        for spinner in spinners:
            spinner.wait()
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return Row(policy, busy, result["threads"], _spin_count(out.stderr),
               result["seconds"] / result["gene_fold_epochs"])


def fair_factor(threads: int, busy: int, cpus: int) -> float:
    """How much longer than alone a fair share of the CPUs makes a T-thread run take."""
    share = min(threads, cpus * threads / (threads + busy))
    return threads / share


def report(rows: list[Row], cpus: int) -> bool:
    """Print the table; True when every row of the dmg policy beside busy processes passes."""
    print(f"{'policy':<14}{'busy':>5}{'threads':>8}{'spin':>13}{'s/gfe':>11}{'fair s/gfe':>12}"
          f"{'ratio':>8}  verdict")
    ok = True
    for policy in dict.fromkeys(row.policy for row in rows):
        own = [row for row in rows if row.policy == policy]
        alone = next(row for row in own if row.busy == 0)
        for row in own:
            bound = ">" if row.timed_out else ""
            measured = f"{bound}{row.seconds_per_gfe:.4f}"
            if row.timed_out and not row.seconds_per_gfe:
                measured = "timeout"  # stopped before its training started: no bound
            threads = row.threads or alone.threads
            line = f"{policy:<14}{row.busy:>5}{threads or '?':>8}{row.spin_count:>13}{measured:>11}"
            if alone.timed_out or not threads:  # no time alone to scale
                print(f"{line}{'-':>12}{'-':>8}  {'FAIL' if row.busy else '(alone)'}")
                ok &= policy != "dmg"
                continue
            fair = alone.seconds_per_gfe * fair_factor(threads, row.busy, cpus)
            ratio = row.seconds_per_gfe / fair
            passed = ratio <= MAX_RATIO and not row.timed_out
            if policy == "dmg" and row.busy:
                ok &= passed
            ratio_text = "-" if measured == "timeout" else f"{bound}{ratio:.2f}"
            verdict = "(alone)" if row.busy == 0 else ("PASS" if passed else "FAIL")
            print(f"{line}{fair:>12.4f}{ratio_text:>8}  {verdict}")
    return ok


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Time per gene-fold-epoch beside n busy processes must stay within "
        f"{MAX_RATIO}x of the fair share. Measure on an otherwise idle machine.",
    )
    p.add_argument("--policies", nargs="+", choices=POLICIES, default=["dmg"],
                   help="wait policies to measure, each in fresh processes (default: dmg)")
    p.add_argument("--compare", action="store_true", help="also measure OMP_WAIT_POLICY=ACTIVE")
    p.add_argument("--busy", type=int, nargs="+", default=[0, 1, 3],
                   help="numbers of busy single-threaded processes (0 = alone; default 0 1 3)")
    p.add_argument("--threads", type=int, default=0,
                   help="training threads "
                   "(default 0: dmg_ml.runtime.set_training_threads)")
    p.add_argument("--genes", type=int, default=1)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--length", type=int, default=80, help="CpGs per window (L)")
    p.add_argument("--samples", type=int, default=600)
    p.add_argument("--epochs", type=int, default=150, help="fixed epochs per fold")
    p.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=60.0,
                   help="seconds after which one measurement is stopped (default 60)")
    p.add_argument("--worker", choices=POLICIES, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.compare and "active" not in args.policies:
        args.policies.append("active")
    if 0 not in args.busy:
        args.busy.insert(0, 0)  # the fair share is relative to the time alone
    args.forward = [
        f"--{name}={getattr(args, name)}"
        for name in ("threads", "genes", "folds", "length", "samples", "epochs", "precision",
                     "seed")
    ]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"{args.genes} gene(s) x {args.folds} folds x {args.epochs} epochs, L={args.length}, "
        f"{args.samples} samples, {args.precision}, fast trainer; {cpus} CPUs; busy = "
        "single-threaded spin loops; fair = alone * T / min(T, C*T/(T+n))"
    )
    rows = []
    for policy in args.policies:
        for busy in sorted(set(args.busy)):
            rows.append(measure(policy, busy, args))
            print(f"  measured {policy}, {busy} busy", file=sys.stderr, flush=True)
    ok = report(rows, cpus)
    if "dmg" in args.policies:
        verdict = "PASS" if ok else "FAIL"
        print(f"dmg's policy within {MAX_RATIO}x of the fair share beside busy processes: "
              f"{verdict}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
