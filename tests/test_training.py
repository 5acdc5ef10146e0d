"""The reference trainer and the fast (batched) trainer: semantics and agreement."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dmg_ml.data.splits import task_seed
from dmg_ml.models.cnn import predict
from dmg_ml.training import stacked
from dmg_ml.training.batched import (
    FitTask,
    _Group,
    _train_epoch,
    fit_batched,
    initial_rows,
)
from dmg_ml.training.optim import BatchedAdam
from dmg_ml.training.planning import task_bytes, task_groups
from dmg_ml.training.reference import TrainConfig, fit_reference, init_model
from dmg_ml.training.stacked import KERNELS, ParamLayout, stacked_forward, unfold_input

LENGTH = 30


pytestmark = pytest.mark.usefixtures("one_thread")


def make_data(rng: np.random.Generator, n: int, length: int = LENGTH):
    x = rng.standard_normal((n, length)).astype(np.float32)
    y = x[:, :4] @ np.array([1.0, -1.0, 0.5, -0.5]) + 0.3 * rng.standard_normal(n)
    return x, y.astype(np.float32)


def make_tasks(seed: int = 0, sizes=(60, 67, 73)) -> list[FitTask]:
    rng = np.random.default_rng(seed)
    tasks = []
    for t, n in enumerate(sizes):
        x, y = make_data(rng, n)
        xv, yv = make_data(rng, 20 + t)
        tasks.append(FitTask(x, y, xv, yv, seed=task_seed(seed, t)))
    return tasks


def valid_loss(model, task: FitTask) -> float:
    return float(np.mean((predict(model, task.X_valid) - task.y_valid) ** 2))


def test_config_defaults_are_the_papers() -> None:
    config = TrainConfig()
    assert (config.max_epochs, config.patience, config.lr) == (700, 90, 1e-3)
    assert config.batch_size is None and config.channels == "adaptive"
    assert config.precision == "fp32"
    with pytest.raises(ValueError):
        TrainConfig(precision="fp16")


def test_init_is_seeded_and_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = init_model(LENGTH, "adaptive", 7).state_dict()
    b = init_model(LENGTH, "adaptive", 7).state_dict()
    assert torch.rand(1) == before
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["fc1.weight"], init_model(LENGTH, "adaptive", 8).fc1.weight)


def test_task_seeds_do_not_collide() -> None:
    seeds = {task_seed(s, fold) for s in range(5) for fold in range(5)}
    assert len(seeds) == 25


def test_reference_is_deterministic_and_restores_the_best_epoch() -> None:
    task = make_tasks()[0]
    config = TrainConfig(max_epochs=120, patience=15)
    runs = [
        fit_reference(task.X_train, task.y_train, task.X_valid, task.y_valid, config, seed=3)
        for _ in range(2)
    ]
    a, b = runs
    assert (a.epochs_run, a.best_epoch) == (b.epochs_run, b.best_epoch)
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k])
    assert 1 <= a.best_epoch <= a.epochs_run <= config.max_epochs
    if a.epochs_run < config.max_epochs:
        assert a.epochs_run - a.best_epoch == config.patience
    assert valid_loss(a.model, task) == pytest.approx(a.best_valid_loss, rel=1e-5)


def test_reference_continues_from_a_given_model() -> None:
    task = make_tasks()[0]
    config = TrainConfig(max_epochs=3, patience=5)
    model = init_model(LENGTH, "adaptive", 1)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    result = fit_reference(
        task.X_train, task.y_train, task.X_valid, task.y_valid, config, model=model
    )
    assert result.model is model
    assert not torch.equal(start["fc1.weight"], model.fc1.weight)


@pytest.mark.parametrize(
    ("length", "layout_length", "channels", "align"),
    [(30, 30, "adaptive", 1), (23, 30, "adaptive", 8), (438, 470, "adaptive", 16),
     (5, 9, "adaptive", 16), (40, 44, "fixed", 8)],
)  # fmt: skip
def test_initial_row_draws_init_models_weights_to_the_bit(
    length, layout_length, channels, align
) -> None:
    layout = ParamLayout(layout_length, channels, align)
    expected = layout.to_row(init_model(length, channels, seed=7).state_dict())
    state = torch.random.get_rng_state()
    assert torch.equal(layout.initial_row(length, seed=7), expected)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is left alone
    assert not torch.equal(layout.initial_row(length, seed=8), expected)


def test_initial_rows_in_threads_and_prefetched_groups_change_nothing() -> None:
    tasks = packed_tasks() + packed_tasks(1)
    tasks[1].init_state = init_model(PACKED[1], "adaptive", 99).state_dict()
    layout = ParamLayout(max(PACKED), "adaptive", align=8)
    one = initial_rows(layout, tasks, workers=1)
    assert torch.equal(initial_rows(layout, tasks, workers=3), one)
    assert torch.equal(one[1], layout.to_row(tasks[1].init_state))
    config = TrainConfig(max_epochs=8, patience=3)
    plain = fit_batched(tasks, config, prefetch=False)
    ahead = fit_batched(tasks, config, prefetch=True)
    assert len(task_groups(tasks, "adaptive")) == 3
    for a, b in zip(plain, ahead, strict=True):
        assert (a.epochs_run, a.best_epoch) == (b.epochs_run, b.best_epoch)
        for name, value in a.model.state_dict().items():
            assert torch.equal(value, b.model.state_dict()[name]), name


def test_layout_round_trip_and_stacked_forward_match_the_module() -> None:
    models = [init_model(LENGTH, "adaptive", s) for s in range(3)]
    layout = ParamLayout(LENGTH, "adaptive")
    flat = torch.stack([layout.to_row(m.state_dict()) for m in models])
    assert flat.shape[1] == layout.size
    state = layout.to_state(flat[1])
    assert all(torch.equal(state[k], v) for k, v in models[1].state_dict().items())
    x = torch.randn(3, 9, LENGTH)
    expected = torch.stack([m(x[i]) for i, m in enumerate(models)])
    for kernels in KERNELS:
        got = stacked_forward(layout, flat, unfold_input(x), kernels)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_batched_adam_equals_independent_adams_even_with_skipped_steps() -> None:
    torch.manual_seed(0)
    params = [torch.randn(6, requires_grad=True) for _ in range(3)]
    optimisers = [torch.optim.Adam([p], lr=1e-2) for p in params]
    flat = torch.stack([p.detach().clone() for p in params])
    adam = BatchedAdam(flat, lr=1e-2)
    schedule = [[1, 1, 1], [1, 0, 1], [1, 1, 0], [0, 1, 1], [1, 1, 1]]
    for active in schedule:
        grads = torch.randn(3, 6) * torch.tensor(active, dtype=torch.float32).unsqueeze(1)
        for t, on in enumerate(active):
            if on:
                params[t].grad = grads[t].clone()
                optimisers[t].step()
        adam.step(flat, grads, np.array(active, dtype=bool))
    expected = torch.stack([p.detach() for p in params])
    torch.testing.assert_close(flat, expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("batch_size", [None, 24])
def test_batched_matches_reference_for_the_same_seeds(batch_size: int | None) -> None:
    tasks = make_tasks()
    config = TrainConfig(max_epochs=60, patience=8, batch_size=batch_size)
    fast = fit_batched(tasks, config)
    x_test, _ = make_data(np.random.default_rng(9), 40)
    for task, got in zip(tasks, fast, strict=True):
        ref = fit_reference(
            task.X_train, task.y_train, task.X_valid, task.y_valid, config, seed=task.seed
        )
        assert abs(got.epochs_run - ref.epochs_run) <= 2
        np.testing.assert_allclose(
            predict(got.model, x_test), predict(ref.model, x_test), atol=0.05
        )
        assert valid_loss(got.model, task) == pytest.approx(got.best_valid_loss, rel=1e-4)


def test_batched_early_stopping_is_per_task_and_independent_of_check_interval() -> None:
    tasks = make_tasks(sizes=(50, 80, 65, 90))
    config = TrainConfig(max_epochs=80, patience=5)
    every_epoch = fit_batched(tasks, config)
    deferred = fit_batched(tasks, config, check_every=7)
    alone = [fit_batched([task], config)[0] for task in tasks]
    for a, b, c in zip(every_epoch, deferred, alone, strict=True):
        assert a.epochs_run == b.epochs_run == c.epochs_run
        assert a.best_epoch == b.best_epoch == c.best_epoch
        if a.epochs_run < config.max_epochs:
            assert a.epochs_run - a.best_epoch == config.patience
        assert b.best_valid_loss == pytest.approx(a.best_valid_loss, rel=1e-4)
    assert len({r.epochs_run for r in every_epoch}) > 1


def test_batched_starts_from_given_weights() -> None:
    task = make_tasks()[0]
    start = init_model(LENGTH, "adaptive", 99).state_dict()
    config = TrainConfig(max_epochs=1, patience=1)
    ref_model = init_model(LENGTH, "adaptive", 0)
    ref_model.load_state_dict(start)
    ref = fit_reference(
        task.X_train, task.y_train, task.X_valid, task.y_valid, config, model=ref_model
    )
    (got,) = fit_batched([FitTask(**{**task.__dict__, "init_state": start})], config)
    for k, v in ref.model.state_dict().items():
        torch.testing.assert_close(got.model.state_dict()[k], v, atol=1e-6, rtol=1e-5)


def test_bf16_trains_close_to_fp32() -> None:
    tasks = make_tasks()
    fp32 = fit_batched(tasks, TrainConfig(max_epochs=40, patience=50))
    bf16 = fit_batched(tasks, TrainConfig(max_epochs=40, patience=50, precision="bf16"))
    for a, b in zip(fp32, bf16, strict=True):
        assert b.epochs_run == 40
        assert b.best_valid_loss == pytest.approx(a.best_valid_loss, rel=0.05)


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("trainer", ["reference", "batched"])
def test_without_restore_the_model_is_the_last_epochs(trainer: str) -> None:
    """restore_best_weights=False keeps what the last epoch left, as the authors' script does."""
    task = make_tasks(sizes=(40,))[0]

    def fit(config: TrainConfig):
        if trainer == "batched":
            return fit_batched([task], config)[0]
        return fit_reference(
            task.X_train, task.y_train, task.X_valid, task.y_valid, config, seed=task.seed
        )

    stopped = fit(TrainConfig(max_epochs=300, patience=3, restore_best_weights=False))
    assert stopped.epochs_run - stopped.best_epoch == 3  # stopped early, past its best epoch
    best = fit(TrainConfig(max_epochs=300, patience=3))
    assert valid_loss(best.model, task) == pytest.approx(best.best_valid_loss, rel=1e-4)
    assert valid_loss(stopped.model, task) > stopped.best_valid_loss * (1 + 1e-4)
    run = stopped.epochs_run  # the same epochs without early stopping end on the same weights
    fixed = fit(TrainConfig(max_epochs=run, patience=run + 1, restore_best_weights=False))
    for name, value in _weights(fixed.model).items():
        torch.testing.assert_close(_weights(stopped.model)[name], value)


