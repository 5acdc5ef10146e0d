"""Host time to draw a group's initial weights for the stacked trainer, per window length: one
task after another through ``init_model`` and ``ParamLayout.to_row`` (the trainer before) against
``batched.initial_rows`` (drawn straight into the rows) on one thread and on ``--workers``.

    python benchmarks/initial_weights.py [--lengths 215 438 723 1270] [--tasks 20] [--workers 2]

On a GPU machine this is host work the GPU waits for unless it overlaps training (``fit_batched``
draws the next group's rows in a background thread on CUDA). Run it alone: it times the CPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dmg_ml  # noqa: E402, F401, I001  (before torch: OpenMP threads sleep, not spin)
import numpy as np  # noqa: E402
import torch  # noqa: E402

from dmg_ml.training.batched import FitTask, initial_rows  # noqa: E402
from dmg_ml.training.reference import init_model  # noqa: E402
from dmg_ml.training.stacked import FUSED_ALIGN, ParamLayout  # noqa: E402


def one_by_one(layout: ParamLayout, tasks: list[FitTask]) -> torch.Tensor:
    length = tasks[0].X_train.shape[1]
    return torch.stack(
        [layout.to_row(init_model(length, "adaptive", t.seed).state_dict()) for t in tasks]
    )


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="*", default=[215, 438, 723, 1270])
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    args = parser.parse_args(argv)
    print(f"{args.tasks} tasks per length, {os.cpu_count()} CPUs, torch threads "
          f"{torch.get_num_threads()}; ms per task")  # fmt: skip
    print(f"| L | one by one | initial_rows, 1 thread | initial_rows, {args.workers} threads | "
          f"ratio |\n|---|---|---|---|---|")  # fmt: skip
    for length in args.lengths:
        x = np.zeros((2, length), dtype=np.float32)
        y = np.zeros(2, dtype=np.float32)
        tasks = [FitTask(x, y, x, y, seed=s) for s in range(args.tasks)]
        layout = ParamLayout(length, "adaptive", FUSED_ALIGN)
        initial_rows(layout, tasks[:2], workers=1)  # warm-up
        old = timed(lambda: one_by_one(layout, tasks))  # noqa: B023
        one = timed(lambda: initial_rows(layout, tasks, workers=1))  # noqa: B023
        many = timed(lambda: initial_rows(layout, tasks, workers=args.workers))  # noqa: B023
        n = args.tasks
        print(f"| {length} | {1e3 * old / n:.1f} | {1e3 * one / n:.1f} | {1e3 * many / n:.1f} | "
              f"{old / many:.2f}x |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
