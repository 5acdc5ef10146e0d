"""The fast trainer on a GPU: speed against the reference loop, where the time goes, agreement
at convergence, and a cohort's cross-validation end to end.

Runs from the source tree with the GPU machine's own PyTorch (no install, no Dagster); every
stage also runs on CPU with small sizes (``--device cpu``), which is how it is checked before it
meets a GPU. Stages, each printing its own table::

    PYTHONPATH=. python3 benchmarks/gpu_trainer.py speed     # reference vs fast, per length
    PYTHONPATH=. python3 benchmarks/gpu_trainer.py profile   # top kernels, traffic, busy time
    PYTHONPATH=. python3 benchmarks/gpu_trainer.py variants  # eager vs torch.compile, windows
    PYTHONPATH=. python3 benchmarks/gpu_trainer.py agree     # |dR2| at the paper's 700/90
    PYTHONPATH=. python3 benchmarks/gpu_trainer.py cohort    # evaluate (cnn), genes per hour

Tasks are (gene, fold) fits of simulated genes (``benchmarks/trainer_speed.simulate_cohort``)
of 873 samples (BRCA) at the quantiles of the 1 Mb window's lengths, 5 patient-grouped folds
(train 64 %, early-stopping validation 16 %). Per-epoch costs are steady-state: the time of a run
of E epochs minus that of E0 epochs, divided by the task-epochs in between, so set-up (initial
weights on the CPU, copies to the device) is left out; the ``cohort`` stage includes everything.

FLOPs are the model's own (``torch.utils.flop_counter`` on the module: forward and backward on
the training rows, forward on the validation rows), not the padded work. Bytes are a traffic
model, not a hardware counter: every operator reading its tensor inputs and writing its outputs
once (views free), counted under a dispatch mode over one epoch.
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dmg_ml  # noqa: E402, F401, I001  (before torch: OpenMP threads sleep, not spin)
import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_leaves  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from benchmarks.trainer_speed import (  # noqa: E402
    cross_validate_cnn,
    epochs_run,
    simulate_cohort,
    synthetic_lengths,
)
from dmg_ml.data.splits import task_seed  # noqa: E402
from dmg_ml.models.cnn import AdaptiveRegressionCNN  # noqa: E402
from dmg_ml.training import batched, planning, stacked  # noqa: E402
from dmg_ml.training.batched import fit_batched  # noqa: E402
from dmg_ml.training.planning import FitTask  # noqa: E402
from dmg_ml.training.reference import TrainConfig, fit_reference, init_model  # noqa: E402

#: Dense bf16 tensor-core peak (FLOP/s) and HBM bandwidth (B/s) of the SXM cards, from NVIDIA's
#: data sheets.
PEAKS = {"H100": (989e12, 3.35e12), "H200": (989e12, 4.8e12)}


def peaks(device: torch.device) -> tuple[float, float] | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAKS.items() if k in name), None)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fold_tasks(genes, n_folds: int = 5, seed: int = 0) -> list[FitTask]:
    """Every gene's folds: patients split into ``n_folds`` test groups; of the rest, 80 % train
    and 20 % validation (the honest protocol's proportions, without its scaler). Fold ``k``
    starts from the weights the evaluation engine would draw for it (``task_seed(seed, k)``), drawn
    once per length here, so repeated runs do not time the CPU's initialisers."""
    patients = np.unique(genes[0].patients)
    rng = np.random.default_rng(seed)
    fold_of = dict(zip(patients, rng.permutation(len(patients)) % n_folds, strict=True))
    fold = np.array([fold_of[p] for p in genes[0].patients])
    starts: dict[tuple[int, int], dict[str, torch.Tensor]] = {}
    tasks = []
    for gene in genes:
        length = gene.X.shape[1]
        for k in range(n_folds):
            rest = np.flatnonzero(fold != k)
            valid = rest[rng.random(len(rest)) < 0.2]
            train = np.setdiff1d(rest, valid)
            if (length, k) not in starts:
                starts[length, k] = init_model(length, "adaptive", task_seed(seed, k)).state_dict()
            tasks.append(
                FitTask(gene.X[train], gene.y[train], gene.X[valid], gene.y[valid],
                        seed=task_seed(seed, k), init_state=starts[length, k])
            )  # fmt: skip
    return tasks


def task_epoch_flops(length: int, n_train: int, n_valid: int) -> float:
    """Model FLOPs of one task-epoch: forward + backward on the training rows, forward on the
    validation rows (counted on a batch of 4 and scaled: every layer is linear in the batch)."""
    model = AdaptiveRegressionCNN(length)
    x = torch.randn(4, length)
    with FlopCounterMode(display=False) as train:
        model(x).pow(2).sum().backward()
    with FlopCounterMode(display=False) as valid, torch.no_grad():
        model(x)
    return (train.get_total_flops() * n_train + valid.get_total_flops() * n_valid) / 4


class Traffic(TorchDispatchMode):
    """Bytes every operator on the device would move reading its inputs and writing its outputs
    once (views, which move nothing, are skipped)."""

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.device, self.bytes = device, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not func.is_view and func.__name__ not in ("detach.default", "split.Tensor"):
            for t in tree_leaves((args, kwargs, out)):
                if isinstance(t, torch.Tensor) and t.device.type == self.device.type:
                    self.bytes += t.numel() * t.element_size()
        return out


def timed(fn, device: torch.device, clock=time.perf_counter) -> float:
    sync(device)
    start = clock()
    fn()
    sync(device)
    return clock() - start


def steady(
    run,
    epochs: int,
    warm: int,
    device: torch.device,
    min_seconds: float = 2.0,
    max_epochs: int = 3000,
    clock=time.perf_counter,
) -> tuple[float, float]:
    """(seconds per epoch between ``warm`` and ``E`` epochs, seconds of the ``E``-epoch run).

    A warm-up run of ``warm`` epochs goes first so the timed runs find the kernels and the
    allocator ready. ``E`` starts at ``epochs`` and grows fourfold (up to ``max_epochs``) until
    its run outlasts the ``warm``-epoch run by ``min_seconds``: every run draws its set-up
    afresh, and on an H100 60 tasks at L = 215 ran 10 epochs in less time than that set-up
    varied by, which gave a negative time per epoch."""
    run(warm)
    short = timed(lambda: run(warm), device, clock)
    while True:
        long = timed(lambda epochs=epochs: run(epochs), device, clock)
        if long - short >= min_seconds or 4 * epochs > max_epochs:
            return (long - short) / (epochs - warm), long
        epochs *= 4


def fixed(epochs: int, precision: str) -> TrainConfig:
    """Exactly ``epochs`` epochs (patience beyond them)."""
    return TrainConfig(max_epochs=epochs, patience=epochs + 1, precision=precision)


def reference_run(task: FitTask, precision: str, device: torch.device):
    def run(epochs: int) -> None:
        fit_reference(task.X_train, task.y_train, task.X_valid, task.y_valid,
                      fixed(epochs, precision), seed=task.seed, device=device)  # fmt: skip

    return run


def fast_run(tasks: list[FitTask], precision: str, device: torch.device, **options):
    def run(epochs: int) -> None:
        fit_batched(tasks, fixed(epochs, precision), device, **options)

    return run


def header(args: argparse.Namespace, device: torch.device) -> None:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    mem = (
        torch.cuda.get_device_properties(device).total_memory / 2**30
        if device.type == "cuda"
        else 0
    )
    print(f"# {name} ({mem:.0f} GiB), torch {torch.__version__}, cuda {torch.version.cuda}; "
          f"{args.samples} samples, fast trainer in {args.precision}, reference in fp32",
          flush=True)  # fmt: skip


def stage_speed(args: argparse.Namespace, device: torch.device) -> None:
    """Reference loop (one task) vs fast trainer (``--genes`` genes x 5 folds) per length, one
    row per ``--kernels`` choice of the fast trainer."""
    top = peaks(device)
    print(
        "| L | tasks | reference ms/task-epoch | reference TFLOP/s | kernels | fast "
        "ms/task-epoch | speed-up | fast task-epochs/s | model TFLOP/s | % bf16 peak | "
        "traffic GB/s | % HBM | peak GiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for length in args.lengths or synthetic_lengths(5, 1_000_000):
        genes = simulate_cohort(args.samples, [length] * args.genes, seed=length)
        tasks = fold_tasks(genes)
        ref, _ = steady(reference_run(tasks[0], "fp32", device), args.ref_epochs, 2, device)
        flops = task_epoch_flops(length, len(tasks[0].y_train), len(tasks[0].y_valid))
        for kernels in args.kernels:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            try:
                run = fast_run(tasks, args.precision, device, kernels=kernels)
                fast, _ = steady(run, args.epochs, 2, device)
                memory = torch.cuda.max_memory_allocated(device) / 2**30 if top else 0
                traffic = traffic_per_task_epoch(
                    tasks[: args.traffic_tasks], args.precision, device, kernels
                )
            except Exception as error:  # noqa: BLE001  (a row failing is a result to print)
                print(f"| {length} | {len(tasks)} | {1e3 * ref:.2f} | | {kernels} | failed: "
                      f"{type(error).__name__}: {str(error)[:300]} |", flush=True)  # fmt: skip
                continue
            per_task = fast / len(tasks)
            tflops, gbs = flops / per_task / 1e12, traffic / per_task / 1e9
            share = f"- | {gbs:.0f} | -"
            if top:
                share = f"{1e14 * tflops / top[0]:.1f} | {gbs:.0f} | {1e11 * gbs / top[1]:.0f}"
            print(f"| {length} | {len(tasks)} | {1e3 * ref:.2f} | {flops / ref / 1e12:.1f} | "
                  f"{kernels} | {1e3 * per_task:.3f} | {ref / per_task:.1f}x | "
                  f"{1 / per_task:.0f} | {tflops:.1f} | {share} | {memory:.1f} |",
                  flush=True)  # fmt: skip
    print_tuned()


def traffic_per_task_epoch(
    tasks: list[FitTask], precision: str, device: torch.device, kernels: str | None = None
) -> float:
    """Traffic-model bytes of one task-epoch (two epochs minus one, per task); the fused
    kernels' launches count their tensor inputs (their outputs are counted where allocated).
    A first, uncounted epoch compiles and tunes for this group size, so the tuner's own work
    (timing runs, cache flushes) is not counted."""
    fit_batched(tasks, fixed(1, precision), device, kernels=kernels)
    counted = []
    for epochs in (1, 2):
        with Traffic(device) as mode, _counting_launches(mode):
            fit_batched(tasks, fixed(epochs, precision), device, kernels=kernels)
        counted.append(mode.bytes)
    return (counted[1] - counted[0]) / len(tasks)


@contextmanager
def _counting_launches(mode: Traffic):
    """Count the Triton launches' tensor inputs into ``mode`` (the dispatch mode sees only torch
    operators), where the fused kernels can be imported."""
    if not planning.fused_available():
        yield
        return
    from dmg_ml.training import conv_kernels

    names = ("conv_forward", "backward")
    originals = {name: getattr(conv_kernels, name) for name in names}

    def counted(fn):
        def launch(*args, **kwargs):
            for t in tree_leaves((args, kwargs)):
                if isinstance(t, torch.Tensor) and t.device.type == mode.device.type:
                    mode.bytes += t.numel() * t.element_size()
            return fn(*args, **kwargs)

        return launch

    for name, fn in originals.items():
        setattr(conv_kernels, name, counted(fn))
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(conv_kernels, name, fn)


def stage_profile(args: argparse.Namespace, device: torch.device) -> None:
    """Top kernels of the fast trainer's epochs at the median length (set-up left out: one group
    built, two epochs of warm-up, then ``--epochs`` profiled), and how busy the GPU is."""
    length = args.lengths[0] if args.lengths else synthetic_lengths(1, 1_000_000)[0]
    tasks = fold_tasks(simulate_cohort(args.samples, [length] * args.genes, seed=1))
    config = fixed(args.epochs + 2, args.precision)
    group = batched._Group(
        tasks, list(range(len(tasks))), config, device, check_every=10, kernels=args.kernels[0]
    )

    def epoch() -> None:
        batched._train_epoch(group)
        valid = group.valid
        group.losses(valid.network_input(group.dtype, group.kernels), valid.y, valid.weight)

    for _ in range(2):
        epoch()
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        wall = timed(lambda: [epoch() for _ in range(args.epochs)], device)
    events = prof.key_averages()
    kernels = [e for e in events if e.device_type.name == "CUDA"]
    busy = sum(_self_device_us(e) for e in kernels) / 1e6
    print(
        f"L={length}, {len(tasks)} tasks in one group ({group.kernels}), {args.epochs} epochs "
        f"(no set-up): wall {wall:.2f} s, kernels {busy:.2f} s ({100 * busy / wall:.0f} % busy)"
    )
    for sort in ("self_device_time_total", "self_cuda_time_total", "self_cpu_time_total"):
        try:
            print(events.table(sort_by=sort, row_limit=args.rows, max_name_column_width=90))
            break
        except (KeyError, AttributeError, ValueError):
            continue


def _self_device_us(event) -> float:
    for name in ("self_device_time_total", "self_cuda_time_total"):
        if hasattr(event, name):
            return float(getattr(event, name))
    return 0.0


def cat_windows_conv(
    h: torch.Tensor, w: torch.Tensor, b: torch.Tensor, chunks: int
) -> torch.Tensor:
    """The matmul convolution with its windows built by one ``cat`` of three shifted slices
    (k-major, coalesced) instead of ``unfold`` (channel-major)."""
    tasks, _, length, c_in = h.shape
    c_out = b.shape[1]
    padded = torch.nn.functional.pad(h, (0, 0, 1, 1))
    windows = torch.cat([padded[:, :, k : k + length] for k in range(3)], dim=-1)
    weight = w.view(tasks, c_out, c_in, 3).transpose(2, 3).reshape(tasks, c_out, 3 * c_in)
    return stacked._chunked_matmul(windows, weight.transpose(1, 2), b, chunks)


def stage_variants(args: argparse.Namespace, device: torch.device) -> None:
    """Same tasks, same arithmetic: unfold vs cat windows, matmuls vs grouped convolutions, eager
    vs ``torch.compile``."""
    length = args.lengths[0] if args.lengths else synthetic_lengths(1, 1_000_000)[0]
    tasks = fold_tasks(simulate_cohort(args.samples, [length] * args.genes, seed=2))
    print(f"L={length}, {len(tasks)} tasks, {args.precision}")
    print("| variant | ms/task-epoch | first run (compiles) s |")
    print("|---|---|---|")
    unfold = stacked._conv_matmul
    variants = {
        "fused": ("fused", unfold, False),
        "matmul": ("matmul", unfold, False),
        "compiled": ("matmul", unfold, True),
        "cat-windows": ("matmul", cat_windows_conv, False),
        "grouped": ("grouped", unfold, False),
    }
    fixed_tiles = {"fused-fixed": ((128, 1, 4),)}
    chosen = args.variants or [*variants, *fixed_tiles]
    for label in chosen:
        kernels, conv, compiled = variants.get(label, variants["fused"])
        stacked._conv_matmul = conv
        tuned = _set_fused_configs(fixed_tiles.get(label))
        try:
            run = fast_run(tasks, args.precision, device, kernels=kernels, compiled=compiled)
            first = timed(lambda run=run: run(2), device)
            per_epoch, _ = steady(run, args.epochs, 2, device)
            print(f"| {label} | {1e3 * per_epoch / len(tasks):.3f} | {first:.1f} |", flush=True)
        except Exception as error:  # noqa: BLE001  (a variant failing is a result to print)
            print(f"| {label} | failed: {type(error).__name__}: {str(error)[:200]} | |")
        finally:
            stacked._conv_matmul = unfold
            _set_fused_configs(None, tuned)
    print_tuned()


def _set_fused_configs(row_configs, previous: dict | None = None) -> dict | None:
    """Give the fused row kernels only ``row_configs`` to choose from (None: leave them, or put
    ``previous`` back); returns the kernels replaced."""
    if not planning.fused_available() or (row_configs is None and previous is None):
        return None
    from dmg_ml.training import conv_kernels

    old = dict(conv_kernels._TUNED)
    conv_kernels._TUNED.update(previous or conv_kernels.tuned_kernels(row_configs))
    return old


def print_tuned() -> None:
    """The configurations ``triton.autotune`` chose in this process, per kernel and key."""
    if not planning.fused_available():
        return
    from dmg_ml.training import conv_kernels

    for name, kernel in conv_kernels._TUNED.items():
        for key, config in getattr(kernel, "cache", {}).items():
            print(f"tuned {name} {key[:3]}: {config}")


def stage_agree(args: argparse.Namespace, device: torch.device) -> None:
    """Both trainers cross-validate the same genes at the paper's 700/90: pooled honest R²."""
    lengths = args.lengths or synthetic_lengths(args.genes, 1_000_000)
    genes = simulate_cohort(args.samples, lengths, seed=3)
    config = TrainConfig(max_epochs=args.max_epochs, patience=args.patience)
    start = time.perf_counter()
    fast = cross_validate_cnn(genes, replace(config, precision=args.precision),
                              trainer="batched", device=device)  # fmt: skip
    print(
        f"max_epochs {config.max_epochs}, patience {config.patience}; fast trainer: all genes "
        f"in one call, {time.perf_counter() - start:.0f} s; then the reference, gene by gene"
    )
    print(
        "| gene | L | reference R² | fast R² | |ΔR²| | reference epochs | fast epochs | "
        "reference s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    delta = []
    for gene, f in zip(genes, fast, strict=True):
        start = time.perf_counter()
        (r,) = cross_validate_cnn([gene], config, trainer="reference", device=device)
        delta.append(abs(r.r2 - f.r2))
        print(f"| {gene.gene} | {gene.X.shape[1]} | {r.r2:.4f} | {f.r2:.4f} | {delta[-1]:.4f} | "
              f"{epochs_run(r)} | {epochs_run(f)} | {time.perf_counter() - start:.0f} |",
              flush=True)  # fmt: skip
    print(f"mean |ΔR²| {np.mean(delta):.4f}, max {np.max(delta):.4f} (budget: mean 0.01)")


def stage_warm(args: argparse.Namespace, device: torch.device) -> None:
    """Compile and tune every kernel the other stages use, once per machine (Triton caches both
    on disk): one epoch of ``--genes`` genes' folds at each length, per ``--kernels`` choice,
    and the same for a single task (the weight gradient is tuned per rows per program)."""
    lengths = args.lengths or synthetic_lengths(5, 1_000_000)
    for length in lengths:
        tasks = fold_tasks(simulate_cohort(args.samples, [length] * args.genes, seed=length))
        for kernels in args.kernels:
            for group in (tasks, tasks[:1], tasks[:5]):
                seconds = timed(
                    lambda group=group, kernels=kernels: fit_batched(
                        group, fixed(1, args.precision), device, kernels=kernels
                    ),
                    device,
                )  # fmt: skip
                print(f"L={length}, {kernels}, {len(group)} tasks: {seconds:.1f} s", flush=True)
    print_tuned()


def stage_check(args: argparse.Namespace, device: torch.device) -> None:
    """The fused kernels against the matmul path's autograd on this device, on windows of the
    length quantiles packed into one group: predictions and gradients in fp32 and bf16, as max
    |difference| against max |value| per parameter."""
    from dmg_ml.training import fused

    lengths = args.lengths or [int(x) for x in synthetic_lengths(3, 1_000_000)]
    n = 32
    models = [init_model(length, "adaptive", s) for s, length in enumerate(lengths)]
    layout = stacked.ParamLayout(max(lengths), "adaptive", align=stacked.FUSED_ALIGN)
    flat32 = torch.stack([layout.to_row(m.state_dict()) for m in models]).to(device)
    x32 = torch.zeros(len(lengths), n, max(lengths))
    for t, length in enumerate(lengths):
        x32[t, :, :length] = torch.randn(n, length)
    x32 = x32.to(device)
    own = torch.arange(max(lengths)) < torch.tensor(lengths).unsqueeze(1)
    positions32 = own.float().view(len(lengths), 1, -1, 1).to(device)
    y, weight = torch.randn(len(lengths), n, device=device), torch.full((len(lengths), n), 1 / n)
    weight = weight.to(device)
    print(f"lengths {lengths}, {n} samples")
    print("| dtype | what | max abs diff | max abs value | relative |")
    print("|---|---|---|---|---|")
    for dtype in (torch.bfloat16, torch.float32):
        flat, x, positions = flat32.to(dtype), x32.to(dtype), positions32.to(dtype)
        leaf = flat.clone().requires_grad_(True)
        u = stacked.unfold_input(x)
        loss = stacked.matmul_losses(layout, leaf, u, y, weight, positions, 1).sum()
        expected = torch.autograd.grad(loss, leaf)[0].float()
        grad = torch.zeros_like(flat32)
        fused.gradient(layout, flat, x, y, weight, grad, positions)
        pred = fused.forward(layout, flat, x, positions).float()
        ref = stacked.stacked_forward(layout, flat, u, "matmul", positions).float()
        wanted = layout.views(expected)
        rows = [("predictions", pred, ref)]
        rows += [(name, got, wanted[name]) for name, got in layout.views(grad).items()]
        for name, got, want in rows:
            diff, scale = float((got - want).abs().max()), float(want.abs().max())
            print(f"| {str(dtype)[6:]} | {name} | {diff:.3g} | {scale:.3g} | "
                  f"{diff / max(scale, 1e-30):.3g} |", flush=True)  # fmt: skip


def stage_cohort(args: argparse.Namespace, device: torch.device) -> None:
    """``evaluate`` of the CNN (what ``model_evaluation`` calls) at the default 700/90, everything
    timed, on genes as dense in window length as a chromosome partition's: of ``--genes``
    genes at the 1 Mb window's length quantiles (a partition of a 14,000-gene cohort holds
    ~700), ``--blocks`` runs of ``--block`` neighbours in length, spread over the quantiles."""
    lengths = synthetic_lengths(args.genes, 1_000_000)
    centres = ((2 * np.arange(args.blocks) + 1) * args.genes) // (2 * args.blocks)
    picked = [
        lengths[i]
        for c in centres
        for i in range(c - args.block // 2, c - args.block // 2 + args.block)
    ]
    genes = simulate_cohort(args.samples, picked, seed=4)
    config = TrainConfig(max_epochs=args.max_epochs, patience=args.patience,
                         precision=args.precision)  # fmt: skip
    print(f"{len(genes)} genes, lengths {picked}")
    done, epochs = [], 0
    start = last = time.perf_counter()

    def report(final: bool = False) -> None:
        seconds = time.perf_counter() - start
        rate = len(done) / seconds * 3600
        memory = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0
        print(f"{'done' if final else 'so far'}: {len(done)} genes in {seconds:.0f} s: "
              f"{rate:.0f} genes/h, {epochs / seconds:.0f} gene-fold-epochs/s, mean "
              f"{epochs / len(done) / 5:.0f} epochs per fold, mean R² "
              f"{np.mean([r.r2 for r in done]):.3f}, peak memory {memory:.1f} GiB; 14,000 genes "
              f"at this rate: {14_000 / rate:.1f} h", flush=True)  # fmt: skip

    def on_gene_done(result) -> None:
        nonlocal epochs, last
        done.append(result)
        epochs += epochs_run(result)
        if time.perf_counter() - last > 20:
            last = time.perf_counter()
            report()

    cross_validate_cnn(genes, config, device=device, on_gene_done=on_gene_done)
    sync(device)
    report(final=True)
    print_tuned()


STAGES = {
    "warm": stage_warm,
    "check": stage_check,
    "speed": stage_speed,
    "profile": stage_profile,
    "variants": stage_variants,
    "agree": stage_agree,
    "cohort": stage_cohort,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("stage", choices=list(STAGES))
    p.add_argument("--device", default="cuda")
    p.add_argument("--samples", type=int, default=873)
    p.add_argument("--genes", type=int, default=16, help="genes per length (speed, profile, "
                   "variants) or in all (agree, cohort)")  # fmt: skip
    p.add_argument("--lengths", type=int, nargs="*", default=None,
                   help="window lengths (default: the 1 Mb window's quantiles)")  # fmt: skip
    p.add_argument("--epochs", type=int, default=12, help="timed epochs of the fast trainer")
    p.add_argument("--ref-epochs", type=int, default=8, help="timed epochs of the reference")
    p.add_argument("--traffic-tasks", type=int, default=5)
    p.add_argument("--blocks", type=int, default=4, help="cohort: runs of neighbouring lengths")
    p.add_argument("--block", type=int, default=15, help="cohort: genes per run")
    p.add_argument("--max-epochs", type=int, default=700)
    p.add_argument("--patience", type=int, default=90)
    p.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    p.add_argument("--rows", type=int, default=18, help="kernels listed by profile")
    p.add_argument("--variants", nargs="*", default=None,
                   choices=["fused", "fused-fixed", "matmul", "compiled", "cat-windows",
                            "grouped"],
                   help="variants: fused (Triton, tuned), fused-fixed (one tile of 128 rows per "
                   "program, 4 warps: no tuning), matmul (unfold windows), compiled (matmul "
                   "through torch.compile), cat-windows, grouped (cuDNN grouped convolutions, "
                   "the old CUDA path); all by default")  # fmt: skip
    p.add_argument("--kernels", nargs="*", default=None, choices=list(stacked.KERNELS),
                   help="the fast trainer's kernels in speed (one row each), warm and profile "
                   "(the first); default: fused and matmul on CUDA, matmul on CPU")  # fmt: skip
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    if not args.kernels:
        fused = device.type == "cuda" and planning.fused_available()
        args.kernels = ["fused", "matmul"] if fused else ["matmul"]
    header(args, device)
    STAGES[args.stage](args, device)


if __name__ == "__main__":
    main()
