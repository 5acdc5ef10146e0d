"""Where the fast trainer's time goes on a GPU: grouped vs looped stacks, cuDNN autotuning, and
the top kernels under torch.profiler. Tasks are (gene, fold)-like fits of one window length.

    PYTHONPATH=. python3 benchmarks/gpu_profile.py --length 553 --genes 32
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dmg_ml  # noqa: E402, F401, I001  (before torch: OpenMP threads sleep, not spin)
import torch  # noqa: E402
from benchmarks.trainer_speed import simulate_cohort  # noqa: E402
from dmg_ml.training import batched  # noqa: E402
from dmg_ml.training.batched import FitTask, fit_batched  # noqa: E402
from dmg_ml.training.reference import TrainConfig, fit_reference  # noqa: E402


def tasks_for(genes, folds: int, n_train: int) -> list[FitTask]:
    return [
        FitTask(g.X[:n_train], g.y[:n_train], g.X[n_train:], g.y[n_train:], seed=fold)
        for g in genes
        for fold in range(folds)
    ]


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(label: str, fn, task_epochs: int) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    seconds = time.perf_counter() - start
    print(f"{label:<34} {seconds:7.2f} s  {task_epochs / seconds:8.1f} task-epochs/s  "
          f"{1e3 * seconds / task_epochs:7.3f} ms/task-epoch", flush=True)
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--length", type=int, default=553)
    p.add_argument("--genes", type=int, default=32)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--samples", type=int, default=873)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true", help="grouped stack only, NHWC vs NCHW")
    args = p.parse_args()
    device = args.device
    genes = simulate_cohort(args.samples, [args.length] * args.genes, seed=0)
    tasks = tasks_for(genes, args.folds, int(0.8 * args.samples))
    config = TrainConfig(max_epochs=args.epochs, patience=args.epochs + 1,
                         precision=args.precision)
    name = torch.cuda.get_device_name() if device == "cuda" else device
    print(f"{name}, torch {torch.__version__}: {len(tasks)} tasks, "
          f"L={args.length}, {args.samples} samples, {args.epochs} epochs, {args.precision}")
    fit_batched(tasks[:2], replace(config, max_epochs=2), device)  # warm-up
    n = len(tasks) * args.epochs
    if args.quick:
        timed("grouped, channels-last", lambda: fit_batched(tasks, config, device), n)
        batched._nhwc = lambda h, nhwc=batched._nhwc: nhwc(h).contiguous()
        fit_batched(tasks[:2], replace(config, max_epochs=2), device)
        timed("grouped, NCHW", lambda: fit_batched(tasks, config, device), n)
        return
    timed("reference loop (fp32), 2 tasks", lambda: [
        fit_reference(t.X_train, t.y_train, t.X_valid, t.y_valid,
                      replace(config, precision="fp32"), seed=t.seed, device=device)
        for t in tasks[:2]
    ], 2 * args.epochs)
    timed("grouped", lambda: fit_batched(tasks, config, device, looped=False), n)
    timed("looped", lambda: fit_batched(tasks, config, device, looped=True), n)
    torch.backends.cudnn.benchmark = True
    fit_batched(tasks, replace(config, max_epochs=2), device, looped=False)  # autotune
    timed("grouped, cudnn.benchmark", lambda: fit_batched(tasks, config, device, looped=False), n)
    fit_batched(tasks, replace(config, max_epochs=2), device, looped=True)
    timed("looped, cudnn.benchmark", lambda: fit_batched(tasks, config, device, looped=True), n)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA,
                                            torch.profiler.ProfilerActivity.CPU]) as prof:
        fit_batched(tasks, replace(config, max_epochs=3), device, looped=False)
        sync()
    print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=25,
                                    max_name_column_width=70))
    if device == "cuda":
        print(f"peak GPU memory allocated: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