PACKED = (30, 27, 23)  # widths (3, 1), (2, 1), (2, 1): channels and positions both padded


def packed_tasks(seed: int = 0) -> list[FitTask]:
    rng = np.random.default_rng(seed)
    tasks = []
    for t, length in enumerate(PACKED):
        x, y = make_data(rng, 50 + 7 * t, length)
        xv, yv = make_data(rng, 20, length)
        tasks.append(FitTask(x, y, xv, yv, seed=task_seed(seed, t)))
    return tasks


def test_shorter_windows_pack_into_a_longer_layout_and_compute_as_alone() -> None:
    models = [init_model(length, "adaptive", s) for s, length in enumerate(PACKED)]
    layout = ParamLayout(max(PACKED), "adaptive", align=8)
    assert (layout.c1, layout.c2) == (8, 8)
    assert all(size % 8 == 0 for size in layout.sizes) and layout.size % 8 == 0
    flat = torch.stack([layout.to_row(m.state_dict()) for m in models])
    for row, model, length in zip(flat, models, PACKED, strict=True):
        state = layout.to_state(row, length)
        assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    x = torch.zeros(len(PACKED), 9, max(PACKED))
    for t, length in enumerate(PACKED):
        x[t, :, :length] = torch.randn(9, length)
    positions = (torch.arange(max(PACKED)) < torch.tensor(PACKED).unsqueeze(1)).float()
    got = stacked_forward(
        layout, flat, unfold_input(x), "matmul", positions.view(len(PACKED), 1, -1, 1)
    )
    expected = torch.stack([m(x[t, :, : PACKED[t]]) for t, m in enumerate(models)])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="matmul"):
        stacked_forward(layout, flat, unfold_input(x), "grouped", positions)


