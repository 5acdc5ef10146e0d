"""The fast trainer: many (gene, fold) tasks trained as one stacked model
(``dmg_ml.training.stacked``: its parameter layout and forward passes; ``optim``: its Adams and
early stoppings; ``planning``: which tasks train together, on which kernels).

Same learning semantics as the reference trainer (``dmg_ml.training.reference``; read its
docstring): same initial weights per task seed, same Adam, same loss, same early stopping and
best-weight restore, same mini-batch order. Only the floating-point order of the arithmetic
differs, plus bfloat16 where ``precision="bf16"`` asks for it.

Design, and why (figures measured on the project's 2-core AVX512-BF16 CPU):

* **Stacked weights in flat buffers.** The ``T`` tasks' parameters live in one ``(T, P)`` fp32
  tensor, with their gradients, Adam moments and best weights in buffers of the same shape that
  are updated in place (a fresh tensor of that size costs more in page faults than the
  arithmetic on it). Adam is one fused kernel over the whole buffer (``torch._fused_adam_``, what
  ``torch.optim.Adam(fused=True)`` runs) when all tasks are at the same step; since Adam is
  elementwise that is exactly ``T`` independent Adams. Per-task step counts and an ``active`` mask
  (a short fold in a mini-batch epoch, a stopped task) use a few unfused whole-buffer ops.
  Parameters reach autograd as views of the buffer (no copies), and a finished task is one row.
* **Convolutions as channels-last conv2d.** oneDNN's NHWC convolutions run 3-5x faster than its
  NCL ``conv1d`` (what the reference uses) for these channel counts, in fp32 and bf16. The first
  convolution has one input channel, so it is a matmul on ``(x[l-1], x[l], x[l+1])`` windows built
  once per data set; its output is already NHWC. ``fc1``'s weight is stored permuted to the
  channels-last flatten order, which Adam cannot tell apart from the reference's.
* **Two ways to run the stack, same arithmetic.** *Grouped*: task ``t`` owns channels
  ``[t·c, (t+1)·c)`` of one grouped convolution per layer and the dense layers are ``baddbmm``
  over tasks, so Python and dispatch overhead per epoch do not grow with ``T``: this is what short
  windows need on CPU (~1 ms per fold-epoch at L=40, ~3x the reference) and what a GPU needs to
  train many genes of equal ``L`` at once. *Looped*: one task after another through the same
  kernels; on CPU, once a task has ~0.3 M activations per channel layer, oneDNN's grouped kernels
  are slower than its plain ones and the loop wins. ``fit_batched`` picks by size; the results
  agree to rounding.
* **bfloat16.** ``precision="bf16"`` casts the weights (one copy of the flat buffer per update)
  and the inputs to bfloat16 for the network and keeps master weights, gradients, Adam state and
  losses in fp32, as autocast does. Measured with ``benchmarks/trainer_speed.py`` on the
  project's 2-core AVX512-BF16 CPU, both trainers in one process with freed memory kept for reuse:
  2.75x the fp32 reference per gene-fold-epoch on the default window's lengths (L 204-1120,
  per gene 2.5-3.1x), 2.67x on short windows (L 31-319) with early stopping, where the mean
  |ΔR²| of pooled honest R² per gene is 0.0028 (max 0.0064), inside the 0.01 budget. At large L
  the reference's fp32 kernels run near this CPU's fp32 peak (~190 GFLOP/s at L=723) and the fast
  trainer at about half its bf16 matmul peak (~930), so ~4.5x is the ceiling here.
* **On a GPU: fused Triton kernels and packing** (``kernels="fused"``, the CUDA default where
  Triton is installed, as it is with CUDA builds of PyTorch). Each convolution of the trunk is
  one kernel forward and one backward (``dmg_ml.training.fused``, ``conv_kernels``): shifted rows
  read in place, bias, mask, residual and LeakyReLU in the epilogue, the backward written out by
  hand, weight gradients in fp32; tile sizes tuned per machine by ``triton.autotune``. Tasks of
  nearby window lengths share a group (``planning.task_groups``, 10 % slack on CUDA): shorter
  windows are zero-padded and masked after every convolution, narrower channels padded,
  widths and offsets aligned (``kernel_align``); padding gets exactly zero gradient. Measured on
  an H200 (issue 10's note): 35x the reference loop per gene-fold-epoch at L=215, where batched
  matmuls on windows (``kernels="matmul"``, the fallback without Triton) gave 7x; on an H100,
  19.7x at L=215 falling to 6.3x at 647, where the fp32 reference is compute-bound (16 TFLOP/s).
* **Padding and masks.** Folds of unequal size are zero-padded to the largest; each task's loss
  is a weighted sum with weight ``1/n_t`` on its real rows and 0 on padding, so its gradient is its
  own mean-squared-error gradient.
* **Early stopping on the device.** Best loss, patience counter and best epoch are tensors updated
  without host syncs; the host looks every ``check_every`` epochs (1 on CPU, where a sync is free
  and a stopped task leaves the batch at once; 10 on CUDA). A task that stops between looks keeps
  its counters and best weights (the ``active`` mask) and leaves the batch at the next look, so
  its compute is no longer paid for. Its live weights are frozen too only where they are the
  result (``restore_best_weights=False``); otherwise they may drift until it leaves, which keeps
  the update one fused Adam kernel.

It stays one module (over 400 lines): the flat buffers, the masked update and the early-stopping
state are one training loop's shared state, read and written in each epoch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from dmg_ml.models.cnn import model_from_state
from dmg_ml.training.optim import BatchedAdam, EarlyStopping
from dmg_ml.training.planning import FitTask, gpu_memory_budget, plan, task_groups
from dmg_ml.training.reference import TrainConfig, TrainResult
from dmg_ml.training.stacked import (
    Kernels,
    ParamLayout,
    compiled_matmul_losses,
    forward_grouped,
    forward_single,
    kernel_align,
    matmul_losses,
    round_up,
    sample_chunks,
    task_losses,
    unfold_input,
)


class _StackedData:
    """Zero-padded ``(T, N_max, L)`` arrays of one split, with per-row loss weights ``1/n_t``;
    windows shorter than ``length`` are zero-padded on the right, and ``N_max`` is rounded up to
    a multiple of ``align`` (padding rows weigh 0)."""

    def __init__(
        self,
        xs: list[np.ndarray],
        ys: list[np.ndarray],
        length: int,
        align: int,
        device: torch.device,
    ) -> None:
        self.counts = np.array([len(y) for y in ys])
        n_max = round_up(int(self.counts.max()), align)
        x = np.zeros((len(xs), n_max, length), dtype=np.float32)
        y = np.zeros((len(xs), n_max), dtype=np.float32)
        weight = np.zeros((len(xs), n_max), dtype=np.float32)
        for t, (xt, yt) in enumerate(zip(xs, ys, strict=True)):
            x[t, : len(yt), : xt.shape[1]] = xt
            y[t, : len(yt)], weight[t, : len(yt)] = yt, 1.0 / len(yt)
        self.x = torch.from_numpy(x).to(device)
        self.y = torch.from_numpy(y).to(device)
        self.weight = torch.from_numpy(weight).to(device)
        self._prepared: dict[torch.dtype, torch.Tensor] = {}

    def network_input(self, dtype: torch.dtype, kernels: Kernels) -> torch.Tensor:
        """All rows in the network's input layout and dtype (built once)."""
        if dtype not in self._prepared:
            self._prepared[dtype] = network_input(self.x, dtype, kernels)
        return self._prepared[dtype]

    def select(self, keep: torch.Tensor) -> None:
        self.counts = self.counts[keep.cpu().numpy()]
        self.x, self.y, self.weight = self.x[keep], self.y[keep], self.weight[keep]
        self._prepared = {}


