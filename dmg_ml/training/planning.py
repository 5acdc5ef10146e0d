"""Which (gene, fold) tasks the fast trainer (``dmg_ml.training.batched``) trains together, and
how: groups of nearby window lengths within a memory budget (``task_groups``), and each group's
kernels and parameter layout (``plan``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from dmg_ml.models.cnn import channel_widths, parameter_count
from dmg_ml.training.reference import TrainConfig
from dmg_ml.training.stacked import KERNELS, Kernels, ParamLayout, check_packing, kernel_align

#: Activations (samples × positions × first channels) from which, on CPU, one task alone keeps
#: the cores busy, so tasks run one by one (``looped``) rather than as grouped convolutions.
LOOP_MIN_ACTIVATIONS = 300_000


@dataclass
class FitTask:
    """One model to train: its data, its seed and optionally the weights to start from."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_valid: np.ndarray
    y_valid: np.ndarray
    seed: int
    init_state: dict[str, torch.Tensor] | None = None


def gpu_memory_budget(device: torch.device) -> int:
    """Bytes of GPU memory one batch of tasks may plan for: 40 % of what is free (cuBLAS
    workspaces, the allocator's fragmentation and the transient buffers of backward take the
    rest)."""
    return int(0.4 * torch.cuda.mem_get_info(device)[0])


def task_bytes(n_samples: int, length: int, channels: str) -> int:
    """Rough peak memory of one task in training: activations kept for backward + weights."""
    c1, c2 = channel_widths(length, channels)
    return 4 * n_samples * length * 8 * (c1 + c2) + 24 * parameter_count(length, channels)


def task_groups(
    tasks: Sequence[FitTask],
    channels: str,
    length_slack: float = 0.0,
    max_tasks: int | None = None,
    memory_budget: int | None = None,
) -> list[list[int]]:
    """Indices of the tasks trained together: by window length, each group's longest at most
    ``1 + length_slack`` times its shortest, split to ``max_tasks`` tasks and ``memory_budget``
    bytes (``task_bytes`` at the group's longest window; a task alone may exceed it)."""
    order = sorted(range(len(tasks)), key=lambda i: (tasks[i].X_train.shape[1], i))
    groups: list[list[int]] = []
    current: list[int] = []
    shortest = 0
    for i in order:
        length = tasks[i].X_train.shape[1]
        n = len(tasks[i].y_train)
        size = task_bytes(n, length, channels)
        full = (max_tasks is not None and len(current) >= max_tasks) or (
            memory_budget is not None and (len(current) + 1) * size > memory_budget
        )
        if not current or length > shortest * (1 + length_slack) or full:
            if current:
                groups.append(current)
            current, shortest = [], length
        current.append(i)
    if current:
        groups.append(current)
    return groups


def fused_available() -> bool:
    """Whether the fused kernels can run here (they need Triton, which CUDA builds of PyTorch
    bring)."""
    return importlib.util.find_spec("triton") is not None


def plan(
    tasks: Sequence[FitTask], config: TrainConfig, device: torch.device, kernels: Kernels | None
) -> tuple[Kernels, ParamLayout]:
    """The kernels a group of ``tasks`` runs on and its parameter layout."""
    lengths = [t.X_train.shape[1] for t in tasks]
    length = max(lengths)
    n = max(len(t.y_train) for t in tasks)
    c1, _ = channel_widths(length, config.channels)
    chosen = choose_kernels(length, c1, n, device, kernels, min(lengths) < length)
    return chosen, ParamLayout(length, config.channels, kernel_align(chosen))


def choose_kernels(
    length: int, c1: int, n: int, device: torch.device, kernels: Kernels | None, packed: bool
) -> Kernels:
    """On CUDA, the fused kernels where Triton is there, else batched matmuls (also for packed
    windows on CPU); on CPU, oneDNN's grouped convolutions, or tasks one by one once each is big
    enough to keep the CPU busy on its own."""
    if kernels is not None:
        if kernels not in KERNELS:
            raise ValueError(f"kernels must be one of {KERNELS}, got {kernels!r}")
        if packed:
            check_packing(kernels)
        return kernels
    if device.type == "cuda" and fused_available():
        return "fused"
    if packed or device.type != "cpu":
        return "matmul"
    return "looped" if n * length * c1 >= LOOP_MIN_ACTIVATIONS else "grouped"


def gene_batches(
    shapes: Sequence[tuple[int, int]], models_per_gene: int, channels: str, device: torch.device
) -> list[list[int]]:
    """Genes trained together, given each gene's (samples, window length): one at a time on CPU;
    on CUDA, genes in order of window length, as many as fit ``gpu_memory_budget``
    (``fit_batched`` then splits their tasks into ``task_groups``, nearby lengths packed into one
    model)."""
    if device.type != "cuda":
        return [[i] for i in range(len(shapes))]
    budget = gpu_memory_budget(device)
    batches: list[list[int]] = []
    used = 0
    for i in sorted(range(len(shapes)), key=lambda i: (shapes[i][1], i)):
        size = models_per_gene * task_bytes(*shapes[i], channels)
        if not batches or used + size > budget:
            batches.append([])
            used = 0
        batches[-1].append(i)
        used += size
    return batches
