"""The fused Triton trunk (``kernels="fused"``, the CUDA default), checked on CPU under Triton's
interpreter against the module and the matmul path's autograd."""

import numpy as np
import pytest
import torch

pytest.importorskip("triton")

from dmg_ml.data.splits import task_seed  # noqa: E402
from dmg_ml.models.cnn import predict  # noqa: E402
from dmg_ml.training import conv_kernels, fused, planning  # noqa: E402
from dmg_ml.training.batched import FitTask, fit_batched  # noqa: E402
from dmg_ml.training.planning import choose_kernels  # noqa: E402
from dmg_ml.training.reference import TrainConfig, init_model  # noqa: E402
from dmg_ml.training.stacked import ParamLayout, matmul_losses, unfold_input  # noqa: E402

#: Channel widths (4, 2), (3, 1), (2, 1): stored as 8, padded to blocks of 16 in the kernels;
#: positions padded to the longest window.
PACKED = (44, 37, 29)


def packed_rows(seed: int = 0, n: int = 6) -> tuple[ParamLayout, torch.Tensor, torch.Tensor,
                                                    torch.Tensor, list]:  # fmt: skip
    models = [init_model(length, "adaptive", seed + s) for s, length in enumerate(PACKED)]
    layout = ParamLayout(max(PACKED), "adaptive", align=8)
    flat = torch.stack([layout.to_row(m.state_dict()) for m in models])
    generator = torch.Generator().manual_seed(seed)
    x = torch.zeros(len(PACKED), n, max(PACKED))
    for t, length in enumerate(PACKED):
        x[t, :, :length] = torch.randn(n, length, generator=generator)
    own = torch.arange(max(PACKED)) < torch.tensor(PACKED).unsqueeze(1)
    return layout, flat, x, own.float().view(len(PACKED), 1, -1, 1), models


def test_fused_forward_equals_each_module_alone() -> None:
    layout, flat, x, positions, models = packed_rows()
    expected = torch.stack([m(x[t, :, : PACKED[t]]) for t, m in enumerate(models)]).detach()
    got = fused.forward(layout, flat, x, positions)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got[0], got[1])


@pytest.mark.parametrize("tiles", [(1024, 1), (16, 2)], ids=["one-tile", "tiles-in-a-loop"])
def test_fused_gradient_equals_autograd_of_the_matmul_path_and_spares_the_padding(
    tiles, monkeypatch
) -> None:
    """Also with programs that loop over several small tiles, each summing its slice of the rows
    into a weight-gradient partial of its own (as on a GPU)."""
    monkeypatch.setattr(conv_kernels, "INTERPRETER_TILES", tiles)
    layout, flat, x, positions, _ = packed_rows(seed=3, n=6 if tiles[1] == 1 else 3)
    y = torch.randn(x.shape[:2])
    weight = torch.full(x.shape[:2], 1 / x.shape[1])
    weight[2, -2:] = 0  # a shorter fold's padding rows
    leaf = flat.clone().requires_grad_(True)
    loss = matmul_losses(layout, leaf, unfold_input(x), y, weight, positions, 1).sum()
    expected = torch.autograd.grad(loss, leaf)[0]
    grad = torch.zeros_like(flat)
    for part in layout.views(grad).values():
        part.fill_(float("nan"))  # every parameter's gradient must be written
    fused.gradient(layout, flat, x, y, weight, grad, positions)
    torch.testing.assert_close(grad, expected, atol=1e-6, rtol=1e-5)
    for name, part in layout.views(grad).items():
        assert part.abs().sum() > 0, name
    for t, length in enumerate(PACKED):
        own = layout.to_row(layout.to_state(grad[t], length))
        assert torch.count_nonzero(grad[t] - own) == 0  # padding: exactly zero gradient
    torch.testing.assert_close(
        fused.losses(layout, flat, x, y, weight, positions),
        matmul_losses(layout, flat, unfold_input(x), y, weight, positions, 1),
    )


def test_fused_training_follows_the_matmul_path() -> None:
    """Packed tasks, full batch and mini-batches: the same epochs and predictions to rounding."""
    rng = np.random.default_rng(0)
    tasks = []
    for t, length in enumerate(PACKED):
        x = rng.normal(size=(14, length)).astype(np.float32)
        y = (x[:, :5].sum(axis=1) + rng.normal(0, 0.3, 14)).astype(np.float32)
        tasks.append(FitTask(x[:10], y[:10], x[10:], y[10:], seed=task_seed(0, t)))
    x_test = rng.normal(size=(5, max(PACKED))).astype(np.float32)
    for batch_size in (None, 6):
        config = TrainConfig(max_epochs=4, patience=2, batch_size=batch_size)
        runs = {
            kernels: fit_batched(tasks, config, length_slack=0.6, kernels=kernels)
            for kernels in ("matmul", "fused")
        }
        for a, b, length in zip(runs["matmul"], runs["fused"], PACKED, strict=True):
            assert (a.epochs_run, a.best_epoch) == (b.epochs_run, b.best_epoch)
            np.testing.assert_allclose(
                predict(a.model, x_test[:, :length]), predict(b.model, x_test[:, :length]),
                atol=1e-4,
            )  # fmt: skip


def test_cuda_defaults_to_the_fused_kernels_where_triton_is_there(monkeypatch) -> None:
    cuda = torch.device("cuda")
    assert choose_kernels(300, 30, 700, cuda, None, packed=True) == "fused"
    monkeypatch.setattr(planning, "fused_available", lambda: False)
    assert choose_kernels(300, 30, 700, cuda, None, packed=True) == "matmul"
    assert choose_kernels(30, 3, 40, torch.device("cpu"), None, packed=False) == "grouped"
    with pytest.raises(ValueError, match="packed only"):
        choose_kernels(30, 3, 40, torch.device("cpu"), "grouped", packed=True)