def network_input(x: torch.Tensor, dtype: torch.dtype, kernels: Kernels) -> torch.Tensor:
    """Rows ``(T, N, L)`` as the kernels read them: the rows themselves for the fused kernels,
    else their ``unfold_input`` windows."""
    x = x.to(dtype)
    return x.contiguous() if kernels == "fused" else unfold_input(x)


def _fused():
    from dmg_ml.training import fused  # imports Triton: only where the fused kernels run

    return fused


class _Group:
    """The live state of one batch of tasks trained as one stacked model.

    ``flat`` (fp32 master weights, from ``rows``: default ``initial_rows``), ``grad`` and the Adam
    state are ``(T, P)`` buffers updated in place; ``compute`` is ``flat`` itself in fp32, or its
    bfloat16 copy refreshed when stale. Windows shorter than the longest are packed with
    ``positions`` masks (matmul and fused kernels only).
    """

    def __init__(
        self,
        tasks: Sequence[FitTask],
        ids: list[int],
        config: TrainConfig,
        device: torch.device,
        check_every: int,
        kernels: Kernels | None = None,
        compiled: bool = False,
        rows: torch.Tensor | None = None,
    ) -> None:
        self.kernels, self.layout = plan(tasks, config, device, kernels)
        self.lengths = np.array([t.X_train.shape[1] for t in tasks])
        length = self.layout.input_size
        packed = bool((self.lengths < length).any())
        align = kernel_align(self.kernels)
        self.config, self.check_every, self.ids = config, check_every, list(ids)
        self.dtype = torch.bfloat16 if config.precision == "bf16" else torch.float32
        if rows is None:
            rows = initial_rows(self.layout, tasks)
        self.flat = rows.to(device)
        self.grad = torch.zeros_like(self.flat)
        self.compute = self.flat if self.dtype == torch.float32 else self.flat.to(self.dtype)
        self.train = _StackedData(
            [t.X_train for t in tasks], [t.y_train for t in tasks], length, align, device
        )
        self.valid = _StackedData(
            [t.X_valid for t in tasks], [t.y_valid for t in tasks], length, align, device
        )
        self.generators = [torch.Generator().manual_seed(t.seed) for t in tasks]
        self.adam = BatchedAdam(self.flat, config.lr)
        self.stopping = EarlyStopping(self.flat, config.patience)
        self.positions = None
        if packed:
            own = torch.arange(length) < torch.as_tensor(self.lengths).unsqueeze(1)
            self.positions = own.to(device, self.dtype).view(len(tasks), 1, length, 1)
        self.losses_fn = compiled_matmul_losses() if compiled else matmul_losses

    def running(self) -> torch.Tensor | None:
        """Device mask of the tasks still running, or None where stopped tasks may go on
        updating: when the host removes them at once (``check_every`` 1) or when their result is
        the best epoch's weights, saved apart (the update then stays one fused Adam kernel)."""
        if self.check_every == 1 or self.config.restore_best_weights:
            return None
        return self.stopping.active

    def refresh(self) -> None:
        """Bring the compute copy of the weights up to date after an update."""
        if self.compute is not self.flat:
            self.compute.copy_(self.flat)

    def gradient(self, u: torch.Tensor, y: torch.Tensor, weight: torch.Tensor) -> None:
        """Gradient of every task's weighted squared error, written into ``grad``."""
        if self.kernels == "fused":
            _fused().gradient(self.layout, self.compute, u, y, weight, self.grad, self.positions)
            return
        if self.kernels == "matmul":
            leaf = self.compute.detach().requires_grad_(True)
            loss = self._losses_matmul(leaf, u, y, weight).sum()
            self.grad.copy_(torch.autograd.grad(loss, leaf)[0])
            return
        if self.kernels == "grouped":
            leaves = _leaves(self.layout, self.compute)
            pred = forward_grouped(self.layout, leaves, u)
            loss = task_losses(pred, y, weight).sum()
            _store(torch.autograd.grad(loss, list(leaves.values())), self.grad, self.layout)
            return
        for t in range(len(self.ids)):
            leaves = _leaves(self.layout, self.compute[t])
            pred = forward_single(self.layout, leaves, u[t])
            loss = task_losses(pred, y[t], weight[t])
            _store(torch.autograd.grad(loss, list(leaves.values())), self.grad[t], self.layout)

    def losses(self, u: torch.Tensor, y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Per-task weighted squared error ``(T,)``, without gradients."""
        if self.kernels == "fused":
            return _fused().losses(self.layout, self.compute, u, y, weight, self.positions)
        if self.kernels == "matmul":
            return self._losses_matmul(self.compute, u, y, weight)
        if self.kernels == "looped":
            rows = [self.layout.views(row) for row in self.compute]
            pred = torch.stack([forward_single(self.layout, p, u[t]) for t, p in enumerate(rows)])
        else:
            pred = forward_grouped(self.layout, self.layout.views(self.compute), u)
        return task_losses(pred, y, weight)

    def _losses_matmul(
        self, flat: torch.Tensor, u: torch.Tensor, y: torch.Tensor, weight: torch.Tensor
    ) -> torch.Tensor:
        chunks = sample_chunks(u.shape[1], u.shape[2])
        return self.losses_fn(self.layout, flat, u, y, weight, self.positions, chunks)

    def select(self, keep: torch.Tensor) -> None:
        kept = keep.cpu().numpy()
        self.ids = [self.ids[i] for i in kept]
        self.lengths = self.lengths[kept]
        self.generators = [self.generators[i] for i in kept]
        self.flat, self.grad = self.flat[keep], self.grad[keep]
        self.compute = self.flat if self.dtype == torch.float32 else self.flat.to(self.dtype)
        if self.positions is not None:
            self.positions = self.positions[keep]
        for part in (self.train, self.valid, self.adam, self.stopping):
            part.select(keep)


def initial_rows(
    layout: ParamLayout, tasks: Sequence[FitTask], workers: int | None = None
) -> torch.Tensor:
    """The tasks' starting rows ``(T, P)`` on the host: each ``init_state`` where given, else
    drawn from the task's seed (``ParamLayout.initial_row``, the weights ``init_model`` gives),
    ``workers`` tasks at a time (default: torch's CPU threads), each with its own generator."""
    rows = torch.zeros(len(tasks), layout.size)

    def fill(t: int) -> None:
        task = tasks[t]
        if task.init_state is None:
            layout.initial_row(task.X_train.shape[1], task.seed, out=rows[t])
        else:
            rows[t] = layout.to_row(task.init_state)

    workers = min(len(tasks), workers or torch.get_num_threads())
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(fill, range(len(tasks))))
    else:
        for t in range(len(tasks)):
            fill(t)
    return rows


def _leaves(layout: ParamLayout, compute: torch.Tensor) -> dict[str, torch.Tensor]:
    """Parameter views of ``compute`` as autograd leaves (no copy)."""
    return {k: v.detach().requires_grad_(True) for k, v in layout.views(compute).items()}


def _store(grads: Sequence[torch.Tensor], out: torch.Tensor, layout: ParamLayout) -> None:
    for target, g in zip(layout.views(out).values(), grads, strict=True):
        target.copy_(g)


def _masked_weight(group: _Group, weight: torch.Tensor) -> torch.Tensor:
    """Loss weights with stopped (not yet removed) tasks zeroed, so their gradient is zero."""
    running = group.running()
    return weight if running is None else weight * running.unsqueeze(1)


def _update(group: _Group, batch_active: np.ndarray | None = None) -> None:
    group.adam.step(group.flat, group.grad, batch_active, group.running())
    group.refresh()


@torch.no_grad()
def _train_epoch(group: _Group) -> None:
    train, batch_size = group.train, group.config.batch_size
    if batch_size is None or batch_size >= int(train.counts.max()):
        u = train.network_input(group.dtype, group.kernels)
        with torch.enable_grad():
            group.gradient(u, train.y, _masked_weight(group, train.weight))
        _update(group)
        return
    for rows, weight, active in _minibatch_plan(group, batch_size):
        index = rows.unsqueeze(2).expand(-1, -1, train.x.shape[2])
        u = network_input(torch.gather(train.x, 1, index), group.dtype, group.kernels)
        with torch.enable_grad():
            group.gradient(u, torch.gather(train.y, 1, rows), _masked_weight(group, weight))
        _update(group, active)


def _minibatch_plan(group: _Group, batch_size: int):
    """Per step: padded row indices ``(T, B)``, loss weights ``(T, B)``, tasks with a batch."""
    counts, device = group.train.counts, group.flat.device
    orders = []
    for n, generator in zip(counts.tolist(), group.generators, strict=True):
        full = batch_size >= n
        orders.append(torch.arange(n) if full else torch.randperm(n, generator=generator))
    for step in range(max(math.ceil(n / batch_size) for n in counts.tolist())):
        rows = torch.zeros((len(counts), batch_size), dtype=torch.long)
        weight = torch.zeros((len(counts), batch_size))
        active = np.zeros(len(counts), dtype=bool)
        for t, order in enumerate(orders):
            part = order[step * batch_size : (step + 1) * batch_size]
            if len(part):
                rows[t, : len(part)], weight[t, : len(part)], active[t] = part, 1 / len(part), True
        yield rows.to(device), weight.to(device), active


def _collect(group: _Group, done: torch.Tensor, out: dict[int, TrainResult]) -> None:
    stopping, layout = group.stopping, group.layout
    weights = stopping.best if group.config.restore_best_weights else group.flat
    for i in done.cpu().tolist():
        length = int(group.lengths[i])
        model = model_from_state(layout.to_state(weights[i], length), length, layout.channels)
        out[group.ids[i]] = TrainResult(
            model.eval(),
            epochs_run=int(stopping.epochs_run[i]),
            best_epoch=int(stopping.best_epoch[i]),
            best_valid_loss=float(stopping.best_loss[i]),
        )


@torch.no_grad()
def _run_group(group: _Group, out: dict[int, TrainResult]) -> None:
    max_epochs = group.config.max_epochs
    for epoch in range(1, max_epochs + 1):
        _train_epoch(group)
        valid = group.valid
        loss = group.losses(valid.network_input(group.dtype, group.kernels), valid.y, valid.weight)
        group.stopping.update(epoch, loss, group.flat, sync=group.check_every == 1)
        if epoch % group.check_every and epoch < max_epochs:
            continue
        active = group.stopping.active
        if epoch == max_epochs:
            active = torch.zeros_like(active)
        if not bool(active.all()):
            _collect(group, (~active).nonzero().squeeze(1), out)
            if not bool(active.any()):
                return
            group.select(active.nonzero().squeeze(1))


def fit_batched(
    tasks: Sequence[FitTask],
    config: TrainConfig,
    device: str | torch.device = "cpu",
    max_tasks: int | None = None,
    check_every: int | None = None,
    kernels: Kernels | None = None,
    length_slack: float | None = None,
    memory_budget: int | None = None,
    compiled: bool = False,
    prefetch: bool | None = None,
) -> list[TrainResult]:
    """Train every task and return one ``TrainResult`` per task, in order.

    Tasks are trained in groups, each one stacked model. A group holds tasks whose window
    lengths are within ``length_slack`` of its shortest (default 0 on CPU: equal lengths only;
    10 % on CUDA, where shorter windows are zero-padded and masked, so a cohort's thousands of
    distinct lengths fill the GPU), at most ``max_tasks`` of them and at most ``memory_budget``
    bytes by ``task_bytes`` (default: 40 % of the free memory on CUDA, unbounded on CPU).
    ``check_every`` is how often (in epochs) the host looks at early stopping (default 1 on CPU,
    10 on CUDA); ``kernels`` forces a way to run the stack (default: by device and size, see
    ``planning.choose_kernels``); ``compiled`` runs the matmul kernels through ``torch.compile``;
    ``prefetch`` draws the next group's initial weights on the host while a group trains
    (default: on CUDA, where the GPU would otherwise wait for them). None of these changes the
    results beyond floating-point rounding.
    """
    device = torch.device(device)
    cuda = device.type == "cuda"
    check_every = check_every or (10 if cuda else 1)
    slack = (0.1 if cuda else 0.0) if length_slack is None else length_slack
    if memory_budget is None and cuda:
        memory_budget = gpu_memory_budget(device)
    prefetch = cuda if prefetch is None else prefetch
    groups = task_groups(tasks, config.channels, slack, max_tasks, memory_budget)

    def host_rows(chunk: list[int]) -> torch.Tensor:
        chosen = [tasks[i] for i in chunk]
        return initial_rows(plan(chosen, config, device, kernels)[1], chosen)

    out: dict[int, TrainResult] = {}
    rows = None  # the group's initial weights, when drawn while the one before trained
    with ThreadPoolExecutor(1) as ahead:
        for i, chunk in enumerate(groups):
            following = groups[i + 1] if prefetch and i + 1 < len(groups) else None
            upcoming = None if following is None else ahead.submit(host_rows, following)
            chosen = [tasks[j] for j in chunk]
            _run_group(_Group(chosen, chunk, config, device, check_every, kernels, compiled, rows),
                       out)  # fmt: skip
            rows = None if upcoming is None else upcoming.result()
    return [out[i] for i in range(len(tasks))]