def test_packed_tasks_train_as_they_do_alone(monkeypatch) -> None:
    """The GPU's packing (tasks of nearby lengths zero-padded into one model, channels rounded
    up to 8, samples cut into chunks for the matmuls), run on the CPU: same epochs, same
    predictions to rounding, and the padding never learns anything."""
    monkeypatch.setattr(stacked, "CHUNK_ROWS", 256)
    assert stacked.sample_chunks(64, 30) == 4
    tasks = packed_tasks()
    assert task_groups(tasks, "adaptive") == [[2], [1], [0]]
    assert task_groups(tasks, "adaptive", length_slack=0.5) == [[2, 1, 0]]
    config = TrainConfig(max_epochs=60, patience=6)
    group = _Group(tasks, [0, 1, 2], config, torch.device("cpu"), check_every=1)
    assert group.kernels == "matmul" and group.positions is not None
    _train_epoch(group)
    padding = group.flat.clone()
    for t in range(len(tasks)):
        padding[t] -= group.layout.to_row(group.layout.to_state(group.flat[t], PACKED[t]))
    assert torch.count_nonzero(padding) == 0
    packed = fit_batched(tasks, config, length_slack=0.5)
    x_test = [make_data(np.random.default_rng(9), 30, length)[0] for length in PACKED]
    for task, x, got in zip(tasks, x_test, packed, strict=True):
        alone = fit_batched([task], config)[0]
        assert (got.epochs_run, got.best_epoch) == (alone.epochs_run, alone.best_epoch)
        assert got.model.input_size == task.X_train.shape[1]
        np.testing.assert_allclose(predict(got.model, x), predict(alone.model, x), atol=1e-4)
    assert len({r.epochs_run for r in packed}) > 1


def test_task_groups_respect_the_task_and_memory_limits() -> None:
    tasks = packed_tasks() + packed_tasks(1)
    assert task_groups(tasks, "adaptive", 0.5, max_tasks=4) == [[2, 5, 1, 4], [0, 3]]
    one = task_bytes(57, 30, "adaptive")
    assert task_groups(tasks, "adaptive", 0.5, memory_budget=3 * one) == [[2, 5, 1], [4, 0, 3]]
    assert task_groups(tasks, "adaptive", 0.5, memory_budget=1) == [[i] for i in (2, 5, 1, 4, 0, 3)]
