"""Per-task training state of the stacked trainer (``dmg_ml.training.batched``), kept in
``(T, P)`` buffers on the device: ``T`` independent Adams and ``T`` early stoppings.

Adam is elementwise, so one update over the whole buffer is exactly ``T`` Adams; tasks at
different steps, or paused, take a masked update. Early stopping books every task's validation
loss without host syncs; the trainer looks at ``active`` when it chooses to.
"""

from __future__ import annotations

import math

import numpy as np
import torch

BETA1, BETA2, EPS = 0.9, 0.999, 1e-8


class BatchedAdam:
    """``T`` independent Adams (torch's defaults, lr from the config) over a ``(T, P)`` buffer.

    Works in place with one scratch buffer: on CPU a fresh tensor of this size costs more in page
    faults than the arithmetic on it.
    """

    def __init__(self, flat: torch.Tensor, lr: float) -> None:
        self.lr = lr
        self.m = torch.zeros_like(flat)
        self.v = torch.zeros_like(flat)
        self.scratch = torch.empty_like(flat)
        self.steps = np.zeros(flat.shape[0], dtype=np.int64)
        self.step_tensor = torch.zeros((), device=flat.device)
        self.fused = hasattr(torch, "_fused_adam_")

    def step(
        self,
        flat: torch.Tensor,
        grad: torch.Tensor,
        batch_active: np.ndarray | None = None,
        running: torch.Tensor | None = None,
    ) -> None:
        """One update of every task that has a batch (``batch_active``, host mask, None = all)
        and has not stopped (``running``, device mask, None = all); the others stay as they are
        (their gradient must be zero)."""
        active = np.ones(len(self.steps), dtype=bool) if batch_active is None else batch_active
        self.steps += active
        if active.all() and running is None and (self.steps == self.steps[0]).all():
            self._uniform_step(flat, grad, int(self.steps[0]))
        else:
            self._masked_step(flat, grad, active, running)

    def _uniform_step(self, flat: torch.Tensor, grad: torch.Tensor, step: int) -> None:
        """All tasks at the same step: torch's fused Adam kernel (what ``torch.optim.Adam(...,
        fused=True)`` runs: one pass over the buffers) where this torch has one for the device,
        else the single-tensor update op for op."""
        if self.fused:
            self.step_tensor.fill_(step)
            try:
                torch._fused_adam_(
                    [flat], [grad], [self.m], [self.v], [], [self.step_tensor],
                    lr=self.lr, beta1=BETA1, beta2=BETA2, weight_decay=0.0, eps=EPS,
                    amsgrad=False, maximize=False,
                )  # fmt: skip
                return
            except (NotImplementedError, RuntimeError):  # older torch: no CPU kernel
                self.fused = False
        self.m.lerp_(grad, 1 - BETA1)
        self.v.mul_(BETA2).addcmul_(grad, grad, value=1 - BETA2)
        step_size = self.lr / (1 - BETA1**step)
        denom = torch.sqrt(self.v, out=self.scratch).div_((1 - BETA2**step) ** 0.5).add_(EPS)
        flat.addcdiv_(self.m, denom, value=-step_size)

    def _masked_step(
        self,
        flat: torch.Tensor,
        grad: torch.Tensor,
        active: np.ndarray,
        running: torch.Tensor | None,
    ) -> None:
        steps = np.maximum(self.steps, 1).astype(np.float64)

        def column(values: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(values, dtype=flat.dtype).to(flat.device).unsqueeze(1)

        on = column(active.astype(np.float64))
        if running is not None:
            on = on * running.unsqueeze(1)
        self.m.lerp_(grad, on * (1 - BETA1))
        v_decay = torch.where(on > 0, BETA2, 1.0).to(flat.dtype)
        self.v.mul_(v_decay).addcmul_(grad, grad, value=1 - BETA2)
        update = torch.sqrt(self.v, out=self.scratch)
        update.div_(column(np.sqrt(1 - BETA2**steps))).add_(EPS)
        torch.div(self.m, update, out=update)
        flat.sub_(update.mul_(on * column(self.lr / (1 - BETA1**steps))))

    def select(self, keep: torch.Tensor) -> None:
        self.m, self.v, self.scratch = self.m[keep], self.v[keep], self.scratch[keep]
        self.steps = self.steps[keep.cpu().numpy()]


class EarlyStopping:
    """Per-task best loss, patience counter and best weights, kept on the device."""

    def __init__(self, flat: torch.Tensor, patience: int) -> None:
        tasks, device = flat.shape[0], flat.device
        self.patience = patience
        self.best_loss = torch.full((tasks,), math.inf, device=device)
        self.best_epoch = torch.zeros(tasks, dtype=torch.long, device=device)
        self.epochs_run = torch.zeros(tasks, dtype=torch.long, device=device)
        self.wait = torch.zeros(tasks, dtype=torch.long, device=device)
        self.active = torch.ones(tasks, dtype=torch.bool, device=device)
        self.best = flat.clone()

    def update(self, epoch: int, loss: torch.Tensor, flat: torch.Tensor, sync: bool) -> None:
        """Book epoch ``epoch``'s validation losses; ``sync`` allows host-side row copies."""
        improved = (loss < self.best_loss) & self.active
        self.best_loss = torch.where(improved, loss, self.best_loss)
        self.best_epoch = torch.where(improved, epoch, self.best_epoch)
        self.wait = torch.where(improved, 0, self.wait + self.active.long())
        self.epochs_run = torch.where(self.active, epoch, self.epochs_run)
        if sync:
            for row in improved.nonzero().flatten().tolist():
                self.best[row].copy_(flat[row])
        else:
            torch.where(improved.unsqueeze(1), flat, self.best, out=self.best)
        self.active = self.active & (self.wait < self.patience)

    def select(self, keep: torch.Tensor) -> None:
        for name in ("best_loss", "best_epoch", "epochs_run", "wait", "active", "best"):
            setattr(self, name, getattr(self, name)[keep])
